"""A compiler from a subset of Python to the machine's assembly (docs/PYTHON.md).

    from library.python import compile_python, run_python
    compiled = compile_python("def gcd(a, b):\\n    while b:\\n        a, b = b, a % b\\n    return a\\n")
    run_python(compiled, [84, 36])["result"]  # 12

The pipeline, one module per pass (each named for what it turns into what):

    ast_to_ir        Python source → IR over virtual registers, per function (subset checks, list arguments)
    calls_to_stack   pseudo-calls → argument registers, `call`, and pushes/pops on a call stack in memory
    ir_to_registers  virtual → machine registers (graph colouring, spills to memory)
    ir_to_assembly   IR → assembly text, independent instructions packed into the lanes of a line

and then the project's assembler (`assemble`) gives a `Program`, which `compiler.compile_program` turns into
program tensors and `stdlib.link` links into a library like any `.asm` program.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path

import dcomp_isa

from ..assembler import AssemblyError, assemble
from ..interpreter import run_reference
from ..program import Program
from .ast_to_ir import FunctionCompiler, Signature, Source, infer_signatures, parse_module
from .calls_to_stack import call_graph, entry_stub, expand_calls, saves_return_addresses, stack_cells
from .ir import CompileError, phys, remove_dead, reuse_values
from .ir_to_assembly import to_assembly
from .ir_to_registers import OutOfRegisters, allocate

__all__ = [
    "CompileError",
    "PythonProgram",
    "compile_python",
    "parse_call",
    "python_library",
    "python_source",
    "run_python",
]


@dataclasses.dataclass(frozen=True)
class PythonProgram:
    """A compiled Python function: its assembly, the assembled `Program` and what a caller needs to run it.

    `data_cells`: lists go in M[0 … data_cells); above them are the spill cells and the call stack
    (`stack_floor` … memory_size - 1, `sp` the stack-pointer register, None when no call needs a stack).
    `bits`: compiled for the binary machine (signed values of that many bits; `n` unused), else None."""

    name: str
    signature: Signature
    assembly: str
    program: Program
    data_cells: int
    stack_floor: int
    sp: int | None
    n: int
    num_registers: int
    memory_size: int
    call_depth: int
    bits: int | None = None

    @property
    def value_range(self) -> tuple[int, int]:
        """[low, high) of the machine's values."""
        return (0, self.n) if self.bits is None else dcomp_isa.signed_range(self.bits)


def python_source(item) -> tuple[str, str]:
    """(source text, source name) of a function object (`inspect.getsource`), a `.py` path, or source text."""
    if callable(item) and hasattr(item, "__code__"):
        try:
            text = inspect.getsource(item)
        except (OSError, TypeError) as error:
            raise ValueError(f"cannot read the source of {item!r}: {error}") from None
        return textwrap.dedent(text), inspect.getsourcefile(item) or item.__name__
    if isinstance(item, Path) or (isinstance(item, str) and item.endswith(".py") and "\n" not in item):
        path = Path(item)
        return path.read_text(encoding="utf-8"), str(path)
    return item, "<python>"


def compile_python(
    source,
    *,
    entry: str | None = None,
    n: int = 128,
    num_registers: int = 16,
    memory_size: int = 32,
    call_depth: int = dcomp_isa.DEFAULT_CALL_DEPTH,
    max_recursion: int = 16,
    max_lanes: int = 8,
    source_name: str | None = None,
    bits: int | None = None,
) -> PythonProgram:
    """Compiles the function `entry` (default: the last one defined) of `source` (text, a `.py` path or a
    function object) and every function it calls into one program for the machine (n values, registers, memory
    cells, return-stack depth; with `bits` the binary machine, whose values are signed `bits`-bit integers and
    `n` is unused). Recursion may nest `max_recursion` levels: the call stack reserves memory for that many.
    Raises `CompileError` (file:line:column: message) for anything outside the subset."""
    text, default_name = python_source(source)
    source_name = source_name or default_name
    data_registers = num_registers - call_depth
    addresses = memory_size if bits is not None else min(memory_size, n)
    code_source = Source(text, source_name, n, data_registers, addresses, bits)
    functions = parse_module(code_source)
    entry = entry or list(functions)[-1]
    if entry not in functions:
        raise CompileError(
            f"no function '{entry}' (defined: {', '.join(functions)})", line=1, column=1, source_name=source_name
        )
    signatures = infer_signatures(code_source, functions)
    always, sp = phys(num_registers - 1), phys(data_registers - 1)
    return_stack = [phys(index) for index in range(data_registers, num_registers)]
    no_caller = n - 1 if bits is None else -1
    compiled = {name: FunctionCompiler(code_source, fn, signatures).compile(always) for name, fn in functions.items()}
    graph = call_graph(compiled, entry)
    save_return = saves_return_addresses(graph, entry, call_depth)
    expanded, pushes = {}, {}
    for name in graph:
        compiled[name].code = remove_dead(reuse_values(compiled[name].code))
        expanded[name], pushes[name] = expand_calls(compiled[name], sp, save_return, return_stack, no_caller)
    uses_stack = any(sp in (*ins.uses, *ins.defs) for code in expanded.values() for ins in code)
    top = code_source.memory_size - 1
    cells = stack_cells(code_source, compiled, graph, pushes, entry, save_return, max_recursion) if uses_stack else 0
    floor = top + 1 - cells
    spills: list[int] = []
    spilling = entry  # the function being allocated, named by the error below

    def spill_address() -> int:
        spills.append(floor - 1 - len(spills))
        if spills[-1] < 0:
            raise code_source.error(
                functions[spilling],
                f"'{spilling}' spills more values than memory holds beside the call stack "
                f"({cells} cells) in memory_size {code_source.memory_size}",
            )
        return spills[-1]

    pool = list(range(data_registers - 1 if uses_stack else data_registers))
    code = entry_stub(sp, top) if uses_stack else []
    for name in graph:
        spilling = name
        try:
            code += allocate(expanded[name], pool, compiled[name].num_vregs, spill_address)
        except OutOfRegisters:
            raise code_source.error(
                functions[name], f"'{name}' needs more registers at once than the machine's {len(pool)}"
            ) from None
    assembly = to_assembly(code, max_lanes, frozenset(return_stack))
    try:
        program = assemble(assembly, entry, n=n, num_registers=num_registers, call_depth=call_depth, bits=bits)
    except AssemblyError as error:
        raise code_source.error(functions[entry], f"the compiled program does not assemble: {error.message}") from None
    return PythonProgram(
        entry,
        signatures[entry],
        assembly,
        program,
        floor - len(spills),
        floor,
        sp.index if uses_stack else None,
        n,
        num_registers,
        code_source.memory_size,
        call_depth,
        bits,
    )


