"""The standard library (library/stdlib.py: the generated calculator and library/programs/*.asm) against plain Python.

Every program runs on random inputs on both machines — the reference interpreter and the differentiable
RegisterMachine (one-hot program and inputs, a whole batch of inputs at once) — alone and from its entry
point in the linked library, and must give Python's answer in the number of steps its header states.
"""

from __future__ import annotations

import dataclasses
import math
import random
from functools import partial

import pytest
import torch

import dcomp_isa
from dcomp_alu import TableALU
from dcomp_circuits import CircuitALU
from dcomp_machine import BinaryValues, RegisterMachine, one_hot_values
from library.assembler import AssemblyError, assemble, format_program
from library.compiler import compile_program
from library.interpreter import run_reference
from library.program import Program
from library.stdlib import (
    CALCULATOR,
    PROGRAMS_DIR,
    STANDARD_PROGRAMS,
    WIDE_WRITTEN,
    WRITTEN,
    LinkError,
    link,
    load_program,
    standard_library,
    standard_source,
)

N, REGISTERS, MEMORY_SIZE = 128, 16, 32
SURE = 1 - 1e-4  # probability of a decoded value on one-hot runs


@dataclasses.dataclass(frozen=True)
class Case:
    """One run: initial registers and memory, and the expected r0 (None: not an output), memory prefix and
    step count."""

    registers: dict[int, int]
    memory: tuple[int, ...] = ()
    result: int | None = None
    output: tuple[int, ...] = ()
    steps: int = 1


# ------------------------------------------------------------------------------------------ Python oracles
CALCULATOR_ORACLES = {
    "inc": lambda a, b, n: (a + 1) % n,
    "dec": lambda a, b, n: (a - 1) % n,
    "add": lambda a, b, n: (a + b) % n,
    "sub": lambda a, b, n: (a - b) % n,
    "mul": lambda a, b, n: a * b % n,
    "div": lambda a, b, n: a // b if b else 0,
    "mod": lambda a, b, n: a % b if b else 0,
    "max": lambda a, b, n: max(a, b),
    "min": lambda a, b, n: min(a, b),
    "eq": lambda a, b, n: int(a == b),
    "lt": lambda a, b, n: int(a < b),
    "and": lambda a, b, n: int(a != 0 and b != 0),
    "or": lambda a, b, n: int(a != 0 or b != 0),
    "not": lambda a, b, n: int(a == 0),
}


def _value(rng: random.Random, n: int) -> int:
    """A random value, with the edge values 0, 1 and n - 1 over-represented."""
    return rng.choice((0, 1, n - 1)) if rng.random() < 0.2 else rng.randrange(n)


def _calculator(op: str, rng: random.Random, n: int, size: int) -> Case:
    a, b = _value(rng, n), _value(rng, n)
    return Case({1: a, 2: b}, result=CALCULATOR_ORACLES[op](a, b, n))


def _fib(rng: random.Random, n: int, size: int) -> Case:
    a, b, depth = rng.randrange(n), rng.randrange(n), rng.randint(1, size)
    base = rng.randint(0, MEMORY_SIZE - depth)
    terms = [a, b]
    for _ in range(depth):
        terms.append((terms[-1] + terms[-2]) % n)
    return Case(
        {1: a, 2: b, 3: depth, 4: base}, result=terms[-1], output=(0,) * base + tuple(terms[2:]), steps=8 * depth
    )


def _random_list(rng: random.Random, n: int, size: int) -> list[int]:
    return [rng.randrange(n) for _ in range(rng.randint(0, size))]


def _fold(combine, rng: random.Random, n: int, size: int) -> Case:
    values = _random_list(rng, n, size)
    length = len(values)
    return Case({1: length}, tuple(values), combine(values, n), tuple(values), length + 3 if length else 2)


def _sort(rng: random.Random, n: int, size: int) -> Case:
    values, beyond = _random_list(rng, n, size), [rng.randrange(n), rng.randrange(n)]  # cells past the list stay
    length = len(values)
    steps = 3 * length * (length - 1) // 2 + 2 * length + 2 if length >= 2 else 4
    return Case({1: length}, tuple(values + beyond), None, tuple(sorted(values) + beyond), steps)


def _sort_parallel(rng: random.Random, n: int, size: int) -> Case:
    values, beyond = [rng.randrange(n) for _ in range(5)], [rng.randrange(n), rng.randrange(n)]
    return Case({}, tuple(values + beyond), None, tuple(sorted(values) + beyond), 8)


