"""The differentiable machine against the exact reference interpreter, step by step (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from listings import FIBONACCI_COUNTDOWN
from strategies import programs, run_through_overflow, signed_values

import dcomp_machine
from dcomp_alu import TableALU
from dcomp_circuits import CircuitALU
from dcomp_machine import MachineState, ProgramTensors, RegisterMachine, one_hot_values
from library.assembler import assemble
from library.compiler import compile_program
from library.interpreter import run_reference

N, REGISTERS, MEMORY, DEPTH = 16, 8, 6, 2


def _machine(n=N, alu=None, **kwargs) -> RegisterMachine:
    return RegisterMachine(n, REGISTERS, MEMORY, DEPTH, alu=alu, **kwargs)


def _initial(machine, lines, registers, memory, dtype=torch.float32):
    """One-hot initial state for one example from plain integer registers/memory."""
    n = machine.n
    inputs = {i: one_hot_values(torch.tensor([v]), n, dtype) for i, v in enumerate(registers)}
    cells = one_hot_values(torch.tensor([memory]), n, dtype)
    return machine.initial_state(1, lines, inputs=inputs, memory=cells, dtype=dtype)


def _assert_matches(state: MachineState, expected, where: str, machine: RegisterMachine | None = None) -> None:
    """Decoded state equals the interpreter's, every value sharp (one-hot and normalised, or bits in [0, 1] and
    0/1) within 1e-5, and pc + halted + overflowed = 1."""
    decoded = state.decode(None if machine is None else machine.values)
    for name, tensor in (("registers", state.registers), ("memory", state.memory)):
        if machine is None or machine.encoding == "unit":
            assert torch.allclose(tensor.sum(-1), torch.ones(()), atol=1e-5), f"{where}: {name} not normalised"
        else:
            assert bool(((tensor >= 0) & (tensor <= 1)).all()), f"{where}: {name} bits outside [0, 1]"
        assert decoded[name][0].tolist() == list(getattr(expected, name)), f"{where}: {name}"
        assert bool((decoded[name[:-1] + "_probs" if name == "registers" else "memory_probs"][0] > 1 - 1e-5).all())
    total = float(state.pc.sum() + state.halted.sum() + state.overflowed.sum())
    assert abs(total - 1) < 1e-5, f"{where}: pc + h + overflowed = {total}"
    assert (float(state.halted[0]) > 0.5) == expected.halted, f"{where}: halted"
    assert (float(state.overflowed[0]) > 0.5) == expected.overflowed, f"{where}: overflowed"
    if not (expected.halted or expected.overflowed):
        assert int(state.pc[0].argmax()) == expected.pc, f"{where}: pc"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    program=programs(n=N, num_registers=REGISTERS, max_lines=8, max_lanes=3, call_depth=DEPTH),
    registers=st.lists(st.integers(0, N - 1), min_size=REGISTERS - DEPTH, max_size=REGISTERS - DEPTH),
    memory=st.lists(st.integers(0, N - 1), min_size=MEMORY, max_size=MEMORY),
)
def test_every_step_equals_the_reference_interpreter(program, registers, memory):
    steps = 12
    expected = run_through_overflow(
        program,
        n=N,
        num_registers=REGISTERS,
        memory_size=MEMORY,
        call_depth=DEPTH,
        registers=dict(enumerate(registers)),
        memory=memory,
        max_steps=steps,
    )
    machine = _machine()
    tensors = compile_program(program, n=N, num_registers=REGISTERS)
    state = machine.settle(tensors, _initial(machine, len(program), registers, memory))
    # The interpreter's initial return stack holds n - 1, as the machine's does.
    _assert_matches(state, expected.trace[0], "initial state")
    for t in range(1, expected.steps + 1):
        state = machine.step(tensors, state)
        _assert_matches(state, expected.trace[t], f"after step {t}")
    run = machine.run(tensors, _initial(machine, len(program), registers, memory), steps)
    assert run.steps == expected.steps
    _assert_matches(run.state, expected.state, "after run")


def _fib(a, b, depth, n):
    for _ in range(depth):
        a, b = b, (a + b) % n
    return b


def _binary_initial(machine, lines, registers, memory):
    inputs = {i: machine.encode(torch.tensor([v])) for i, v in enumerate(registers)}
    return machine.initial_state(1, lines, inputs=inputs, memory=machine.encode(torch.tensor([memory])))


@pytest.mark.parametrize("bits", [8, 32, 64])
def test_binary_machine_equals_the_interpreter_after_every_step(bits):
    values = signed_values(bits)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        program=programs(n=N, num_registers=REGISTERS, max_lines=8, max_lanes=3, call_depth=DEPTH, immediates=values),
        registers=st.lists(values, min_size=REGISTERS - DEPTH, max_size=REGISTERS - DEPTH),
        memory=st.lists(values, min_size=MEMORY, max_size=MEMORY),
    )
    def check(program, registers, memory):
        steps = 10
        kwargs = dict(num_registers=REGISTERS, memory_size=MEMORY, call_depth=DEPTH, max_steps=steps, bits=bits)
        expected = run_through_overflow(program, registers=dict(enumerate(registers)), memory=memory, **kwargs)
        machine = RegisterMachine(None, REGISTERS, MEMORY, DEPTH, bits=bits)
        tensors = compile_program(program, num_registers=REGISTERS, bits=bits)
        state = machine.settle(tensors, _binary_initial(machine, len(program), registers, memory))
        _assert_matches(state, expected.trace[0], "initial state", machine)
        for t in range(1, expected.steps + 1):
            state = machine.step(tensors, state)
            _assert_matches(state, expected.trace[t], f"after step {t}", machine)

    check()


@pytest.mark.parametrize("bits", [None, 8, 64])
def test_return_stack_overflow_stops_the_machine_visibly(bits):
    source = "call f1\nhalt\n" + "".join(f"f{i}: call f{i + 1}\nret\n" for i in range(1, 7)) + "f7: set 1 r0\nret\n"
    n = 32 if bits is None else None
    program = assemble(source, "deep", n=n or 128, num_registers=REGISTERS, bits=bits)
    for depth, overflows in ((4, True), (7, False)):
        machine = RegisterMachine(n, REGISTERS, MEMORY, depth, bits=bits)
        tensors = compile_program(program, n=n or 128, num_registers=REGISTERS, bits=bits)
        run = machine.run(tensors, machine.initial_state(1, len(program)), max_steps=40)
        assert float(run.state.overflowed[0]) == float(overflows) and float(run.state.halted[0]) == float(not overflows)
        assert run.steps == (5 if overflows else 15)
        assert machine.decode(run.state)["registers"][0, 0] == (0 if overflows else 1)


@pytest.mark.parametrize("alu", ["table", "circuit"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batched_fibonacci_float32_bfloat16_and_both_alus(alu, dtype):
    n = 16
    program = assemble(FIBONACCI_COUNTDOWN, "fib", n=n, num_registers=REGISTERS)
    machine = _machine(n, alu=TableALU(n) if alu == "table" else CircuitALU(n))
    a, b, depth = torch.tensor([6, 1, 3, 0]), torch.tensor([2, 1, 5, 7]), torch.tensor([3, 1, 2, 4])
    inputs = {1: one_hot_values(a, n, dtype), 2: one_hot_values(b, n, dtype), 4: one_hot_values(depth, n, dtype)}
    state = machine.initial_state(4, len(program), inputs=inputs, dtype=dtype)
    run = machine.run(compile_program(program, n=n, num_registers=REGISTERS, dtype=dtype), state, max_steps=100)
    assert run.steps == 7 * int(depth.max())  # early exit once every element halted
    assert run.state.registers.dtype == dtype
    decoded = run.state.decode()
    expected = [_fib(x, y, d, n) for x, y, d in zip(a.tolist(), b.tolist(), depth.tolist())]
    assert decoded["registers"][:, 2].tolist() == expected
    assert bool((run.state.halted > 0.99).all())


def test_entry_distribution_runs_a_mixture_of_programs():
    n = 16
    source = "add_entry:\n add 1 2 0\n ret\nmul_entry:\n mul 1 2 0\n ret\n"
    program = assemble(source, "lib", n=n, num_registers=REGISTERS)
    machine = _machine(n)
    entry = torch.zeros(1, len(program))
    entry[0, program.labels["add_entry"]] = 0.3
    entry[0, program.labels["mul_entry"]] = 0.7
    inputs = {1: one_hot_values(torch.tensor([3]), n), 2: one_hot_values(torch.tensor([4]), n)}
    state = machine.initial_state(1, len(program), inputs=inputs, entry=entry)
    run = machine.run(compile_program(program, n=n, num_registers=REGISTERS), state, max_steps=10)
    out = run.state.registers[0, 0]
    assert torch.allclose(out[7], torch.tensor(0.3)) and torch.allclose(out[12], torch.tensor(0.7))
    assert torch.allclose(run.state.halted, torch.ones(1))


def test_nested_calls_return_in_order():
    n = 16
    source = """
        call f          ; depth 1
        set 9 r1
        halt
    f:  call g          ; depth 2
        inc 2 2
        ret
    g:  set 5 r2
        ret
    """
    program = assemble(source, "nested", n=n, num_registers=REGISTERS)
    expected = run_reference(program, n=n, num_registers=REGISTERS, memory_size=MEMORY, call_depth=DEPTH)
    machine = _machine(n)
    run = machine.run(
        compile_program(program, n=n, num_registers=REGISTERS), machine.initial_state(1, len(program)), max_steps=20
    )
    registers = run.state.decode()["registers"][0].tolist()
    assert registers[:3] == [0, 9, 6] and list(expected.state.registers) == registers
    assert run.steps == expected.steps == 7


def _soft(tensors: ProgramTensors, temperature: float) -> ProgramTensors:
    """A program in superposition: softmax of scaled one-hot rows plus noise."""
    generator = torch.Generator().manual_seed(0)

    def soften(t):
        return torch.softmax((t * 3 + torch.randn(t.shape, generator=generator, dtype=t.dtype)) / temperature, -1)

    return tensors.map(soften)


def test_distributions_stay_normalised_in_superposition():
    n = 16
    program = assemble(FIBONACCI_COUNTDOWN + "    call fib_loop\n    ret\n", "fib", n=n, num_registers=REGISTERS)
    machine = _machine(n)
    tensors = _soft(compile_program(program, n=n, num_registers=REGISTERS), temperature=1.0)
    generator = torch.Generator().manual_seed(1)
    inputs = {r: torch.distributions.Dirichlet(torch.ones(n)).sample((3,)) for r in (1, 2, 4)}
    memory = torch.softmax(torch.randn(3, MEMORY, n, generator=generator), -1)
    state = machine.initial_state(3, len(program), inputs=inputs, memory=memory)
    for _ in range(30):
        state = machine.step(tensors, state)
        for tensor in (state.registers, state.memory):
            assert torch.allclose(tensor.sum(-1), torch.ones(()), atol=1e-5)
            assert float(tensor.min()) > -1e-6
        assert torch.allclose(state.pc.sum(-1) + state.halted + state.overflowed, torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("alu", ["table", "circuit"])
def test_gradcheck_inputs_entry_and_program_parameters(alu):
    n = 8
    source = "start:\n add 1 2 2\n write 1 2 | mul 2 2 3\n jump 3 start\n call f\n halt\nf:\n read 1 0\n ret\n"
    program = assemble(source, "g", n=n, num_registers=REGISTERS)
    machine = _machine(n, alu=TableALU(n) if alu == "table" else CircuitALU(n))
    tensors = compile_program(program, n=n, num_registers=REGISTERS, dtype=torch.float64)

    def run(x, y, entry_logits, op_logits, imm_logits):
        program_tensors = ProgramTensors(
            torch.softmax(op_logits, -1), tensors.a, tensors.b, tensors.out, torch.softmax(imm_logits, -1)
        )
        inputs = {1: torch.softmax(x, -1), 2: torch.softmax(y, -1)}
        state = machine.initial_state(
            2, len(program), inputs=inputs, entry=torch.softmax(entry_logits, -1), dtype=torch.float64
        )
        final = machine.run(program_tensors, state, max_steps=6, halt_threshold=1.0).state
        return final.registers, final.memory, final.halted

    generator = torch.Generator().manual_seed(0)
    args = (
        torch.randn(2, n, dtype=torch.float64, generator=generator),
        torch.randn(2, n, dtype=torch.float64, generator=generator),
        torch.randn(2, len(program), dtype=torch.float64, generator=generator),
        tensors.op * 4,
        tensors.imm * 4,
    )
    args = tuple(a.clone().requires_grad_(True) for a in args)
    assert torch.autograd.gradcheck(run, args, eps=1e-6, atol=1e-5, fast_mode=True)


def test_contextual_program_with_a_batch_dimension():
    n = 16
    add = compile_program(assemble("add 1 2 0", "add", n=n, num_registers=REGISTERS), n=n, num_registers=REGISTERS)
    sub = compile_program(assemble("sub 1 2 0", "sub", n=n, num_registers=REGISTERS), n=n, num_registers=REGISTERS)
    batched = ProgramTensors(*(torch.stack([getattr(add, f), getattr(sub, f)]) for f in ProgramTensors.FIELDS))
    machine = _machine(n)
    inputs = {1: one_hot_values(torch.tensor([9, 9]), n), 2: one_hot_values(torch.tensor([4, 4]), n)}
    run = machine.run(batched, machine.initial_state(2, 1, inputs=inputs), max_steps=5)
    assert run.state.decode()["registers"][:, 0].tolist() == [13, 5]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(n=1), "n"),
        (dict(n=8, num_registers=4, call_depth=4), "call_depth"),
        (dict(n=8, memory_size=9), "memory_size"),
        (dict(n=8, halt_threshold=0.0), "halt_threshold"),
    ],
)
def test_invalid_machine_configuration_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RegisterMachine(**{"num_registers": REGISTERS, "memory_size": 4, "call_depth": 2, "alu": None, **kwargs})


def test_program_longer_than_the_value_range_is_rejected():
    machine = _machine(8)
    with pytest.raises(ValueError, match="lines"):
        machine.initial_state(1, lines=8)


# ------------------------------------------------------------------------------------------- program tensors
def test_program_tensors_save_and_load_round_trip(tmp_path):
    tensors = compile_program(assemble(FIBONACCI_COUNTDOWN, n=16, num_registers=8), n=16, num_registers=8)
    assert [t.shape[-1] for t in tensors.fields().values()] == list(ProgramTensors.widths(16, 8))
    tensors.save(tmp_path / "p.safetensors", metadata={"name": "fib"})
    loaded, metadata = ProgramTensors.load(tmp_path / "p.safetensors")
    assert metadata == {"name": "fib"} and all(torch.equal(loaded.fields()[k], v) for k, v in tensors.fields().items())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: setattr(t, "out", t.out[:-1]), "field 'out' has shape"),
        (lambda t: setattr(t, "imm", t.imm[..., :-1]), "field 'imm' has shape \\(7, 1, 15\\), expected \\(7, 1, 16\\)"),
        (lambda t: setattr(t, "op", t.op.long()), "field 'op' has dtype torch.int64"),
        (lambda t: t.a.__setitem__((0, 0, 0), float("inf")), "field 'a' holds NaN or infinite"),
        (lambda t: t.b.__setitem__((0, 0, 0), -0.5), "field 'b' holds negative"),
    ],
)
def test_program_tensors_check_names_the_field(change, message):
    tensors = compile_program(assemble(FIBONACCI_COUNTDOWN, n=16, num_registers=8), n=16, num_registers=8)
    tensors.check(16, 8)
    change(tensors)
    with pytest.raises(ValueError, match=message):
        tensors.check(16, 8)


def test_binary_bits_stay_probabilities_in_superposition():
    bits = 8
    program = assemble(FIBONACCI_COUNTDOWN + "    call fib_loop\n    ret\n", "fib", num_registers=REGISTERS, bits=bits)
    machine = RegisterMachine(None, REGISTERS, MEMORY, DEPTH, bits=bits)
    tensors = _soft(compile_program(program, num_registers=REGISTERS, bits=bits), temperature=1.0)
    tensors = ProgramTensors(tensors.op, tensors.a, tensors.b, tensors.out, torch.rand(tensors.imm.shape))
    generator = torch.Generator().manual_seed(1)
    inputs = {r: torch.rand(3, bits, generator=generator) for r in (1, 2, 4)}
    state = machine.initial_state(3, len(program), inputs=inputs, memory=torch.rand(3, MEMORY, bits))
    for _ in range(30):
        state = machine.step(tensors, state)
        for tensor in (state.registers, state.memory):
            assert float(tensor.min()) >= -1e-6 and float(tensor.max()) <= 1 + 1e-6
        assert torch.allclose(state.pc.sum(-1) + state.halted + state.overflowed, torch.ones(3), atol=1e-5)


def test_binary_gradcheck_inputs_entry_and_program_parameters():
    bits = 8
    source = (
        "start:\n add 1 2 2\n write 1 2 | mul 2 2 3\n jump 3 start\n call f\n halt\nf:\n read 1 0 | div 2 1 4\n ret\n"
    )
    program = assemble(source, "g", num_registers=REGISTERS, bits=bits)
    machine = RegisterMachine(None, REGISTERS, MEMORY, DEPTH, bits=bits)
    tensors = compile_program(program, num_registers=REGISTERS, bits=bits, dtype=torch.float64)

    def run(x, y, entry_logits, op_logits, imm_logits):
        program_tensors = ProgramTensors(
            torch.softmax(op_logits, -1), tensors.a, tensors.b, tensors.out, torch.sigmoid(imm_logits)
        )
        inputs = {1: torch.sigmoid(x), 2: torch.sigmoid(y)}
        state = machine.initial_state(
            2, len(program), inputs=inputs, entry=torch.softmax(entry_logits, -1), dtype=torch.float64
        )
        final = machine.run(program_tensors, state, max_steps=6, halt_threshold=1.0).state
        return final.registers, final.memory, final.halted, final.overflowed

    generator = torch.Generator().manual_seed(0)
    args = (
        torch.randn(2, bits, dtype=torch.float64, generator=generator),
        torch.randn(2, bits, dtype=torch.float64, generator=generator),
        torch.randn(2, len(program), dtype=torch.float64, generator=generator),
        tensors.op * 4,
        (tensors.imm - 0.5) * 4,
    )
    args = tuple(a.clone().requires_grad_(True) for a in args)
    assert torch.autograd.gradcheck(run, args, eps=1e-6, atol=1e-5, fast_mode=True)


def test_binary_machine_configuration_errors():
    with pytest.raises(ValueError, match="exactly one of n"):
        RegisterMachine(16, bits=8)
    with pytest.raises(ValueError, match="bits must be in"):
        RegisterMachine(None, bits=4)
    with pytest.raises(ValueError, match="memory_size"):
        RegisterMachine(None, memory_size=129, bits=8)
    with pytest.raises(ValueError, match="ALU"):
        RegisterMachine(None, alu=TableALU(16), bits=8)


@pytest.mark.parametrize("bits", [None, 8])
def test_checkpointed_run_has_the_same_values_and_gradients(bits):
    program = assemble(FIBONACCI_COUNTDOWN, "fib", n=N, num_registers=REGISTERS, bits=bits)
    machine = RegisterMachine(N if bits is None else None, REGISTERS, MEMORY, DEPTH, bits=bits)
    tensors = compile_program(program, n=N, num_registers=REGISTERS, bits=bits)
    logits = torch.randn(2, machine.values.width, generator=torch.Generator().manual_seed(0), requires_grad=True)
    op_logits = (tensors.op * 3).requires_grad_(True)  # a program being trained: every op is live
    results = []
    for checkpoint in (0, 1, 3):
        value = torch.softmax(logits, -1) if bits is None else torch.sigmoid(logits)
        inputs = {1: value, 2: value.flip(0), 4: machine.encode(torch.tensor([3, 2]))}
        state = machine.initial_state(2, len(program), inputs=inputs)
        soft = ProgramTensors(torch.softmax(op_logits, -1), tensors.a, tensors.b, tensors.out, tensors.imm)
        out = machine.run(soft, state, max_steps=12, checkpoint=checkpoint).state.registers
        results.append((out, *torch.autograd.grad(out.square().sum(), (logits, op_logits))))
    for checkpointed in results[1:]:
        for plain, again in zip(results[0], checkpointed):
            assert torch.allclose(plain, again, atol=1e-6)


def test_checkpointed_run_equals_the_plain_run_through_the_index_table_alu():
    """The memory-saving run (checkpointed steps) against the plain one on a small machine whose program, being
    trained, runs every op: the table ALU's index-table products (mul, div, mod), memory, call and ret."""
    n = 16
    source = (
        "start:\n mul 1 2 3\n write 3 1 | div 2 1 4\n mod 1 3 2\n read 4 5\n call f\n jump 5 start\n halt\nf:\n ret\n"
    )
    program = assemble(source, "table ops", n=n, num_registers=REGISTERS)
    machine = _machine(n, alu=TableALU(n, mode="table"))
    assert {"mul", "div", "mod"} <= set(machine.alu.table_ops)
    machine.alu.chunk_elements = 64  # several chunks per product, as at large n
    tensors = compile_program(program, n=n, num_registers=REGISTERS)
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 2, n, generator=generator, requires_grad=True)
    op_logits = (tensors.op * 4).requires_grad_(True)
    results = []
    for checkpoint in (0, 2, 5):
        values = torch.softmax(logits, -1)
        state = machine.initial_state(3, len(program), inputs={1: values[:, 0], 2: values[:, 1]})
        soft = ProgramTensors(torch.softmax(op_logits, -1), tensors.a, tensors.b, tensors.out, tensors.imm)
        final = machine.run(soft, state, max_steps=9, halt_threshold=1.0, checkpoint=checkpoint).state
        loss = final.registers.square().sum() + final.memory[:, :, 1:].sum() + final.halted.sum()
        results.append((final.registers, final.memory, *torch.autograd.grad(loss, (logits, op_logits))))
    assert results[0][2].abs().sum() > 0 and results[0][3].abs().sum() > 0
    for checkpointed in results[1:]:
        for plain, again in zip(results[0], checkpointed):
            assert torch.allclose(plain, again, atol=1e-6, rtol=1e-5)


