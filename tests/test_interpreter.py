"""Reference interpreter: hand-checked programs for every instruction and control-flow rule, input validation,
and invariants over random programs."""

import pytest
from hypothesis import given, settings
from listings import PAPER_FIBONACCI
from strategies import programs, run_through_overflow

import dcomp_isa
from library.assembler import assemble
from library.interpreter import Execution, ReferenceState, ReturnStackOverflow, run_reference
from library.program import Instruction, Program


def run(source: str, **kwargs) -> Execution:
    return run_reference(assemble(source, n=kwargs.get("n", 128), bits=kwargs.get("bits")), **kwargs)


def test_initial_state_and_trace():
    execution = run("nop", n=10, num_registers=6, memory_size=3, call_depth=2)
    assert execution.trace[0] == ReferenceState((0, 0, 0, 0, 9, 9), (0, 0, 0), pc=0, halted=False)
    assert execution.state == ReferenceState((0, 0, 0, 0, 9, 9), (0, 0, 0), pc=1, halted=True)
    assert execution.trace == [execution.trace[0], execution.state]
    assert (execution.steps, execution.halted) == (1, True)


def test_default_return_stack_is_top_four_registers():
    registers = run("nop").state.registers
    assert registers == (0,) * 12 + (127,) * 4
    assert dcomp_isa.DEFAULT_CALL_DEPTH == 4


# (op, a, b, expected) with n = 10: wrap-around, division and modulo by zero, booleans.
ALU_CASES = [
    ("inc", 9, 0, 0),
    ("inc", 3, 0, 4),
    ("dec", 0, 0, 9),
    ("dec", 5, 0, 4),
    ("add", 7, 5, 2),
    ("add", 2, 3, 5),
    ("sub", 3, 5, 8),
    ("sub", 5, 3, 2),
    ("mul", 4, 3, 2),
    ("mul", 3, 3, 9),
    ("div", 7, 2, 3),
    ("div", 7, 0, 0),
    ("div", 0, 0, 0),
    ("mod", 7, 3, 1),
    ("mod", 7, 0, 0),
    ("mod", 2, 9, 2),
    ("max", 3, 8, 8),
    ("min", 3, 8, 3),
    ("eq", 4, 4, 1),
    ("eq", 4, 5, 0),
    ("lt", 4, 5, 1),
    ("lt", 5, 4, 0),
    ("lt", 5, 5, 0),
    ("and", 2, 3, 1),
    ("and", 2, 0, 0),
    ("or", 0, 7, 1),
    ("or", 0, 0, 0),
    ("not", 0, 0, 1),
    ("not", 6, 0, 0),
]


@pytest.mark.parametrize("op, a, b, expected", ALU_CASES)
def test_alu_ops(op, a, b, expected):
    spec = next(spec for spec in dcomp_isa.OPS if spec.name == op)
    source = f"{op} 1 2 3" if "b" in spec.operands else f"{op} 1 3"
    execution = run(source, n=10, registers={1: a, 2: b})
    assert execution.state.registers[3] == expected == dcomp_isa.alu_int(op, a, b, 10)
    assert execution.state.registers[1:3] == (a, b)


def test_every_alu_op_is_tested():
    tested = {case[0] for case in ALU_CASES}
    assert tested == set(dcomp_isa.ALU_OPS)


def test_in_place_unary_op_reads_then_writes_its_register():
    assert run("inc 3\ninc 3\ndec 4", registers={3: 126}).state.registers[3:5] == (0, 127)


def test_set_copy_store():
    execution = run("set 42 r1\ncopy 1 2\nnop\nstore r3\nstore r1")
    assert execution.state.registers[1:4] == (4, 42, 3)


def test_memory_read_write_and_out_of_range():
    source = (
        "write 1 2\n"  # M[3] = 7
        "read 1 4\n"  # r4 = M[3]
        "write 5 2\n"  # M[8] (beyond memory_size 8): no effect
        "read 5 6\n"  # r6 = 0 for an out-of-range address
        "read 7 8\n"  # r8 = M[0]
    )
    execution = run(source, memory_size=8, registers={1: 3, 2: 7, 5: 8, 6: 99}, memory=[11])
    assert execution.state.memory == (11, 0, 0, 7, 0, 0, 0, 0)
    assert execution.state.registers[4] == 7
    assert execution.state.registers[6] == 0
    assert execution.state.registers[8] == 11


def test_jump_taken_iff_flag_nonzero():
    source = "jump 1 skip\nset 1 r2\nskip: set 1 r3"
    taken = run(source, registers={1: 5})
    assert taken.state.registers[2:4] == (0, 1) and taken.steps == 2
    not_taken = run(source, registers={1: 0})
    assert not_taken.state.registers[2:4] == (1, 1) and not_taken.steps == 3
    assert [state.pc for state in taken.trace] == [0, 2, 3]