def parse_call(text: str) -> tuple[str, list]:
    """`"gcd(84, -36)"` → ("gcd", [84, -36]); arguments are integer or list-of-integer literals (negative ones
    included: `run_python` checks them against the machine's values)."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"--call {text!r}: {error.msg}") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.keywords:
        raise ValueError(f"--call {text!r}: expected a call such as gcd(84, 36)")
    try:
        args = [ast.literal_eval(arg) for arg in node.args]
    except ValueError:
        raise ValueError(f"--call {text!r}: arguments must be integers or lists of integers") from None
    return node.func.id, args


def _layout(compiled: PythonProgram, args: list) -> tuple[dict[int, int], list[int], dict[str, tuple[int, int]]]:
    """Registers and memory for a call: argument i in r(i + 1), lists one after another from M[0], their base
    addresses in the registers after the arguments. Returns (registers, memory, {list parameter: (base, len)})."""
    signature = compiled.signature
    if len(args) != len(signature.params):
        raise ValueError(f"{signature.name} takes {len(signature.params)} arguments, got {len(args)}")
    registers: dict[int, int] = {}
    memory: list[int] = []
    lists: dict[str, tuple[int, int]] = {}
    low, high = compiled.value_range
    base_register = len(signature.params) + 1
    for position, (param, kind, value) in enumerate(zip(signature.params, signature.kinds, args), start=1):
        values = value if kind == "list" else [value]
        if kind == "list" and not isinstance(value, list):
            raise ValueError(f"argument '{param}' of {signature.name} is a list, got {value!r}")
        for item in values:
            if isinstance(item, bool) or not isinstance(item, int) or not low <= item < high:
                raise ValueError(f"argument '{param}': {item!r} is not a machine value in [{low}, {high})")
        if kind == "list":
            registers[position] = len(value)
            registers[base_register] = len(memory)
            lists[param] = (len(memory), len(value))
            memory += value
            base_register += 1
        else:
            registers[position] = value
    if len(memory) > compiled.data_cells:
        raise ValueError(
            f"the lists need {len(memory)} memory cells but {compiled.data_cells} are free below the call stack "
            f"(memory_size {compiled.memory_size})"
        )
    return registers, memory, lists


def run_python(compiled: PythonProgram, args: list, *, differentiable: bool = False, max_steps: int = 1000) -> dict:
    """Runs `compiled` on `args` (ints and lists of ints) and returns the CLI's JSON fields: registers, memory,
    steps, halted, `result` (r0, or None for a function without a value) and `lists` (each list argument after
    the run). On the reference interpreter, a recursion deeper than the stack reserved raises ValueError."""
    registers, memory, lists = _layout(compiled, args)
    if differentiable:
        output = _run_differentiable(compiled, registers, memory, max_steps)
    else:
        execution = run_reference(
            compiled.program,
            n=compiled.n,
            num_registers=compiled.num_registers,
            memory_size=compiled.memory_size,
            call_depth=compiled.call_depth,
            registers=registers,
            memory=memory,
            max_steps=max_steps,
            bits=compiled.bits,
        )
        if compiled.sp is not None:
            # The stack pointer is the next free cell; below the floor a push would overwrite data.
            lowest = min(state.registers[compiled.sp] for state in execution.trace[1:] or execution.trace)
            if execution.steps and lowest < compiled.stack_floor - 1:
                raise ValueError(
                    f"the recursion went deeper than the call stack reserved for it (M[{compiled.stack_floor}.."
                    f"{compiled.memory_size - 1}]): compile with a larger max_recursion and memory_size"
                )
        state = execution.state
        output = {
            "registers": list(state.registers),
            "memory": list(state.memory),
            "steps": execution.steps,
            "halted": execution.halted,
            "overflow": state.overflowed,
        }
    output["result"] = output["registers"][0] if compiled.signature.returns_value else None
    output["lists"] = {name: output["memory"][base : base + length] for name, (base, length) in lists.items()}
    return output


def _run_differentiable(compiled: PythonProgram, registers: dict[int, int], memory: list[int], max_steps: int):
    from dcomp_machine import RegisterMachine

    from ..compiler import compile_program
    from ..compiling import run_differentiable

    n, bits = (compiled.n, None) if compiled.bits is None else (None, compiled.bits)
    machine = RegisterMachine(n, compiled.num_registers, compiled.memory_size, compiled.call_depth, bits=bits)
    tensors = compile_program(compiled.program, n=compiled.n, num_registers=compiled.num_registers, bits=bits)
    return run_differentiable(tensors, machine, registers, memory, max_steps)


_PYTHON_DEF = re.compile(r"^\s*def\s+\w+\s*\(", re.MULTILINE)


def is_python(item) -> bool:
    """A function object, a `.py` path, or source text that defines a function (assembly never has `def`)."""
    if callable(item) and hasattr(item, "__code__"):
        return True
    if isinstance(item, Path):
        return item.suffix == ".py"
    return isinstance(item, str) and (
        (item.endswith(".py") and "\n" not in item) or _PYTHON_DEF.search(item) is not None
    )


def python_library(library, *, n: int, num_registers: int, memory_size: int, call_depth: int, bits: int | None = None):
    """A library spec (`install.compile_for`'s) with its Python items compiled: function objects, `.py` paths
    and Python source text in a list of names, or as values of a `{name: ...}` mapping, become `Program`s (a
    mapping's key picks the function, else the last one defined names it). Specs without Python are returned
    unchanged; with Python, standard names in a list become their standard sources."""
    from ..stdlib import standard_source

    machine = dict(n=n, num_registers=num_registers, memory_size=memory_size, call_depth=call_depth, bits=bits)
    if isinstance(library, Mapping):
        if not any(is_python(item) for item in library.values()):
            return library
        return {
            name: _python_program(item, name, machine) if is_python(item) else item for name, item in library.items()
        }
    if isinstance(library, str) or not any(is_python(item) for item in library):
        return library
    items: dict[str, Program | tuple[str, str]] = {}
    for item in library:
        if is_python(item):
            program = _python_program(item, None, machine)
            items[program.name] = program
        else:
            items[item] = standard_source(item)
    return items


def _python_program(item, name: str | None, machine: dict) -> Program:
    text, source_name = python_source(item)
    defined = set(parse_module(Source(text, source_name, machine["n"], 1, 1, machine["bits"])))
    entry = name if name in defined else getattr(item, "__name__", None) if callable(item) else None
    return compile_python(text, entry=entry, source_name=source_name, **machine).program


def machine_options(args) -> dict:
    """compile_python's machine keywords from the CLI's options (`--n`, `--registers`, `--memory-size`,
    `--call-depth`, `--bits`)."""
    return dict(
        n=args.n,
        num_registers=args.registers,
        memory_size=args.memory_size,
        call_depth=args.call_depth,
        bits=getattr(args, "bits", None),
    )


def cli_program(args) -> Program:
    """The `Program` of `check`/`compile`/`run`'s file argument: a `.py` file compiled (its last function, or
    the one `--call` names), anything else assembled."""
    if args.program.suffix != ".py":
        from ..assembler import assemble_file

        return assemble_file(
            args.program,
            n=args.n,
            num_registers=args.registers,
            call_depth=args.call_depth,
            bits=getattr(args, "bits", None),
        )
    entry = parse_call(args.call)[0] if getattr(args, "call", None) else None
    return compile_python(args.program, entry=entry, **machine_options(args)).program


def cli_run(args) -> dict:
    """`python -m library run FILE.py --call "f(1, [3, 1, 2])"`: the run's JSON fields plus `result` and `lists`."""
    if not args.call:
        raise ValueError(f'{args.program}: a Python program runs with --call, e.g. --call "gcd(84, 36)"')
    entry, call_args = parse_call(args.call)
    compiled = compile_python(args.program, entry=entry, **machine_options(args))
    return run_python(compiled, call_args, differentiable=args.differentiable, max_steps=args.max_steps)
