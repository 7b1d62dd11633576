"""The standard library of programs and the linker that joins programs into one.

The standard programs are the calculator, one program per ALU op generated from the ISA table
(`calculator_source`: a new ALU op in dcomp_isa is a new standard program), and the hand-written
`library/programs/*.asm`.

Calling convention of every standard program: inputs in r1, r2, r3 (r4, ... for extras) or in memory, the
result in r0 (the read-out register), and a final `ret`, so that a `call` reaches any of them and a
top-level run halts (`ret` on the empty return stack halts). Each file's header gives its inputs, result,
clobbered registers and step count.

Linking puts programs one after another into a single `Program` (the library the model selects from by its
entry distribution over lines):

* each program's jump and call targets are relocated by its offset; a target past its own end (which halts
  a program run alone) becomes n - 1, which halts the library too;
* a jump or call operand that names no label of its own program names another program of the library: the
  assembler leaves it as a `Symbol`, resolved here to that program's entry point (`call mul`), so programs
  call each other by name;
* the labels of program P become `P.label`, and `P.entry` names its first line.

A program must not run past its last line (in a library that would run into the next program): its last
line holds `ret`, `halt` or a jump that is taken there, as in every standard program.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

import dcomp_isa

from .assembler import assemble, decode_source
from .program import Instruction, Program

PROGRAMS_DIR = Path(__file__).with_name("programs")

# One calculator program per ALU op, named after it: `add` is `add r1 r2 r0 | ret` (unary ops read r1 only).
CALCULATOR: tuple[str, ...] = dcomp_isa.ALU_OPS
# The hand-written programs, one `library/programs/<name>.asm` each.
WRITTEN: tuple[str, ...] = (
    "fib",
    "sum",
    "list_max",
    "list_maximum",
    "list_minimum",
    "sort",
    "sort_parallel",
    "sort_select",
    "gcd",
    "mul_repeated",
)
STANDARD_PROGRAMS: tuple[str, ...] = (*CALCULATOR, *WRITTEN)
# Hand-written programs that need more registers than the standard library's 16 (`sort_oddeven`: 38 data
# registers): not linked into `standard_library()`, installed by name (`standard_source`) into a machine that has
# them (train.py's list task gives it 42).
WIDE_WRITTEN: tuple[str, ...] = ("sort_oddeven",)

_ADDRESS_OPERAND = {op.name: op.operands.index("l") for op in dcomp_isa.OPS if "l" in op.operands}
_LAST_LINE_OPS = frozenset({"ret", "halt", "jump"})
_PROGRAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The calculator's registers for the ISA's operand names: inputs r1, r2, result r0.
_CALCULATOR_REGISTERS = {"r[a]": "r1", "r[b]": "r2", "r[o]": "r0"}


class LinkError(ValueError):
    """A set of programs that cannot be linked; the message names the program (and source line, if any)."""


@dataclasses.dataclass(frozen=True)
class LinkedLibrary:
    """Programs linked into one: `program` holds them all, `entry_points[name]` is the first line of each."""

    program: Program
    entry_points: dict[str, int]

    @property
    def names(self) -> tuple[str, ...]:
        """The programs, in the order they were linked."""
        return tuple(self.entry_points)

    def entry_distribution(self, selection: str | Mapping[str, float], dtype=torch.float32) -> torch.Tensor:
        """`(lines,)` distribution over start lines: one-hot at the entry of program `selection`, or the
        mixture `{name: probability}` (probabilities summing to 1) over several programs' entries."""
        weights = {selection: 1.0} if isinstance(selection, str) else dict(selection)
        unknown = sorted(set(weights) - set(self.entry_points))
        if unknown:
            raise KeyError(f"no program {', '.join(map(repr, unknown))} in the library (has: {', '.join(self.names)})")
        if any(w < 0 for w in weights.values()) or abs(sum(weights.values()) - 1) > 1e-6:
            raise ValueError(f"entry probabilities must be non-negative and sum to 1, got {weights}")
        distribution = torch.zeros(len(self.program), dtype=dtype)
        for name, weight in weights.items():
            distribution[self.entry_points[name]] += weight
        return distribution


