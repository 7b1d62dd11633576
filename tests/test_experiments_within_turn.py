"""experiments.within_turn: a trained folder's selection window bounded at its tokenizer's turn openers, in a new
folder with the rest of it copied and the same weights."""

import json

import pytest
import torch
from test_readout import TURNS, calculator, smollm2_tokenizer, sub_margin, voting_calculator

from experiments.within_turn import within_turn
from library.install import turn_boundaries
from modeling_llama_dcomp import LlamaDCompForCausalLM


def test_the_bounded_copy_leaves_the_system_prompt_out_with_the_same_weights(tmp_path):
    tokenizer = smollm2_tokenizer()
    model = voting_calculator(tokenizer, context=64)  # every minus votes +10 for sub
    run = tmp_path / "run"
    model.save_pretrained(run)
    tokenizer.save_pretrained(run)
    (run / "run_summary.json").write_text(json.dumps({"settings": {"data": {"task": "arithmetic"}}}))
    (run / "checkpoint-4").mkdir()
    assert within_turn(run, tmp_path / "bounded") == turn_boundaries(tokenizer)
    bounded = LlamaDCompForCausalLM.from_pretrained(tmp_path / "bounded")
    original = LlamaDCompForCausalLM.from_pretrained(run)
    prompt = TURNS["smollm2"].format(question="What is 12 plus 7?")  # the system message writes a minus
    assert sub_margin(original, tokenizer, prompt) == pytest.approx(10.0, abs=1e-3)
    assert sub_margin(bounded, tokenizer, prompt) == 0.0
    plain = "Be brief - very brief. What is 12 plus 7? "
    assert sub_margin(bounded, tokenizer, plain) == sub_margin(original, tokenizer, plain)
    for name, weight in original.state_dict().items():
        assert torch.equal(weight, bounded.state_dict()[name]), name
    assert (tmp_path / "bounded" / "run_summary.json").is_file()
    assert not (tmp_path / "bounded" / "checkpoint-4").exists()
    with pytest.raises(FileExistsError, match="already exists"):
        within_turn(run, tmp_path / "bounded")


def test_a_computer_without_a_selection_window_is_refused_and_nothing_is_written(tmp_path):
    tokenizer = smollm2_tokenizer()
    run = tmp_path / "run"
    calculator(tokenizer, ["add", "sub"]).save_pretrained(run)
    tokenizer.save_pretrained(run)
    with pytest.raises(ValueError, match="no selection window to bound"):
        within_turn(run, tmp_path / "bounded")
    assert not (tmp_path / "bounded").exists()
