"""The instruction set of the differentiable computer (paper §3.1–3.2, Appendix B).

This file is the single source of truth for what every instruction means. The reference interpreter
(`library/interpreter.py`), the ALU tables and closed forms (`dcomp_alu.py`), the circuits
(`dcomp_circuits.py`) and the differentiable machine (`dcomp_machine.py`) all read it. It is run-time code:
it travels with a checkpoint (`save_pretrained` copies it) and imports only torch.

Values are integers mod ``n`` (``n`` = number of values, one-hot width), or on the binary machine signed two's
complement integers of ``bits`` bits (`alu_signed`). Booleans are the numbers 0 and 1.
Assembly operands come inputs first and the output register last (`add 1 2 2` is r2 = r1 + r2).

Operand letters of `OpSpec.operands` (in assembly order):
    ``a``  first input register          ``b``  second input register
    ``o``  output register               ``i``  immediate value in [0, n)
    ``l``  line address: a label or an immediate line number in [0, n); one >= len(program) halts
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class OpSpec:
    """One instruction: its name, operand signature, family and one-line meaning."""

    name: str
    operands: str
    kind: str  # "alu" (value = f(a, b)), "move" (set/copy/store), "memory" (read/write), "control", "nop"
    doc: str

    @property
    def writes_register(self) -> bool:
        return "o" in self.operands


def _bool(x):
    return x.to(torch.long) if isinstance(x, torch.Tensor) else int(x)


def _where(condition, when_true, when_false):
    """Elementwise choice on tensors, a plain one on Python values: the semantics below run on both."""
    if isinstance(condition, torch.Tensor):
        return torch.where(condition, when_true, when_false)
    return when_true if condition else when_false


# Integer semantics of the ALU ops, on Python ints (the interpreter; exact at any width) or elementwise on long
# tensors ((n, n) grids for tables). Unary ops ignore b. Division and modulo are Python's floor division and
# modulo (`-7 // 2 == -4`, `-7 % 3 == 2`), and give 0 for a divisor of 0. Results are reduced mod n only where
# the unit encoding wraps (the binary machine wraps every result to its width: `alu_signed`).
ALU_SEMANTICS: dict[str, Callable[[Any, Any, int], Any]] = {
    "inc": lambda a, b, n: (a + 1) % n,
    "dec": lambda a, b, n: (a - 1) % n,
    "add": lambda a, b, n: (a + b) % n,
    "sub": lambda a, b, n: (a - b) % n,
    "mul": lambda a, b, n: (a * b) % n,
    "div": lambda a, b, n: _where(b == 0, 0 * a * b, a // _where(b == 0, 1, b)),
    "mod": lambda a, b, n: _where(b == 0, 0 * a * b, a % _where(b == 0, 1, b)),
    "max": lambda a, b, n: _where(a < b, b, a),
    "min": lambda a, b, n: _where(b < a, b, a),
    "eq": lambda a, b, n: _bool(a == b),
    "lt": lambda a, b, n: _bool(a < b),
    "and": lambda a, b, n: _bool((a != 0) & (b != 0)),
    "or": lambda a, b, n: _bool((a != 0) | (b != 0)),
    "not": lambda a, b, n: _bool(a == 0) + 0 * b,
}

OPS: tuple[OpSpec, ...] = (
    OpSpec("halt", "", "control", "halt on reaching the line: its other lanes do not run and it costs no step"),
    OpSpec("nop", "", "nop", "do nothing (also pads the unused lanes of a parallel line)"),
    OpSpec("jump", "al", "control", "if r[a] != 0: pc = l, else pc = pc + 1"),
    OpSpec("call", "l", "control", "push pc + 1 on the return stack, pc = l"),
    OpSpec("ret", "", "control", "pc = pop of the return stack (an empty stack halts)"),
    OpSpec("store", "o", "move", "r[o] = pc (the address of this line)"),
    OpSpec("set", "io", "move", "r[o] = i"),
    OpSpec("copy", "ao", "move", "r[o] = r[a]"),
    OpSpec("read", "ao", "memory", "r[o] = M[r[a]] (0 when r[a] >= memory size)"),
    OpSpec("write", "ab", "memory", "M[r[a]] = r[b] (no effect when r[a] >= memory size)"),
    OpSpec("inc", "ao", "alu", "r[o] = (r[a] + 1) mod n"),
    OpSpec("dec", "ao", "alu", "r[o] = (r[a] - 1) mod n"),
    OpSpec("add", "abo", "alu", "r[o] = (r[a] + r[b]) mod n"),
    OpSpec("sub", "abo", "alu", "r[o] = (r[a] - r[b]) mod n"),
    OpSpec("mul", "abo", "alu", "r[o] = (r[a] * r[b]) mod n"),
    OpSpec("div", "abo", "alu", "r[o] = r[a] // r[b], and 0 when r[b] = 0"),
    OpSpec("mod", "abo", "alu", "r[o] = r[a] mod r[b], and 0 when r[b] = 0"),
    OpSpec("max", "abo", "alu", "r[o] = max(r[a], r[b])"),
    OpSpec("min", "abo", "alu", "r[o] = min(r[a], r[b])"),
    OpSpec("eq", "abo", "alu", "r[o] = 1 if r[a] == r[b] else 0"),
    OpSpec("lt", "abo", "alu", "r[o] = 1 if r[a] < r[b] else 0"),
    OpSpec("and", "abo", "alu", "r[o] = 1 if r[a] != 0 and r[b] != 0 else 0"),
    OpSpec("or", "abo", "alu", "r[o] = 1 if r[a] != 0 or r[b] != 0 else 0"),
    OpSpec("not", "ao", "alu", "r[o] = 1 if r[a] == 0 else 0"),
)

OP_NAMES: tuple[str, ...] = tuple(op.name for op in OPS)
OP_INDEX: dict[str, int] = {name: i for i, name in enumerate(OP_NAMES)}
OPS_BY_NAME: dict[str, OpSpec] = {op.name: op for op in OPS}
ALU_OPS: tuple[str, ...] = tuple(op.name for op in OPS if op.kind == "alu")
CONTROL_OPS: tuple[str, ...] = tuple(op.name for op in OPS if op.kind == "control")
UNARY_ALU_OPS: frozenset[str] = frozenset(op.name for op in OPS if op.kind == "alu" and "b" not in op.operands)

# Unary ALU ops may be written in place with one operand: `inc 3` means `inc 3 3` (the paper's listings).
assert set(ALU_SEMANTICS) == set(ALU_OPS), "every ALU op needs integer semantics"


def alu_int(op: str, a: int, b: int, n: int) -> int:
    """Exact integer result of ALU op `op` on values a, b in [0, n) (the unit encoding)."""
    return int(ALU_SEMANTICS[op](a, b, n))


def signed_range(bits: int) -> tuple[int, int]:
    """[low, high) of the signed two's complement integers of `bits` bits."""
    return -(1 << (bits - 1)), 1 << (bits - 1)


