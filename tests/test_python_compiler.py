"""library.python: every construct of the subset against CPython, random programs against CPython on both
machines, the standard programs in Python against their .asm versions, recursion, spills, every CompileError
with its location, and Python functions installed into a model."""

from __future__ import annotations

import ast
import copy
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from dcomp_isa import signed_range
from library.interpreter import run_reference
from library.python import CompileError, compile_python, parse_call, python_library, run_python
from library.stdlib import PROGRAMS_DIR, load_program, standard_source

N = 128


class OutOfRange(Exception):
    """CPython computed a value outside the machine's values ([0, n), or the signed range of `bits` bits): the
    program is outside the compared domain."""


_LIMIT = {"values": (0, N)}  # [low, high) of the machine's values for the CPython run under way


def _checked(value):
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    low, high = _LIMIT["values"]
    if not low <= value < high:
        raise OutOfRange(value)
    return Value(value)


class Value(int):
    """An int whose arithmetic raises OutOfRange when CPython leaves the machine's values."""

    def __add__(self, other):
        return _checked(int(self) + int(other))

    def __radd__(self, other):
        return _checked(int(other) + int(self))

    def __sub__(self, other):
        return _checked(int(self) - int(other))

    def __rsub__(self, other):
        return _checked(int(other) - int(self))

    def __mul__(self, other):
        return _checked(int(self) * int(other))

    def __rmul__(self, other):
        return _checked(int(other) * int(self))

    def __floordiv__(self, other):
        return _checked(int(self) // int(other))

    def __rfloordiv__(self, other):
        return _checked(int(other) // int(self))

    def __mod__(self, other):
        return _checked(int(self) % int(other))

    def __rmod__(self, other):
        return _checked(int(other) % int(self))

    def __neg__(self):
        return _checked(-int(self))


class _CheckedConstants(ast.NodeTransformer):
    """Int literals become `Value(...)` so that arithmetic on constants alone is checked too (a literal
    negative number, such as a range step or an index from the end, stays a plain int)."""

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return node
        return self.generic_visit(node)

    def visit_Constant(self, node):
        if type(node.value) is int:
            return ast.copy_location(ast.Call(ast.Name("Value", ast.Load()), [node], []), node)
        return node


def cpython(source: str, entry: str, args: list, values: tuple[int, int] = (0, N)):
    """(result, lists after the call) from CPython, with values checked against [low, high) = `values`;
    OutOfRange and ZeroDivisionError propagate."""
    _LIMIT["values"] = values
    namespace: dict = {"Value": Value}
    tree = ast.fix_missing_locations(_CheckedConstants().visit(ast.parse(source)))
    exec(compile(tree, "<test>", "exec"), namespace)
    wrapped = [[Value(v) for v in arg] if isinstance(arg, list) else Value(arg) for arg in args]
    result = namespace[entry](*wrapped)
    if result is not None:
        result = _checked(int(result))
    return result, [arg for arg in wrapped if isinstance(arg, list)]


def check(source: str, *args, entry: str | None = None, max_steps: int = 5000, **machine) -> dict:
    """Compiles `source`, runs `entry(*args)` on the reference machine and asserts CPython's answer."""
    source = textwrap.dedent(source)
    compiled = compile_python(source, entry=entry, **machine)
    output = run_python(compiled, copy.deepcopy(list(args)), max_steps=max_steps)
    assert output["halted"], compiled.assembly
    expected, lists = cpython(source, compiled.name, list(args), compiled.value_range)
    if expected is not None:
        assert output["result"] == expected, compiled.assembly
    assert list(output["lists"].values()) == [[int(v) for v in values] for values in lists], compiled.assembly
    return output


# ------------------------------------------------------------------------------------------------ constructs
def test_arithmetic_wraps_mod_n_and_divides_like_python():
    source = """
        def f(a, b):
            return (a + b) * 3 - b // 4 + a % (b + 1)
    """
    check(source, 20, 7)
    output = run_python(compile_python(textwrap.dedent(source)), [100, 100])
    assert output["result"] == ((200 * 3 - 25 + 100 % 101) % N)  # + - * wrap mod n


def test_constants_unary_minus_and_booleans():
    check("def f(a):\n    return a + True - False + (-(-3)) + 2 * 5\n", 4)
    output = run_python(compile_python("def f(a):\n    return -a\n"), [5])
    assert output["result"] == N - 5  # -a is (n - a) mod n


@pytest.mark.parametrize("op", ["<", "<=", ">", ">=", "==", "!="])
@pytest.mark.parametrize(("a", "b"), [(3, 5), (5, 5), (7, 2), (0, 0)])
def test_comparisons_as_values_and_as_conditions(op, a, b):
    check(f"def f(a, b):\n    x = a {op} b\n    if a {op} b:\n        x += 10\n    return x\n", a, b)


@pytest.mark.parametrize("args", [(1, 2, 3), (2, 2, 3), (3, 2, 1), (1, 3, 2), (0, 0, 0)])
def test_chained_comparisons_evaluate_the_middle_once(args):
    source = """
        def f(a, b, c):
            x = 0
            if a <= b < c:
                x = 1
            if not a < b < c:
                x += 2
            y = a < b <= c
            return x * 4 + y
    """
    check(source, *args)


@pytest.mark.parametrize("args", [(0, 0), (0, 5), (3, 0), (3, 5)])
def test_and_or_not_return_operands_like_python(args):
    source = """
        def f(a, b):
            x = a and b
            y = a or b
            z = not a
            if a and not b or b and not a:
                z += 2
            return x + 10 * y + 100 * z
    """
    check(source, *args, n=1024)


def test_if_elif_else_and_conditional_expressions():
    source = """
        def f(a):
            if a < 3:
                r = 1
            elif a < 6:
                r = 2
            elif a == 6:
                r = 3
            else:
                r = 4
            return r * 10 + (a if a % 2 else a + 1)
    """
    for a in range(9):
        check(source, a)


def test_while_with_break_and_continue():
    source = """
        def f(n):
            i = 0
            total = 0
            while True:
                i += 1
                if i > n:
                    break
                if i % 3 == 0:
                    continue
                total += i
            return total
    """
    for n in (0, 1, 5, 9):
        check(source, n)


@pytest.mark.parametrize("call", ["range(n)", "range(2, n)", "range(1, n, 3)", "range(n, 0, -1)", "range(n, 1, -2)"])
def test_for_over_range(call):
    source = f"""
        def f(n):
            total = 0
            last = 99
            for i in {call}:
                total = total * 2 + i
                last = i
            return total + last
    """
    for n in (0, 1, 2, 5, 7):
        check(source, n, n=1024)


def test_for_loop_variable_keeps_its_last_value_and_may_be_reassigned():
    source = """
        def f(n):
            i = 42
            for i in range(n):
                i = i * 2
            return i
    """
    for n in (0, 1, 4):
        check(source, n)


def test_for_over_a_list_len_indexing_and_item_assignment():
    source = """
        def f(xs, k):
            total = 0
            for x in xs:
                total += x
            xs[0] = total
            xs[len(xs) - 1] += k
            xs[-2] = xs[-1] + 1
            return total + len(xs)
    """
    check(source, [3, 1, 4, 1, 5], 7)


def test_for_over_a_list_leaves_the_last_element_in_the_variable():
    source = """
        def f(xs):
            x = 9
            for x in xs:
                pass
            return x
    """
    check(source, [3, 1, 4])
    check(source, [])


def test_tuple_assignment_swaps_and_list_item_swaps():
    source = """
        def f(xs, a, b):
            a, b = b, a
            a, b = a + b, a * 2
            xs[0], xs[1] = xs[1], xs[0]
            i, xs[i] = 2, 9
            return a * 100 + b
    """
    check(source, [1, 2, 3, 4], 3, 4, n=1024)


def test_augmented_assignment_every_operator():
    check("def f(a):\n    a += 3\n    a -= 1\n    a *= 5\n    a //= 2\n    a %= 7\n    return a\n", 9)


def test_min_max_of_two_values():
    check("def f(a, b):\n    return max(a, b) * 10 + min(a, b)\n", 3, 8)


def test_calls_pass_ints_and_lists_and_keep_the_callers_values():
    source = """
        def total(xs):
            s = 0
            for x in xs:
                s += x
            return s

        def scale(xs, k):
            for i in range(len(xs)):
                xs[i] = xs[i] * k

        def f(xs, ys, k):
            before = total(xs)
            scale(ys, k)
            return before * 3 + total(ys) + k
    """
    check(source, [1, 2, 3], [4, 5], 2)


@pytest.mark.parametrize("depth", [0, 1, 16, 20])
def test_recursion_at_least_16_deep(depth):
    source = """
        def down(k, xs):
            if k == 0:
                return 0
            xs[k % len(xs)] += 1
            return down(k - 1, xs) + 2
    """
    check(source, depth, [0, 0, 0], memory_size=64, max_recursion=24)


def test_recursive_fibonacci():
    source = """
        def fib(n):
            if n < 2:
                return n
            return fib(n - 1) + fib(n - 2)
    """
    for n in range(8):
        check(source, n, memory_size=64, max_steps=20000)


def test_mutual_recursion():
    source = """
        def is_even(n):
            if n == 0:
                return 1
            return is_odd(n - 1)

        def is_odd(n):
            if n == 0:
                return 0
            return is_even(n - 1)
    """
    for n in (0, 1, 6, 11):
        check(source, n, entry="is_even", memory_size=64)


def test_a_recursion_deeper_than_reserved_is_reported_not_miscomputed():
    source = "def down(k):\n    if k == 0:\n        return 0\n    return down(k - 1) + 1\n"
    compiled = compile_python(source, memory_size=32, max_recursion=4)
    assert run_python(compiled, [4])["result"] == 4
    with pytest.raises(ValueError, match="deeper than the call stack"):
        run_python(compiled, [30])


def test_call_chains_deeper_than_the_return_stack_save_return_addresses():
    source = "\n".join(
        [f"def f{i}(x):\n    return f{i + 1}(x + 1) * 2\n" for i in range(6)] + ["def f6(x):\n    return x\n"]
    )
    check(source, 1, entry="f0", n=512)


def test_more_live_values_than_registers_spill_to_memory():
    names = [f"v{i}" for i in range(16)]
    lines = [f"    {name} = a + {i}" for i, name in enumerate(names)]
    lines.append("    return " + " + ".join(f"{name} * {i % 3 + 1}" for i, name in enumerate(names)))
    source = "def f(a):\n" + "\n".join(lines) + "\n"
    compiled = compile_python(source, n=1024)
    assert "write" in compiled.assembly and compiled.data_cells < compiled.memory_size
    check(source, 5, n=1024)


# --------------------------------------------------------------------------- signed values (binary machine)
SIGNED_ARGS = [(-7, 2), (-7, 3), (7, -3), (-8, -3), (0, -5), (3, 3), (-1, 1)]


@pytest.mark.parametrize("args", SIGNED_ARGS)
def test_signed_floor_division_and_modulo_like_python_at_64_bits(args):
    source = """
        def f(a, b):
            c = -7 // 2 + -7 % 3 * 10 + 7 % -3 * 100
            return (a // b) * 10000 + (a % b) * 1000 + c - a * -b
    """
    check(source, *args, bits=64)


@pytest.mark.parametrize("args", SIGNED_ARGS)
def test_signed_min_max_abs_and_comparisons_against_zero(args):
    source = """
        def magnitude(x):
            return x if x >= 0 else -x

        def f(a, b):
            s = (a < b) + (a <= b) * 2 + (a == -b) * 4
            if a < 0:
                s += 10
            if a <= 0:
                s += 20
            if a > 0:
                s += 40
            if not a >= 0:
                s += 80
            if -3 <= a < 3:
                s += 160
            return magnitude(a) * 1000 + max(a, b) * 100 + min(a, -b) * 10000 + s
    """
    check(source, *args, bits=64)


@pytest.mark.parametrize("args", [(3, 2), (0, 0), (-2, -1), (6, 4)])
def test_signed_loops_count_down_past_zero(args):
    source = """
        def f(a, b):
            total = 0
            for i in range(a, -a - 1, -1):
                total += i * i
            k = a
            while k > -5:
                k -= 2
                total += k
            for j in range(-3, a):
                total += j
            for j in range(b):
                total -= 100
            return total * k
    """
    check(source, *args, bits=64)


def test_signed_lists_hold_negative_values_and_index_from_the_end():
    source = """
        def f(xs):
            best = xs[0]
            for x in xs:
                best = min(best, x)
            xs[-1] = -best
            xs[0] = -9223372036854775808 // -9223372036854775807
            return best
    """
    assert check(source, [4, -5, 3, -2], bits=64)["lists"] == {"xs": [1, -5, 3, 5]}


def test_signed_overflow_wraps_to_the_bits():
    compiled = compile_python("def f(a, b):\n    return a * b + 1\n", bits=8)
    assert run_python(compiled, [16, 8])["result"] == -127  # 129 wraps to -127, where CPython gives 129
    assert run_python(compiled, [-16, 8])["result"] == -127
    with pytest.raises(ValueError, match=r"not a machine value in \[-128, 128\)"):
        run_python(compiled, [128, 1])


@pytest.mark.parametrize(
    ("source", "bits", "column", "message"),
    [
        ("def f(a):\n    return a + 128\n", 8, 16, "constant 128 does not fit the machine's values [-128, 128)"),
        ("def f(a):\n    return a - -129\n", 8, 17, "constant -129 does not fit the machine's values [-128, 128)"),
        ("def f(a):\n    return a * 2 ** 3\n", 8, 16, "'**' is not supported"),
        ("def f(a):\n    return a + 9223372036854775808\n", 64, 16, "constant 9223372036854775808 does not fit"),
    ],
)
def test_signed_constants_out_of_range_are_errors_at_their_location(source, bits, column, message):
    with pytest.raises(CompileError) as error:
        compile_python(source, bits=bits)
    assert (error.value.line, error.value.column) == (2, column) and message in error.value.message
    assert compile_python("def f(a):\n    return a - -128 + -9\n", bits=8).program is not None


def test_loops_share_lines_the_counted_loop_is_one_line_per_iteration():
    compiled = compile_python(PROGRAMS_DIR / "fib.py")
    assert [run_python(compiled, [1, 1, d])["steps"] for d in (1, 2, 3)] == [3, 4, 5]


# ------------------------------------------------------------------------------------- the standard library
def _asm_run(name: str, registers: dict[int, int], memory: list[int]):
    execution = run_reference(load_program(name), registers=registers, memory=memory, max_steps=5000)
    return execution.state.registers[0], list(execution.state.memory[: len(memory)])


values = st.integers(0, N - 1)


@settings(max_examples=40, deadline=None)
@given(a=values, b=values, d=st.integers(1, 20))
def test_fib_gcd_and_mul_in_python_match_their_asm_versions(a, b, d):
    assert (
        run_python(compile_python(PROGRAMS_DIR / "fib.py"), [a, b, d])["result"]
        == _asm_run("fib", {1: a, 2: b, 3: d}, [])[0]
    )
    assert run_python(compile_python(PROGRAMS_DIR / "gcd.py"), [a, b])["result"] == _asm_run("gcd", {1: a, 2: b}, [])[0]
    product = run_python(compile_python(PROGRAMS_DIR / "mul_repeated.py"), [a, d])["result"]
    assert product == _asm_run("mul_repeated", {1: a, 2: d}, [])[0]


@settings(max_examples=40, deadline=None)
@given(xs=st.lists(values, max_size=12))
def test_sum_list_max_and_sort_in_python_match_their_asm_versions(xs):
    for name in ("sum", "list_max"):
        output = run_python(compile_python(PROGRAMS_DIR / f"{name}.py"), [list(xs)])
        assert output["result"] == _asm_run(name, {1: len(xs)}, list(xs))[0]
    output = run_python(compile_python(PROGRAMS_DIR / "sort.py"), [list(xs)], max_steps=5000)
    assert output["lists"]["xs"] == _asm_run("sort", {1: len(xs)}, list(xs))[1] == sorted(xs)


# ----------------------------------------------------------------------------------------- random programs
_NAMES = ("a", "b", "c")
small = st.integers(0, 12)


@st.composite
def arithmetic(draw, depth: int = 2, calls: bool = True):
    """An int-valued expression over a, b, c (and calls of h); comparisons only appear as tests (their bools
    are not ints here)."""
    if depth == 0 or draw(st.booleans()):
        return draw(st.sampled_from(_NAMES)) if draw(st.booleans()) else str(draw(st.integers(0, 9)))
    kinds = ["binary", "binary", "minmax", "ifexp", "boolop", *(["call", "item", "len"] if calls else [])]
    kind = draw(st.sampled_from(kinds))
    left, right = draw(arithmetic(depth - 1, calls)), draw(arithmetic(depth - 1, calls))
    if kind == "binary":
        return f"({left} {draw(st.sampled_from(['+', '-', '*', '//', '%']))} {right})"
    if kind == "minmax":
        return f"{draw(st.sampled_from(['min', 'max']))}({left}, {right})"
    if kind == "ifexp":
        return f"({left} if {draw(condition(depth - 1, calls))} else {right})"
    if kind == "boolop":
        return f"({left} {draw(st.sampled_from(['and', 'or']))} {right})"
    if kind == "item":
        return f"xs[{left} % len(xs)]"
    if kind == "len":
        return "len(xs)"
    return f"h({left}, {right})"


@st.composite
def condition(draw, depth: int = 1, calls: bool = True):
    kind = draw(st.sampled_from(["compare", "compare", "chain", "not", "boolop", "value"]))
    ops = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
    if kind == "compare" or depth == 0:
        return f"{draw(arithmetic(0))} {draw(ops)} {draw(arithmetic(1, calls))}"
    if kind == "chain":
        return f"{draw(arithmetic(0))} {draw(ops)} {draw(arithmetic(0))} {draw(ops)} {draw(arithmetic(0))}"
    if kind == "not":
        return f"not ({draw(condition(depth - 1, calls))})"
    if kind == "boolop":
        joiner = draw(st.sampled_from(["and", "or"]))
        return f"({draw(condition(depth - 1, calls))}) {joiner} ({draw(condition(depth - 1, calls))})"
    return draw(arithmetic(1, calls))


@st.composite
def statements(draw, depth: int = 2, indent: str = "    ") -> list[str]:
    lines = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["assign", "assign", "augment", "swap", "store", "if", "for", "for", "while"]))
        target = draw(st.sampled_from(_NAMES))
        if kind == "assign" or (depth == 0 and kind in ("if", "for", "while")):
            lines.append(f"{indent}{target} = {draw(arithmetic())}")
        elif kind == "augment":
            lines.append(
                f"{indent}{target} {draw(st.sampled_from(['+=', '-=', '*=', '//=', '%=']))} {draw(arithmetic(1))}"
            )
        elif kind == "swap":
            lines.append(f"{indent}a, b, c = {draw(arithmetic(1))}, a, b")
        elif kind == "store":
            lines.append(f"{indent}xs[{draw(arithmetic(1))} % len(xs)] = {draw(arithmetic(1))}")
        elif kind == "if":
            lines.append(f"{indent}if {draw(condition())}:")
            lines += draw(statements(depth - 1, indent + "    "))
            if draw(st.booleans()):
                lines.append(f"{indent}else:")
                lines += draw(statements(depth - 1, indent + "    "))
        elif kind == "for":
            counter = f"i{depth}"
            iterable = draw(st.sampled_from([f"range({draw(st.integers(0, 3))})", "xs"]))
            lines.append(f"{indent}for {counter} in {iterable}:")
            lines.append(f"{indent}    {target} = {target} + {counter}")
            lines += draw(statements(depth - 1, indent + "    "))
        else:
            counter = f"k{depth}"
            lines.append(f"{indent}{counter} = 0")
            lines.append(f"{indent}while {counter} < {draw(st.integers(0, 3))}:")
            lines.append(f"{indent}    {counter} += 1")
            lines += draw(statements(depth - 1, indent + "    "))
    return lines


