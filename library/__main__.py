"""Command line for the compile-time toolchain: `python -m library {run,check,compile,decompile} ...`.

    python -m library run PROGRAM.asm --n 128 --set r1=6 --set r2=2 --memory 3,1,2 --max-steps 500 \
        [--registers 16] [--memory-size 32] [--differentiable]
    python -m library check PROGRAM.asm
    python -m library compile PROGRAM.asm -o PROGRAM.safetensors --n 128
    python -m library decompile PROGRAM.safetensors

`run` prints one JSON object: `registers`, `memory`, `steps`, `halted`, `overflow` (a `call` nested deeper than
the return stack stopped the run) and, with `--differentiable`, the probability of every decoded value. With
`--bits B` the machine is the binary one: values are signed B-bit integers (8 to 64), e.g.
`run PROG.asm --bits 64 --set r1=-5 --memory=3,-1,2`. Bad assembly exits with status 1 and a
`file:line:column: message`, other bad input with status 2, and a run that overflowed with status 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dcomp_isa import DEFAULT_CALL_DEPTH

from .assembler import AssemblyError, assemble_file


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
    parser.add_argument(
        "--bits", type=int, default=None, help="binary machine: signed values of this many bits (8 to 64), not --n"
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
    program = assemble_file(args.program, n=args.n, num_registers=args.registers, bits=args.bits)
    registers = dict(args.assignments)
    if not args.differentiable:
        from .interpreter import ReturnStackOverflow, run_reference

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

    import torch

    from dcomp_isa import signed_range
    from dcomp_machine import RegisterMachine

    from .compiler import compile_program

    n = None if args.bits is not None else args.n
    machine = RegisterMachine(n, args.registers, args.memory_size, args.call_depth, bits=args.bits)
    low, high = (0, args.n) if args.bits is None else signed_range(args.bits)
    for what, value in [*((f"--set r{i}", v) for i, v in registers.items()), *(("--memory", v) for v in args.memory)]:
        if not low <= value < high:
            raise ValueError(f"{what}: value {value} out of range [{low}, {high})")
    for index in registers:
        if not 0 <= index < args.registers:
            raise ValueError(f"--set r{index}: register out of range (num_registers = {args.registers})")
    inputs = {index: machine.encode(torch.tensor([value])) for index, value in registers.items()}
    memory = machine.encode(torch.tensor([args.memory])) if args.memory else None
    start = machine.initial_state(1, len(program), inputs=inputs, memory=memory)
    tensors = compile_program(program, n=args.n, num_registers=args.registers, bits=args.bits)
    with torch.no_grad():
        result = machine.run(tensors, start, args.max_steps)
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


def _compile(args) -> None:
    from safetensors.torch import save_file

    from .compiler import compile_program

    program = assemble_file(args.program, n=args.n, num_registers=args.registers, bits=args.bits)
    tensors = compile_program(program, n=args.n, num_registers=args.registers, bits=args.bits)
    output = args.output or args.program.with_suffix(".safetensors")
    labels = json.dumps(program.labels)
    width = {"n": str(args.n)} if args.bits is None else {"bits": str(args.bits)}
    save_file(
        {k: getattr(tensors, k).contiguous() for k in ("op", "a", "b", "out", "imm")},
        str(output),
        metadata={"name": program.name, "labels": labels, **width},
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
    bits = int(metadata["bits"]) if "bits" in metadata else None
    name = metadata.get("name", args.tensors.stem)
    print(decompile(tensors, labels=labels, certain=args.certain, name=name, bits=bits), end="")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            output = _run(args)
            print(json.dumps(output))
            if output["overflow"]:
                return 3
        elif args.command == "check":
            program = assemble_file(args.program, n=args.n, num_registers=args.registers, bits=args.bits)
            print(f"{args.program}: ok, {len(program)} lines, {program.lanes} lane(s)")
        elif args.command == "compile":
            _compile(args)
        else:
            _decompile(args)
    except AssemblyError as error:
        print(error, file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