def test_countdown_loop():
    execution = run("loop: dec 1\njump 1 loop\nhalt", registers={1: 5})
    assert execution.state.registers[1] == 0
    assert (execution.steps, execution.halted, execution.state.pc) == (10, True, 3)


NESTED_CALLS = """\
    call a          ; 0
    set 9 r1        ; 1: back in main
    halt            ; 2
a:  inc 2           ; 3
    call b          ; 4
    inc 2           ; 5
    ret             ; 6
b:  inc 3           ; 7
    call c          ; 8
    inc 3           ; 9
    ret             ; 10
c:  store r4        ; 11
    copy 15 5       ; 12: top of stack = return address into b
    copy 14 6       ; 13: next = return address into a
    copy 13 7       ; 14: next = return address into main
    ret             ; 15
"""


def test_nested_calls_three_deep():
    execution = run(NESTED_CALLS)
    registers = execution.state.registers
    assert registers[1:8] == (9, 2, 2, 11, 9, 5, 1)
    assert registers[12:] == (127,) * 4  # all returned: the stack is empty again
    assert execution.halted and execution.steps == 15
    pcs = [state.pc for state in execution.trace[:-1]]
    assert pcs == [0, 3, 4, 7, 8, 11, 12, 13, 14, 15, 9, 10, 5, 6, 1]


def test_call_stack_layout():
    execution = run("call f\nhalt\nf: call g\nret\ng: halt", call_depth=2)
    assert execution.state.registers[14:] == (1, 3)  # bottom: return into main; top: return into f
    assert execution.state.registers[:14] == (0,) * 14


def test_return_stack_overflow_is_an_error_with_the_state_so_far():
    # call_depth 2 but three nested calls: the third call would drop the return address into main.
    with pytest.raises(ReturnStackOverflow, match="line 8 calls deeper than call_depth = 2") as caught:
        run(NESTED_CALLS.replace("store r4", "nop"), call_depth=2)
    execution = caught.value.execution
    assert execution.state.overflowed and not execution.halted and execution.state.pc == 8
    assert execution.state.registers[2:4] == (1, 1) and execution.state.registers[14:] == (1, 5)  # stack kept
    assert execution.steps == len(execution.trace) - 1 == 5


# main calls f1, f1 calls f2, ... f6 calls f7: seven nested calls.
SEVEN_NESTED_CALLS = (
    "call f1\nhalt\n" + "".join(f"f{i}: call f{i + 1}\nret\n" for i in range(1, 7)) + "f7: set 1 r1\nret\n"
)


@pytest.mark.parametrize("bits", [None, 8, 64])
def test_seven_nested_calls_overflow_at_depth_four_and_fit_at_depth_eight(bits):
    with pytest.raises(ReturnStackOverflow, match="line 8 calls deeper than call_depth = 4"):
        run(SEVEN_NESTED_CALLS, bits=bits)
    execution = run(SEVEN_NESTED_CALLS, bits=bits, call_depth=8)
    assert execution.halted and execution.state.registers[1] == 1 and execution.steps == 7 + 1 + 7


def test_ret_on_empty_stack_halts():
    execution = run("inc 1\nret\ninc 1")
    assert execution.halted and execution.steps == 2 and execution.state.pc == 3
    assert execution.state.registers[1] == 1
    assert execution.state.registers[12:] == (127,) * 4


def test_ret_to_a_stored_address():
    # The paper's calling convention: store the pc, offset it, push it by hand.
    execution = run("store r15\nset 5 r1\nadd 15 1 15\nret\nset 5 r2\nset 6 r3", max_steps=10)
    assert execution.state.registers[2:4] == (0, 6)  # returned to line 5
    assert execution.steps == 5 and execution.halted


def test_lanes_read_the_state_from_before_the_line():
    execution = run("copy 1 2 | copy 2 1", registers={1: 3, 2: 4})
    assert execution.state.registers[1:3] == (4, 3)
    execution = run("write 1 2 | read 1 3 | inc 2", registers={1: 0, 2: 5}, memory=[7])
    assert execution.state.memory[0] == 5
    assert execution.state.registers[2:4] == (6, 7)


def test_later_lane_wins():
    program = Program(((Instruction("set", imm=1, out=1), Instruction("set", imm=2, out=1)),))
    assert run_reference(program).state.registers[1] == 2
    execution = run("write 1 2 | write 1 3", registers={1: 0, 2: 5, 3: 6})
    assert execution.state.memory[0] == 6


def test_lanes_beside_control_ops():
    execution = run("set 1 r1 | jump 2 end | set 3 r3\nset 9 r1\nend: nop", registers={2: 1})
    assert execution.state.registers[1:4] == (1, 1, 3) and execution.steps == 2
    execution = run("call f | store r2\nhalt\nf: copy 15 3")
    assert execution.state.registers[2:4] == (0, 1)