def _sort_select(rng: random.Random, n: int, size: int) -> Case:
    values = [_value(rng, n) for _ in range(rng.randint(1, 6))]  # at most 6 values, whatever `size`
    length, rank = len(values), rng.randrange(len(values))
    padded = sorted(values + [n - 1] * (6 - length))
    return Case({1: length, 2: rank}, tuple(values), sorted(values)[rank], tuple(padded), 14)


def _gcd(rng: random.Random, n: int, size: int) -> Case:
    a, b = _value(rng, n), _value(rng, n)
    euclid_steps, x, y = 0, a, b
    while y:
        x, y, euclid_steps = y, x % y, euclid_steps + 1
    return Case({1: a, 2: b}, result=math.gcd(a, b), steps=2 * euclid_steps + 2)


def _mul_repeated(rng: random.Random, n: int, size: int) -> Case:
    a, b = rng.randrange(n), rng.randint(0, size)
    return Case({1: a, 2: b}, result=a * b % n, steps=b + 2)


# name → (rng, n, size) → Case; `size` bounds what sets the running time: depth, list length, multiplier.
GENERATORS = {
    **{op: partial(_calculator, op) for op in CALCULATOR},
    "fib": _fib,
    "sum": partial(_fold, lambda values, n: sum(values) % n),
    "list_max": partial(_fold, lambda values, n: max(values, default=0)),
    "list_maximum": partial(_fold, lambda values, n: max(values, default=0)),
    "list_minimum": partial(_fold, lambda values, n: min(values, default=0)),
    "sort": _sort,
    "sort_parallel": _sort_parallel,
    "sort_select": _sort_select,
    "gcd": _gcd,
    "mul_repeated": _mul_repeated,
}


def cases(name: str, count: int, *, n: int = N, size: int) -> list[Case]:
    rng = random.Random(f"{name}/{n}/{size}")
    return [GENERATORS[name](rng, n, size) for _ in range(count)]


# ------------------------------------------------------------------------------------------------ runners
def interpret(program: Program, case: Case, *, n: int = N, entry: int = 0, bits: int | None = None):
    return run_reference(
        program,
        n=n,
        bits=bits,
        num_registers=REGISTERS,
        memory_size=MEMORY_SIZE,
        registers=case.registers,
        memory=list(case.memory),
        max_steps=2000,
        entry=entry,
    )


def check_execution(execution, case: Case, where: str) -> None:
    assert execution.halted, f"{where}: did not halt"
    assert execution.steps == case.steps, f"{where}: {execution.steps} steps, expected {case.steps}"
    if case.result is not None:
        assert execution.state.registers[0] == case.result, f"{where}: r0"
    assert execution.state.memory[: len(case.output)] == case.output, f"{where}: memory"


def run_machine(
    program: Program,
    batch: list[Case],
    *,
    n: int = N,
    alu=None,
    entry: torch.Tensor | None = None,
    bits: int | None = None,
):
    """Runs the compiled program on a batch of cases at once; `entry` is a `(lines,)` start distribution;
    `bits` runs the binary machine instead of the unit one."""
    if bits is None:
        machine = RegisterMachine(n, REGISTERS, MEMORY_SIZE, alu=alu if alu is not None else TableALU(n))
    else:
        machine = RegisterMachine(None, REGISTERS, MEMORY_SIZE, bits=bits)
    tensors = compile_program(program, n=n, num_registers=REGISTERS, bits=bits)
    used = sorted({index for case in batch for index in case.registers})
    inputs = {r: machine.encode(torch.tensor([case.registers.get(r, 0) for case in batch])) for r in used}
    cells = [list(case.memory) + [0] * (MEMORY_SIZE - len(case.memory)) for case in batch]
    if entry is not None:
        entry = entry.expand(len(batch), -1)
    state = machine.initial_state(
        len(batch), tensors.lines, inputs=inputs, memory=machine.encode(torch.tensor(cells)), entry=entry
    )
    with torch.no_grad():
        return machine.run(tensors, state, max_steps=max(case.steps for case in batch) + 2)