def unique_names(names: Sequence[str]) -> list[str]:
    """`names` as a list; LinkError naming any that occur twice."""
    names = list(names)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise LinkError(f"duplicate program name(s): {', '.join(duplicates)}")
    return names


def calculator_source(op: str) -> str:
    """The calculator program of ALU op `op`, generated from its ISA entry: `op r1 r2 r0 | ret` (unary: r1)."""
    spec = dcomp_isa.OPS_BY_NAME[op]
    if spec.kind != "alu":
        raise LinkError(f"no calculator program for {op!r}: not an ALU op ({', '.join(CALCULATOR)})")
    meaning = spec.doc
    for operand, register in _CALCULATOR_REGISTERS.items():
        meaning = meaning.replace(operand, register)
    inputs = ["r1", "r2"] if "b" in spec.operands else ["r1"]
    plural = "inputs" if len(inputs) > 1 else "input"
    return (
        f"; {op}: calculator, {meaning}.\n"
        ";\n"
        f"; Calling convention: {plural} {', '.join(inputs)}; result r0; no other register or memory cell is written.\n"
        "; Steps: 1 (the `ret` runs in a parallel lane of the same line).\n"
        f"    {op} {' '.join(inputs)} r0 | ret\n"
    )


def program_path(name: str) -> Path:
    """The `.asm` file of a hand-written standard program."""
    if name not in WRITTEN + WIDE_WRITTEN:
        raise LinkError(
            f"no file for {name!r}: the hand-written standard programs are {', '.join(WRITTEN + WIDE_WRITTEN)}"
        )
    return PROGRAMS_DIR / f"{name}.asm"


def standard_source(name: str) -> tuple[str, str]:
    """The assembly source of a standard program and the name its errors give: the file, or the ISA table."""
    if name in CALCULATOR:
        return calculator_source(name), f"<calculator {name}, generated from dcomp_isa>"
    if name not in STANDARD_PROGRAMS and name not in WIDE_WRITTEN:
        raise LinkError(f"unknown standard program {name!r} (standard: {', '.join(STANDARD_PROGRAMS)})")
    path = program_path(name)
    return decode_source(path.read_bytes(), str(path)), str(path)


def load_program(
    name: str,
    *,
    n: int = 128,
    num_registers: int = 16,
    call_depth: int = dcomp_isa.DEFAULT_CALL_DEPTH,
    bits: int | None = None,
) -> Program:
    """A standard program assembled on its own (entry at line 0), e.g. `load_program("fib", n=128)`; `bits`
    assembles it for the binary machine (signed immediates of that many bits)."""
    source, source_name = standard_source(name)
    return assemble(
        source, name, n=n, num_registers=num_registers, call_depth=call_depth, source_name=source_name, bits=bits
    )


def standard_library(
    n: int = 128,
    num_registers: int = 16,
    names: Sequence[str] | None = None,
    call_depth: int = dcomp_isa.DEFAULT_CALL_DEPTH,
) -> LinkedLibrary:
    """The standard programs (all of them, or `names` in that order) linked into one library."""
    return link(STANDARD_PROGRAMS if names is None else names, n=n, num_registers=num_registers, call_depth=call_depth)