def test_return_stack_moves_after_the_lane_writes():
    # Only hand-built programs can write a return-stack register beside call/ret (the assembler refuses).
    program = Program(((Instruction("set", imm=3, out=15), Instruction("ret")), (Instruction("nop"),), (), ()))
    execution = run_reference(program, max_steps=1)
    assert execution.state.pc == 3 and execution.state.registers[12:] == (127,) * 4


def test_running_past_the_end_halts():
    execution = run("inc 1\ninc 1")
    assert (execution.steps, execution.halted, execution.state.pc) == (2, True, 2)
    execution = run("jump 1 end\nnop\nend:", registers={1: 1})
    assert (execution.steps, execution.halted, execution.state.pc) == (1, True, 2)
    execution = run("jump 1 100\nnop", registers={1: 1})
    assert (execution.steps, execution.halted, execution.state.pc) == (1, True, 2)
    execution = run("call 50\nnop")
    assert (execution.steps, execution.halted, execution.state.registers[15]) == (1, True, 1)


def test_halt_is_not_a_step():
    execution = run("inc 1\nhalt\ninc 1")
    assert (execution.steps, execution.halted, execution.state.pc) == (1, True, 3)
    assert execution.state.registers[1] == 1
    assert len(execution.trace) == 2
    execution = run("halt")
    assert (execution.steps, execution.halted) == (0, True)
    assert execution.trace == [execution.state]


def test_halt_line_does_nothing_else():
    execution = run("inc 1\ninc 1 | halt | write 0 1", registers={1: 4})
    assert (execution.steps, execution.halted, execution.state.pc) == (1, True, 2)
    assert execution.state.registers[1] == 5 and execution.state.memory[0] == 0


def test_max_steps_cut_off():
    execution = run("loop: inc 1\njump 2 loop", registers={2: 1}, max_steps=7)
    assert (execution.steps, execution.halted) == (7, False)
    assert execution.state.pc == 1 and execution.state.registers[1] == 4
    assert len(execution.trace) == 8 and execution.trace[-1] == execution.state
    assert run("nop\nnop", max_steps=0).state == ReferenceState((0,) * 12 + (127,) * 4, (0,) * 32, 0, False)


def test_reaching_halt_exactly_at_max_steps_halts():
    assert run("nop\nnop\nhalt\nnop", max_steps=2).halted
    assert run("nop\nnop", max_steps=2).halted
    assert not run("nop\nnop\nnop", max_steps=2).halted


def test_entry():
    execution = run("set 1 r1\nset 2 r2", entry=1)
    assert execution.state.registers[1:3] == (0, 2) and execution.steps == 1
    execution = run("nop", entry=5)
    assert execution.halted and execution.steps == 0 and execution.state.pc == 1


def test_registers_as_list():
    assert run("add 0 1 2", registers=[3, 4]).state.registers[:3] == (3, 4, 7)


def test_paper_fibonacci_with_loop_flag():
    n, iterations = 128, 12
    execution = run(PAPER_FIBONACCI, n=n, registers={4: 1}, max_steps=1 + 6 * iterations)
    assert not execution.halted
    a, b, expected_memory = 0, 1, []
    for _ in range(iterations):
        a, b = b, (a + b) % n
        expected_memory.append(b)
    assert list(execution.state.memory[:iterations]) == expected_memory
    assert execution.state.memory[iterations:] == (0,) * (32 - iterations)
    assert execution.state.registers[1:5] == (a, b, iterations, 1)
    assert execution.state.pc == 1  # back at fib_loop
    # Without the flag the loop body runs once and the program falls off the end.
    once = run(PAPER_FIBONACCI)
    assert once.halted and once.steps == 7 and once.state.memory[0] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(registers={16: 0}), r"register index = 16 out of range \[0, 16\)"),
        (dict(registers={1: 128}), r"initial r1 = 128 out of range \[0, 128\)"),
        (dict(registers=[0] * 17), "register index = 16 out of range"),
        (dict(registers={1: -1}), "initial r1 = -1 out of range"),
        (dict(registers={1: 1.5}), "initial r1 must be an integer, got float"),
        (dict(memory=[0] * 33), "memory has 33 cells, more than memory_size = 32"),
        (dict(memory=[200]), r"initial M\[0\] = 200 out of range"),
        (dict(call_depth=0), r"call_depth = 0 must lie in \[1, num_registers = 16\)"),
        (dict(call_depth=16), r"call_depth = 16 must lie in \[1, num_registers = 16\)"),
        (dict(memory_size=129), r"memory_size = 129 must lie in \[1, n = 128\]"),
        (dict(call_depth=17), "call_depth = 17"),
        (dict(max_steps=-1), "max_steps >= 0"),
        (dict(n=1), "need n >= 2"),
        (dict(entry=128), r"entry = 128 out of range \[0, 128\)"),
        (dict(num_registers=2), "call_depth = 4 must lie in"),
    ],
)
def test_invalid_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_reference(assemble("nop"), **kwargs)


