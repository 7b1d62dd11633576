"""LlamaDComp model: exactness at gate 0, the computer's work, where it runs, caching/padding/generation, buffers
and their round trip, library fingerprints, remote code, loss with a logits mask, traces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from model_fixtures import (
    COMPUTER,
    DEPTH,
    LIBRARY,
    MEMORY,
    NOT_IMPORTABLE_PRELUDE,
    REGISTERS,
    REPO,
    TINY_LLAMA,
    N,
    random_ids,
    steer,
    tiny_llama,
)
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

from configuration_llama_dcomp import LlamaDCompConfig
from library.install import from_llama, install_library
from library.interpreter import run_reference
from library.stdlib import load_program
from modeling_llama_dcomp import (
    ComputerTrace,
    LibraryMismatchError,
    LlamaDCompComputer,
    LlamaDCompForCausalLM,
    LlamaDCompModel,
    halt_program,
    record_computer_runs,
)

PAD = TINY_LLAMA["pad_token_id"]


def tiny_model(
    gate: float = 0.0, layer: int = 0, seed: int = 0, **computer
) -> tuple[LlamaDCompForCausalLM, LlamaForCausalLM]:
    """A converted tiny Llama with the test library, and the Llama it came from."""
    llama = tiny_llama(seed)
    computer = {**COMPUTER, "computer_gate_init": gate, **computer}
    model = from_llama(llama, computer_layer=layer, library=LIBRARY, **computer)
    return model.eval(), llama


def left_pad(sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), PAD)
    mask = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, length - len(sequence) :] = sequence
        mask[row, length - len(sequence) :] = 1
    return ids, mask


# ---------------------------------------------------------------------------------------------- exactness
def test_gate_zero_logits_equal_the_base_llama_exactly():
    model, llama = tiny_model(gate=0.0, layer=0)
    ids, mask = left_pad([random_ids(1, 9)[0], random_ids(1, 5, seed=2)[0]])
    with torch.no_grad():
        for kwargs in ({"input_ids": ids}, {"input_ids": ids, "attention_mask": mask}):
            assert torch.equal(model(**kwargs).logits, llama(**kwargs).logits)
    assert len(model.computer.program_names) == len(LIBRARY)


def test_hidden_states_output_includes_the_computer():
    """`output_hidden_states` still works (LlamaModel.forward's decorators) and shows the computer's write."""
    model, llama = tiny_model(gate=1.0, layer=0)
    ids = random_ids(2, 6)
    with torch.no_grad():
        ours = model(ids, output_hidden_states=True).hidden_states
        base = llama(ids, output_hidden_states=True).hidden_states
    assert len(ours) == len(base) == TINY_LLAMA["num_hidden_layers"] + 1
    assert torch.equal(ours[0], base[0])
    assert not torch.allclose(ours[1], base[1])  # after layer 0 and the computer


# ------------------------------------------------------------------------------------------ the computation
@pytest.mark.parametrize("alu", ["table", "circuit"])
@pytest.mark.parametrize(
    ("program", "inputs"), [("add", {1: 9, 2: 11}), ("mul", {1: 3, 2: 5}), ("fib", {1: 1, 2: 1, 3: 1})]
)
def test_computer_runs_the_selected_program_exactly(program, inputs, alu):
    """Certain selection and parsing give the reference interpreter's result in r0, written through W_out, with
    either ALU (the circuit one is exact on one-hot values)."""
    model, _ = tiny_model(gate=1.0, computer_alu=alu)
    computer = model.computer
    assert type(computer.machine.alu).__name__ == {"table": "TableALU", "circuit": "CircuitALU"}[alu]
    hidden = steer(computer, program, inputs)
    with torch.no_grad():
        computer.output_proj.weight.zero_()
        computer.output_proj.weight[:N].copy_(torch.eye(N))  # the residual's first n dims receive p_out
        out = computer(hidden)
    registers = dict.fromkeys(range(REGISTERS - DEPTH), 0) | inputs
    expected = run_reference(
        load_program(program, n=N, num_registers=REGISTERS, call_depth=DEPTH),
        n=N,
        num_registers=REGISTERS,
        memory_size=MEMORY,
        call_depth=DEPTH,
        registers=registers,
        max_steps=COMPUTER["computer_max_steps"],
    )
    p_out = (out - hidden)[0, 0, :N]
    assert expected.halted and int(p_out.argmax()) == expected.state.registers[0]
    assert float(p_out.max()) > 1 - 1e-4


def test_training_reaches_the_computer_and_not_the_buffers():
    model, _ = tiny_model(gate=0.5)
    model.train()
    ids = random_ids(2, 6)
    model(ids, labels=ids).loss.backward()
    computer = model.computer
    for name in ("gate", "select.weight", "parse.weight", "output_proj.weight"):
        grad = computer.get_parameter(name).grad
        assert grad is not None and bool(grad.abs().sum() > 0), name
    parameters = {id(p) for p in model.parameters()}
    assert all(id(buffer) not in parameters and not buffer.requires_grad for buffer in model.buffers())


def test_forward_without_a_library_raises():
    model = LlamaDCompForCausalLM(LlamaDCompConfig(**TINY_LLAMA, **COMPUTER))
    with pytest.raises(RuntimeError, match="no library is installed"):
        model(random_ids(1, 3))


# -------------------------------------------------------------------------------------- where it runs
def test_computer_runs_on_non_padding_positions_by_default():
    model, _ = tiny_model(gate=1.0)
    ids, mask = left_pad([random_ids(1, 6)[0], random_ids(1, 3, seed=2)[0]])
    traces = model.trace_computer(ids, attention_mask=mask)
    assert sorted((t.batch_index, t.position) for t in traces) == [tuple(p) for p in mask.nonzero().tolist()]
    assert len(model.trace_computer(ids)) == ids.numel()  # no mask: everywhere


def test_computer_mask_limits_the_computer_and_leaves_earlier_positions_untouched():
    model, llama = tiny_model(gate=1.0)
    ids = random_ids(2, 7)
    computer_mask = torch.zeros_like(ids, dtype=torch.bool)
    computer_mask[:, 4] = True
    traces = model.trace_computer(ids, computer_mask=computer_mask)
    assert [(t.batch_index, t.position) for t in traces] == [(0, 4), (1, 4)]
    with torch.no_grad():
        ours, base = model(ids, computer_mask=computer_mask).logits, llama(ids).logits
    assert torch.equal(ours[:, :4], base[:, :4])  # causal: nothing before the computer changed, bit for bit
    assert not torch.allclose(ours[:, 4:], base[:, 4:])


def test_computer_positions_follow_the_kv_cache():
    """With a cache of length c, `computer_mask` columns [c, c + seq) apply; beyond its end nothing runs."""
    positions = LlamaDCompModel.computer_positions
    mask = torch.tensor([[1, 1, 1, 1]])
    computer_mask = torch.tensor([[False, True, False]])
    assert positions(1, 2, mask, computer_mask, 1, "cpu")[1].tolist() == [[True, False]]
    assert positions(1, 1, mask, computer_mask, 3, "cpu")[1].tolist() == [[False]]
    assert positions(1, 1, mask, None, 3, "cpu")[1].tolist() == [[True]]
    valid, where = positions(1, 2, torch.tensor([[1, 0, 1]]), None, 1, "cpu")
    assert valid.tolist() == where.tolist() == [[False, True]]


# ------------------------------------------------------------------------------ generation, cache, padding
def _greedy_uncached(model, ids: torch.Tensor, steps: int, **kwargs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    logits = []
    for _ in range(steps):
        with torch.no_grad():
            last = model(ids, use_cache=False, **kwargs).logits[:, -1]
        logits.append(last)
        ids = torch.cat([ids, last.argmax(-1, keepdim=True)], dim=1)
    return ids, logits


@pytest.mark.parametrize("use_computer_mask", [False, True])
def test_cached_generation_equals_uncached_argmax_step_by_step(use_computer_mask):
    model, _ = tiny_model(gate=2.0, layer=1)
    ids = random_ids(2, 5)
    kwargs = {}
    if use_computer_mask:  # the computer at the last prompt token only
        kwargs["computer_mask"] = torch.zeros_like(ids, dtype=torch.bool)
        kwargs["computer_mask"][:, -1] = True
    steps = 5
    ran = []  # positions the computer ran on, per forward
    hook = model.computer.register_forward_hook(lambda module, args, output: ran.append(int(args[1].positions.sum())))
    try:
        out = model.generate(
            ids,
            max_new_tokens=steps,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=PAD,
            output_logits=True,
            return_dict_in_generate=True,
            **kwargs,
        )
    finally:
        hook.remove()
    # Prefill, then one forward per new token that runs on that token only (or, with the mask, nowhere).
    prefill = ids.shape[0] if use_computer_mask else ids.numel()
    assert ran == [prefill] + [0 if use_computer_mask else ids.shape[0]] * (steps - 1)
    expected, logits = _greedy_uncached(model, ids, steps, **kwargs)
    assert torch.equal(out.sequences, expected)
    for cached, full in zip(out.logits, logits):
        torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)


def test_left_padded_batch_equals_unpadded_single_sequences():
    model, _ = tiny_model(gate=2.0, layer=0)
    sequences = [random_ids(1, 7)[0], random_ids(1, 4, seed=2)[0]]
    ids, mask = left_pad(sequences)
    batch = model.generate(
        ids, attention_mask=mask, max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=PAD
    )
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        batch_logits = model(ids, attention_mask=mask, position_ids=position_ids).logits
    for row, sequence in enumerate(sequences):
        single = model.generate(sequence[None], max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=PAD)
        assert torch.equal(batch[row, ids.shape[1] - len(sequence) :], single[0])
        with torch.no_grad():
            single_logits = model(sequence[None]).logits[0]
        torch.testing.assert_close(
            batch_logits[row, ids.shape[1] - len(sequence) :], single_logits, rtol=1e-4, atol=1e-4
        )


def test_right_padded_batch_equals_unpadded_single_sequences():
    model, _ = tiny_model(gate=2.0, layer=0)
    sequences = [random_ids(1, 7)[0], random_ids(1, 4, seed=2)[0]]
    ids = torch.full((2, 7), PAD)
    mask = torch.zeros(2, 7, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)], mask[row, : len(sequence)] = sequence, 1
    with torch.no_grad():
        batch_logits = model(ids, attention_mask=mask).logits
        for row, sequence in enumerate(sequences):
            single = model(sequence[None]).logits[0]
            torch.testing.assert_close(batch_logits[row, : len(sequence)], single, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------- loss and logits
def test_boolean_logits_to_keep_gives_the_full_logits_loss():
    model, _ = tiny_model(gate=1.0)
    ids = random_ids(2, 8)
    labels = torch.full_like(ids, -100)
    labels[:, 5:] = ids[:, 5:]  # answer tokens only
    keep = LlamaDCompForCausalLM.labelled_positions(labels)
    with torch.no_grad():
        full = model(ids, labels=labels)
        kept = model(ids, labels=labels, logits_to_keep=keep)
    assert kept.logits.shape == (int(keep.sum()), TINY_LLAMA["vocab_size"])
    torch.testing.assert_close(kept.loss, full.loss)
    torch.testing.assert_close(kept.logits, full.logits[keep])


def test_num_items_in_batch_reaches_the_loss():
    model, _ = tiny_model(gate=1.0)
    ids = random_ids(2, 6)
    with torch.no_grad():
        mean = model(ids, labels=ids).loss
        summed = model(ids, labels=ids, num_items_in_batch=torch.tensor(1)).loss
    labelled = ids.shape[0] * (ids.shape[1] - 1)
    torch.testing.assert_close(summed, mean * labelled)


# ------------------------------------------------------------------------------------ buffers, round trip
def test_library_buffers_are_persistent_float32_and_not_parameters():
    model, _ = tiny_model()
    computer = model.computer
    state = model.state_dict()
    for name in ("program_op", "program_a", "program_b", "program_out", "program_imm"):
        assert computer.get_buffer(name).dtype == torch.float32
        assert f"model.layers.0.computer.{name}" in state
    assert computer.entry_points.dtype == torch.long
    assert "model.layers.0.computer.machine.alu.index_tables" in state
    optimizer = torch.optim.AdamW(model.parameters())
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(buffer) in optimized for buffer in model.buffers())


def test_save_and_load_round_trip_is_bit_exact(tmp_path):
    model, _ = tiny_model(gate=0.7, layer=1)
    model.save_pretrained(tmp_path)
    loaded = LlamaDCompForCausalLM.from_pretrained(tmp_path).eval()
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        assert expected[key].dtype == actual[key].dtype and torch.equal(expected[key], actual[key]), key
    ids = random_ids(2, 5)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded.config.library_programs == LIBRARY
    half = LlamaDCompForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert half.computer.gate.dtype == torch.bfloat16
    assert half.computer.program_op.dtype == torch.float32  # the library keeps its explicit dtype
    assert torch.equal(half.computer.program_imm, model.computer.program_imm)


def test_loading_a_plain_llama_checkpoint_initialises_the_computer(tmp_path):
    """Keys missing from the checkpoint are filled by `_init_weights`: the placeholder library and real ALU
    tables, not `empty_like` garbage."""
    tiny_llama().save_pretrained(tmp_path)
    model = LlamaDCompForCausalLM.from_pretrained(tmp_path, computer_layer=1, **COMPUTER)
    computer = model.computer
    assert torch.equal(computer.program_op.argmax(-1)[:, 0], torch.zeros(computer.program.lines, dtype=torch.long))
    fresh = LlamaDCompComputer(model.config).machine.alu
    assert torch.equal(computer.machine.alu.index_tables, fresh.index_tables)
    assert float(computer.gate.detach()) == model.config.computer_gate_init


def _saved(tmp_path) -> Path:
    model, _ = tiny_model()
    model.save_pretrained(tmp_path)
    return tmp_path


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"library_entry_points": [0, 2, 1, 3]}, "library_entry_points"),
        ({"library_programs": ["add", "sub", "mul", "gcd"]}, "library_programs"),
        ({"library_fingerprint": "tensors=0;index=0"}, "program tensors"),
        ({"library_fingerprint": None}, "library_fingerprint is missing"),
    ],
)
def test_a_config_that_does_not_match_the_library_fails_to_load(tmp_path, changes, names):
    directory = _saved(tmp_path)
    _edit_config(directory, **changes)
    with pytest.raises(LibraryMismatchError, match=names):
        LlamaDCompForCausalLM.from_pretrained(directory)


@pytest.mark.parametrize(
    ("key", "names"),
    [
        ("model.layers.0.computer.program_imm", "program tensors"),
        ("model.layers.0.computer.machine.alu.index_tables", "ALU"),
    ],
)
def test_a_tampered_library_buffer_fails_to_load(tmp_path, key, names):
    directory = _saved(tmp_path)
    weights = load_file(directory / "model.safetensors")
    tampered = weights[key].clone()
    tampered.view(-1)[0] = 1 - tampered.view(-1)[0]
    weights[key] = tampered
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LibraryMismatchError, match=names):
        LlamaDCompForCausalLM.from_pretrained(directory)


# -------------------------------------------------------------------------------------------- remote code
_REMOTE_SCRIPT = NOT_IMPORTABLE_PRELUDE + textwrap.dedent(
    """
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    torch.set_num_threads(int(sys.argv[3]))  # the parent's: a different split of a matmul can change a last bit
    directory = sys.argv[2]
    expected = load_file(os.path.join(directory, "expected.safetensors"))
    config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
    assert type(config).__name__ == "LlamaDCompConfig", type(config)
    causal = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(directory, trust_remote_code=True).eval()
    assert type(causal).__name__ == "LlamaDCompForCausalLM" and type(base).__name__ == "LlamaDCompModel"
    for name, buffer in causal.named_buffers():
        assert torch.equal(buffer, expected["buffer." + name]), name
    with torch.no_grad():
        assert torch.equal(causal(expected["input_ids"]).logits, expected["logits"])
        assert torch.equal(base(expected["input_ids"]).last_hidden_state, expected["last_hidden_state"])
    print("remote code OK")
    """
)


@pytest.mark.slow
def test_auto_classes_load_the_saved_code_in_a_clean_process(tmp_path):
    model, _ = tiny_model(gate=0.5)
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
    for name in (
        "modeling_llama_dcomp.py",
        "configuration_llama_dcomp.py",
        "dcomp_machine.py",
        "dcomp_alu.py",
        "dcomp_isa.py",
        "dcomp_circuits.py",
    ):
        assert (checkpoint / name).is_file(), name
    ids = random_ids(2, 5)
    # The reference is this repository's class loading the same file: from_pretrained memory-maps the weights
    # (not 64-byte aligned), which can change the last bit of a matmul against the in-memory model.
    loaded = LlamaDCompForCausalLM.from_pretrained(checkpoint).eval()
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, loaded.get_buffer(name)), name
    with torch.no_grad():
        expected = {
            "input_ids": ids,
            "logits": loaded(ids).logits,
            "last_hidden_state": loaded.model(ids).last_hidden_state,
            **{f"buffer.{name}": buffer for name, buffer in model.named_buffers()},
        }
        torch.testing.assert_close(expected["logits"], model(ids).logits, rtol=1e-5, atol=1e-6)
    save_file({k: v.contiguous() for k, v in expected.items()}, checkpoint / "expected.safetensors")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", _REMOTE_SCRIPT, str(REPO), str(checkpoint), str(torch.get_num_threads())],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "remote code OK" in result.stdout


# ------------------------------------------------------------------------------------------------- traces
def test_trace_computer_reports_selection_inputs_and_result():
    model, _ = tiny_model(gate=1.0)
    computer = model.computer
    steered = steer(computer, "add", {1: 9, 2: 11})
    # Every position's hidden state reaches the computer as the steering state: certain `add` of 9 and 11.
    handle = computer.register_forward_pre_hook(lambda module, args: (steered.expand_as(args[0]), *args[1:]))
    try:
        traces = model.trace_computer(random_ids(2, 3), computer_mask=torch.tensor([[0, 1, 1], [0, 0, 1]]), top_k=2)
    finally:
        handle.remove()
    assert [(t.batch_index, t.position) for t in traces] == [(0, 1), (0, 2), (1, 2)]
    trace = traces[0]
    assert isinstance(trace, ComputerTrace)
    assert trace.programs[0][0] == "add" and trace.programs[0][1] > 0.999 and len(trace.programs) == 2
    assert trace.inputs[1][0][0] == 9 and trace.inputs[2][0][0] == 11 and trace.inputs[3][0][0] == 0
    assert trace.output[0][0] == (9 + 11) % N and trace.output[0][1] > 0.999 and trace.output_register == 0
    assert trace.registers[0][0] == (9 + 11) % N and len(trace.registers) == REGISTERS
    assert len(trace.memory) == MEMORY and trace.memory_inputs == []
    assert trace.halted > 0.999 and trace.steps == 1  # `add r1 r2 r0 | ret`: one step, then halted
    entry = model.config.library_entry_points[LIBRARY.index("add")]
    assert trace.program_lines == (entry, entry + len(load_program("add", n=N, num_registers=REGISTERS)))


def test_set_library_keeps_selection_rows_by_name():
    model, _ = tiny_model()
    rows = {name: model.computer.select.weight[i].clone() for i, name in enumerate(LIBRARY)}
    install_library(model, ["fib", "add", "gcd"])
    computer = model.computer
    assert computer.program_names == ["fib", "add", "gcd"] == model.config.library_programs
    assert torch.equal(computer.select.weight[0], rows["fib"]) and torch.equal(computer.select.weight[1], rows["add"])
    assert computer.program.lines == model.config.computer_program_lines
    model.verify_library()


def test_set_library_leaves_the_model_unchanged_when_the_library_cannot_fit():
    model, _ = tiny_model()
    before = model.config.to_dict()
    with pytest.raises(ValueError, match="^computer_values="):
        sizes = SimpleNamespace(
            computer_program_lines=N,  # N lines need n > N
            computer_lanes=1,
            computer_registers=REGISTERS,
            computer_values=N,
            computer_encoding="unit",
        )
        model.set_library(halt_program(sizes), ["too_long"], [0])
    assert model.config.to_dict() == before
    model.verify_library()


def test_gradient_checkpointing_gives_the_same_gradients():
    model, _ = tiny_model(gate=0.5)
    model.train()
    ids = random_ids(2, 6)
    model(ids, labels=ids).loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if ".computer." in name}
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(ids, labels=ids, use_cache=False).loss.backward()
    for name, grad in expected.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, msg=name)


# ------------------------------------------------------------------------------------------------- copy parse
NUMBER_IDS = list(range(200, 200 + N))  # in the tiny vocabulary, token 200 + v is the number v


def copy_model() -> LlamaDCompForCausalLM:
    return tiny_model(gate=1.0, computer_parse="copy", computer_number_token_ids=NUMBER_IDS)[0]


def point(computer: LlamaDCompComputer, ordinals: dict[int, int], scale: float = 50.0) -> None:
    """Copy-parse weights under which slot s copies the `ordinals[s]`-th number token with certainty and every
    other slot keeps the linear parse."""
    copy = computer.copy_parse
    with torch.no_grad():
        for weight in (copy.query.weight, copy.key.weight, copy.mix.weight, copy.query.bias):
            weight.zero_()
        torch.nn.init.eye_(copy.ordinal.weight)  # ordinal k is unit vector k
        copy.mix.bias.fill_(-scale)
        for slot, k in ordinals.items():
            copy.query.bias.view(copy.slots, copy.dim)[slot, k] = scale
            copy.mix.bias[slot] = scale


def test_copy_parse_copies_the_kth_number_token_up_to_the_position():
    model = copy_model()
    computer = model.computer
    point(computer, {0: 1, 1: 0})  # r1 := the second number, r2 := the first; r3 is parsed linearly
    ids = torch.tensor([[5, 200 + 9, 6, 200 + 4, 7, 200 + 3]])  # the numbers 9, 4, 3
    with torch.no_grad(), record_computer_runs() as runs:
        model(ids)
    parsed = runs[0].input_probs  # (positions, registers, n), every position
    linear = computer.parse(computer.norm(runs_hidden(model, ids))).view(6, -1, N).softmax(-1)
    torch.testing.assert_close(parsed[0], linear[0])  # no number yet: the linear parse
    assert parsed[2, :2].argmax(-1).tolist() == [9, 9]  # one number so far: both pointers find it
    for position in (3, 4, 5):  # a number written later is never read
        assert parsed[position, :2].argmax(-1).tolist() == [4, 9] and parsed[position, :2].max() > 0.99
    torch.testing.assert_close(parsed[:, 2], linear[:, 2], atol=1e-6, rtol=0)


def runs_hidden(model: LlamaDCompForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    """The hidden states `(seq, hidden)` entering the computer (the output of its decoder layer) for one row."""
    captured = []
    handle = model.computer.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        with torch.no_grad():
            model(ids)
    finally:
        handle.remove()
    return captured[0][0]


def test_copy_parse_feeds_the_machine_and_trains_the_base():
    model = copy_model()
    computer = model.computer
    steered = steer(computer, "sub", {})  # certain `sub`
    point(computer, {0: 0, 1: 1})  # r1, r2 := the first and second numbers
    with torch.no_grad():
        computer.copy_parse.mix.bias[:2] = 8.0  # certain enough, and not saturated: the mix gets a gradient
        computer.copy_parse.key.weight.normal_(std=0.01)  # keys that depend on the base's hidden states
    handle = computer.register_forward_pre_hook(lambda module, args: (args[0] + steered, *args[1:]))
    ids = torch.tensor([[5, 200 + 3, 6, 200 + 10, 7]])
    try:
        with record_computer_runs() as runs:
            model(ids, computer_mask=torch.tensor([[0, 0, 0, 0, 1]]))
    finally:
        handle.remove()
    output = runs[0].state.registers[0, 0]  # (n,)
    assert int(output.argmax()) == (3 - 10) % N and output.max() > 0.99
    loss = -output[(3 - 10) % N].log() - runs[0].input_probs[0, 0, 3].log()
    loss.backward()
    copy = computer.copy_parse
    for name, parameter in (
        ("query", copy.query.weight),
        ("key", copy.key.weight),
        ("ordinal", copy.ordinal.weight),
        ("mix", copy.mix.weight),
        ("number embedding", model.model.embed_tokens.weight),
    ):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_copy_parse_needs_input_ids_and_round_trips(tmp_path):
    model = copy_model()
    ids = torch.tensor([[5, 200 + 9, 6, 200 + 4, 7]])
    with pytest.raises(ValueError, match="input_ids"):
        model(inputs_embeds=model.get_input_embeddings()(ids))
    model.save_pretrained(tmp_path)
    loaded = LlamaDCompForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.computer_parse == "copy" and loaded.config.computer_number_token_ids == NUMBER_IDS
    assert any(".copy_parse." in key for key in loaded.state_dict())
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_copy_parse_reads_numbers_of_several_tokens_without_looking_ahead():
    """A run of number tokens is one number ("1", "2" is 12, as SmolLM2 writes it); at a position inside a run the
    pointer sees the digits so far, never the token after it; a number >= n is never copied."""
    model = copy_model()
    point(model.computer, {0: 0, 1: 1})

    def parsed(ids: list[int]) -> torch.Tensor:
        with torch.no_grad(), record_computer_runs() as runs:
            model(torch.tensor([ids]))
        return runs[0].input_probs[:, :2].argmax(-1)  # (positions, 2): r1, r2 at every position

    twelve_then_three = parsed([5, 200 + 1, 200 + 2, 6, 200 + 3, 7])
    assert twelve_then_three[5].tolist() == [12, 3]
    assert twelve_then_three[1].tolist() == [1, 1]  # inside "12": only "1" has been read
    assert torch.equal(parsed([5, 200 + 1, 200 + 9, 6, 200 + 3, 7])[1], twelve_then_three[1])  # no look-ahead
    too_big = parsed([5, 200 + 9, 200 + 9, 6, 200 + 3, 7])  # 99 >= n = 16: only 3 is there to copy
    assert too_big[5].tolist() == [3, 3]
    assert parsed([5, 200 + 0, 200 + 7, 6, 200 + 1, 200 + 0, 200 + 5, 7])[7].tolist() == [7, 7]  # "07"; 105 >= n


def test_read_numbers_matches_a_token_by_token_scan():
    """`NumberTokens.read` (vectorised over the runs) of the unit copy parse against the definition: scan the
    tokens, a number token extends the current number by its digits (capped at n), any other token ends it."""
    computer = copy_model().computer
    values_of = {token: value for value, token in enumerate(NUMBER_IDS)}
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(196, 200 + N, (6, 30), generator=generator)  # a quarter of the tokens are no numbers
    read = computer.numbers.read(ids)
    value, is_number, is_first, is_last = read.value, read.is_number, read.is_first, read.is_last
    for row in range(ids.shape[0]):
        run, previous = 0, False
        for t, token in enumerate(ids[row].tolist()):
            number = token in values_of
            run = min(run * 10 ** len(str(values_of[token])) + values_of[token], N) if number else 0
            following = t + 1 < ids.shape[1] and int(ids[row, t + 1]) in values_of
            assert (bool(is_number[row, t]), int(value[row, t])) == (number, run), (row, t)
            assert bool(is_first[row, t]) == (number and not previous), (row, t)
            assert bool(is_last[row, t]) == (number and not following), (row, t)
            previous = number
