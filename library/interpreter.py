"""Exact reference interpreter: runs a `Program` on plain Python integers. It is the oracle that the
differentiable machine (`dcomp_machine.py`) must match step for step on one-hot programs and inputs.

Semantics (dcomp_isa.py, docs/ARCHITECTURE.md, docs/ISA.md):

* Registers and memory cells hold values in [0, n), initially 0, except the return-stack registers (the top
  `call_depth` registers, r[num_registers - 1] is the top of the stack), which hold n - 1 ("no caller").
* One step executes one line. Its lanes all read the state from before the line; their register and memory
  writes apply in lane order (a later lane wins). The line's `call`/`ret` then acts on the return stack as
  the lane writes left it (the assembler rejects lines where a lane writes a return-stack register beside a
  `call`/`ret`, so assembled programs never depend on this order).
* The machine halts on reaching a line that holds `halt` (the line does nothing else and is not counted as a
  step), on running past the last line, and on a jump, call or return to an address >= len(program) (which
  includes `ret` on an empty stack: it pops n - 1). `steps` counts the lines executed.
* A `call` whose push would drop a caller (the bottom return-stack register holds something other than "no
  caller") overflows: the line's lanes have run, the stack is left as it was and `ReturnStackOverflow` is
  raised, carrying the execution up to that point (its last state has `overflowed` set).
* With `bits`, values are signed two's complement integers of that many bits (the binary machine): every
  result wraps (`dcomp_isa.alu_signed`), "no caller" is -1, and a negative address reads 0 / writes nothing /
  halts like one past the end.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import dcomp_isa

from .program import Program

_OPS = dcomp_isa.OPS_BY_NAME
_CONTROL_OPS = frozenset(dcomp_isa.CONTROL_OPS)


@dataclass(frozen=True)
class ReferenceState:
    """The machine state between steps. `pc == len(program)` once halted."""

    registers: tuple[int, ...]
    memory: tuple[int, ...]
    pc: int
    halted: bool
    overflowed: bool = False


@dataclass(frozen=True)
class Execution:
    """A finished run: the final `state`, `trace[t]` = the state before step t (then the final state, so
    `len(trace) == steps + 1`), the number of `steps` executed and whether the program `halted` (False when
    it was cut off at `max_steps`)."""

    state: ReferenceState
    trace: list[ReferenceState]
    steps: int
    halted: bool


class ReturnStackOverflow(ValueError):
    """A `call` nested deeper than the return stack; `execution` is the run up to and including that line."""

    def __init__(self, message: str, execution: Execution):
        super().__init__(message)
        self.execution = execution


@functools.cache
def _alu_table(op: str, n: int) -> tuple[tuple[int, ...], ...]:
    """table[a][b] = op(a, b) as nested tuples: dcomp_isa's semantics, indexed without building tensors."""
    return tuple(map(tuple, dcomp_isa.alu_index_table(op, n).tolist()))


def _check_value(what: str, value, n: int, low: int = 0) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {type(value).__name__}") from None
    if not low <= value < n:
        raise ValueError(f"{what} = {value} out of range [{low}, {n})")
    return value


def _check_program(program: Program, n: int, num_registers: int, low: int = 0) -> None:
    if not isinstance(program, Program):
        raise ValueError(f"expected a Program, got {type(program).__name__}")
    if len(program) > n - 1:
        raise ValueError(
            f"program {program.name!r} has {len(program)} lines; at most n - 1 = {n - 1} fit "
            f"(line addresses are values and n - 1 means 'no caller')"
        )
    for address, line in enumerate(program.lines):
        where = f"program {program.name!r} line {address}"
        if sum(instruction.op in _CONTROL_OPS for instruction in line) > 1:
            raise ValueError(f"{where}: more than one control instruction in one line")
        for instruction in line:
            if instruction.op not in _OPS:
                raise ValueError(f"{where}: unknown op {instruction.op!r}")
            for field in ("a", "b", "out"):
                _check_value(f"{where}: {instruction.op} register {field}", getattr(instruction, field), num_registers)
            imm_low = low if _OPS[instruction.op].operands.count("i") else 0  # line addresses are non-negative
            _check_value(f"{where}: {instruction.op} imm", instruction.imm, n, imm_low)