@pytest.mark.parametrize(
    "program, message",
    [
        (Program(((Instruction("frobnicate"),),)), "line 0: unknown op 'frobnicate'"),
        (Program(((Instruction("copy", a=16),),)), r"line 0: copy register a = 16 out of range \[0, 16\)"),
        (Program(((Instruction("nop"),), (Instruction("set", imm=128, out=1),))), "line 1: set imm = 128 out of range"),
        (Program(((Instruction("halt"), Instruction("ret")),)), "more than one control instruction"),
        (Program(((Instruction("nop"),),) * 128), "has 128 lines; at most n - 1 = 127"),
        ("nop", "expected a Program, got str"),
    ],
)
def test_invalid_programs(program, message):
    with pytest.raises(ValueError, match=message):
        run_reference(program)


@settings(max_examples=150, deadline=None)
@given(programs(n=16, num_registers=8, max_lines=10, max_lanes=3))
def test_random_program_invariants(program):
    kwargs = dict(n=16, num_registers=8, memory_size=8, max_steps=40)
    execution = run_through_overflow(program, **kwargs)
    assert len(execution.trace) == execution.steps + 1
    assert execution.trace[-1] == execution.state
    assert execution.halted == execution.state.halted == (execution.state.pc == len(program))
    assert execution.halted or execution.state.overflowed or execution.steps == 40
    for state in execution.trace:
        assert len(state.registers) == 8 and len(state.memory) == 8
        assert all(0 <= value < 16 for value in state.registers + state.memory)
        assert 0 <= state.pc <= len(program)
    # Cutting the run off after t steps leaves exactly the state the trace recorded before step t + 1.
    for t in (0, execution.steps // 2, execution.steps - 1):
        if 0 <= t < execution.steps:
            assert run_reference(program, **{**kwargs, "max_steps": t}).state == execution.trace[t]


# (op, a, b, expected) on signed 8-bit values: Python's floor division and modulo, wraparound, signed order.
SIGNED_CASES = [
    ("div", -7, 2, -4),
    ("mod", -7, 3, 2),
    ("mod", 7, -3, -2),
    ("div", -7, -3, 2),
    ("div", -128, -1, -128),
    ("mod", -128, -1, 0),
    ("div", -5, 0, 0),
    ("mod", -5, 0, 0),
    ("add", 127, 1, -128),
    ("sub", -128, 1, 127),
    ("mul", 16, 16, 0),
    ("mul", -3, 5, -15),
    ("inc", 127, 0, -128),
    ("dec", -128, 0, 127),
    ("lt", -1, 0, 1),
    ("lt", 0, -1, 0),
    ("max", -3, 2, 2),
    ("min", -3, 2, -3),
    ("eq", -1, -1, 1),
    ("and", -1, 2, 1),
    ("or", 0, -2, 1),
    ("not", -1, 0, 0),
]


@pytest.mark.parametrize("op, a, b, expected", SIGNED_CASES)
def test_signed_alu_ops(op, a, b, expected):
    source = f"{op} 1 2 3" if op not in dcomp_isa.UNARY_ALU_OPS else f"{op} 1 3"
    assert run(source, bits=8, registers={1: a, 2: b}).state.registers[3] == expected


def test_every_alu_op_has_a_signed_case():
    assert {op for op, *_ in SIGNED_CASES} == set(dcomp_isa.ALU_OPS)


def test_signed_64_bit_values_negative_immediates_and_addresses():
    big = 2**63 - 1
    execution = run("set -5 r2\nadd 1 2 3\nwrite 2 1\nread 2 4\nset 2 r5\nwrite 5 3", bits=64, registers={1: big})
    registers = execution.state.registers
    assert registers[2:5] == (-5, big - 5, 0)  # a negative address reads 0 and writes nothing
    assert execution.state.memory[:3] == (0, 0, big - 5)
    assert registers[12:] == (-1,) * 4  # "no caller" is -1
    assert run("set 1 r1\nset -1 r15\nret", bits=8).halted  # a negative return address halts


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bits=8, registers={1: 128}), r"initial r1 = 128 out of range \[-128, 128\)"),
        (dict(bits=8, memory=[-129]), r"initial M\[0\] = -129 out of range"),
    ],
)
def test_invalid_signed_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run("nop", **kwargs)


@pytest.mark.parametrize("bits", [4, 65])
def test_width_out_of_range(bits):
    with pytest.raises(ValueError, match=rf"bits = {bits} must lie in \[8, 64\]"):
        run_reference(Program(((Instruction("nop"),),)), bits=bits)