@st.composite
def programs(draw) -> str:
    helper = f"def h(a, b):\n    c = 1\n    return {draw(arithmetic(1, calls=False))}\n"
    body = draw(statements())
    return helper + "\n\ndef f(a, b, c, xs: list[int]):\n" + "\n".join(body) + f"\n    return {draw(arithmetic(1))}\n"


def _compare_with_cpython(source: str, args: list, differentiable: bool, **machine) -> None:
    bits = machine.get("bits")
    values = (0, machine.get("n", N)) if bits is None else signed_range(bits)
    try:
        expected, lists = cpython(source, "f", copy.deepcopy(args), values)
    except (OutOfRange, ZeroDivisionError):
        assume(False)  # outside the values the machine shares with CPython
    try:
        compiled = compile_python(source, entry="f", **machine)
    except CompileError as error:  # a constant `// 0` is refused even where CPython never evaluates it
        assume(not any(text in error.message for text in ("by zero", "program too long", "than memory holds")))
        raise
    output = run_python(compiled, args, differentiable=differentiable, max_steps=3000)
    assert output["halted"] and output["result"] == expected, f"{source}\n{compiled.assembly}"
    assert output["lists"]["xs"] == lists[0], f"{source}\n{compiled.assembly}"


# The default machine, and one with 6 registers for values, where most programs spill.
MACHINES = [dict(), dict(num_registers=9, call_depth=2, memory_size=64)]