def test_default_checkpointing_only_for_large_states_with_a_gradient(monkeypatch):
    machine = _machine()
    program = compile_program(
        assemble(FIBONACCI_COUNTDOWN, "f", n=N, num_registers=REGISTERS), n=N, num_registers=REGISTERS
    )
    chosen = []
    monkeypatch.setattr(
        RegisterMachine, "_checkpointed_steps", lambda self, p, s, count, t: (chosen.append(count), (s, count))[1]
    )
    value = torch.softmax(torch.randn(2, N), -1).requires_grad_(True)
    state = machine.initial_state(2, program.lines, inputs={1: value})
    machine.run(program, state, max_steps=4)
    assert chosen == []  # a small state: no checkpointing
    kept = (state.memory.numel() + state.registers.numel()) * 4 * machine.values.kept_per_state_value  # 4 steps
    monkeypatch.setattr("dcomp_machine.CHECKPOINT_MIN_ELEMENTS", kept * 1.01)
    machine.run(program, state, max_steps=4)
    assert chosen == []  # just below the budget
    monkeypatch.setattr("dcomp_machine.CHECKPOINT_MIN_ELEMENTS", kept)
    machine.run(program, state, max_steps=4)
    assert chosen and chosen[0] == dcomp_machine.CHECKPOINT_STEPS
    chosen.clear()
    with torch.no_grad():
        machine.run(program, state, max_steps=4)
    assert chosen == []  # nothing to recompute without a gradient


