"""Neural compilation by memorization (eq. 10) of the library's programs, and adaptive neural compilation
(Bunel et al. 2016) of general programs to biased input distributions. Prints markdown tables.

    python -m experiments.memorize_and_adapt --seed 0
"""

from __future__ import annotations

import argparse
import time

import torch

from library.adaptation import TASKS, adapt
from library.assembler import assemble, format_program
from library.memorization import memorize
from library.stdlib import STANDARD_PROGRAMS, load_program

N, REGISTERS = 128, 16  # the model's default machine
PAPER_LISTINGS = {
    # §3.2, "Example Assembly"
    "paper: fibonacci": "inc 2 2\nfib_loop:\nwrite 3 2\nadd 1 2 2\nread 3 1\nwrite 3 2\ninc 3 3\njump 4 fib_loop",
    # Appendix E, the calculator listing
    "paper: calculator": "read 0 1\ninc 0\nadd 0 1 2\nwrite 2 3",
}
BIAS = {"increment": "lists of length 1", "listk": "k = 0"}


def memorization_table(seed: int, confidence: float) -> list[str]:
    programs = {name: assemble(text, name, n=N, num_registers=REGISTERS) for name, text in PAPER_LISTINGS.items()}
    programs.update({name: load_program(name, n=N, num_registers=REGISTERS) for name in STANDARD_PROGRAMS})
    rows = [
        f"| program | lines × lanes | steps to exact decompile | steps to p ≥ {confidence} | wall time (s) |",
        "|---|---|---|---|---|",
    ]
    first = next(iter(programs.values()))
    memorize(first, n=N, num_registers=REGISTERS, seed=seed, confidence=confidence)  # warm-up, not timed
    for name, program in programs.items():
        result = memorize(program, n=N, num_registers=REGISTERS, seed=seed, confidence=confidence)
        rows.append(
            f"| {name} | {len(program)} × {program.lanes} | {result.steps_to_exact} | {result.steps_to_confident} "
            f"| {result.seconds:.2f} |"
        )
    return rows


def adaptation_tables(seed: int, iterations: int) -> tuple[list[str], list[str]]:
    rows = [
        "| task | biased inputs | steps (exact) | expected steps (machine) | accuracy, biased | "
        "accuracy, unbiased | machine accuracy, biased | iterations | wall time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    listings = []
    for name, task in TASKS.items():
        result = adapt(task, iterations=iterations, seed=seed)
        b, a = result.before, result.after
        rows.append(
            f"| {name} | {BIAS[name]} | {b.biased_steps:.2f} → {a.biased_steps:.2f} "
            f"| {b.expected_steps:.2f} → {a.expected_steps:.2f} "
            f"| {b.biased_accuracy:.1%} → {a.biased_accuracy:.1%} "
            f"| {b.unbiased_accuracy:.1%} → {a.unbiased_accuracy:.1%} "
            f"| {b.machine_accuracy:.1%} → {a.machine_accuracy:.1%} | {result.iterations} | {result.seconds:.1f} |"
        )
        listings += [
            f"{name}, general → adapted:",
            "```",
            format_program(task.program()).rstrip(),
            "; ---",
            format_program(result.program).rstrip(),
            "```",
        ]
    return rows, listings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=150, help="adaptation training steps per task")
    parser.add_argument("--confidence", type=float, default=0.99, help="memorization's second stopping point")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the tensors are small)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print("\n".join(memorization_table(args.seed, args.confidence)), end="\n\n")
    rows, listings = adaptation_tables(args.seed, args.iterations)
    print("\n".join(rows), end="\n\n")
    print("\n".join(listings), end="\n\n")
    print(f"total wall time {time.perf_counter() - start:.0f} s, torch threads {args.threads}")


if __name__ == "__main__":
    main()
