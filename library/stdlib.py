"""The standard library of programs (`library/programs/*.asm`) and the linker that joins programs into one.

Calling convention of every standard program: inputs in r1, r2, r3 (r4, ... for extras) or in memory, the
result in r0 (the read-out register), and a final `ret`, so that a `call` reaches any of them and a
top-level run halts (`ret` on the empty return stack halts). Each file's header gives its inputs, result,
clobbered registers and step count.

Linking puts programs one after another into a single `Program` (the library the model selects from by its
entry distribution over lines):

* each program's jump and call targets are relocated by its offset; a target past its own end (which halts
  a program run alone) becomes n - 1, which halts the library too;
* a jump or call operand that names no label of its own program names another program of the library and
  is resolved to that program's entry point (`call mul`), so programs call each other by name;
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

from .assembler import assemble, assemble_file
from .program import Instruction, Program

PROGRAMS_DIR = Path(__file__).with_name("programs")

# One calculator program per ALU op, named after it: `add` is `add r1 r2 r0 | ret` (unary ops read r1 only).
CALCULATOR: tuple[str, ...] = dcomp_isa.ALU_OPS
STANDARD_PROGRAMS: tuple[str, ...] = (
    *CALCULATOR,
    "fib",
    "sum",
    "list_max",
    "sort",
    "sort_parallel",
    "sort_select",
    "gcd",
    "mul_repeated",
)

_ADDRESS_OPERAND = {op.name: op.operands.index("l") for op in dcomp_isa.OPS if "l" in op.operands}
_LAST_LINE_OPS = frozenset({"ret", "halt", "jump"})
_PROGRAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# The assembler's tokens: a lane separator, a label definition ("name:"), or any other run of non-space.
_TOKEN = re.compile(r"\||[^\s|:]*:|[^\s|:]+")


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


@dataclasses.dataclass(frozen=True)
class _Reference:
    """A jump/call operand naming another program: at (line index, lane) of the assembled program."""

    target: str
    line: int
    lane: int
    where: str  # "source:line:column", for errors


@dataclasses.dataclass(frozen=True)
class _Unit:
    """One program ready to link: assembled with its references to other programs still open."""

    name: str
    program: Program
    references: tuple[_Reference, ...]


def program_path(name: str) -> Path:
    """The `.asm` file of a standard program."""
    if name not in STANDARD_PROGRAMS:
        raise LinkError(f"unknown standard program {name!r} (standard: {', '.join(STANDARD_PROGRAMS)})")
    return PROGRAMS_DIR / f"{name}.asm"


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
    return assemble_file(program_path(name), n=n, num_registers=num_registers, call_depth=call_depth, bits=bits)


def standard_library(
    n: int = 128,
    num_registers: int = 16,
    names: Sequence[str] | None = None,
    call_depth: int = dcomp_isa.DEFAULT_CALL_DEPTH,
) -> LinkedLibrary:
    """The standard programs (all of them, or `names` in that order) linked into one library."""
    return link(STANDARD_PROGRAMS if names is None else names, n=n, num_registers=num_registers, call_depth=call_depth)


def link(
    programs: Mapping[str, str | Program] | Sequence[str],
    *,
    n: int = 128,
    num_registers: int = 16,
    call_depth: int = dcomp_isa.DEFAULT_CALL_DEPTH,
) -> LinkedLibrary:
    """Links programs into one `LinkedLibrary`, laid out in the order given.

    `programs` is a sequence of standard program names, or a mapping from name to assembly source text or an
    assembled `Program` (which cannot call other programs by name: its targets are already numbers). Source
    text may `call` (or `jump` to) any program of the library by name. Raises `LinkError` for duplicate, bad
    or unknown names, references to undefined programs, a program that may run past its end, and a library
    longer than n - 1 lines; assembly mistakes raise `AssemblyError` at their line and column."""
    if isinstance(programs, Mapping):
        items = list(programs.items())
    elif isinstance(programs, str):
        raise LinkError(f"expected a sequence of program names, got the string {programs!r}")
    else:
        names = list(programs)
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise LinkError(f"duplicate program name(s): {', '.join(duplicates)}")
        items = [(name, program_path(name)) for name in names]
    if not items:
        raise LinkError("nothing to link: no programs given")
    units = [_unit(name, item, n, num_registers, call_depth) for name, item in items]

    entry_points: dict[str, int] = {}
    total = 0
    for unit in units:
        entry_points[unit.name] = total
        total += len(unit.program)
    if total > n - 1:
        sizes = ", ".join(f"{unit.name} {len(unit.program)}" for unit in units)
        raise LinkError(f"the library has {total} lines but at most n - 1 = {n - 1} fit ({sizes})")

    lines: list[tuple[Instruction, ...]] = []
    labels: dict[str, int] = {}
    source_lines: list[int] = []
    for unit in units:
        offset = entry_points[unit.name]
        lines.extend(_relocate(unit, offset, entry_points, halt_address=n - 1))
        labels.update(_namespaced_labels(unit, offset))
        source_lines.extend(unit.program.source_lines)
    return LinkedLibrary(Program(tuple(lines), labels, "library", tuple(source_lines)), entry_points)


def _unit(name: str, item: str | Path | Program, n: int, num_registers: int, call_depth: int) -> _Unit:
    """Assembles one program of a library, leaving its references to other programs open."""
    if not isinstance(name, str) or not _PROGRAM_NAME.fullmatch(name):
        raise LinkError(f"bad program name {name!r}: a letter or '_', then letters, digits or '_'")
    if isinstance(item, Program):
        program, references = item, ()
    else:
        source_name = str(item) if isinstance(item, Path) else name
        source = item.read_text(encoding="utf-8") if isinstance(item, Path) else item
        if not isinstance(source, str):
            raise LinkError(f"{name}: expected assembly source text or a Program, got {type(source).__name__}")
        source, open_references = _open_references(source, source_name)
        program = assemble(
            source, name, n=n, num_registers=num_registers, call_depth=call_depth, source_name=source_name
        )
        references = tuple(
            _Reference(target, program.source_lines.index(line_no), lane, where)
            for target, line_no, lane, where in open_references
        )
    if not program.lines or not any(instruction.op in _LAST_LINE_OPS for instruction in program.lines[-1]):
        raise LinkError(
            f"{name}: the last line may run past the end of the program (into the next one in a library); "
            f"end it with ret, halt or a jump"
        )
    return _Unit(name, program, references)


def _open_references(source: str, source_name: str) -> tuple[str, list[tuple[str, int, int, str]]]:
    """Finds jump/call operands that name no label of this source, i.e. other programs.

    Returns the source with each of them replaced by the address 0, padded to the same width so that
    assembly errors keep their columns, and the references as (name, 1-based line, lane, location)."""
    texts = source.split("\n")
    codes = [re.split(r"[;#]", text, maxsplit=1)[0] for text in texts]
    defined = {token[:-1] for code in codes for token in _TOKEN.findall(code) if token.endswith(":")}
    references = []
    for line_no, code in enumerate(codes, start=1):
        lane, position, op = 0, 0, None  # position: index of the token in its lane, labels left out
        for match in _TOKEN.finditer(code):
            token = match.group()
            if token == "|":
                lane, position = lane + 1, 0
                continue
            if token.endswith(":"):
                continue
            if position == 0:
                op = token.lower()
            elif position - 1 == _ADDRESS_OPERAND.get(op) and _IDENTIFIER.fullmatch(token) and token not in defined:
                references.append((token, line_no, lane, f"{source_name}:{line_no}:{match.start() + 1}"))
                start, end = match.span()
                code = code[:start] + "0".ljust(end - start) + code[end:]
            position += 1
        texts[line_no - 1] = code
    return "\n".join(texts), references


def _relocate(unit: _Unit, offset: int, entry_points: dict[str, int], halt_address: int):
    """The unit's lines with every jump/call target made absolute in the library."""
    resolved = {}
    for reference in unit.references:
        if reference.target not in entry_points:
            raise LinkError(
                f"{reference.where}: undefined label or program '{reference.target}' in program {unit.name} "
                f"(linked programs: {', '.join(entry_points)})"
            )
        resolved[reference.line, reference.lane] = entry_points[reference.target]
    size = len(unit.program)
    for index, line in enumerate(unit.program.lines):
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


def _namespaced_labels(unit: _Unit, offset: int) -> dict[str, int]:
    """`P.entry` for the first line and `P.label` for each label inside program P (end labels dropped)."""
    labels = {f"{unit.name}.entry": offset}
    for label, address in unit.program.labels.items():
        if address < len(unit.program):
            key = f"{unit.name}.{label}"
            if labels.setdefault(key, offset + address) != offset + address:
                raise LinkError(f"{unit.name}: the label 'entry' is reserved for the program's first line")
    return labels