@pytest.mark.parametrize("chunk", [dcomp_machine.DOT_CHUNK_ELEMENTS, 35])
@pytest.mark.parametrize("needs", [(True, True, True, True), (False, True, False, True), (True, False, True, False)])
@pytest.mark.parametrize("written", ["all", "some", "none"])
def test_memory_write_backward_is_the_derivative(needs, written, chunk, monkeypatch):
    """`_Mix` (eq. 3–4) has a hand-written backward that skips exact zeros: gradcheck it with every row written,
    some (sparse dot products), or none (the state passes through), each input with and without a gradient, its
    row dot products in one piece and in batch chunks (35 elements: one element of the batch at a time)."""
    monkeypatch.setattr(dcomp_machine, "DOT_CHUNK_ELEMENTS", chunk)
    generator = torch.Generator().manual_seed(0)
    rows, p, address, value = (
        torch.rand(s, dtype=torch.float64, generator=generator) for s in ((3, 5, 7), (3,), (3, 5), (3, 7))
    )
    if written == "some":
        p[1], address[0, 1:] = 0, 0  # element 1 writes nothing, element 0 only row 0
    elif written == "none":
        p.zero_()
    tensors = [t.requires_grad_(need) for t, need in zip((rows, p, address, value), needs)]
    assert torch.autograd.gradcheck(dcomp_machine._Mix.apply, tensors)
    rows, p, address, value = (t.detach() for t in tensors)
    w = (p[:, None] * address)[..., None]
    assert torch.allclose(dcomp_machine._Mix.apply(rows, p, address, value), (1 - w) * rows + w * value[:, None])