def link(
    programs: Mapping[str, str | tuple[str, str] | Program] | Sequence[str],
    *,
    n: int = 128,
    num_registers: int = 16,
    call_depth: int = dcomp_isa.DEFAULT_CALL_DEPTH,
    bits: int | None = None,
) -> LinkedLibrary:
    """Links programs into one `LinkedLibrary`, laid out in the order given (for the binary machine with `bits`:
    signed immediates, and line addresses below 2^(bits−1) instead of n).

    `programs` is a sequence of standard program names, or a mapping from name to assembly source text (or
    `(text, name its errors give)`, as `standard_source` returns) or an assembled `Program`. A jump/call target
    naming no label of its own source names another program of the library (the assembler leaves it as a
    `Symbol`). Raises `LinkError` for duplicate, bad or unknown names, references to undefined programs, a
    program that may run past its end, and a library longer than n - 1 lines; assembly mistakes raise
    `AssemblyError` at their line and column."""
    if isinstance(programs, Mapping):
        items = list(programs.items())
    elif isinstance(programs, str):
        raise LinkError(f"expected a sequence of program names, got the string {programs!r}")
    else:
        items = [(name, standard_source(name)) for name in unique_names(programs)]
    if not items:
        raise LinkError("nothing to link: no programs given")
    units = [_unit(name, item, n, num_registers, call_depth, bits) for name, item in items]
    n = n if bits is None else 2 ** (bits - 1)  # line addresses are non-negative values

    entry_points: dict[str, int] = {}
    total = 0
    for unit in units:
        entry_points[unit.name] = total
        total += len(unit)
    if total > n - 1:
        sizes = ", ".join(f"{unit.name} {len(unit)}" for unit in units)
        raise LinkError(f"the library has {total} lines but at most n - 1 = {n - 1} fit ({sizes})")

    lines: list[tuple[Instruction, ...]] = []
    labels: dict[str, int] = {}
    source_lines: list[int] = []
    for unit in units:
        offset = entry_points[unit.name]
        lines.extend(_relocate(unit, offset, entry_points, halt_address=n - 1))
        labels.update(_namespaced_labels(unit, offset))
        source_lines.extend(unit.source_lines)
    return LinkedLibrary(Program(tuple(lines), labels, "library", tuple(source_lines)), entry_points)


def _unit(
    name: str, item: str | tuple[str, str] | Program, n: int, num_registers: int, call_depth: int, bits: int | None
) -> Program:
    """Assembles one program of a library (source text, or (source, source name)), leaving its references to
    other programs as the Program's `symbols`."""
    if not isinstance(name, str) or not _PROGRAM_NAME.fullmatch(name):
        raise LinkError(f"bad program name {name!r}: a letter or '_', then letters, digits or '_'")
    if isinstance(item, Program):
        program = item
    else:
        source, source_name = item if isinstance(item, tuple) else (item, name)
        if not isinstance(source, str):
            raise LinkError(f"{name}: expected assembly source text or a Program, got {type(source).__name__}")
        program = assemble(
            source,
            name,
            n=n,
            num_registers=num_registers,
            call_depth=call_depth,
            source_name=source_name,
            allow_undefined=True,
            bits=bits,
        )
    if not program.lines or not any(instruction.op in _LAST_LINE_OPS for instruction in program.lines[-1]):
        raise LinkError(
            f"{name}: the last line may run past the end of the program (into the next one in a library); "
            f"end it with ret, halt or a jump"
        )
    return dataclasses.replace(program, name=name)


def _relocate(unit: Program, offset: int, entry_points: dict[str, int], halt_address: int):
    """The unit's lines with every jump/call target made absolute in the library."""
    resolved = {}
    for symbol in unit.symbols:
        if symbol.name not in entry_points:
            raise LinkError(
                f"{symbol.where}: undefined label or program '{symbol.name}' in program {unit.name} "
                f"(linked programs: {', '.join(entry_points)})"
            )
        resolved[symbol.line, symbol.lane] = entry_points[symbol.name]
    size = len(unit)
    for index, line in enumerate(unit.lines):
        relocated = []
        for lane, instruction in enumerate(line):
            if instruction.op in _ADDRESS_OPERAND:
                if (index, lane) in resolved:
                    target = resolved[index, lane]
                else:
                    target = instruction.imm + offset if instruction.imm < size else halt_address
                instruction = dataclasses.replace(instruction, imm=target)
            relocated.append(instruction)
        yield tuple(relocated)


def _namespaced_labels(unit: Program, offset: int) -> dict[str, int]:
    """`P.entry` for the first line and `P.label` for each label inside program P (end labels dropped)."""
    labels = {f"{unit.name}.entry": offset}
    for label, address in unit.labels.items():
        if address < len(unit):
            key = f"{unit.name}.{label}"
            if labels.setdefault(key, offset + address) != offset + address:
                raise LinkError(f"{unit.name}: the label 'entry' is reserved for the program's first line")
    return labels
