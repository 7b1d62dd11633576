"""Issue 15, run time: inputs the model cannot answer well are refused (empty input, a misshapen computer_mask) or
flagged (an input longer than trained, numbers the computer cannot represent), and a run always ends."""

from __future__ import annotations

import warnings

import pytest
import torch
from model_fixtures import TINY_LLAMA, random_ids, tiny_llama, tiny_model

from library.install import explain, from_llama
from modeling_llama_dcomp import unrepresentable_numbers

LENGTH = TINY_LLAMA["max_position_embeddings"]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("call", ["forward", "trace"])
def test_an_empty_input_raises_a_clear_error(model, call):
    empty = torch.zeros(1, 0, dtype=torch.long)
    run = model.trace_computer if call == "trace" else model
    with pytest.raises(ValueError, match=r"shape \(1, 0\): give at least one token"):
        run(input_ids=empty)


@pytest.mark.parametrize("shape", [(2, 5), (5,), (1, 1, 5)])
def test_a_misshapen_computer_mask_names_expected_and_actual_shapes(model, shape):
    ids = random_ids(1, 5)
    mask = torch.ones(shape, dtype=torch.bool)
    with pytest.raises(ValueError, match=rf"computer_mask has shape \({shape[0]},.*expected \(batch=1, L\)"):
        model(input_ids=ids, computer_mask=mask)


def test_a_computer_mask_of_another_length_is_fine(model):
    """Columns are absolute positions: a shorter or longer mask is legal (see LlamaDCompModel)."""
    ids = random_ids(1, 5)
    for length in (3, 9):
        model(input_ids=ids, computer_mask=torch.ones(1, length, dtype=torch.bool))


def test_an_input_longer_than_trained_warns():
    model = tiny_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(input_ids=random_ids(1, LENGTH))  # as long as trained: no word
    with pytest.warns(UserWarning, match=f"longer than {LENGTH} tokens"):
        model(input_ids=random_ids(1, LENGTH + 1))
    model.config.trained_sequence_length = 8  # what the trainer records
    with pytest.warns(UserWarning, match="longer than 8 tokens"):
        model(input_ids=random_ids(1, 9))


def test_a_run_at_halt_threshold_one_ends_after_max_steps():
    """float32 halting mass may never reach exactly 1.0: the run still ends, after computer_max_steps steps."""
    model = tiny_model(computer_halt_threshold=1.0, computer_max_steps=12)
    traces = model.trace_computer(random_ids(2, 4))
    assert traces and all(trace.steps <= 12 for trace in traces)


# ------------------------------------------------------------------------------------ unrepresentable numbers
@pytest.mark.parametrize(
    ("text", "n", "flagged"),
    [
        ("Add 3 and 4", 128, []),
        ("Add 127 and 0", 128, []),
        ("Add 200 and 300", 128, ["200", "300"]),
        ("Add 128 and 1", 128, ["128"]),
        ("Add -3 and 4", 128, ["-3"]),
        ("Add 03 and 04", 128, ["03", "04"]),
        ("Add \u0663 and 4", 128, ["\u0663"]),  # an Arabic-Indic digit
        ("Add 9 and 16", 16, ["16"]),
        ("Add " + "9" * 5000 + " and 1", 128, ["9" * 5000]),  # past Python's int-conversion limit
    ],
)
def test_unrepresentable_numbers(text, n, flagged):
    assert unrepresentable_numbers(text, n) == flagged


@pytest.fixture(scope="module")
def llama3_model():
    pytest.importorskip("llama_models", reason="pip install --no-deps llama-models==0.3.0")
    from library.tokenizer import llama3_tokenizer

    tokenizer = llama3_tokenizer()
    llama = tiny_llama(vocab_size=len(tokenizer))
    model = from_llama(llama, computer_layer=1, library=["add"], computer_values=128, computer_gate_init=0.5)
    return model.eval(), tokenizer


@pytest.mark.llama3
def test_the_trace_flags_operands_the_computer_cannot_represent(llama3_model):
    model, tokenizer = llama3_model
    ids = tokenizer(["Add 200 and 300 ", "Add 3 and 4 "], return_tensors="pt", padding=True)
    mask = torch.zeros_like(ids.input_ids, dtype=torch.bool)
    mask[:, 6] = True  # after the second number in both prompts
    with pytest.warns(UserWarning, match=r"\['200', '300'\] are no values 0..127"):
        traces = model.trace_computer(**ids, computer_mask=mask, tokenizer=tokenizer)
    assert [trace.unrepresentable for trace in traces] == [["200", "300"], []]
    text = explain(traces, model)
    assert "! 200, 300: numbers the computer cannot hold" in text and text.count("! ") == 1
    assert model.trace_computer(**ids, computer_mask=mask)[0].unrepresentable is None  # not checked
