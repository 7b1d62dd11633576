"""Assembler: the paper's listings, every syntax feature, every error with its exact location, and the
`format_program` round trip over random programs."""

import pickle
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from listings import PAPER_FIBONACCI
from strategies import programs

import dcomp_isa
from library.assembler import AssemblyError, assemble, assemble_file, format_program
from library.program import Instruction, Program

FIB_LINES = (
    (Instruction("inc", a=2, out=2),),
    (Instruction("write", a=3, b=2),),
    (Instruction("add", a=1, b=2, out=2),),
    (Instruction("read", a=3, out=1),),
    (Instruction("write", a=3, b=2),),
    (Instruction("inc", a=3, out=3),),
    (Instruction("jump", a=4, imm=1),),
)


def lines_of(source: str, **kwargs) -> tuple[tuple[Instruction, ...], ...]:
    return assemble(source, **kwargs).lines


def test_paper_fibonacci_listing():
    program = assemble(PAPER_FIBONACCI, "fib")
    assert program.lines == FIB_LINES
    assert program.labels == {"fib_loop": 1}
    assert program.name == "fib"
    assert program.source_lines == (1, 3, 4, 5, 6, 7, 8)
    assert program.lanes == 1


def test_appendix_listing_with_numeric_target_is_the_same_program():
    appendix = "inc  2 2\nwrite 3 2\nadd  1 2 2\nread  3 1\nwrite 3 2\ninc  3 3\njump 4 1\n"
    assert lines_of(appendix) == FIB_LINES


def test_every_op_with_its_operand_order():
    source = "\n".join(
        [
            "halt",
            "nop",
            "jump r1 5",
            "call 6",
            "ret",
            "store r7",
            "set 3 r8",
            "copy r9 r2",
            "read 3 1",
            "write 3 2",
            "add 1 2 3",
            "not 4 5",
        ]
    )
    assert lines_of(source) == (
        (Instruction("halt"),),
        (Instruction("nop"),),
        (Instruction("jump", a=1, imm=5),),
        (Instruction("call", imm=6),),
        (Instruction("ret"),),
        (Instruction("store", out=7),),
        (Instruction("set", imm=3, out=8),),
        (Instruction("copy", a=9, out=2),),
        (Instruction("read", a=3, out=1),),
        (Instruction("write", a=3, b=2),),
        (Instruction("add", a=1, b=2, out=3),),
        (Instruction("not", a=4, out=5),),
    )


def test_syntax_features():
    source = (
        "; a comment line\n"
        "start:  ADD r1 R2 r3   # registers rK, RK or K; op names in any case\n"
        "\n"
        "  Inc 4                ; unary ops in place\n"
        "loop: min 1 2 1 | max 1 2 2\r\n"
        "\tcall fn|store r3\n"
        "first: second:\n"
        "fn: jump 0 loop\n"
        "end:\n"
    )
    program = assemble(source)
    assert program.lines == (
        (Instruction("add", a=1, b=2, out=3),),
        (Instruction("inc", a=4, out=4),),
        (Instruction("min", a=1, b=2, out=1), Instruction("max", a=1, b=2, out=2)),
        (Instruction("call", imm=4), Instruction("store", out=3)),
        (Instruction("jump", a=0, imm=2),),
    )
    assert program.labels == {"start": 0, "loop": 2, "first": 4, "second": 4, "fn": 4, "end": 5}
    assert program.source_lines == (2, 4, 5, 6, 8)
    assert program.lanes == 2


def test_labels_are_case_sensitive_and_may_hold_dots():
    program = assemble("Loop: nop\nloop: nop\nlib.sort_2: jump 1 Loop\n")
    assert program.labels == {"Loop": 0, "loop": 1, "lib.sort_2": 2}
    assert program.lines[2] == (Instruction("jump", a=1, imm=0),)


def test_jump_just_past_the_end_is_allowed():
    assert lines_of("jump 1 done\ndone:")[0] == (Instruction("jump", a=1, imm=1),)
    assert lines_of("jump 1 127")[0] == (Instruction("jump", a=1, imm=127),)


def test_program_of_n_minus_one_lines_fits():
    assert len(assemble("nop\n" * 7, n=8)) == 7


ALL_OPS = ", ".join(dcomp_isa.OP_NAMES)


