"""Hypothesis strategies for random valid programs, shared by the assembler, interpreter and machine tests.

    from strategies import programs

    @given(programs(n=16, num_registers=8, max_lines=10, max_lanes=3))
    def test_something(program): ...

Every generated Program assembles back from `format_program(program)` with the same n, num_registers and
call_depth: at most n - 1 lines, at most one control op per line, no register written by two lanes of a line,
no lane writing a return-stack register beside a `call`/`ret`, operands in range. Programs mix arithmetic,
memory traffic, loops (backward jumps, some counting their flag register down), calls, returns and halts;
registers are drawn mostly from a few low ones so that values flow between instructions and often make
in-range memory addresses. Give them random initial registers to make the countdown loops run.
"""

from __future__ import annotations

import hypothesis.strategies as st

import dcomp_isa
from library.program import Instruction, Program

# Every op of the ISA is drawn, by kind (a new op is fuzzed without touching this file); repetition weights the
# draw towards plain data movement, memory and a few common ALU ops, so that values flow and loops count.
_EXTRA_WEIGHT = {"add": 2, "inc": 1, "sub": 1, "lt": 1, "eq": 1, "set": 2, "copy": 1, "read": 2, "write": 2}
_EXTRA_CONTROL_WEIGHT = {"jump": 2, "call": 1, "ret": 1}
DATA_OPS = tuple(
    name for op in dcomp_isa.OPS if op.kind != "control" for name in [op.name] * (1 + _EXTRA_WEIGHT.get(op.name, 0))
)
CONTROL_OPS = tuple(
    name
    for op in dcomp_isa.OPS
    if op.kind == "control"
    for name in [op.name] * (1 + _EXTRA_CONTROL_WEIGHT.get(op.name, 0))
)
_LABEL_WORDS = ("loop", "fib_loop", "body", "done", "sub_", "f", "L")
_OPS = dcomp_isa.OPS_BY_NAME


@st.composite
def _register(draw, num_registers: int, choices: list[int] | None = None) -> int:
    """A register, biased towards r0..r3 so that instructions share values."""
    if choices is not None:
        return draw(st.sampled_from(choices))
    return draw(st.one_of(st.integers(0, min(3, num_registers - 1)), st.integers(0, num_registers - 1)))


def signed_values(bits: int) -> st.SearchStrategy[int]:
    """Signed `bits`-bit integers: small ones (in-range addresses, counters), the extremes, and any."""
    low, high = dcomp_isa.signed_range(bits)
    return st.one_of(st.integers(-4, 8), st.sampled_from([low, low + 1, -1, high - 1]), st.integers(low, high - 1))


@st.composite
def _data_instruction(
    draw, n: int, num_registers: int, free_outputs: list[int], immediates: st.SearchStrategy[int] | None = None
) -> Instruction:
    """A non-control instruction whose output register (if any) is one of `free_outputs`; immediates from
    `immediates` (default: mostly small values in [0, n))."""
    op = draw(st.sampled_from(DATA_OPS))
    spec = _OPS[op]
    if spec.writes_register and not free_outputs:
        return Instruction("nop")
    fields = {}
    if "a" in spec.operands:
        fields["a"] = draw(_register(num_registers))
    if "b" in spec.operands:
        fields["b"] = draw(_register(num_registers))
    if "o" in spec.operands:
        fields["out"] = draw(_register(num_registers, free_outputs))
    if "i" in spec.operands:
        default = st.one_of(st.integers(0, min(4, n - 1)), st.integers(0, n - 1))
        fields["imm"] = draw(default if immediates is None else immediates)
    return Instruction(op, **fields)


@st.composite
def _control_instruction(draw, num_lines: int, address: int, num_registers: int) -> Instruction:
    """A control op with its operands; targets mostly inside the program (backward jumps make loops),
    sometimes just past its end (which halts)."""
    op = draw(st.sampled_from(CONTROL_OPS))
    fields = {}
    for letter in _OPS[op].operands:
        if letter == "l":
            fields["imm"] = draw(st.one_of(st.integers(0, address), st.integers(0, num_lines)))
        else:
            fields[{"a": "a", "b": "b"}[letter]] = draw(_register(num_registers))
    return Instruction(op, **fields)


@st.composite
def _line(
    draw, n: int, num_registers: int, num_lines: int, address: int, max_lanes: int, call_depth: int, immediates=None
):
    lanes = draw(st.integers(1, max_lanes))
    control = draw(_control_instruction(num_lines, address, num_registers)) if draw(st.booleans()) else None
    free_outputs = list(range(num_registers))
    if control is not None and control.op in ("call", "ret"):
        free_outputs = free_outputs[: num_registers - call_depth]
    instructions = []
    if control is not None and control.op == "jump" and lanes > 1 and draw(st.booleans()):
        # A countdown loop: the jump reads its flag from before the line, so it falls through once the flag
        # register has counted down to 0 (unless another line rewrites it).
        instructions.append(Instruction("dec", a=control.a, out=control.a))
        free_outputs.remove(control.a)
        lanes -= 1
    for _ in range(lanes - (control is not None)):
        instruction = draw(_data_instruction(n, num_registers, free_outputs, immediates))
        if _OPS[instruction.op].writes_register:
            free_outputs.remove(instruction.out)
        instructions.append(instruction)
    if control is not None:
        instructions.insert(draw(st.integers(0, len(instructions))), control)
    return tuple(instructions)


@st.composite
def programs(
    draw,
    n: int = 16,
    num_registers: int = 8,
    max_lines: int = 10,
    max_lanes: int = 3,
    call_depth: int = dcomp_isa.DEFAULT_CALL_DEPTH,
    immediates: st.SearchStrategy[int] | None = None,
) -> Program:
    """Random valid Programs of 1..min(max_lines, n - 1) lines with 1..max_lanes lanes each, plus labels;
    `immediates` draws the `set` values (e.g. `signed_values(bits)` for the binary machine)."""
    if not 1 <= call_depth <= num_registers:
        raise ValueError(f"call_depth = {call_depth} must lie in [1, num_registers = {num_registers}]")
    num_lines = draw(st.integers(1, min(max_lines, n - 1)))
    lines = tuple(
        draw(_line(n, num_registers, num_lines, address, max_lanes, call_depth, immediates))
        for address in range(num_lines)
    )
    # Labels may also name the address just past the last line (a jump there halts).
    addresses = draw(st.lists(st.integers(0, num_lines), max_size=3))
    labels = {f"{draw(st.sampled_from(_LABEL_WORDS))}{i}": address for i, address in enumerate(addresses)}
    return Program(lines, labels, name="random")


def run_through_overflow(program: Program, **kwargs):
    """`run_reference`, returning the execution up to a return-stack overflow instead of raising it (random
    programs nest calls deeper than the stack)."""
    from library.interpreter import ReturnStackOverflow, run_reference

    try:
        return run_reference(program, **kwargs)
    except ReturnStackOverflow as overflow:
        return overflow.execution