def run_reference(
    program: Program,
    *,
    n: int = 128,
    num_registers: int = 16,
    memory_size: int | None = None,
    call_depth: int = dcomp_isa.DEFAULT_CALL_DEPTH,
    registers: dict[int, int] | list[int] | None = None,
    memory: list[int] | None = None,
    max_steps: int = 1000,
    entry: int = 0,
    bits: int | None = None,
) -> Execution:
    """Runs `program` from line `entry` until it halts or has executed `max_steps` steps.

    `registers` overrides initial register values (a dict {index: value}, or a list for r0, r1, ...);
    `memory` overrides the first cells. Every value must lie in [0, n), or with `bits` (signed values of that
    many bits, the binary machine; `n` is then ignored) in [-2^(bits-1), 2^(bits-1)). `memory_size` defaults to
    32 cells (n if fewer); the sizes follow the differentiable machine's rule, `dcomp_isa.check_machine_sizes`.
    Raises `ReturnStackOverflow` when calls nest deeper than `call_depth`."""
    if bits is not None:
        if not dcomp_isa.MIN_BITS <= bits <= dcomp_isa.MAX_BITS:
            raise ValueError(f"bits = {bits} must lie in [{dcomp_isa.MIN_BITS}, {dcomp_isa.MAX_BITS}]")
        low, n = dcomp_isa.signed_range(bits)
    else:
        low = 0
    if max_steps < 0:
        raise ValueError(f"need max_steps >= 0, got {max_steps}")
    memory_size = min(32, n) if memory_size is None else memory_size  # the default: 32 cells, or n if fewer
    dcomp_isa.check_machine_sizes(n, num_registers, memory_size, call_depth)
    _check_program(program, n, num_registers, low)
    entry = _check_value("entry", entry, n)

    stack_base, top = num_registers - call_depth, num_registers - 1
    empty = n - 1 if bits is None else -1  # "no caller"
    regs = [0] * stack_base + [empty] * call_depth
    if registers is not None:
        items = registers.items() if isinstance(registers, dict) else enumerate(registers)
        for index, value in items:
            index = _check_value("register index", index, num_registers)
            regs[index] = _check_value(f"initial r{index}", value, n, low)
    mem = [0] * memory_size
    if memory is not None:
        if len(memory) > memory_size:
            raise ValueError(f"memory has {len(memory)} cells, more than memory_size = {memory_size}")
        for address, value in enumerate(memory):
            mem[address] = _check_value(f"initial M[{address}]", value, n, low)

    lines = program.lines
    used_ops = {instruction.op for line in lines for instruction in line}
    if bits is None:
        tables = {op: _alu_table(op, n) for op in used_ops if op in dcomp_isa.ALU_OPS}

        def alu(op, a, b):
            return tables[op][a][b]
    else:

        def alu(op, a, b):
            return dcomp_isa.alu_signed(op, a, b, bits)

    halt_lines = [any(instruction.op == "halt" for instruction in line) for line in lines]
    pc, steps, halted = entry, 0, False
    if pc >= len(lines):
        pc, halted = len(lines), True
    trace = []
    while not halted:
        if halt_lines[pc]:  # halting costs no step, so it happens even at the step limit
            pc, halted = len(lines), True
            break
        if steps == max_steps:
            break
        old_regs, old_mem = tuple(regs), tuple(mem)  # every lane reads the state from before the line
        trace.append(ReferenceState(old_regs, old_mem, pc, False))
        next_pc = pc + 1
        line = lines[pc]
        for instruction in line:
            op, a, b, out = instruction.op, instruction.a, instruction.b, instruction.out
            if op in dcomp_isa.ALU_OPS:
                regs[out] = alu(op, old_regs[a], old_regs[b])
            elif op == "set":
                regs[out] = instruction.imm
            elif op == "copy":
                regs[out] = old_regs[a]
            elif op == "store":
                regs[out] = pc
            elif op == "read":
                regs[out] = old_mem[old_regs[a]] if 0 <= old_regs[a] < memory_size else 0
            elif op == "write":
                if 0 <= old_regs[a] < memory_size:
                    mem[old_regs[a]] = old_regs[b]
            elif op == "jump":
                if old_regs[a] != 0:
                    next_pc = instruction.imm
        # The return stack moves after the lane writes (ARCHITECTURE.md step 6 follows step 4).
        for instruction in line:
            if instruction.op == "call":
                if regs[stack_base] != empty:
                    trace.append(ReferenceState(tuple(regs), tuple(mem), pc, False, overflowed=True))
                    message = (
                        f"return stack overflow: program {program.name!r} line {pc} calls deeper than "
                        f"call_depth = {call_depth} (after {steps} steps)"
                    )
                    raise ReturnStackOverflow(message, Execution(trace[-1], trace, steps + 1, False))
                regs[stack_base:top] = regs[stack_base + 1 : top + 1]
                regs[top] = pc + 1
                next_pc = instruction.imm
            elif instruction.op == "ret":
                next_pc = regs[top]
                regs[stack_base + 1 : top + 1] = regs[stack_base:top]
                regs[stack_base] = empty
        steps += 1
        pc = next_pc
        if not 0 <= pc < len(lines):
            pc, halted = len(lines), True

    state = ReferenceState(tuple(regs), tuple(mem), pc, halted)
    trace.append(state)
    return Execution(state, trace, steps, halted)
