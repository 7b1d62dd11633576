"""experiments.complete_votes: a trained folder's votes completed into a new folder, the rest of it copied."""

import json

import pytest
import torch
from test_readout import smollm2_tokenizer, voting_calculator

from experiments.complete_votes import complete_votes
from library.loading import LoadingError
from modeling_llama_dcomp import TOKEN_LOGIT_SCALE, LlamaDCompForCausalLM


def test_the_completed_copy_has_the_votes_and_the_runs_files_and_the_original_is_untouched(tmp_path):
    model = voting_calculator(smollm2_tokenizer(), context=6)
    with torch.no_grad():  # one voting token: the fit gives its vote to the tokens whose embeddings resemble its
        model.computer.selection_tokens.zero_()
        model.computer.selection_tokens[model.config.computer_minus_token_ids[0], 1] = 10.0 / TOKEN_LOGIT_SCALE
    run = tmp_path / "run"
    model.save_pretrained(run)
    (run / "run_summary.json").write_text(json.dumps({"settings": {"data": {"task": "arithmetic"}}}))
    (run / "checkpoint-4").mkdir()
    filled = complete_votes(run, tmp_path / "completed", margin=0.5, ridge=0.1)
    completed = LlamaDCompForCausalLM.from_pretrained(tmp_path / "completed").computer.selection_tokens
    original = LlamaDCompForCausalLM.from_pretrained(run).computer.selection_tokens
    assert torch.equal(original, model.computer.selection_tokens)
    assert filled > 0 and int((completed.abs().sum(1) > 0).sum()) == 1 + filled
    assert (tmp_path / "completed" / "run_summary.json").is_file()
    assert not (tmp_path / "completed" / "checkpoint-4").exists()
    with pytest.raises(FileExistsError, match="already exists"):
        complete_votes(run, tmp_path / "completed", margin=0.5, ridge=0.1)
    with pytest.raises(LoadingError, match="no such folder"):
        complete_votes(tmp_path / "missing", tmp_path / "other", margin=0.5, ridge=0.1)
