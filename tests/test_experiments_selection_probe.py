"""experiments.selection_probe: the features are what the selection reads, and the probe learns a separable rule."""

import pytest
import torch
from test_readout import hidden_voting_calculator, smollm2_tokenizer, sub_margin

from experiments.selection_probe import FEATURES, fit_probe, window_features


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


def test_the_probe_learns_a_linear_rule_that_holds_on_fresh_points():
    generator = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(4, 16, generator=generator)
    labels = torch.randint(0, 4, (400,), generator=generator)
    points = centres[labels] + torch.randn(400, 16, generator=generator)
    predict = fit_probe(points[:200], labels[:200], classes=4)
    assert float((predict(points[200:]) == labels[200:]).float().mean()) > 0.95