def check_machine(run, batch: list[Case], where: str, values=None) -> None:
    """Every example halted with r0 and memory as expected, and the batch stopped when its slowest halted;
    `values` is the machine's encoding (unit by default)."""
    assert run.steps == max(case.steps for case in batch), f"{where}: ran {run.steps} steps"
    decoded = run.state.decode(values)
    assert bool((decoded["halted"] > SURE).all()), f"{where}: not halted"
    for i, case in enumerate(batch):
        if case.result is not None:
            assert int(decoded["registers"][i, 0]) == case.result, f"{where} #{i}: r0"
            assert float(decoded["register_probs"][i, 0]) > SURE, f"{where} #{i}: r0 uncertain"
        cells = len(case.output)
        assert decoded["memory"][i, :cells].tolist() == list(case.output), f"{where} #{i}: memory"
        assert bool((decoded["memory_probs"][i, :cells] > SURE).all()), f"{where} #{i}: memory uncertain"


# ------------------------------------------------------------------------------------------------ programs
def test_every_standard_program_has_a_header_and_every_file_is_one():
    assert sorted(path.stem for path in PROGRAMS_DIR.glob("*.asm")) == sorted(WRITTEN + WIDE_WRITTEN)
    assert set(CALCULATOR) == set(CALCULATOR_ORACLES) and set(GENERATORS) == set(STANDARD_PROGRAMS)
    for name in STANDARD_PROGRAMS:
        source = standard_source(name)[0]
        header = "".join(line for line in source.splitlines(True) if line.startswith(";"))
        assert header.startswith(f"; {name}:"), name
        assert "r0" in header and "steps" in header.lower(), f"{name}: the header gives r0 and the step count"


@pytest.mark.parametrize("name", STANDARD_PROGRAMS)
def test_program_on_the_reference_interpreter(name):
    program = load_program(name, n=N, num_registers=REGISTERS)
    for i, case in enumerate(cases(name, 60, size=20)):
        check_execution(interpret(program, case), case, f"{name} #{i} {case}")


@pytest.mark.parametrize("name", STANDARD_PROGRAMS)
def test_program_on_the_differentiable_machine(name):
    batch = cases(name, 24, size=5)
    check_machine(run_machine(load_program(name), batch), batch, name)


@pytest.mark.parametrize(
    "name", ["add", "sub", "mul", "div", "mod", "lt", "fib", "sum", "sort_parallel", "sort_select", "gcd"]
)
def test_program_on_the_machine_with_circuits(name):
    n = 64
    batch = cases(name, 24, n=n, size=3)
    check_machine(run_machine(load_program(name, n=n), batch, n=n, alu=CircuitALU(n)), batch, f"{name} circuits")


# ------------------------------------------------------------------------- the binary machine at 64 bits
WIDE = 64
# Programs whose answer depends on the order of values: recomputed on the signed inputs. The others only add,
# multiply and compare for equality, which mod 2^64 and in two's complement are the same computation.
SIGNED_ANSWERS = {
    **{
        op: lambda case, op=op: {"result": CALCULATOR_ORACLES[op](case.registers[1], case.registers[2], 1 << WIDE)}
        for op in ("div", "mod", "max", "min", "lt")
    },
    "list_max": lambda case: {"result": max((0, *case.memory[: case.registers[1]]))},
    "list_maximum": lambda case: {"result": max(case.memory[: case.registers[1]], default=0)},
    "list_minimum": lambda case: {"result": min(case.memory[: case.registers[1]], default=0)},
    "sort": lambda case: {"output": tuple(sorted(case.memory[: case.registers[1]])) + case.memory[case.registers[1] :]},
    "sort_parallel": lambda case: {"output": tuple(sorted(case.memory[:5])) + case.memory[5:]},
}
# sort_select pads the list with n - 1 as the largest value; in two's complement that is -1, so it is unit-only.
WIDE_PROGRAMS = [name for name in STANDARD_PROGRAMS if name != "sort_select"]


def wide_cases(name: str, count: int, size: int) -> list[Case]:
    """Cases on signed 64-bit values: the unsigned cases mod 2^64 read as two's complement (gcd: non-negative
    values below 2^63, as Euclid's algorithm on signed values differs), answers recomputed where order matters."""
    rng = random.Random(f"{name}/wide/{size}")
    signed = partial(dcomp_isa.to_signed, bits=WIDE)
    result = []
    for _ in range(count):
        case = GENERATORS[name](rng, 1 << (WIDE - 1) if name == "gcd" else 1 << WIDE, size)
        case = Case(
            {r: signed(v) for r, v in case.registers.items()},
            tuple(map(signed, case.memory)),
            None if case.result is None else signed(case.result),
            tuple(map(signed, case.output)),
            case.steps,
        )
        if name in SIGNED_ANSWERS:
            case = dataclasses.replace(
                case, **{k: signed(v) if k == "result" else v for k, v in SIGNED_ANSWERS[name](case).items()}
            )
        result.append(case)
    return result


