"""Command line for the compile-time toolchain: `python -m library {run,check,compile,decompile} ...`.

    python -m library run PROGRAM.asm --n 128 --set r1=6 --set r2=2 --memory 3,1,2 --max-steps 500 \
        [--registers 16] [--memory-size 32] [--call-depth 4] [--differentiable]
    python -m library check PROGRAM.asm
    python -m library compile PROGRAM.asm -o PROGRAM.safetensors --n 128
    python -m library decompile PROGRAM.safetensors
    python -m library run PROGRAM.py --call "gcd(84, 36)"   # a Python function (docs/PYTHON.md)
    python -m library run PROGRAM.py --call "gcd(84, -36)" --bits 64   # on the binary machine

`run` prints one JSON object: `registers`, `memory`, `steps`, `halted`, `overflow` (a `call` nested deeper than
the return stack stopped the run) and, with `--differentiable`, the probability of every decoded value. With
`--bits B` the machine is the binary one: values are signed B-bit integers (8 to 64), e.g.
`run PROG.asm --bits 64 --set r1=-5 --memory=3,-1,2`. Bad assembly exits with status 1 and a
`file:line:column: message`; bad arguments, files and tensors exit with status 2 and a message naming what is
wrong; a run that overflowed its return stack exits with status 3.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from dcomp_isa import DEFAULT_CALL_DEPTH, MAX_BITS, MIN_BITS, check_machine_sizes, signed_range

from .assembler import AssemblyError, show
from .python import CompileError, cli_program, cli_run

# Stated bounds, checked before anything is built: a machine of MAX_VALUES values holds (n, n) ALU tables,
# and MAX_STEPS steps bound a run's time.
MAX_VALUES = 4096
MAX_REGISTERS = 256
MAX_STEPS = 100_000
_REGISTER = re.compile(r"[rR]?([0-9]+)")
_VALUE = re.compile(r"-?[0-9]+")  # ASCII digits only: no `1_0`, no other scripts' digits; ranges are checked later


def _bounded(low: int, high: int):
    """An argparse type: a decimal integer in [low, high]."""

    def parse(text: str) -> int:
        if not re.fullmatch(r"-?[0-9]+", text.strip()) or len(text) > 12:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {show(text)}")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range [{low}, {high}]")
        return value

    return parse


def _parse_assignment(text: str) -> tuple[int, int]:
    """`r1=6`, `R1=6` or `1=6` → (1, 6); registers are written as the assembler reads them."""
    register, sep, value = (part.strip() for part in text.partition("="))
    match = _REGISTER.fullmatch(register)
    if not sep or match is None or not _VALUE.fullmatch(value) or len(register) + len(value) > 24:
        raise argparse.ArgumentTypeError(f"expected REGISTER=VALUE such as r1=6 (decimal digits), got {show(text)}")
    return int(match.group(1)), int(value)


def _parse_memory(text: str) -> list[int]:
    """`3,1,2` → [3, 1, 2]: every cell a decimal value, none left empty."""
    cells = [cell.strip() for cell in text.split(",")]
    for position, cell in enumerate(cells, start=1):
        if not _VALUE.fullmatch(cell) or len(cell) > 12:
            what = "is empty" if not cell else f"is {show(cell)}, not a decimal integer"
            raise argparse.ArgumentTypeError(f"memory cell {position} of {show(text)} {what}")
    return [int(cell) for cell in cells]


def _machine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n",
        type=_bounded(2, MAX_VALUES),
        default=128,
        help=f"values, arithmetic mod n (default 128, <= {MAX_VALUES})",
    )
    parser.add_argument(
        "--registers", type=_bounded(2, MAX_REGISTERS), default=16, help=f"registers (default 16, <= {MAX_REGISTERS})"
    )
    parser.add_argument(
        "--memory-size", type=_bounded(1, MAX_VALUES), default=32, help="memory cells, <= n (default 32)"
    )
    parser.add_argument(
        "--call-depth",
        type=_bounded(1, MAX_REGISTERS),
        default=DEFAULT_CALL_DEPTH,
        help=f"return-stack depth, < registers (default: {DEFAULT_CALL_DEPTH})",
    )
    parser.add_argument(
        "--bits",
        type=_bounded(MIN_BITS, MAX_BITS),
        default=None,
        help=f"binary machine: signed values of this many bits ({MIN_BITS} to {MAX_BITS}), instead of --n",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m library", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a program on the reference interpreter or the differentiable machine")
    run.add_argument("program", type=Path)
    _machine_options(run)
    run.add_argument(
        "--set",
        dest="assignments",
        action="append",
        type=_parse_assignment,
        default=[],
        metavar="rK=V",
        help="initial register value (repeatable, once per register)",
    )
    run.add_argument("--memory", type=_parse_memory, default=[], help="initial memory cells, e.g. 3,1,2")
    run.add_argument(
        "--max-steps", type=_bounded(0, MAX_STEPS), default=500, help=f"step limit (default: 500, <= {MAX_STEPS})"
    )
    run.add_argument("--call", help='for a .py program: the call to run, e.g. "gcd(84, 36)" or "sum([3, 1, 2])"')
    run.add_argument(
        "--differentiable",
        action="store_true",
        help="run the compiled program on the differentiable machine instead of the interpreter",
    )

    check = commands.add_parser("check", help="assemble a program and report the first error")
    check.add_argument("program", type=Path)
    _machine_options(check)

    compile_ = commands.add_parser("compile", help="compile a program to program tensors in a safetensors file")
    compile_.add_argument("program", type=Path)
    compile_.add_argument("-o", "--output", type=Path, help="output file (default: PROGRAM.safetensors)")
    _machine_options(compile_)

    decompile_ = commands.add_parser("decompile", help="print the assembly of program tensors in a safetensors file")
    decompile_.add_argument("tensors", type=Path)
    decompile_.add_argument(
        "--certain", type=float, default=0.999, help="annotate choices less probable than this (default: 0.999)"
    )
    return parser


def _check_arguments(args, parser: argparse.ArgumentParser) -> None:
    """Cross-argument checks, before anything is assembled or allocated (argparse's exit 2 on failure)."""
    if args.command == "decompile":
        if not 0.0 <= args.certain <= 1.0:
            parser.error(f"--certain {args.certain} must lie in [0, 1]")
        return
    bits = args.bits
    # Values lie in [0, n) on the one-hot machine, and are signed `bits`-bit integers on the binary one.
    low, high, machine = (0, args.n, f"--n {args.n}") if bits is None else (*signed_range(bits), f"--bits {bits}")
    try:
        check_machine_sizes(high, args.registers, args.memory_size, args.call_depth)
    except ValueError as error:
        parser.error(str(error).replace("num_registers", "--registers").replace("memory_size", "--memory-size"))
    if args.command == "run":
        seen = set()
        for register, value in args.assignments:
            if register >= args.registers or not low <= value < high:
                parser.error(
                    f"--set r{register}={value}: need a register < --registers {args.registers} "
                    f"and a value in [{low}, {high}) ({machine})"
                )
            if register in seen:
                parser.error(f"--set r{register} is given twice")
            seen.add(register)
        if len(args.memory) > args.memory_size:
            parser.error(f"--memory has {len(args.memory)} cells, more than --memory-size {args.memory_size}")
        for position, value in enumerate(args.memory, start=1):
            if not low <= value < high:
                parser.error(f"--memory cell {position} = {value} is out of range [{low}, {high}) ({machine})")
    if args.command == "compile" and args.output is not None and not args.output.parent.is_dir():
        parser.error(f"-o {args.output}: the folder {args.output.parent} does not exist")


def _compile_file(args):
    """The file argument as a library of one program: a `.py` file through the Python front end (its last
    function, or the one `--call` names), anything else assembled."""
    from .compiling import compile_alone

    return compile_alone(cli_program(args), n=args.n, num_registers=args.registers, bits=args.bits)


def _run(args) -> dict:
    if args.program.suffix == ".py":
        return cli_run(args)
    registers = dict(args.assignments)
    if not args.differentiable:
        from .interpreter import ReturnStackOverflow, run_reference

        program = _compile_file(args).program
        try:
            execution = run_reference(
                program,
                n=args.n,
                num_registers=args.registers,
                memory_size=args.memory_size,
                call_depth=args.call_depth,
                registers=registers,
                memory=args.memory,
                max_steps=args.max_steps,
                bits=args.bits,
            )
        except ReturnStackOverflow as overflow:
            print(f"error: {overflow}", file=sys.stderr)
            execution = overflow.execution
        state = execution.state
        return {
            "registers": list(state.registers),
            "memory": list(state.memory),
            "steps": execution.steps,
            "halted": execution.halted,
            "overflow": state.overflowed,
        }

    from dcomp_machine import RegisterMachine

    from .compiling import run_differentiable

    compiled = _compile_file(args)
    n = None if args.bits is not None else args.n
    machine = RegisterMachine(n, args.registers, args.memory_size, args.call_depth, bits=args.bits)
    return run_differentiable(compiled.tensors, machine, registers, args.memory, args.max_steps)


def _compile(args) -> None:
    compiled = _compile_file(args)
    program = compiled.program
    output = args.output or args.program.with_suffix(".safetensors")
    width = {"n": str(args.n)} if args.bits is None else {"bits": str(args.bits)}
    metadata = {"name": program.name, "labels": json.dumps(program.labels), **width}
    compiled.tensors.save(output, metadata=metadata)
    print(f"compiled {program.name}: {len(program)} lines x {program.lanes} lanes -> {output}")


def _decompile(args) -> None:
    from dcomp_machine import ProgramTensors

    from .compiler import decompile

    tensors, metadata = ProgramTensors.load(args.tensors)
    try:
        labels = json.loads(metadata.get("labels", "{}"))
        bits = int(metadata["bits"]) if "bits" in metadata else None
    except (json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"{args.tensors}: bad 'labels' or 'bits' metadata ({error})") from None
    name = metadata.get("name", args.tensors.stem)
    try:
        text = decompile(tensors, labels=labels, certain=args.certain, name=name, bits=bits)
    except ValueError as error:
        raise ValueError(f"{args.tensors}: {error}") from None
    print(text, end="")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_arguments(args, parser)
    try:
        if args.command == "run":
            output = _run(args)
            print(json.dumps(output))
            if output["overflow"]:
                return 3
        elif args.command == "check":
            program = _compile_file(args).program
            print(f"{args.program}: ok, {len(program)} lines, {program.lanes} lane(s)")
        elif args.command == "compile":
            _compile(args)
        else:
            _decompile(args)
    except (AssemblyError, CompileError) as error:
        print(error, file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
