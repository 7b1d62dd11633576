"""The compile pipeline (library/compiling.py): names or sources → linked program → tensors + entry lines, and
select → run (modeling_llama_dcomp.run_selected) against the reference interpreter."""

from __future__ import annotations

import pytest
import torch

from dcomp_machine import RegisterMachine, one_hot_values
from library.compiler import compile_program
from library.compiling import compile_file, compile_library
from library.interpreter import run_reference
from library.stdlib import LinkError, link, standard_source
from modeling_llama_dcomp import run_selected

N, REGISTERS, DEPTH = 32, 8, 2
DOUBLE = "; double: r0 = 2 r1\n    add r1 r1 r0 | ret\n"


def test_names_and_sources_compile_to_the_linked_program():
    compiled = compile_library(
        ["add", "double", "fib"], n=N, num_registers=REGISTERS, call_depth=DEPTH, sources={"double": DOUBLE}
    )
    sources = {"add": standard_source("add"), "double": DOUBLE, "fib": standard_source("fib")}
    linked = link(sources, n=N, num_registers=REGISTERS, call_depth=DEPTH)
    assert compiled.names == ("add", "double", "fib") and compiled.program == linked.program
    expected = compile_program(compiled.program, n=N, num_registers=REGISTERS)
    assert all(torch.equal(compiled.tensors.fields()[k], v) for k, v in expected.fields().items())
    entry_lines = compiled.entry_lines()
    assert entry_lines.shape == (3, compiled.lines) and entry_lines.argmax(-1).tolist() == [0, 1, 2]
    assert compile_library(compiled.linked, n=N, num_registers=REGISTERS).program == compiled.program
    with pytest.raises(LinkError, match="duplicate program name"):
        compile_library(["add", "add"], n=N)
    with pytest.raises(LinkError, match="unknown standard program 'nope'"):
        compile_library(["nope"], n=N)


def test_a_file_compiles_alone(tmp_path):
    path = tmp_path / "count.asm"
    path.write_text("set 3 r1\nloop: dec r1 | jump r1 loop\n")  # runs off its end: fine alone, not in a library
    compiled = compile_file(path, n=N, num_registers=REGISTERS, call_depth=DEPTH)
    assert compiled.names == ("count",) and compiled.entry_points == {"count": 0} and compiled.lines == 2


def test_select_then_run_is_the_interpreter_on_each_selected_program():
    compiled = compile_library(["add", "mul", "fib"], n=N, num_registers=REGISTERS, call_depth=DEPTH)
    machine = RegisterMachine(N, REGISTERS, 8, DEPTH)
    inputs = torch.tensor([[3, 5, 2], [4, 6, 1], [1, 1, 3]])  # r1, r2, r3 per example
    selection = torch.eye(3)  # example i runs program i
    run = run_selected(
        machine,
        compiled.tensors,
        torch.tensor(list(compiled.entry_points.values())),
        selection,
        inputs={r: one_hot_values(inputs[:, r - 1], N) for r in (1, 2, 3)},
        max_steps=64,
    )
    for i, name in enumerate(compiled.names):
        expected = run_reference(
            compiled.program,
            n=N,
            num_registers=REGISTERS,
            memory_size=8,
            call_depth=DEPTH,
            registers={r: int(inputs[i, r - 1]) for r in (1, 2, 3)},
            entry=compiled.entry_points[name],
            max_steps=64,
        )
        assert int(run.state.registers[i, 0].argmax()) == expected.state.registers[0], name