@pytest.mark.parametrize("name", WIDE_PROGRAMS)
def test_program_at_64_bits_on_both_machines(name):
    program = load_program(name, bits=WIDE, num_registers=REGISTERS)
    batch = wide_cases(name, 8, size=4)
    for i, case in enumerate(batch):
        check_execution(interpret(program, case, bits=WIDE), case, f"{name} #{i} {case}")
    run = run_machine(program, batch, bits=WIDE)
    check_machine(run, batch, f"{name} at {WIDE} bits", BinaryValues(WIDE))


def test_fib_takes_eight_steps_per_depth_as_in_the_paper():
    fib = load_program("fib")
    for depth in (1, 2, 3):
        assert interpret(fib, Case({1: 6, 2: 2, 3: depth})).steps == 8 * depth


def test_parallel_sort_takes_far_fewer_steps_than_the_sequential_one():
    sorts = {name: interpret(load_program(name), Case({1: 5}, (5, 3, 4, 1, 2))) for name in ("sort", "sort_parallel")}
    assert {name: e.steps for name, e in sorts.items()} == {"sort": 42, "sort_parallel": 8}
    assert all(e.state.memory[:5] == (1, 2, 3, 4, 5) for e in sorts.values())


# ------------------------------------------------------------------------------------------------- library
def test_standard_library_fits_n_128():
    library = standard_library()
    assert library.names == STANDARD_PROGRAMS
    assert len(library.program) == sum(len(load_program(name)) for name in STANDARD_PROGRAMS) <= N - 1
    with pytest.raises(LinkError, match="at most n - 1 = 63"):
        standard_library(n=64)


def test_linked_library_runs_every_program_like_the_standalone_one():
    library = standard_library()
    for name in STANDARD_PROGRAMS:
        alone = load_program(name)
        for i, case in enumerate(cases(name, 30, size=12)):
            linked = interpret(library.program, case, entry=library.entry_points[name])
            expected = interpret(alone, case)
            where = f"{name} #{i}"
            assert linked.steps == expected.steps and linked.halted, where
            assert linked.state.registers == expected.state.registers, where
            assert linked.state.memory == expected.state.memory, where
            check_execution(linked, case, where)


def test_linked_library_on_the_machine_selects_programs_by_entry_point():
    """One batch holds every program's cases, each example one-hot on its program's entry line."""
    library = standard_library()
    batch, entries = [], []
    for name in STANDARD_PROGRAMS:
        for case in cases(name, 3, size=4):
            batch.append(case)
            entries.append(library.entry_distribution(name))
    entry = torch.stack(entries)
    check_machine(run_machine(library.program, batch, entry=entry), batch, "library")


def test_entry_mixture_of_add_and_mul_mixes_their_results():
    library = standard_library(names=["add", "mul"])
    rng = random.Random(0)
    pairs = [(rng.randrange(N), rng.randrange(N)) for _ in range(16)]
    batch = [Case({1: a, 2: b}) for a, b in pairs]
    run = run_machine(library.program, batch, entry=library.entry_distribution({"add": 0.5, "mul": 0.5}))
    sums = one_hot_values(torch.tensor([(a + b) % N for a, b in pairs]), N)
    products = one_hot_values(torch.tensor([a * b % N for a, b in pairs]), N)
    assert run.steps == 1
    assert torch.allclose(run.state.registers[:, 0], 0.5 * sums + 0.5 * products, atol=1e-5)
    assert torch.allclose(run.state.halted, torch.ones(len(batch)), atol=1e-5)


FMA = """
; fma: r0 = r1 * r2 + r3, calling two library programs
    call mul                             ; r0 = a * b
    copy r0 r1 | copy r3 r2 | call add   ; r0 = a * b + c
    ret
"""
OUTER = """
; outer: r0 = (r1 * r2 + r3)^2, calling fma, which calls mul and add: calls nest two deep
    call fma
    copy r0 r1 | copy r0 r2 | call mul
    ret
"""


def test_programs_call_each_other_by_name_nested_two_deep():
    library = link({"outer": OUTER, "fma": FMA, "add": load_program("add"), "mul": load_program("mul")})
    assert library.entry_points == {"outer": 0, "fma": 3, "add": 6, "mul": 7}
    assert library.program.labels["fma.entry"] == 3
    rng = random.Random(1)
    batch = []
    for _ in range(16):
        a, b, c = rng.randrange(N), rng.randrange(N), rng.randrange(N)
        batch.append(Case({1: a, 2: b, 3: c}, result=(a * b + c) ** 2 % N, steps=9))
    for case in batch:
        check_execution(interpret(library.program, case), case, f"outer {case}")
    check_machine(run_machine(library.program, batch), batch, "outer")


