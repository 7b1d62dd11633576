"""The LLaMA-3 tokenizer built offline from llama-models (library/tokenizer.py)."""

import sys

import pytest
from transformers import AutoTokenizer

from library.tokenizer import SPECIAL_TOKENS, llama3_tokenizer, number_token_ids, tiktoken_model_path

pytest.importorskip("llama_models", reason="pip install --no-deps llama-models==0.3.0")

ADD_3_AND_4 = [2261, 220, 18, 323, 220, 19]
TEXTS = ["Add 3 and 4", "Sort the list 5, 3, 9", " leading space, 1234567 digits\nand a new line", "naïve café 😀"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tokenizer-cache")


@pytest.fixture(scope="module")
def tokenizer(cache_dir):
    """Converted from the BPE file (an empty cache), once for this module."""
    return llama3_tokenizer(cache_dir=cache_dir)


@pytest.fixture(scope="module")
def reference():
    """Meta's own tiktoken tokenizer from llama-models: the ground truth."""
    from llama_models.llama3.tokenizer import Tokenizer

    return Tokenizer(tiktoken_model_path())


def test_paper_prompt_ids(tokenizer):
    assert tokenizer("Add 3 and 4", add_special_tokens=False).input_ids == ADD_3_AND_4
    assert tokenizer("Add 3 and 4").input_ids == [128000, *ADD_3_AND_4]
    assert tokenizer.decode([128000, *ADD_3_AND_4], skip_special_tokens=True) == "Add 3 and 4"


def test_vocabulary_and_special_ids(tokenizer, reference):
    assert len(tokenizer) == 128256
    assert dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)))) == reference.special_tokens
    expected = {
        "<|begin_of_text|>": 128000,
        "<|end_of_text|>": 128001,
        "<|reserved_special_token_0|>": 128002,
        "<|finetune_right_pad_id|>": 128004,
        "<|start_header_id|>": 128006,
        "<|end_header_id|>": 128007,
        "<|eot_id|>": 128009,
        "<|reserved_special_token_245|>": 128255,
    }
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in expected} == expected
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (128000, 128001, 128004)


def test_matches_meta_tiktoken(tokenizer, reference):
    for text in TEXTS:
        assert tokenizer(text).input_ids == reference.encode(text, bos=True, eos=False)
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text
    assert tokenizer("<|start_header_id|>user<|end_header_id|>").input_ids == [128000, 128006, 882, 128007]


def test_padding_side_and_caches(tokenizer, cache_dir):
    assert tokenizer.padding_side == "right"
    assert tokenizer(["Add 3 and 4", "Hi"], padding=True).input_ids[1][-1] == tokenizer.pad_token_id
    assert len(list(cache_dir.glob("*/tokenizer.json"))) == 1
    left = llama3_tokenizer("left", cache_dir=cache_dir)  # read back from the disk cache
    batch = left(["Add 3 and 4", "Hi"], padding=True)
    assert batch.input_ids[1][0] == left.pad_token_id and batch.attention_mask[1][0] == 0
    assert left(TEXTS).input_ids == tokenizer(TEXTS).input_ids
    assert llama3_tokenizer(cache_dir=cache_dir) is tokenizer  # the in-process cache
    with pytest.raises(ValueError, match="padding_side"):
        llama3_tokenizer("middle")


def test_save_pretrained_round_trip(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(loaded) == 128256
    assert loaded(TEXTS).input_ids == tokenizer(TEXTS).input_ids
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (128000, 128001, 128004)


def test_number_token_ids(tokenizer):
    ids = number_token_ids(tokenizer, 128)
    assert len(ids) == len(set(ids)) == 128
    assert ids[:10] == list(range(15, 25)) and ids[127] == 6804
    assert tokenizer("Add 3 and 127", add_special_tokens=False).input_ids[-2:] == [220, ids[127]]
    assert number_token_ids(tokenizer, 1000)[999] == tokenizer.convert_tokens_to_ids("999")
    with pytest.raises(ValueError, match="1000 is 2 tokens"):
        number_token_ids(tokenizer, 1001)


def test_missing_llama_models_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_models", None)
    with pytest.raises(ImportError, match=r"pip install --no-deps llama-models==0\.3\.0"):
        tiktoken_model_path()