def to_signed(value: int, bits: int) -> int:
    """`value` mod 2^bits as a signed two's complement integer of `bits` bits (wraparound)."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def alu_signed(op: str, a: int, b: int, bits: int) -> int:
    """Exact result of ALU op `op` on signed `bits`-bit values (the binary encoding): the integer semantics above
    wrapped to the width, e.g. `alu_signed("div", -128, -1, 8) == -128`."""
    return to_signed(ALU_SEMANTICS[op](a, b, 1 << bits), bits)


def alu_index_table(op: str, n: int) -> torch.Tensor:
    """(n, n) long tensor T with T[a, b] = op(a, b): the index form of one slice of eq. 7's table."""
    values = torch.arange(n)
    return ALU_SEMANTICS[op](values[:, None], values[None, :], n).expand(n, n).contiguous()


# The binary encoding's widths: signed two's complement values of MIN_BITS..MAX_BITS bits.
MIN_BITS, MAX_BITS = 8, 64

# Depth of the return stack when a config or command line does not say: calls nest this deep.
DEFAULT_CALL_DEPTH = 4


def check_machine_sizes(n: int, num_registers: int, memory_size: int, call_depth: int) -> None:
    """The one rule for a machine's sizes, which the reference interpreter and the command line apply as the
    differentiable machine does: n >= 2 values; a return stack of 1 <= call_depth < num_registers registers
    (at least one data register stays); 1 <= memory_size <= n cells (addresses are values). Raises ValueError."""
    if n < 2:
        raise ValueError(f"n = {n}: need n >= 2 values")
    if not 1 <= call_depth < num_registers:
        raise ValueError(
            f"call_depth = {call_depth} must lie in [1, num_registers = {num_registers}) "
            "(the return stack is the top call_depth registers; one data register at least)"
        )
    if not 1 <= memory_size <= n:
        raise ValueError(f"memory_size = {memory_size} must lie in [1, n = {n}] (addresses are values)")