def test_a_jump_past_the_end_still_halts_in_a_library():
    early = "set 7 r0 | set 1 r1\njump r1 9   ; past the end: halts\n"
    library = link({"early": early, "add": load_program("add")})
    execution = interpret(library.program, Case({}), entry=library.entry_points["early"])
    assert (execution.halted, execution.steps, execution.state.registers[0]) == (True, 2, 7)


def test_linked_listing_assembles_back():
    program = standard_library().program
    assert assemble(format_program(program)).lines == program.lines


def test_link_errors_name_the_program_and_line():
    with pytest.raises(LinkError, match=r"^outer:3:10: undefined label or program 'fma'"):
        link({"outer": OUTER, "mul": load_program("mul")})
    with pytest.raises(LinkError, match="duplicate program name.*add"):
        link(["add", "mul", "add"])
    with pytest.raises(LinkError, match="unknown standard program 'nope'"):
        link(["add", "nope"])
    with pytest.raises(LinkError, match="bad program name 'a.b'"):
        link({"a.b": "ret"})
    with pytest.raises(LinkError, match="run past the end"):
        link({"loose": "add r1 r2 r0"})
    with pytest.raises(LinkError, match="nothing to link"):
        link([])
    bad = "call add | add r1 r2 r99\nret"
    with pytest.raises(AssemblyError) as error:  # columns survive the rewriting of `call add`
        link({"bad": bad, "add": load_program("add")})
    assert (error.value.source_name, error.value.line, error.value.column) == ("bad", 1, bad.index("r99") + 1)


def test_entry_distribution_checks_names_and_mass():
    library = standard_library(names=["add", "mul"])
    assert library.entry_distribution("mul").tolist() == [0.0, 1.0]
    with pytest.raises(KeyError, match="fib"):
        library.entry_distribution("fib")
    with pytest.raises(ValueError, match="sum to 1"):
        library.entry_distribution({"add": 0.5, "mul": 0.4})


def test_the_odd_even_sort_sorts_every_length_up_to_16_signed_in_l_plus_24_steps_on_both_machines():
    """sort_oddeven (42 registers, 16 lanes): the maximum pads the cells past the list, then 16 compare-exchange
    phases; the reference interpreter and the binary machine agree with Python, in L + 24 steps (sort: 394 at 16)."""
    registers, cells = 42, 16
    program = load_program("sort_oddeven", bits=WIDE, num_registers=registers)
    rng = random.Random("sort_oddeven")
    batch = []
    for length in range(0, cells + 1):
        values = [rng.randint(-(10**12), 10**12) for _ in range(length)]
        if length > 2:
            values[1] = values[0]  # a duplicate
        beyond = [rng.randint(-(2**63), 2**63 - 1) for _ in range(cells - length)]  # cells past the list: any bits
        batch.append(
            Case({1: length}, tuple(values + beyond), None, tuple(sorted(values)), length + 24 if length else 2)
        )
    for case in batch:
        execution = run_reference(
            program, bits=WIDE, num_registers=registers, memory_size=cells, registers=case.registers,
            memory=list(case.memory), max_steps=100,
        )  # fmt: skip
        check_execution(execution, case, f"sort_oddeven L={case.registers[1]}")
    sequential = load_program("sort", bits=WIDE, num_registers=registers)
    long = batch[-1]
    assert run_reference(sequential, bits=WIDE, num_registers=registers, memory_size=cells, registers=long.registers,
                         memory=list(long.memory), max_steps=1000).steps == 394  # fmt: skip
    machine = RegisterMachine(None, registers, cells, bits=WIDE)
    tensors = compile_program(program, n=N, num_registers=registers, bits=WIDE)
    some = batch[::4] + batch[-1:]
    state = machine.initial_state(
        len(some),
        tensors.lines,
        inputs={1: machine.encode(torch.tensor([case.registers[1] for case in some]))},
        memory=machine.encode(torch.tensor([list(case.memory) for case in some])),
    )
    with torch.no_grad():
        run = machine.run(tensors, state, max_steps=50)
    decoded = run.state.decode(BinaryValues(WIDE))
    assert run.steps == 40 and bool((decoded["halted"] > SURE).all())
    for i, case in enumerate(some):
        assert decoded["memory"][i, : len(case.output)].tolist() == list(case.output), f"#{i}"