@pytest.mark.parametrize("lanes", [1, 3])
@pytest.mark.parametrize("reading", [True, False])
def test_memory_read_backward_is_the_derivative(lanes, reading):
    """`_Read` (eq. 2) has a hand-written backward (outer products per lane; no memory gradient where no lane
    reads): gradcheck it with reading and with all-zero addresses."""
    generator = torch.Generator().manual_seed(lanes)
    address = torch.rand(2, lanes, 5, dtype=torch.float64, generator=generator) * reading
    memory = torch.rand(2, 5, 7, dtype=torch.float64, generator=generator)
    tensors = (address.requires_grad_(), memory.requires_grad_())
    assert torch.autograd.gradcheck(dcomp_machine._Read.apply, tensors)


def test_a_step_that_writes_no_memory_keeps_the_memory_tensor():
    """Exact zeros cost nothing: where no running line writes memory, the step returns the memory it was given
    (no new memory-sized state for autograd to keep), and where one does, a new one."""
    program = assemble(FIBONACCI_COUNTDOWN, "fib", n=N, num_registers=REGISTERS)
    tensors = compile_program(program, n=N, num_registers=REGISTERS)
    machine = _machine()
    value = torch.softmax(torch.randn(2, N), -1).requires_grad_(True)
    state = machine.initial_state(
        2, len(program), inputs={1: value, 2: value, 4: one_hot_values(torch.tensor([2, 2]), N)}
    )
    after_write = machine.step(tensors, state)  # line 0 writes
    after_add = machine.step(tensors, after_write)  # line 1 adds
    assert after_write.memory.data_ptr() != state.memory.data_ptr()
    assert after_add.memory.data_ptr() == after_write.memory.data_ptr()
    (grad,) = torch.autograd.grad(after_add.memory.sum() + after_add.registers.square().sum(), value)
    assert grad.abs().sum() > 0


