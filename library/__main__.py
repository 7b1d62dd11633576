"""Command line for the compile-time toolchain: `python -m library {run,check,compile,decompile} ...`.

    python -m library run PROGRAM.asm --n 128 --set r1=6 --set r2=2 --memory 3,1,2 --max-steps 500 \
        [--registers 16] [--memory-size 32] [--differentiable]
    python -m library check PROGRAM.asm
    python -m library compile PROGRAM.asm -o PROGRAM.safetensors --n 128
    python -m library decompile PROGRAM.safetensors
    python -m library run PROGRAM.py --call "gcd(84, 36)"   # a Python function (docs/PYTHON.md)

`run` prints one JSON object: `registers`, `memory`, `steps`, `halted` (and, with `--differentiable`, the
probability of every decoded value). Bad assembly exits with status 1 and a `file:line:column: message`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dcomp_isa import DEFAULT_CALL_DEPTH

from .assembler import AssemblyError, assemble_file
from .python import CompileError, cli_program, cli_run


def _parse_assignment(text: str) -> tuple[int, int]:
    """`r1=6` or `1=6` → (1, 6)."""
    register, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected REGISTER=VALUE such as r1=6, got {text!r}")
    try:
        return int(register.strip().removeprefix("r")), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected REGISTER=VALUE such as r1=6, got {text!r}") from None


def _parse_memory(text: str) -> list[int]:
    try:
        return [int(cell) for cell in text.split(",") if cell.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 3,1,2, got {text!r}") from None


def _machine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=128, help="number of values; arithmetic is mod n (default: 128)")
    parser.add_argument("--registers", type=int, default=16, help="number of registers (default: 16)")
    parser.add_argument("--memory-size", type=int, default=32, help="number of memory cells (default: 32)")
    parser.add_argument(
        "--call-depth", type=int, default=DEFAULT_CALL_DEPTH, help=f"return-stack depth (default: {DEFAULT_CALL_DEPTH})"
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
        help="initial register value (repeatable)",
    )
    run.add_argument("--memory", type=_parse_memory, default=[], help="initial memory cells, e.g. 3,1,2")
    run.add_argument("--max-steps", type=int, default=500, help="step limit (default: 500)")
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


def _run(args) -> dict:
    if args.program.suffix == ".py":
        return cli_run(args)
    program = assemble_file(args.program, n=args.n, num_registers=args.registers)
    registers = dict(args.assignments)
    if not args.differentiable:
        from .interpreter import run_reference

        execution = run_reference(
            program,
            n=args.n,
            num_registers=args.registers,
            memory_size=args.memory_size,
            call_depth=args.call_depth,
            registers=registers,
            memory=args.memory,
            max_steps=args.max_steps,
        )
        state = execution.state
        return {
            "registers": list(state.registers),
            "memory": list(state.memory),
            "steps": execution.steps,
            "halted": execution.halted,
        }

    import torch

    from dcomp_machine import RegisterMachine, one_hot_values

    from .compiler import compile_program

    machine = RegisterMachine(args.n, args.registers, args.memory_size, args.call_depth)
    for index, value in registers.items():
        if not (0 <= index < args.registers and 0 <= value < args.n):
            raise ValueError(f"--set r{index}={value}: register must be < {args.registers} and value < {args.n}")
    inputs = {index: one_hot_values(torch.tensor([value]), args.n) for index, value in registers.items()}
    memory = one_hot_values(torch.tensor([args.memory]), args.n) if args.memory else None
    state = machine.initial_state(1, len(program), inputs=inputs, memory=memory)
    with torch.no_grad():
        result = machine.run(compile_program(program, n=args.n, num_registers=args.registers), state, args.max_steps)
    decoded = result.state.decode()
    return {
        "registers": decoded["registers"][0].tolist(),
        "memory": decoded["memory"][0].tolist(),
        "steps": result.steps,
        "halted": bool(result.state.halted[0] >= machine.halt_threshold),
        "halt_probability": float(result.state.halted[0]),
        "register_probs": [round(p, 6) for p in decoded["register_probs"][0].tolist()],
        "memory_probs": [round(p, 6) for p in decoded["memory_probs"][0].tolist()],
    }


def _compile(args) -> None:
    from safetensors.torch import save_file

    from .compiler import compile_program

    program = cli_program(args)
    tensors = compile_program(program, n=args.n, num_registers=args.registers)
    output = args.output or args.program.with_suffix(".safetensors")
    labels = json.dumps(program.labels)
    save_file(
        {k: getattr(tensors, k).contiguous() for k in ("op", "a", "b", "out", "imm")},
        str(output),
        metadata={"name": program.name, "labels": labels, "n": str(args.n)},
    )
    print(f"compiled {program.name}: {len(program)} lines x {program.lanes} lanes -> {output}")


def _decompile(args) -> None:
    from safetensors import safe_open

    from dcomp_machine import ProgramTensors

    from .compiler import decompile

    with safe_open(str(args.tensors), framework="pt") as f:
        metadata = f.metadata() or {}
        missing = {"op", "a", "b", "out", "imm"} - set(f.keys())
        if missing:
            raise ValueError(f"{args.tensors}: not a compiled program (missing tensors: {', '.join(sorted(missing))})")
        tensors = ProgramTensors(*(f.get_tensor(k) for k in ("op", "a", "b", "out", "imm")))
    labels = json.loads(metadata.get("labels", "{}"))
    print(decompile(tensors, labels=labels, certain=args.certain, name=metadata.get("name", args.tensors.stem)), end="")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            print(json.dumps(_run(args)))
        elif args.command == "check":
            program = cli_program(args)
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
