"""experiments.selection_probe: the features are what the selection reads, and the probe learns a separable rule."""

import pytest
import torch
from test_readout import hidden_voting_calculator, last_token_mask, smollm2_tokenizer, sub_margin, voting_calculator

from experiments.selection_probe import FEATURES, fit_probe, layer_features, selection_parts, window_features
from modeling_llama_dcomp import TOKEN_LOGIT_SCALE, record_computer_runs


def test_the_window_mean_is_what_the_hidden_votes_project():
    tokenizer = smollm2_tokenizer()
    model = hidden_voting_calculator(tokenizer, context=6)
    texts = ["So 12 - 7 =", "What is 99 plus -100000?"]
    features = window_features(model, tokenizer, texts, window=6)
    assert set(features) == set(FEATURES) and all(f.shape == (2, model.config.hidden_size) for f in features.values())
    weight = model.computer.selection_hidden_votes.weight.detach()
    for text, mean in zip(texts, features["window mean"]):
        votes = weight @ mean
        assert sub_margin(model, tokenizer, text + " ") == pytest.approx(float(votes[1] - votes[0]), abs=1e-4)


def test_the_layer_window_means_are_what_the_votes_of_those_layers_project():
    """--layers: the window mean of each layer's unit-RMS output; their mean is what votes reading both layers see."""
    tokenizer = smollm2_tokenizer()
    model = hidden_voting_calculator(tokenizer, context=6, computer_selection_vote_layers=[0, 1])
    texts = ["So 12 - 7 =", "What is 99 plus -100000?"]
    features = layer_features(model, tokenizer, texts, window=6)
    assert set(features) == {"layer 0", "layer 1", "layers 1–1"} and torch.equal(
        features["layer 1"], features["layers 1–1"]
    )
    assert not torch.allclose(features["layer 0"], features["layer 1"])
    weight = model.computer.selection_hidden_votes.weight.detach()
    for index, text in enumerate(texts):
        ids = tokenizer(text + " ", return_tensors="pt").input_ids
        with record_computer_runs() as runs, torch.no_grad():
            model(ids, computer_mask=last_token_mask(torch.ones_like(ids)))
        expected = weight @ ((features["layer 0"][index] + features["layer 1"][index]) / 2)
        torch.testing.assert_close(runs[0].hidden_votes[0], expected, rtol=1e-4, atol=1e-4)


def test_the_probe_learns_a_linear_rule_that_holds_on_fresh_points():
    generator = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(4, 16, generator=generator)
    labels = torch.randint(0, 4, (400,), generator=generator)
    points = centres[labels] + torch.randn(400, 16, generator=generator)
    predict = fit_probe(points[:200], labels[:200], classes=4)
    assert float((predict(points[200:]) == labels[200:]).float().mean()) > 0.95


def test_the_selection_is_scored_part_by_part():
    """add vs sub: the minus votes for sub (token votes right on both), W_sel is 0 (add wins the tie: right on one),
    the hidden votes are random and must pick what their window mean says."""
    tokenizer = smollm2_tokenizer()
    model = hidden_voting_calculator(tokenizer, context=6)
    with torch.no_grad():
        model.computer.selection_tokens[model.config.computer_minus_token_ids, 1] = 10.0 / TOKEN_LOGIT_SCALE
    rows = {"text": ["So 12 - 7 =", "So 12 and 7 ="], "operation": ["sub", "add"]}
    rows["phrasing"] = ["So {a} - {b} =", "So {a} and {b} ="]
    parts = selection_parts(model, tokenizer, rows)
    means = window_features(model, tokenizer, rows["text"], window=6)["window mean"]
    hidden = (means @ model.computer.selection_hidden_votes.weight.detach().T).argmax(-1)
    assert parts["token votes"] == 1.0 and parts["W_sel"] == 0.5
    assert parts["hidden votes"] == float((hidden == torch.tensor([1, 0])).float().mean())
    assert "selection_votes" not in vars(model.computer)  # the method is the class's again
    with pytest.raises(ValueError, match="no hidden-state votes"):
        selection_parts(voting_calculator(tokenizer, context=6), tokenizer, rows)
