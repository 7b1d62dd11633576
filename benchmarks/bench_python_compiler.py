"""Steps of the compiled Python programs (`library/programs/*.py`) against the hand-written `.asm` versions.

Each row runs both versions of a standard program on the reference interpreter with the same inputs (the
`.asm` calling convention: inputs in r1, r2, r3, lists in M[0..L)), checks that they agree (r0, or the sorted
list), and reports the steps, the ratio compiled / hand-written, and each program's lines and lanes.

Example: python -m benchmarks.bench_python_compiler --output docs/results_python_compiler.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from library.interpreter import run_reference
from library.python import compile_python, run_python
from library.stdlib import PROGRAMS_DIR, load_program

# (program, arguments of the Python function); lists are also the .asm's memory and r1 their length.
CASES = (
    ("fib", [1, 1, 1]),
    ("fib", [1, 1, 5]),
    ("fib", [1, 1, 10]),
    ("sum", [[3, 1, 4, 1]]),
    ("sum", [[3, 1, 4, 1, 5, 9, 2, 6]]),
    ("sum", [list(range(16))]),
    ("list_max", [[3, 1, 4, 1]]),
    ("list_max", [[3, 1, 4, 1, 5, 9, 2, 6]]),
    ("gcd", [84, 36]),
    ("gcd", [89, 55]),
    ("sort", [[4, 3, 2, 1]]),
    ("sort", [[5, 4, 3, 2, 1]]),
    ("sort", [[8, 7, 6, 5, 4, 3, 2, 1]]),
    ("mul_repeated", [7, 9]),
)


def measure(name: str, args: list) -> dict:
    compiled = compile_python(PROGRAMS_DIR / f"{name}.py")
    python = run_python(compiled, [list(a) if isinstance(a, list) else a for a in args], max_steps=10_000)
    registers, memory = {}, []
    for position, arg in enumerate(args, start=1):
        registers[position] = len(arg) if isinstance(arg, list) else arg
        memory += arg if isinstance(arg, list) else []
    hand = load_program(name)
    asm = run_reference(hand, registers=registers, memory=memory, max_steps=10_000)
    if compiled.signature.returns_value:
        assert python["result"] == asm.state.registers[0], (name, args)
    assert python["memory"][: len(memory)] == list(asm.state.memory[: len(memory)]), (name, args)
    shown = ", ".join(f"L={len(a)}" if isinstance(a, list) else str(a) for a in args)
    return {
        "program": name,
        "input": shown,
        "asm steps": asm.steps,
        "python steps": python["steps"],
        "ratio": python["steps"] / asm.steps,
        "asm lines x lanes": f"{len(hand)} x {hand.lanes}",
        "python lines x lanes": f"{len(compiled.program)} x {compiled.program.lanes}",
    }


def table(rows: list[dict]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [f"{v:.2f}×" if k == "ratio" else str(v) for k, v in row.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, help="also write the table (with its command) to this Markdown file")
    args = parser.parse_args(argv)
    text = table([measure(name, case) for name, case in CASES])
    print(text)
    if args.output:
        command = "python -m benchmarks.bench_python_compiler --output " + str(args.output)
        args.output.write_text(f"# Compiled Python vs hand-written assembly: steps\n\n`{command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
