"""Sequential vs parallel sort on the binary machine (issue 13, item 4): the bubble `sort` and the 16-lane
`sort_oddeven`, each run on a batch of signed lists of every length the list task uses, with the machine, memory
and registers of `python train.py --task sort --encoding binary`. Per length: the steps of a run (the gradient's
path through the recurrence is that many steps long), the forward and the forward + backward wall time
(gradients to the parsed memory), and whether every list came out sorted.

    python -m experiments.list_sorts [--lengths 2 4 8 16] [--batch 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from dcomp_machine import RegisterMachine
from experiments.common import markdown_table
from library.compiler import compile_program
from library.stdlib import load_program
from library.training.data import LIST_CELLS, LIST_MAX_STEPS

BITS, REGISTERS, CALL_DEPTH = 64, 42, 4
PROGRAMS = ("sort", "sort_oddeven")


def measure(name: str, length: int, batch: int, repeats: int, seed: int = 0) -> dict:
    """Steps, seconds (median of `repeats`) of a forward run and of forward + backward, and exactness."""
    program = load_program(name, bits=BITS, num_registers=REGISTERS, call_depth=CALL_DEPTH)
    tensors = compile_program(program, num_registers=REGISTERS, bits=BITS)
    machine = RegisterMachine(None, REGISTERS, LIST_CELLS, call_depth=CALL_DEPTH, bits=BITS)
    rng = random.Random(seed)
    lists = [[rng.randint(-(10**5), 10**5) for _ in range(length)] for _ in range(batch)]
    cells = torch.tensor([values + [0] * (LIST_CELLS - length) for values in lists])
    forward, backward, steps, exact = [], [], 0, True
    for _ in range(repeats):
        memory = machine.encode(cells).requires_grad_()
        state = machine.initial_state(
            batch, tensors.lines, inputs={1: machine.encode(torch.full((batch,), length))}, memory=memory
        )
        start = time.perf_counter()
        run = machine.run(tensors, state, LIST_MAX_STEPS)
        forward.append(time.perf_counter() - start)
        run.state.memory[:, :length].sum().backward()
        backward.append(time.perf_counter() - start)
        steps = run.steps
        decoded = run.state.decode(machine.values)["memory"][:, :length].tolist()
        exact &= decoded == [sorted(values) for values in lists]
    return {
        "steps": steps,
        "forward": statistics.median(forward),
        "backward": statistics.median(backward),
        "exact": exact,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    figures = {
        (name, length): measure(name, length, args.batch, args.repeats) for name in PROGRAMS for length in args.lengths
    }
    rows = [
        [name, length, f["steps"], f"{f['forward']:.2f}", f"{f['backward']:.2f}", "yes" if f["exact"] else "NO"]
        for (name, length), f in figures.items()
    ]
    header = ["program", "L", "steps (gradient path)", "forward s", "forward + backward s", "all sorted"]
    print(markdown_table(header, rows))
    return figures


if __name__ == "__main__":
    main()
