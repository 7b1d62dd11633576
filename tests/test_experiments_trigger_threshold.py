"""experiments.trigger_threshold: the sweep counts what it says, the choice keeps recall, and the written threshold
is the one a reloaded checkpoint computes with."""

import json

import pytest
import torch
from test_readout import calculator, smollm2_tokenizer
from transformers import LlamaConfig

from experiments.pass_through import MODULES
from experiments.trigger_threshold import (
    calibration_texts,
    choose,
    choose_lowest,
    ending_prompts,
    head_logits,
    sweep,
    write_threshold,
)
from library.texts import CALIBRATION_PACKAGES, TRAINING_PACKAGES
from modeling_llama_dcomp import LlamaDCompForCausalLM, logit


def test_the_sweep_counts_recall_and_false_activations_per_threshold():
    answers = {"as trained": torch.tensor([logit(0.999), logit(0.97), logit(0.6), logit(0.3)])}
    texts = [torch.tensor([logit(0.2), logit(0.96)]), torch.tensor([logit(0.1), logit(0.1), logit(0.85), -5.0])]
    rows = sweep(answers, texts, thresholds=(0.5, 0.9, 0.95, 0.98))
    assert [row["recall"] for row in rows] == [0.75, 0.5, 0.5, 0.25]
    assert [row["false_activation_positions"] for row in rows] == [2 / 6, 1 / 6, 1 / 6, 0.0]
    assert [row["texts_with_activation"] for row in rows] == [1.0, 0.5, 0.5, 0.0]
    assert choose(rows) == 0.5  # 0.9 would lose the question at 0.6
    assert choose(rows, recall_loss=0.25) == 0.95 and choose(rows, recall_loss=0.5) == 0.98
    top_two = {"as trained": answers["as trained"][:2]}
    assert choose(sweep(top_two, texts, thresholds=(0.5, 0.9, 0.95, 0.98))) == 0.95


def test_the_choice_keeps_the_recall_of_every_way_of_asking():
    """The line break's questions sit lower than the trained prompts' (seed 13's recipe lost them at 0.9): the
    threshold is the highest that keeps both."""
    answers = {"as trained": torch.tensor([logit(0.999), logit(0.97)]), "'…\\n'": torch.tensor([logit(0.85), 3.0])}
    rows = sweep(answers, [torch.tensor([logit(0.6)])], thresholds=(0.5, 0.8, 0.9, 0.95))
    assert [row["recall: '…\\n'"] for row in rows] == [1.0, 1.0, 0.5, 0.5]
    assert [row["recall"] for row in rows] == [1.0] * 4
    assert choose(rows) == 0.8 and choose(rows, recall_loss=0.5) == 0.95


def test_the_endings_asked_are_those_the_run_trained_that_end_in_white_space():
    tokenizer = smollm2_tokenizer()
    settings = {
        "data": {"task": "arithmetic", "n": 128, "encoding": "binary", "bits": 64, "max_digits": 2,
                 "operations": "add,sub", "phrasings": "default", "train_size": 64, "validation_size": 8,
                 "test_size": 8, "test_long_size": 8, "ending_fraction": 0.3, "endings": "wide"},
        "training": {"seed": 3},
    }  # fmt: skip
    (asked,) = ending_prompts(settings, tokenizer, limit=5).items()
    assert asked[0] == "'…\\n'" and len(asked[1]) == 5
    newline = tokenizer.encode("\n", add_special_tokens=False)
    assert all(prompt[-len(newline) :] == newline for prompt in asked[1])
    assert ending_prompts(settings | {"data": settings["data"] | {"ending_fraction": 0.0}}, tokenizer) == {}


def test_the_lead_threshold_is_the_lowest_that_fires_on_no_more_text_than_one_half():
    answers = {"plain": torch.tensor([logit(0.6), logit(0.25), logit(0.08)])}
    texts = [torch.tensor([logit(0.15), logit(0.01)]), torch.tensor([logit(0.03), logit(0.7)])]
    rows = sweep(answers, texts, thresholds=(0.02, 0.05, 0.1, 0.2, 0.5))
    assert [row["recall"] for row in rows] == [1.0, 1.0, 2 / 3, 2 / 3, 1 / 3]
    assert choose_lowest(rows) == 0.2  # 0.1 also fires at the 0.15 position


def test_the_trigger_logits_are_read_at_every_position():
    tokenizer = smollm2_tokenizer()
    model = calculator(tokenizer, "add", computer_lead_token_id=tokenizer.encode(" ", add_special_tokens=False)[-1])
    with torch.no_grad():
        model.computer.trigger.bias.fill_(-3.0)
    ids = [tokenizer.encode(text, add_special_tokens=False) for text in ("Add 3 and 4 ", "Hello")]
    found = head_logits(model, ids)
    assert [len(logits) for logits in found] == [len(row) for row in ids]
    start = ids[0].index(tokenizer.convert_tokens_to_ids("3"))  # before the first number, no head computes
    assert torch.isneginf(found[0][:start]).all() and torch.isneginf(found[1]).all()
    assert torch.allclose(found[0][start:], torch.full_like(found[0][start:], -3.0))  # the weight starts at 0
    with torch.no_grad():
        model.computer.lead.bias.fill_(-2.0)
    lead = head_logits(model, ids, "lead")[0]
    assert torch.allclose(lead[start:], torch.full_like(lead[start:], -2.0)) and torch.isneginf(lead[:start]).all()


def test_calibration_texts_come_from_their_own_packages():
    assert not set(CALIBRATION_PACKAGES) & (set(TRAINING_PACKAGES) | {name.split(".")[0] for name in MODULES})
    texts = calibration_texts(5)
    assert len(texts) == 5 == len(set(texts)) and texts == calibration_texts(5)


def test_the_written_threshold_is_the_one_the_reloaded_model_uses(tmp_path):
    tokenizer = smollm2_tokenizer()
    model = calculator(tokenizer, "add", computer_lead_token_id=tokenizer.encode(" ", add_special_tokens=False)[-1])
    model.save_pretrained(tmp_path)
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match="^computer_trigger_threshold="):
        write_threshold(tmp_path, model.config, 1.0)
    assert (tmp_path / "config.json").read_text() == before and list(tmp_path.glob("tmp*")) == []
    with pytest.raises(ValueError, match="its run-time code has no computer_trigger_threshold"):
        write_threshold(tmp_path, LlamaConfig(), 0.99)  # a folder saved by older code: its config lacks the field
    assert (tmp_path / "config.json").read_text() == before
    write_threshold(tmp_path, model.config, 0.99)
    assert json.loads((tmp_path / "config.json").read_text())["computer_trigger_threshold"] == 0.99
    reloaded = LlamaDCompForCausalLM.from_pretrained(tmp_path)  # the library's fingerprint does not cover it
    assert reloaded.computer.trigger_threshold == pytest.approx(logit(0.99))
    write_threshold(tmp_path, model.config, 0.2, "computer_lead_threshold")
    assert LlamaDCompForCausalLM.from_pretrained(tmp_path).computer.lead_threshold == pytest.approx(logit(0.2))
