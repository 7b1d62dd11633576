"""Neural compiler and decompiler: decompile(compile(p)) reproduces p; uncertain choices are annotated."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from strategies import programs, signed_values

from dcomp_isa import OP_INDEX
from library.assembler import assemble
from library.compiler import compile_program, decode, decompile
from library.program import Instruction, Program

N, REGISTERS = 32, 8


def _without_trailing_nops(line):
    """Trailing `nop` lanes are the padding of a parallel line: the compiled tensors cannot tell them apart."""
    while len(line) > 1 and line[-1].op == "nop":
        line = line[:-1]
    return line


@settings(max_examples=200, deadline=None)
@given(programs(n=N, num_registers=REGISTERS, max_lines=12, max_lanes=3))
def test_decompile_of_compile_reproduces_every_program(program):
    tensors = compile_program(program, n=N, num_registers=REGISTERS)
    for t, width in ((tensors.op, None), (tensors.a, REGISTERS), (tensors.imm, N)):
        assert torch.equal(t.sum(-1), torch.ones(t.shape[:-1])) and set(t.unique().tolist()) <= {0.0, 1.0}
        assert width is None or t.shape[-1] == width
    text = decompile(tensors, labels=program.labels)
    again = assemble(text, "again", n=N, num_registers=REGISTERS)
    assert again.lines == tuple(_without_trailing_nops(line) for line in program.lines)
    # Every label survives; targets without one get a generated `L<line>` label.
    assert program.labels.items() <= again.labels.items()


def test_the_paper_listing_round_trips_with_its_labels():
    source = "inc 2 2\nfib_loop:\n write 3 2\n add 1 2 2\n read 3 1\n write 3 2\n inc 3 3\n jump 4 fib_loop\n"
    program = assemble(source, "fib", n=128, num_registers=16)
    text = decompile(compile_program(program), labels=program.labels, name="fib")
    assert "fib_loop:" in text.splitlines() and ["jump", "r4", "fib_loop"] in [
        line.split() for line in text.splitlines()
    ]
    assert assemble(text, "fib", n=128, num_registers=16).lines == program.lines


def test_uncertain_choices_are_annotated_with_probabilities():
    program = assemble("add 1 2 3\nhalt", "p", n=16, num_registers=8)
    tensors = compile_program(program, n=16, num_registers=8)
    tensors.op[0, 0] = 0.0
    tensors.op[0, 0, OP_INDEX["add"]] = 0.8
    tensors.op[0, 0, OP_INDEX["sub"]] = 0.2
    tensors.out[0, 0] = torch.full((8,), 0.0)
    tensors.out[0, 0, 3], tensors.out[0, 0, 5] = 0.6, 0.4
    text = decompile(tensors)
    line = next(l for l in text.splitlines() if l.strip().startswith("add"))
    assert "op: add 0.80, sub 0.20" in line and "o: r3 0.60, r5 0.40" in line
    assert line.split(";")[0].split() == ["add", "r1", "r2", "r3"]


def test_compiled_program_is_too_long_for_n():
    program = assemble("\n".join(["nop"] * 7), "long", n=8, num_registers=8)
    try:
        compile_program(program, n=7, num_registers=8)
    except ValueError as error:
        assert "n" in str(error) and "long" in str(error)
    else:
        raise AssertionError("expected a ValueError")


@settings(max_examples=100, deadline=None)
@given(programs(n=N, num_registers=REGISTERS, max_lines=8, max_lanes=3))
def test_decode_of_compile_is_the_program(program):
    decoded = decode(compile_program(program, n=N, num_registers=REGISTERS), labels=program.labels)
    assert decoded.lines == tuple(_without_trailing_nops(line) for line in program.lines)
    assert program.labels.items() <= decoded.labels.items()


def test_decode_refuses_what_is_not_one_finite_program():
    tensors = compile_program(assemble("add 1 2 3\njump 1 0", n=16, num_registers=8), n=16, num_registers=8)
    tensors.imm[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="field 'imm' holds NaN"):
        decode(tensors)
    tensors.imm[1, 0, 0] = 1.0
    with pytest.raises(ValueError, match="index the batch first"):
        decode(tensors.expand(2))
    for labels, message in (({"r1 x": 0}, "bad label name"), ({"x": 9}, "not a line address"), ([1], "must map")):
        with pytest.raises(ValueError, match=message):
            decode(tensors, labels=labels)
    short = compile_program(assemble("nop", n=16, num_registers=8), n=16, num_registers=8)
    tensors.a = short.a
    with pytest.raises(ValueError, match="field 'a' has shape"):
        decode(tensors)


def test_compile_refuses_unresolved_symbols():
    program = assemble("call elsewhere\nret", n=16, num_registers=8, allow_undefined=True)
    assert [symbol.name for symbol in program.symbols] == ["elsewhere"]
    with pytest.raises(ValueError, match="unresolved"):
        compile_program(program, n=16, num_registers=8)


@given(programs(n=N, num_registers=REGISTERS, max_lines=12, max_lanes=3, immediates=signed_values(64)))
def test_binary_compile_and_decompile_round_trip(program):
    tensors = compile_program(program, num_registers=REGISTERS, bits=64)
    assert tensors.imm.shape[-1] == 64 and set(tensors.imm.unique().tolist()) <= {0.0, 1.0}
    text = decompile(tensors, labels=program.labels, bits=64)
    again = assemble(text, "again", num_registers=REGISTERS, bits=64)
    assert again.lines == tuple(_without_trailing_nops(line) for line in program.lines)


def test_binary_immediate_uncertain_bits_are_annotated():
    tensors = compile_program(assemble("set -3 r1", "p", bits=8), bits=8)
    tensors.imm[0, 0, 0] = 0.7  # -3 = ...11111101: bit 0 is 1 with probability 0.7
    line = decompile(tensors, bits=8).splitlines()[-1]
    assert line.split(";")[0].split() == ["set", "-3", "r1"] and "i: -3 0.70" in line


def test_binary_compile_rejects_out_of_range_immediates():
    with pytest.raises(ValueError, match="out of range for 8-bit values"):
        compile_program(Program(((Instruction("set", imm=200),),)), bits=8)
