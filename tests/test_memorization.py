"""Neural compilation by memorization (eq. 10): a controller learns to emit a program exactly."""

from __future__ import annotations

import pytest
import torch
from listings import PAPER_FIBONACCI

from dcomp_machine import RegisterMachine, one_hot_values
from library.assembler import assemble
from library.compiler import compile_program, decode
from library.interpreter import run_reference
from library.memorization import ProgramController, decompiles_to, least_confidence, memorize

N, REGISTERS, MEMORY = 16, 8, 8
PROGRAMS = {
    # The paper's Fibonacci listing (§3.2), with the loop counter in r4.
    "fibonacci": PAPER_FIBONACCI,
    # The paper's calculator line (Appendix E): M[r2] = M[r0] + (r0 + 1).
    "calculator": """
        read 0 1
        inc  0
        add  0 1 2
        write 2 3
    """,
    "parallel": """
        min 1 2 1 | max 1 2 2
        sub 2 1 3
        jump 3 end
        set 9 r3
    end:
        halt
    """,
}
REGISTERS_IN = {1: 3, 2: 1, 4: 0}  # r4 = 0: Fibonacci's loop runs once
MEMORY_IN = [2, 7, 1, 4, 0, 0, 5, 6]


def _program(name: str):
    return assemble(PROGRAMS[name], name)


def _machine_matches_reference(tensors, program, steps: int = 12) -> bool:
    """Runs `tensors` on the differentiable machine; the decoded final state equals the interpreter's."""
    machine = RegisterMachine(N, REGISTERS, MEMORY)
    inputs = {r: one_hot_values(torch.tensor([v]), N) for r, v in REGISTERS_IN.items()}
    state = machine.initial_state(1, tensors.lines, inputs=inputs, memory=one_hot_values(torch.tensor([MEMORY_IN]), N))
    final = machine.run(tensors, state, max_steps=steps).state.decode()
    expected = run_reference(
        program,
        n=N,
        num_registers=REGISTERS,
        memory_size=MEMORY,
        registers=REGISTERS_IN,
        memory=MEMORY_IN,
        max_steps=steps,
    ).state
    return (final["registers"][0].tolist(), final["memory"][0].tolist()) == (
        list(expected.registers),
        list(expected.memory),
    )


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_memorized_program_decompiles_exactly_and_runs(name):
    program = _program(name)
    result = memorize(program, n=N, num_registers=REGISTERS, max_steps=300)
    assert result.steps_to_exact is not None and result.steps_to_exact == len(result.losses)
    with torch.no_grad():
        tensors = result.controller()
        assert decompiles_to(tensors, program)
        decoded = decode(tensors)
    assert _machine_matches_reference(compile_program(decoded, n=N, num_registers=REGISTERS), program)


def test_confident_controller_runs_on_the_machine_directly():
    """Trained on past exactness until every choice has p ≥ 0.99, ϱ itself runs the program."""
    program = _program("fibonacci")
    result = memorize(program, n=N, num_registers=REGISTERS, max_steps=1000, confidence=0.99)
    assert result.steps_to_confident is not None and result.steps_to_confident >= result.steps_to_exact
    with torch.no_grad():
        tensors = result.controller()
    assert least_confidence(tensors, compile_program(program, n=N, num_registers=REGISTERS)) >= 0.99
    assert _machine_matches_reference(tensors, program)


def test_memorization_is_seeded():
    program = _program("calculator")
    first, second = (memorize(program, n=N, num_registers=REGISTERS, seed=3, max_steps=200) for _ in range(2))
    assert first.losses == second.losses and first.steps_to_exact == second.steps_to_exact


def test_decompiles_to_rejects_another_program():
    program = _program("calculator")
    other = compile_program(
        assemble("read 0 1\ninc 0\nsub 0 1 2\nwrite 2 3", n=N, num_registers=REGISTERS), n=N, num_registers=REGISTERS
    )
    assert not decompiles_to(other, program)
    assert decompiles_to(compile_program(program, n=N, num_registers=REGISTERS), program)


def test_controller_shapes_and_contextual_programs():
    controller = ProgramController(5, 2, n=N, num_registers=REGISTERS, hidden=16, context=3)
    tensors = controller(torch.randn(4, 3))  # one program per context
    assert tensors.op.shape[:3] == (4, 5, 2) and tensors.imm.shape == (4, 5, 2, N)
    for field in (tensors.op, tensors.a, tensors.b, tensors.out, tensors.imm):
        assert torch.allclose(field.sum(-1), torch.ones(()))
    assert not torch.allclose(tensors.op[0], tensors.op[1])
    assert ProgramController(5, 1, n=N, num_registers=REGISTERS)().a.shape == (5, 1, REGISTERS)