@pytest.mark.parametrize("machine", MACHINES, ids=["16 registers", "9 registers"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(source=programs(), ints=st.lists(small, min_size=3, max_size=3), xs=st.lists(small, min_size=1, max_size=4))
def test_random_programs_match_cpython_on_the_reference_machine(machine, source, ints, xs):
    _compare_with_cpython(source, [*ints, xs], differentiable=False, **machine)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(
    source=programs(),
    ints=st.lists(st.integers(0, 12), min_size=3, max_size=3),
    xs=st.lists(small, min_size=1, max_size=3),
)
# 249 steps of calls and nested loops: a float32 FFT's ~1e-8 on every value of `add`, piled up by `lt` and
# compounded by the stack pointer, once left the run below the halting threshold (dcomp_alu.closed_forms).
@example(
    source="def h(a, b):\n    c = 1\n    return (0 if a < a else 0)\n\n\ndef f(a, b, c, xs: list[int]):\n"
    "    for i2 in xs:\n        a = a + i2\n        a = 0\n        a = (h(0, 0) + (0 + 1))\n        for i1 in xs:\n"
    "            a = a + i1\n            a += h(a, 0)\n    a = ((0 + 0) + (0 + 0))\n    a = ((0 + 0) + (0 + 0))\n"
    "    return (0 + 0)\n",
    ints=[0, 0, 0],
    xs=[0, 0, 0],
)
def test_random_programs_match_cpython_on_the_differentiable_machine(source, ints, xs):
    _compare_with_cpython(source, [*ints, xs], differentiable=True)


signed = st.integers(-12, 12)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(source=programs(), ints=st.lists(signed, min_size=3, max_size=3), xs=st.lists(signed, min_size=1, max_size=4))
def test_random_programs_match_cpython_with_signed_values_at_64_bits(source, ints, xs):
    _compare_with_cpython(source, [*ints, xs], differentiable=False, bits=64)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(source=programs(), ints=st.lists(signed, min_size=3, max_size=3), xs=st.lists(signed, min_size=1, max_size=3))
def test_random_programs_match_cpython_on_the_differentiable_binary_machine(source, ints, xs):
    _compare_with_cpython(source, [*ints, xs], differentiable=True, bits=16)


# ------------------------------------------------------------------------------------------------- errors
ERRORS = [
    ("def f(a):\n    return a * 1.5\n", 2, 16, "floats are not supported"),
    ("def f(a):\n    return a / 2\n", 2, 12, "true division"),
    ("def f(a):\n    return a ** 2\n", 2, 12, "'**' is not supported"),
    ("def f(a):\n    return a << 1\n", 2, 12, "'<<' is not supported"),
    ("def f(a):\n    return a in a\n", 2, 12, "'in' is not supported"),
    ("def f(a):\n    return 'x'\n", 2, 12, "strings are not supported"),
    ("def f(a):\n    return a + 300\n", 2, 16, "constant 300 does not fit"),
    ("def f(a):\n    return a // 0\n", 2, 17, "division or modulo by zero"),
    ("def f(a):\n    def g():\n        return a\n    return g()\n", 2, 5, "closures are not supported"),
    ("def f(a):\n    g = lambda: a\n    return 0\n", 2, 9, "lambda (closures are not supported)"),
    ("def f(a):\n    nonlocal a\n", 2, 5, "closures are not supported"),
    ("def f(a):\n    return [1, 2]\n", 2, 12, "list literals"),
    ("def f(xs):\n    return xs[1:2]\n", 2, 15, "slices are not supported"),
    ("def f(xs):\n    xs.append(1)\n", 2, 5, "no methods"),
    ("def f(a):\n    return g(a)\n", 2, 12, "unknown function 'g'"),
    ("def f(a):\n    return y\n", 2, 12, "name 'y' is not defined"),
    ("def g(a, b):\n    return a\ndef f(a):\n    return g(a)\n", 4, 12, "'g' takes 2 arguments, got 1"),
    ("def g(a):\n    pass\ndef f(a):\n    return g(a) + 1\n", 4, 12, "returns no value"),
    ("def f(xs):\n    y = xs[0]\n    return xs + y\n", 3, 12, "'xs' is a list, used here as a number"),
    ("def f(a: int):\n    return len(a)\n", 2, 16, "'a' is a number, used here as a list"),
    ("def f(xs):\n    xs = 3\n    return xs[0]\n", 1, 1, "assigning to the list argument 'xs'"),
    ("def f(xs):\n    y = len(xs)\n    return xs\n", 3, 12, "returning a list"),
    ("def f(a):\n    try:\n        pass\n    except Exception:\n        pass\n", 2, 5, "'try' statements"),
    ("def f(a):\n    for i in range(a):\n        pass\n    else:\n        pass\n", 5, 9, "'else' on loops"),
    ("def f(a):\n    for i in range(0, a, a):\n        pass\n", 2, 26, "step of range() must be a constant"),
    ("def f(a):\n    for i in a:\n        pass\n    return a + 1\n", 4, 12, "'a' is a list, used here as a number"),
    ("def f(a):\n    return range(a)\n", 2, 12, "range() is only supported"),
    ("def f(a):\n    return min(a, a, a)\n", 2, 12, "min() of exactly two values"),
    ("def f(a):\n    return f(a, b=1)\n", 2, 17, "keyword arguments"),
    ("def f(a, b=1):\n    return a\n", 1, 12, "default argument values"),
    ("def f(*a):\n    return 0\n", 1, 8, "*args and **kwargs"),
    ("def f(a, a):\n    return a\n", 1, 10, "duplicate argument 'a'"),
    ("@staticmethod\ndef f(a):\n    return a\n", 1, 2, "decorators"),
    ("x = 1\ndef f(a):\n    return a\n", 1, 1, "at module level"),
    ("import os\n", 1, 1, "imports at module level"),
    ("def f(a):\n    break\n", 2, 5, "'break' outside a loop"),
    ("def f(a:\n", 1, 6, "syntax error"),
    ("def f(a: float):\n    return a\n", 1, 10, "only 'int' and 'list[int]' annotations"),
    (
        "def f(n):\n    if n == 0:\n        return 0\n    return f(n - 1) + f(n - 1)\n",
        4,
        12,
        "unbounded recursion depth exceeds memory",
    ),
]


@pytest.mark.parametrize(("source", "line", "column", "message"), ERRORS, ids=[e[3][:30] for e in ERRORS])
def test_compile_errors_name_file_line_column_and_construct(source, line, column, message):
    with pytest.raises(CompileError) as caught:
        compile_python(source, source_name="prog.py", memory_size=32, max_recursion=16)
    error = caught.value
    assert message in error.message, error
    assert (error.line, error.column) == (line, column), error
    assert str(error).startswith(f"prog.py:{line}:{column}: ")


_NESTED_LOOPS = "def f(a):\n" + "".join("    " * (i + 1) + f"for i{i} in range(a):\n" for i in range(5))
_NESTED_LOOPS += "    " * 6 + "a += 1\n    return a\n"
_MANY_VALUES = "\n\ndef f(a):\n" + "\n".join(f"    v{i} = a + {i}" for i in range(16))
_MANY_VALUES += "\n    return " + " + ".join(f"v{i}" for i in range(16)) + "\n"
_LONG = "def f(a):\n" + "\n".join(f"    a = a * {i % 7 + 2} + {i % 5}" for i in range(40)) + "\n    return a\n"
MACHINE_ERRORS = [
    ("def f(" + ", ".join(f"a{i}" for i in range(11)) + "):\n    return a0\n", {}, 1, 1, "argument registers"),
    (_NESTED_LOOPS, dict(num_registers=6, call_depth=2), 1, 1, "needs more registers at once"),
    (_MANY_VALUES, dict(memory_size=3), 3, 1, "spills more values than memory holds"),
    (
        "def g(a):\n    return a\ndef f(a):\n    return g(g(a) + a)\n",
        dict(memory_size=1, call_depth=1),
        3,
        1,
        "call stack",
    ),
    (_LONG, dict(n=32), 1, 1, "does not assemble: program too long"),
]


@pytest.mark.parametrize(
    ("source", "machine", "line", "column", "message"), MACHINE_ERRORS, ids=[e[4][:24] for e in MACHINE_ERRORS]
)
def test_programs_the_machine_cannot_hold_are_errors_at_their_function(source, machine, line, column, message):
    with pytest.raises(CompileError) as caught:
        compile_python(source, source_name="prog.py", **machine)
    assert message in caught.value.message and (caught.value.line, caught.value.column) == (line, column)


def test_non_text_input_is_an_error():
    with pytest.raises(CompileError, match="expected Python source text"):
        compile_python(b"def f(): pass")


# ------------------------------------------------------------------------------------------- entry points
def test_function_objects_and_files_compile_like_their_source(tmp_path):
    def triple(a):
        return a * 3

    assert run_python(compile_python(triple), [5])["result"] == 15
    path = tmp_path / "prog.py"
    path.write_text("def helper(a):\n    return a + 1\n\ndef main(a):\n    return helper(a) * 2\n")
    compiled = compile_python(path)
    assert compiled.name == "main" and run_python(compiled, [4])["result"] == 10
    with pytest.raises(CompileError, match="no function 'nope'"):
        compile_python(path, entry="nope")


def test_parse_call_reads_ints_and_lists():
    assert parse_call("gcd(84, 36)") == ("gcd", [84, 36])
    assert parse_call(" sort([3, 1, 2]) ") == ("sort", [[3, 1, 2]])
    assert parse_call("gcd(84, -36)") == ("gcd", [84, -36]) and parse_call("s([-1, 2])") == ("s", [[-1, 2]])
    for bad in ("gcd(", "x + 1", "f(a)"):
        with pytest.raises(ValueError, match="--call"):
            parse_call(bad)


def test_run_lays_lists_out_one_after_another_with_base_registers():
    source = "def f(xs, ys):\n    ys[0] = xs[1]\n    return len(ys)\n"
    output = run_python(compile_python(source), [[5, 6], [7, 8, 9]])
    assert output["lists"] == {"xs": [5, 6], "ys": [6, 8, 9]} and output["result"] == 3
    with pytest.raises(ValueError, match="memory cells"):
        run_python(compile_python(source, memory_size=4), [[1, 2, 3], [4, 5]])
    with pytest.raises(ValueError, match="not a machine value"):
        run_python(compile_python(source), [[1, 200], [1]])


def test_python_library_compiles_python_items_and_keeps_the_rest(tmp_path):
    machine = dict(n=N, num_registers=16, memory_size=32, call_depth=4)
    assert python_library(["add", "fib"], **machine) == ["add", "fib"]

    def double(a):
        return a + a

    path = tmp_path / "inc3.py"
    path.write_text("def inc3(a):\n    return a + 3\n")
    items = python_library(["add", double, path, Path(PROGRAMS_DIR / "gcd.py")], **machine)
    assert list(items) == ["add", "double", "inc3", "gcd"] and items["add"] == standard_source("add")
    mapping = python_library({"g": (PROGRAMS_DIR / "gcd.py").read_text(), "s": "add r1 r2 r0 | ret"}, **machine)
    assert mapping["s"] == "add r1 r2 r0 | ret" and mapping["g"] == compile_python(PROGRAMS_DIR / "gcd.py").program
    signed = python_library({"t": "def t(a):\n    return a * -3\n"}, **machine, bits=64)["t"]
    assert signed == compile_python("def t(a):\n    return a * -3\n", bits=64).program
    assert -3 in [lane.imm for line in signed.lines for lane in line]


# ------------------------------------------------------------------------------------------ CLI and install
def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from library.__main__ import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_runs_checks_compiles_and_decompiles_python_files(tmp_path, capsys):
    import json

    path = tmp_path / "prog.py"
    path.write_text(
        "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n\ndef sort(xs):\n"
        "    for k in range(len(xs), 1, -1):\n        for i in range(k - 1):\n"
        "            if xs[i] > xs[i + 1]:\n                xs[i], xs[i + 1] = xs[i + 1], xs[i]\n"
    )
    code, out, _ = _cli(capsys, "run", str(path), "--call", "gcd(84, 36)")
    assert code == 0 and json.loads(out)["result"] == 12 and json.loads(out)["halted"] is True
    code, out, _ = _cli(capsys, "run", str(path), "--call", "sort([3, 1, 2])", "--n", "32", "--differentiable")
    output = json.loads(out)
    assert code == 0 and output["lists"] == {"xs": [1, 2, 3]} and output["result"] is None
    assert output["halt_probability"] > 0.99
    code, out, _ = _cli(capsys, "check", str(path))
    assert code == 0 and "ok" in out
    code, out, _ = _cli(capsys, "compile", str(path), "-o", str(tmp_path / "prog.safetensors"))
    assert code == 0 and "compiled sort" in out  # without --call: the last function
    code, out, _ = _cli(capsys, "decompile", str(tmp_path / "prog.safetensors"))
    assert code == 0 and "sort.for" in out


def test_cli_runs_checks_and_compiles_python_on_the_binary_machine(tmp_path, capsys):
    import json

    path = tmp_path / "prog.py"
    path.write_text(
        "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n\ndef triple(a):\n    return a * -3\n"
    )
    code, out, _ = _cli(capsys, "run", str(path), "--call", "gcd(84, -36)", "--bits", "64")
    assert code == 0 and json.loads(out)["result"] == -12 and json.loads(out)["halted"] is True  # Python's -12
    code, out, _ = _cli(capsys, "run", str(path), "--call", "triple(-5)", "--bits", "16", "--differentiable")
    output = json.loads(out)
    assert code == 0 and output["result"] == 15 and output["halt_probability"] > 0.99
    code, out, _ = _cli(capsys, "check", str(path), "--bits", "64")
    assert code == 0 and "ok" in out
    code, out, _ = _cli(capsys, "compile", str(path), "--bits", "64", "-o", str(tmp_path / "prog.safetensors"))
    assert code == 0 and "compiled triple" in out
    code, out, _ = _cli(capsys, "decompile", str(tmp_path / "prog.safetensors"))
    assert code == 0 and "-3 r0" in out
    code, _, err = _cli(capsys, "run", str(path), "--call", "gcd(200, 1)", "--bits", "8")
    assert code == 2 and "not a machine value in [-128, 128)" in err


def test_cli_reports_compile_errors_at_their_location(tmp_path, capsys):
    path = tmp_path / "bad.py"
    path.write_text("def f(a):\n    return a * 0.5\n")
    code, _, err = _cli(capsys, "check", str(path))
    assert code == 1 and err.strip() == f"{path}:2:16: floats are not supported"
    code, _, err = _cli(capsys, "run", str(path))
    assert code == 2 and "--call" in err


def test_python_functions_install_into_a_model_as_library_programs():
    import torch
    from model_fixtures import COMPUTER, steer, tiny_llama

    from library.install import from_llama, install_library

    def gcd(a, b):
        while b:
            a, b = b, a % b
        return a

    model = from_llama(tiny_llama(), computer_layer=1, library=["add", gcd], **COMPUTER).eval()
    assert model.config.library_programs == ["add", "gcd"]
    for program, inputs, expected in (("gcd", {1: 12, 2: 8}, 4), ("add", {1: 3, 2: 4}, 7)):
        hidden = steer(model.computer, program, inputs)
        with torch.no_grad():
            run = model.computer.run(hidden, torch.ones(1, 1, dtype=torch.bool))
        assert int(run.state.registers[0, model.computer.output_register].argmax()) == expected
    linked = install_library(model, {"sum": (PROGRAMS_DIR / "sum.py").read_text(), "add": "add r1 r2 r0 | ret"})
    assert linked.names == ("sum", "add") and model.config.library_programs == ["sum", "add"]
