"""The compile pipeline, named in one place (after tracr's `compiling.py`).

    assembly sources / standard program names ──assembler──▶ Programs (with unresolved symbols)
        ──linker (stdlib.link)──▶ one linked Program + entry points
        ──compiler (compile_program)──▶ one-hot ProgramTensors ϱ + entry lines

`compile_library` runs the whole path and returns a `CompiledLibrary`; `compile_file` does the same for one
assembly file run on its own (no linking: its targets past the end halt). Running a compiled library with a
selection over its programs is `modeling_llama_dcomp.run_selected`, shared with the model's computer block.
The way back is `compiler.decode` (tensors → Program) and `compiler.decompile` (→ text).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

import dcomp_isa
from dcomp_machine import ProgramTensors, one_hot_values

from .assembler import assemble_file
from .compiler import compile_program
from .program import Program
from .stdlib import LinkedLibrary, link, standard_source, unique_names


@dataclasses.dataclass(frozen=True)
class CompiledLibrary:
    """A linked library and its program tensors: `tensors` `(lines, lanes, ·)`, `linked.entry_points[name]` the
    first line of each program."""

    linked: LinkedLibrary
    tensors: ProgramTensors

    @property
    def program(self) -> Program:
        """The linked Program (what the reference interpreter runs)."""
        return self.linked.program

    @property
    def names(self) -> tuple[str, ...]:
        return self.linked.names

    @property
    def entry_points(self) -> dict[str, int]:
        return self.linked.entry_points

    @property
    def lines(self) -> int:
        return self.tensors.lines

    def entry_lines(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """`(programs, lines)`: the one-hot start line of each program, in `names` order."""
        return one_hot_values(torch.tensor(list(self.entry_points.values())), self.lines, dtype)


def compile_library(
    programs: LinkedLibrary | Sequence[str] | Mapping[str, str | Program],
    *,
    n: int = 128,
    num_registers: int = 16,
    call_depth: int = dcomp_isa.DEFAULT_CALL_DEPTH,
    sources: Mapping[str, str] | None = None,
    dtype: torch.dtype = torch.float32,
    bits: int | None = None,
) -> CompiledLibrary:
    """Sources or standard program names → linked program → `ProgramTensors`, for a machine with `n` values (or
    `bits`-bit binary values), `num_registers` registers and a return stack `call_depth` deep.

    `programs` is a `LinkedLibrary` (compiled as is), a mapping `{name: assembly source or Program}`, or a
    sequence of names, each taken from `sources` when given there and else from the standard library, linked in
    that order. Errors: `AssemblyError` (at its file, line and column), `LinkError`, ValueError."""
    if isinstance(programs, LinkedLibrary):
        linked = programs
    else:
        if not isinstance(programs, Mapping) and not isinstance(programs, str):
            extra = dict(sources or {})
            programs = {
                name: extra[name] if name in extra else standard_source(name) for name in unique_names(programs)
            }
        linked = link(programs, n=n, num_registers=num_registers, call_depth=call_depth, bits=bits)
    tensors = compile_program(linked.program, n=n, num_registers=num_registers, dtype=dtype, bits=bits)
    return CompiledLibrary(linked, tensors)


def compile_file(
    path: str | Path,
    *,
    n: int = 128,
    num_registers: int = 16,
    call_depth: int = dcomp_isa.DEFAULT_CALL_DEPTH,
    dtype: torch.dtype = torch.float32,
) -> CompiledLibrary:
    """One assembly file, assembled on its own (entry at line 0) and compiled: a library of one program named
    after the file's stem."""
    program = assemble_file(path, n=n, num_registers=num_registers, call_depth=call_depth)
    return compile_alone(program, n=n, num_registers=num_registers, dtype=dtype)


def compile_alone(
    program: Program,
    *,
    n: int = 128,
    num_registers: int = 16,
    dtype: torch.dtype = torch.float32,
    bits: int | None = None,
) -> CompiledLibrary:
    """One program, linked on its own (entry at line 0) and compiled: a library of one program (`bits`: for the
    binary machine)."""
    linked = LinkedLibrary(program, {program.name: 0})
    tensors = compile_program(program, n=n, num_registers=num_registers, dtype=dtype, bits=bits)
    return CompiledLibrary(linked, tensors)


def run_differentiable(
    tensors: ProgramTensors,
    machine,
    registers: Mapping[int, int],
    memory: Sequence[int],
    max_steps: int,
) -> dict:
    """One compiled program run on the differentiable `machine` (a `RegisterMachine`, either encoding) from the
    given register and memory values, decoded as `python -m library run` prints it: the most likely values with
    their probabilities, the steps, and whether it halted or overflowed its return stack."""
    inputs = {index: machine.encode(torch.tensor([value])) for index, value in registers.items()}
    cells = machine.encode(torch.tensor([list(memory)])) if memory else None
    state = machine.initial_state(1, tensors.lines, inputs=inputs, memory=cells)
    with torch.no_grad():
        result = machine.run(tensors, state, max_steps)
    decoded = machine.decode(result.state)
    return {
        "registers": decoded["registers"][0].tolist(),
        "memory": decoded["memory"][0].tolist(),
        "steps": result.steps,
        "halted": bool(result.state.halted[0] >= machine.halt_threshold),
        "overflow": bool(result.state.overflowed[0] >= machine.halt_threshold),
        "halt_probability": float(result.state.halted[0]),
        "overflow_probability": float(result.state.overflowed[0]),
        "register_probs": [round(p, 6) for p in decoded["register_probs"][0].tolist()],
        "memory_probs": [round(p, 6) for p in decoded["memory_probs"][0].tolist()],
    }
