"""The real LLaMA-3 tokenizer travels with the model: `save_model_with_tokenizer` writes it next to the weights, and
`AutoTokenizer.from_pretrained(folder)` (offline) gives back the same ids, the paper prompt's included, and the same
number tokens that initialised the computer's output projection W_out."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import CODE_FILES, COMPUTER, LIBRARY, TINY_LLAMA, tiny_llama
from transformers import AutoTokenizer

from library import tokenizer as llama3
from library.install import from_llama, number_token_ids, save_model_with_tokenizer
from library.tasks import tokenize_for_causal_lm
from modeling_llama_dcomp import LlamaDCompForCausalLM

pytest.importorskip("llama_models", reason="pip install --no-deps llama-models==0.3.0")

ADD_3_AND_4 = [2261, 220, 18, 323, 220, 19]
N = 128  # the paper's mod-128 calculator: every value 0..127 is one LLaMA-3 token
VOCAB = 128_256


@pytest.fixture(scope="module")
def tokenizer():
    return llama3.llama3_tokenizer()  # shared, cached instance: not mutated here


@pytest.fixture(scope="module")
def model(tokenizer):
    """A tiny Llama with LLaMA-3's vocabulary and special-token ids, converted with the tokenizer (W_out from the
    number-token embeddings)."""
    llama = tiny_llama(
        vocab_size=VOCAB,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return from_llama(
        llama,
        computer_layer=1,
        library=LIBRARY,
        tokenizer=tokenizer,
        **{**COMPUTER, "computer_values": N, "computer_gate_init": 1.0},
    ).eval()


@pytest.fixture(scope="module")
def saved(model, tokenizer, tmp_path_factory):
    return save_model_with_tokenizer(model, tokenizer, tmp_path_factory.mktemp("checkpoint"))


def test_the_folder_holds_model_code_and_tokenizer(saved):
    names = {path.name for path in saved.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        *CODE_FILES,
    } <= names


def test_auto_tokenizer_reloads_the_llama3_tokenizer(saved, tokenizer):
    loaded = AutoTokenizer.from_pretrained(saved)
    assert loaded("Add 3 and 4", add_special_tokens=False).input_ids == ADD_3_AND_4
    assert loaded("Add 3 and 4").input_ids == [128000, *ADD_3_AND_4]  # BOS post-processor kept
    assert len(loaded) == VOCAB
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (128000, 128001, 128004)
    assert loaded.padding_side == tokenizer.padding_side == "right"
    text = "Sort the list 5, 3, 9 and add 1234567\nnaïve café 😀"
    assert loaded(text).input_ids == tokenizer(text).input_ids
    assert loaded.decode(loaded(text).input_ids, skip_special_tokens=True) == text


def test_reloaded_number_tokens_are_the_ones_that_initialised_w_out(saved, tokenizer):
    loaded_tokenizer = AutoTokenizer.from_pretrained(saved)
    ids = number_token_ids(loaded_tokenizer, N)
    assert ids == number_token_ids(tokenizer, N) and all(len(tokens) == 1 for tokens in ids)
    assert [tokens[0] for tokens in ids] == llama3.number_token_ids(loaded_tokenizer, N)
    loaded = LlamaDCompForCausalLM.from_pretrained(saved)
    embeddings = loaded.get_input_embeddings().weight  # (vocab, hidden)
    w_out = loaded.computer.output_proj.weight  # (hidden, n)
    assert torch.equal(w_out, embeddings[[tokens[0] for tokens in ids]].T)
    assert torch.equal(w_out[:, 7], embeddings[loaded_tokenizer.convert_tokens_to_ids("7")])


def test_a_task_prompt_tokenized_by_the_reloaded_tokenizer_gives_the_same_logits(saved, model, tokenizer):
    import datasets

    loaded_tokenizer = AutoTokenizer.from_pretrained(saved)
    rows = datasets.Dataset.from_dict({"text": ["Add 3 and 4", "Multiply 12 by 5"], "answer_text": ["7", "60"]})
    original = tokenize_for_causal_lm(rows, tokenizer)
    reloaded = tokenize_for_causal_lm(rows, loaded_tokenizer)
    assert original["input_ids"] == reloaded["input_ids"]
    assert reloaded["input_ids"][0] == [128000, *ADD_3_AND_4, 220, 22, 128001]
    loaded = LlamaDCompForCausalLM.from_pretrained(saved).eval()
    ids = torch.tensor(reloaded["input_ids"][0])[None]
    computer_mask = torch.zeros_like(ids, dtype=torch.bool)
    computer_mask[0, reloaded["answer_position"][0]] = True
    # Close, not bit-equal: `from_pretrained` leaves the weights in a copy-on-write mmap of model.safetensors, at
    # file offsets that are not 64-byte aligned, and the CPU matmul kernels round the last bit differently for
    # such data than for the in-memory model's aligned copies (seen at the computer's n = 128 matmuls).
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(ids, computer_mask=computer_mask).logits,
            model(ids, computer_mask=computer_mask).logits,
            rtol=1e-6,
            atol=1e-6,
        )


def test_a_tokenizer_larger_than_the_vocabulary_is_refused_before_writing(tokenizer, tmp_path):
    small = from_llama(tiny_llama(), computer_layer=0, library=LIBRARY, **COMPUTER)
    assert small.config.vocab_size == TINY_LLAMA["vocab_size"]
    with pytest.raises(ValueError, match="128256 tokens but the model's vocabulary has 300"):
        save_model_with_tokenizer(small, tokenizer, tmp_path / "mismatch")
    assert not (tmp_path / "mismatch").exists()