@pytest.mark.parametrize(
    "source, line, column, message",
    [
        # unknown op
        ("nop\n  ad 1 2 2", 2, 3, f"unknown op 'ad' (expected one of: {ALL_OPS})"),
        ("1  inc 2 2", 1, 1, "unknown op '1'"),
        # operand count: too few points at the op, too many at the first surplus operand
        ("add 1 2", 1, 1, "add takes 3 operands (a b out), got 2"),
        ("x: add 1 2 2 3", 1, 14, "add takes 3 operands (a b out), got 4"),
        ("halt 1", 1, 6, "halt takes no operands, got 1"),
        ("jump fib_loop", 1, 1, "jump takes 2 operands (a target), got 1"),
        ("inc 1 2 3", 1, 9, "inc takes 2 operands (a out), or 1 in place, got 3"),
        ("set 3", 1, 1, "set takes 2 operands (imm out), got 1"),
        ("nop | add 1", 1, 7, "add takes 3 operands (a b out), got 1"),
        # labels
        ("jump 4 nowhere", 1, 8, "undefined label 'nowhere'"),
        ("a:\nnop\n  a: nop", 3, 3, "duplicate label 'a' (first defined on line 1)"),
        ("3x: nop", 1, 1, "invalid label name '3x'"),
        ("r3: nop", 1, 1, "invalid label name 'r3'"),
        ("add: nop", 1, 1, "invalid label name 'add'"),
        ("ok: : nop", 1, 5, "invalid label name ''"),
        ("nop | x: nop", 1, 7, "label 'x:' must start the line"),
        ("jump 1 x:\nx:", 1, 8, "label 'x:' must start the line"),
        # ranges
        ("add 1 2 r16", 1, 9, "register r16 out of range (num_registers = 16: r0..r15)"),
        ("copy 99 r1", 1, 6, "register 99 out of range"),
        ("set 128 r1", 1, 5, "immediate 128 out of range [0, 128)"),
        ("jump 1 128", 1, 8, "line address 128 out of range [0, 128)"),
        ("call 500", 1, 6, "line address 500 out of range [0, 128)"),
        # malformed tokens and trailing junk
        ("set -1 r2", 1, 5, "negative number '-1': values are in [0, 128)"),
        ("jump 1 -2", 1, 8, "negative number '-2'"),
        ("set 0x1 r1", 1, 5, "malformed number '0x1'"),
        ("set r1 r2", 1, 5, "expected an immediate value, got register 'r1'"),
        ("copy foo r1", 1, 6, "malformed register 'foo' (expected rK or K)"),
        ("copy r1 rx", 1, 9, "malformed register 'rx'"),
        ("jump 1 r2", 1, 8, "expected a label or line address, got register 'r2'"),
        ("jump 1 $x", 1, 8, "malformed line address '$x'"),
        ("add r1, r2 r3", 1, 7, "trailing junk ',' after 'r1' (operands are separated by spaces)"),
        ("set 3) r1", 1, 6, "trailing junk ')' after '3'"),
        ("jump 1 loop!\nloop:", 1, 12, "trailing junk '!' after 'loop'"),
        # lanes
        ("add 1 2 2 |", 1, 11, "empty lane: expected an instruction after '|'"),
        ("| nop", 1, 1, "empty lane: expected an instruction before '|'"),
        ("nop || nop", 1, 6, "empty lane: expected an instruction before '|'"),
        ("min 1 2 1 | max 1 2 1", 1, 21, "lanes 1 and 2 both write r1"),
        ("inc 3 | nop | dec 3", 1, 19, "lanes 1 and 3 both write r3"),
        (
            "call 0 | jump 1 0",
            1,
            10,
            "at most one control instruction (halt, jump, call, ret) per line: 'jump' follows 'call'",
        ),
        ("halt | ret", 1, 8, "at most one control instruction"),
        (
            "call 0 | set 1 r15",
            1,
            16,
            "r15 is a return-stack register (r12..r15) and this line's 'call' rewrites the return stack",
        ),
        ("store r12 | ret", 1, 7, "r12 is a return-stack register"),
        # empty programs
        ("", 1, 1, "empty program: no instructions"),
        ("; just a comment\n\nlabel:\n", 1, 1, "empty program: no instructions"),
    ],
)
def test_errors_are_located(source, line, column, message):
    with pytest.raises(AssemblyError) as info:
        assemble(source, "t.asm")
    error = info.value
    assert (error.line, error.column) == (line, column), str(error)
    assert message in error.message
    assert error.source_name == "t.asm"
    assert str(error) == f"t.asm:{line}:{column}: {error.message}"


def test_program_longer_than_n_minus_one_lines():
    with pytest.raises(AssemblyError) as info:
        assemble("nop\n" * 3 + "  add 1 2 3\n" + "nop\n" * 4, n=4)
    assert (info.value.line, info.value.column) == (4, 3)
    assert "program too long: 8 lines, at most n - 1 = 3" in info.value.message


def test_register_and_value_ranges_follow_the_machine_size():
    assert lines_of("set 7 r3", n=8, num_registers=4) == ((Instruction("set", imm=7, out=3),),)
    with pytest.raises(AssemblyError, match="immediate 8 out of range"):
        assemble("set 8 r3", n=8, num_registers=4)
    with pytest.raises(AssemblyError, match=r"register r4 out of range \(num_registers = 4"):
        assemble("set 1 r4", n=8, num_registers=4)
    # With call_depth 1 only the top register is the return stack.
    assert len(assemble("call 0 | set 1 r14", call_depth=1)) == 1


