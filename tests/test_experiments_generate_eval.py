"""experiments.generate_eval: end-to-end exact match through generate(), and the parse counted on its own."""

import dataclasses

import datasets
import pytest
import torch
from test_readout import calculator, smollm2_tokenizer

from experiments.generate_eval import exact_match, raw_test_splits, with_max_digits
from library.training.arguments import DataArguments
from library.training.data import build_datasets, split_fingerprints, task_spec
from modeling_llama_dcomp import TOKEN_LOGIT_SCALE


def rows(tokenizer, questions: list[tuple[str, str, list[int]]]) -> datasets.Dataset:
    """Rows as train.py tokenizes them: the prompt, then the answer's tokens (no EOS: a tiny model's end is its own)."""
    built = []
    for prompt, answer, operands in questions:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        answer_ids = tokenizer.encode(answer, add_special_tokens=False)
        built.append(
            {
                "input_ids": prompt_ids + answer_ids,
                "answer_position": len(prompt_ids) - 1,
                "operation": "add",
                "operands": operands,
            }
        )
    return datasets.Dataset.from_list(built)


def test_the_parse_is_right_only_when_the_written_numbers_are_read_in_order():
    tokenizer = smollm2_tokenizer()
    model = calculator(tokenizer, "add", computer_trigger_context=1)
    equals = tokenizer.encode(" =", add_special_tokens=False)[-1]
    with torch.no_grad():
        model.computer.trigger_tokens[0, equals] = 20 / TOKEN_LOGIT_SCALE  # compute after " =", the prompt's end
    questions = rows(tokenizer, [("Add 12 and 30 =", "42", [12, 30]), ("Add -5 and 7 =", "3", [-5, 7])])
    figures = exact_match(model, tokenizer, questions, batch_size=2, max_new_tokens=4)
    assert figures["all"] == (0.5, 2)  # -5 + 7 is 2, not the 3 this row expects
    assert figures["parse: computed at the answer"] == (1.0, 2)
    assert figures["parse: operands read right"] == (1.0, 2)

    model.computer.copy_parse.init_ordinals({0: 1, 1: 0}, scale=30.0)  # the operands swapped: a sum is still right
    figures = exact_match(model, tokenizer, questions, batch_size=2, max_new_tokens=4)
    assert figures["all"] == (0.5, 2) and figures["parse: operands read right"] == (0.0, 2)

    with torch.no_grad():
        model.computer.trigger_tokens.zero_()  # never computes: nothing was read
    figures = exact_match(model, tokenizer, questions, batch_size=2, max_new_tokens=4)
    assert figures["parse: computed at the answer"] == (0.0, 2) and figures["parse: operands read right"] == (0.0, 2)


def test_after_numbers_of_its_own_the_parse_is_right_on_the_last_numbers_and_each_lead_in_is_reported():
    """The operands are the prompt's last numbers: ordinals counted from the end read them after "Question 3:",
    ordinals from the start read the 3; the lead-in (`new_phrasings --leading-numbers`) is a group of its own."""
    tokenizer = smollm2_tokenizer()
    questions = rows(tokenizer, [("Question 3: Add 12 and 30 =", "42", [12, 30])]).add_column("lead", ["question"])
    for from_end, right in ((True, 1.0), (False, 0.0)):
        model = calculator(tokenizer, "add", computer_trigger_context=1, computer_copy_from_end=from_end)
        if from_end:
            model.computer.copy_parse.init_ordinals({0: 1, 1: 0}, scale=30.0)
        equals = tokenizer.encode(" =", add_special_tokens=False)[-1]
        with torch.no_grad():
            model.computer.trigger_tokens[0, equals] = 20 / TOKEN_LOGIT_SCALE
        figures = exact_match(model, tokenizer, questions, batch_size=1, max_new_tokens=4)
        assert figures["parse: operands read right"] == (right, 1)
        assert figures["lead-in question"] == figures["all"] == (right, 1)


def test_a_runs_test_splits_are_rebuilt_from_its_settings_as_train_py_built_them():
    """generate_eval and zero_shot score the very questions train.py tested on (same phrasings, operands, seed)."""
    data = DataArguments(encoding="binary", train_size=300, validation_size=20, test_size=40, chat_fraction=0.5)
    built = build_datasets(data, task_spec(data), smollm2_tokenizer(), seed=7)
    settings = {"data": dataclasses.asdict(data), "training": {"seed": 7}}
    rebuilt = raw_test_splits(settings, ["test", "test_pairs"])
    for name in ("test", "test_pairs"):
        assert rebuilt[name]["text"] == built[name]["text"] and rebuilt[name]["answer"] == built[name]["answer"]
    assert rebuilt["test"]["text"] != rebuilt["test_pairs"]["text"]  # held-out phrasings vs training phrasings
    assert len(raw_test_splits(settings, ["test"], limit=5)["test"]) == 5
    settings["splits"] = split_fingerprints(built)  # as train.py saves them: the rebuilt splits match
    assert raw_test_splits(settings, ["test"])["test"]["text"] == built["test"]["text"]
    settings["splits"]["test_pairs"] = "0" * 64  # task code that draws other questions than the run held out
    with pytest.raises(
        ValueError, match="^runs/x/run_settings.json: the run held out other test_pairs questions than "
    ):
        raw_test_splits(settings, ["test"], where="runs/x/run_settings.json")
    shorter = raw_test_splits(with_max_digits(settings, 2), ["test"])["test"]  # other sizes: other questions
    assert max(len(str(abs(value))) for row in shorter["operands"] for value in row) <= 2
    assert settings["data"]["max_digits"] == data.max_digits and "splits" in settings  # the run's own, untouched
