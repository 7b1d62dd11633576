"""Plain data classes for assembled programs (compile time).

A `Program` is a list of lines; each line holds one or more `Instruction`s that run in parallel lanes
(`add 1 2 3 | sub 4 5 6`). Operand fields an op does not use are 0.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field


class SourceError(ValueError):
    """A mistake in a source file, located at a 1-based `line` and `column` of `source_name` (0 when the input
    is not text at all). The assembler's `AssemblyError` and the Python front end's `CompileError`."""

    def __init__(self, message: str, *, line: int, column: int, source_name: str):
        self.message = message
        self.line = line
        self.column = column
        self.source_name = source_name
        super().__init__(f"{source_name}:{line}:{column}: {message}")

    def __reduce__(self):
        # Keyword-only fields: pickle (multiprocessing, pytest-xdist) needs to be told how to rebuild.
        rebuild = functools.partial(type(self), line=self.line, column=self.column, source_name=self.source_name)
        return rebuild, (self.message,)


@dataclass(frozen=True)
class Instruction:
    """One instruction. `a`, `b`: input registers; `out`: output register; `imm`: immediate value or line
    address (jump/call target, set value). Unused fields are 0."""

    op: str
    a: int = 0
    b: int = 0
    out: int = 0
    imm: int = 0


@dataclass(frozen=True)
class Symbol:
    """A jump/call operand that names no label of its own source: left for the linker to resolve (another
    program's entry point). It sits at lane `lane` of line `line`; `where` is its `source:line:column`."""

    name: str
    line: int
    lane: int
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class Program:
    """An assembled program: `lines[i]` is the tuple of instructions (lanes) at address i.

    `labels` maps label names to line addresses; `source_lines[i]` is the 1-based source line that line i
    came from (for error messages and decompiled listings); `symbols` are the operands still to be resolved by
    the linker (their `imm` is 0 until then). Equality compares the code (lines, labels and symbols), not the
    name or the source positions."""

    lines: tuple[tuple[Instruction, ...], ...]
    labels: dict[str, int] = field(default_factory=dict)
    name: str = field(default="program", compare=False)
    source_lines: tuple[int, ...] = field(default=(), compare=False)
    symbols: tuple[Symbol, ...] = ()

    @property
    def lanes(self) -> int:
        return max((len(line) for line in self.lines), default=1)

    def __len__(self) -> int:
        return len(self.lines)