@pytest.mark.parametrize("source, type_name", [(b"nop", "bytes"), (None, "NoneType"), (3, "int"), (["nop"], "list")])
def test_non_text_input(source, type_name):
    with pytest.raises(AssemblyError) as info:
        assemble(source, "x.asm")
    assert (info.value.line, info.value.column) == (0, 0)
    assert f"expected assembly source text (str), got {type_name}" in str(info.value)


def test_assembly_error_is_a_value_error():
    with pytest.raises(ValueError):
        assemble("bogus")


def test_assembly_error_pickles():
    with pytest.raises(AssemblyError) as info:
        assemble("nop\nad 1", "x.asm")
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.line, again.column, again.source_name, again.message) == (2, 1, "x.asm", info.value.message)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("addjumpcallretinc rR0123456789-:|;#\n\t\r,x_.")), max_size=60))
def test_any_text_assembles_or_raises_assembly_error(source):
    try:
        program = assemble(source, n=16, num_registers=8)
    except AssemblyError as error:
        assert 1 <= error.line <= source.count("\n") + 1 and error.column >= 1
    else:
        assert 1 <= len(program) <= 15


def test_bad_machine_size_is_a_value_error():
    with pytest.raises(ValueError, match="call_depth"):
        assemble("nop", num_registers=2, call_depth=3)


def test_assemble_file(tmp_path):
    path = tmp_path / "fib.asm"
    path.write_text(PAPER_FIBONACCI)
    program = assemble_file(path)
    assert program.name == "fib" and program.lines == FIB_LINES
    bad = tmp_path / "bad.asm"
    bad.write_text("nop\njump 4 nowhere\n")
    with pytest.raises(AssemblyError) as info:
        assemble_file(bad)
    assert str(info.value) == f"{bad}:2:8: undefined label 'nowhere'"


def test_format_program_is_canonical():
    program = assemble("loop: min 1 2 1 | max 1 2 2\n  INC 3\n jump 4 loop\njump 1 5\ncall end\nhalt\nend:")
    assert format_program(program) == (
        "loop:\n"
        "    min   r1 r2 r1 | max   r1 r2 r2\n"
        "    inc   r3 r3\n"
        "    jump  r4 loop\n"
        "    jump  r1 5\n"
        "    call  end\n"
        "    halt\n"
        "end:\n"
    )
    assert format_program(assemble("set 3 r8\nnop")) == "set   3 r8\nnop\n"


def test_format_program_rejects_what_it_cannot_write():
    with pytest.raises(ValueError, match="outside"):
        format_program(Program(((Instruction("nop"),),), {"far": 5}))
    with pytest.raises(ValueError, match="no instructions"):
        format_program(Program(((),)))
    with pytest.raises(ValueError, match="unknown op"):
        format_program(Program(((Instruction("frobnicate"),),)))


@pytest.mark.parametrize("n, num_registers, max_lanes", [(16, 8, 3), (128, 16, 2), (4, 5, 1)])
def test_format_program_round_trip(n, num_registers, max_lanes):
    @settings(max_examples=60, deadline=None)
    @given(programs(n, num_registers, max_lines=12, max_lanes=max_lanes))
    def round_trip(program):
        text = format_program(program)
        again = assemble(text, program.name, n=n, num_registers=num_registers)
        assert again.lines == program.lines, text
        assert again.labels == program.labels, text
        assert format_program(again) == text

    round_trip()


def test_paper_listing_round_trips():
    program = assemble(PAPER_FIBONACCI, "fib")
    assert assemble(format_program(program), "fib").lines == program.lines


def test_programs_strategy_is_varied():
    ops, features = set(), set()

    @settings(max_examples=150, deadline=None, database=None, derandomize=True)
    @given(programs())
    def collect(program):
        for address, line in enumerate(program.lines):
            ops.update(instruction.op for instruction in line)
            if len(line) > 1:
                features.add("lanes")
            for instruction in line:
                if instruction.op == "jump" and instruction.imm <= address:
                    features.add("backward jump")
                if instruction.op in ("jump", "call") and instruction.imm == len(program):
                    features.add("target past the end")
        if program.labels:
            features.add("labels")

    collect()
    assert ops == set(dcomp_isa.OP_NAMES)
    assert features == {"lanes", "backward jump", "target past the end", "labels"}


DOC_OPERAND_NAMES = {"a": "a", "b": "b", "o": "out", "i": "imm", "l": "target"}