def test_recomputed_keeps_only_its_inputs_and_differentiates_like_the_function():
    """`recomputed`: the same values and gradients as calling the function, a leaf the function reaches without
    its arguments (a parameter) gets its gradient too, and autograd keeps only the arguments."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    x, y = (torch.randn(3, 5, dtype=torch.float64, generator=gen, requires_grad=True) for _ in range(2))

    def fn(a, b, w):
        hidden = (a @ weight).tanh() * b.exp()  # intermediates that a plain call would keep
        return hidden @ w, hidden.sum(-1)

    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        out = dcomp_machine.recomputed(fn, x * 1, y * 1, weight)
    assert all(any(t is k for k in (x, y, weight)) or t.shape in {x.shape, weight.shape} for t in kept)
    assert len(kept) <= 3
    expected = fn(x, y, weight)
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(sum(o.square().sum() for o in out), (x, y, weight))
    want = torch.autograd.grad(sum(o.square().sum() for o in expected), (x, y, weight))
    for got, w in zip(grads, want):
        torch.testing.assert_close(got, w)
    assert torch.autograd.gradcheck(lambda a, b: dcomp_machine.recomputed(fn, a, b, weight), (x, y), fast_mode=True)
    with torch.no_grad():  # nothing to record: the plain call
        torch.testing.assert_close(dcomp_machine.recomputed(fn, x, y, weight)[0], expected[0].detach())