def test_isa_doc_covers_every_op_and_its_example_assembles():
    text = (Path(__file__).parent.parent / "docs" / "ISA.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| `([^`]+)`", text, flags=re.MULTILINE)
    assert [op for op, _ in rows] == list(dcomp_isa.OP_NAMES)
    for op, syntax in rows:
        operands = next(spec.operands for spec in dcomp_isa.OPS if spec.name == op)
        assert syntax.split() == [op, *(DOC_OPERAND_NAMES[letter] for letter in operands)]
    example = re.search(r"```\n(.*?)```", text, flags=re.DOTALL).group(1)
    assert assemble(example).lines[:6] == FIB_LINES[:6]


# ------------------------------------------------------------------------------------- what files hold
def test_a_utf8_byte_order_mark_is_skipped(tmp_path):
    path = tmp_path / "bom.asm"
    path.write_bytes(b"\xef\xbb\xbfset 3 r1\nhalt\n")
    assert assemble_file(path).lines == assemble("set 3 r1\nhalt").lines
    assert assemble("\ufeffset 3 r1\nhalt").lines == assemble("set 3 r1\nhalt").lines


@pytest.mark.parametrize(
    ("data", "line", "column", "message"),
    [
        ("set 3 r1\nhalt\n".encode("utf-16"), 1, 1, "the file is UTF-16 (little-endian): save it as UTF-8"),
        (b"\xfe\xffset", 1, 1, "UTF-16 (big-endian)"),
        (b"nop\nset \xff 1\n", 2, 5, "not UTF-8 text: byte 0xff"),
        ("nop\n  inc é\xe9".encode("latin-1"), 2, 7, "not UTF-8 text: byte 0xe9"),
    ],
)
def test_files_that_are_not_utf8_are_refused_where_they_go_wrong(tmp_path, data, line, column, message):
    path = tmp_path / "p.asm"
    path.write_bytes(data)
    with pytest.raises(AssemblyError) as info:
        assemble_file(path)
    assert (info.value.line, info.value.column) == (line, column) and message in info.value.message
    assert str(info.value).startswith(f"{path}:{line}:{column}: ")


@pytest.mark.parametrize(
    ("source", "column", "shown"),
    [("nop\nadd 1\x00 2 3", 6, "U+0000"), ("nop\nadd\u200b 1 2 3", 4, "U+200B (ZERO WIDTH SPACE)")],
)
def test_invisible_characters_are_refused_and_never_echoed_raw(source, column, shown):
    with pytest.raises(AssemblyError) as info:
        assemble(source)
    assert (info.value.line, info.value.column) == (2, column) and shown in info.value.message
    assert str(info.value).isprintable()


def test_a_huge_token_is_echoed_short():
    with pytest.raises(AssemblyError) as info:
        assemble("nop\n" + "x" * 5_000_000)
    assert (info.value.line, info.value.column) == (2, 1) and "(5000000 characters)" in info.value.message
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(("operand", "what"), [("set {} r1", "immediate"), ("jump 1 {}", "line address")])
def test_a_5000_digit_number_is_out_of_range_at_its_position(operand, what):
    with pytest.raises(AssemblyError) as info:
        assemble("nop\n" + operand.format("9" * 5000))
    assert info.value.line == 2 and f"{what} 999" in info.value.message and "(5000 characters)" in info.value.message
    with pytest.raises(AssemblyError, match="register r999.*out of range"):
        assemble(f"inc r{'9' * 5000}")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_assemble_or_raise_a_located_assembly_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "f.asm"
    path.write_bytes(data)
    try:
        assemble_file(path, n=16, num_registers=8, call_depth=2)
    except AssemblyError as error:
        assert error.line >= 1 and error.column >= 1 and str(error).isprintable() and len(str(error)) < 400


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_unicode_text_assembles_or_raises_an_assembly_error(source):
    try:
        assemble(source, n=16, num_registers=8, call_depth=2)
    except AssemblyError as error:
        assert error.line >= 1 and error.column >= 1 and str(error).isprintable()


def test_signed_immediates_with_bits():
    program = assemble("set -5 r1\nset -128 r2\nset 127 r3\njump 1 0", bits=8)
    assert [line[0].imm for line in program.lines] == [-5, -128, 127, 0]
    assert assemble("set 9223372036854775807 r1\nset -9223372036854775808 r2", bits=64).lines[1][0].imm == -(2**63)


@pytest.mark.parametrize(
    "source, bits, message",
    [
        ("set -129 r1", 8, r"program:1:5: immediate -129 out of range \[-128, 128\)"),
        ("nop\nset 128 r1", 8, r"program:2:5: immediate 128 out of range \[-128, 128\)"),
        ("set -5 r1", None, r"program:1:5: negative number '-5'"),
        ("jump 1 -1", 8, r"program:1:8: negative number '-1'"),
        ("set 1 r1", 7, r"bits must be in \[8, 64\]"),
    ],
)
def test_signed_immediate_errors(source, bits, message):
    with pytest.raises(ValueError, match=message):
        assemble(source, bits=bits)
