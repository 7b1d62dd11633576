"""Circuit ALU vs table ALU at equal n, and ripple vs Kogge–Stone adders: time, memory, gradient depth.

    python -m benchmarks.bench_circuits [--quick] [--threads 2] [--output benchmarks/results_circuits.md]

Times are medians (and minima) over repeats on random (non-one-hot) inputs, batch 64; fwd+bwd includes the
forward.
Prints markdown tables. `--quick` (fewer repeats) finishes in under a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import Timing, time_interleaved, write_report

# PyTorch's OpenMP threads and MKL can fight on few cores (ALU-NOTES, "Threads"): idle threads must sleep.
# Set before torch is imported, and report it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from dcomp_circuits import ADDERS, CircuitALU, gradient_path_length
from dcomp_isa import ALU_OPS

try:
    from dcomp_alu import TableALU
except ImportError as error:
    sys.exit(f"bench_circuits: cannot import TableALU from dcomp_alu ({error}); it is the baseline of this benchmark.")

BATCH = 64
ALU_SIZES = (16, 64, 256, 1024)
ADDER_BITS = (8, 16, 32)


def time_forward_backward(
    modules: dict[str, Callable], inputs: tuple, repeats: int
) -> dict[str, tuple[Timing, Timing]]:
    """{name: (forward ms, forward + backward ms)} of each module on fresh leaf copies of `inputs`, under
    a random linear loss (so every output gets a gradient)."""
    leaves = [x.detach().requires_grad_() for x in inputs]

    def output(module):
        out = module(*leaves)
        return out[0] if isinstance(out, tuple) else out  # an adder returns (sum bits, carry)

    weights = {name: torch.rand_like(output(module).detach()) for name, module in modules.items()}

    def forward(module):
        with torch.no_grad():
            output(module)

    def forward_backward(name):
        (output(modules[name]) * weights[name]).sum().backward()

    # Repeats interleaved round-robin: load from other processes falls on every compared implementation alike; the
    # min is the better estimate of the intrinsic cost when that load is heavy.
    forward_ms = time_interleaved(
        {name: functools.partial(forward, module) for name, module in modules.items()}, repeats
    )
    both_ms = time_interleaved({name: functools.partial(forward_backward, name) for name in modules}, repeats)
    return {name: (forward_ms[name], both_ms[name]) for name in modules}


def bench_alus(repeats: int) -> list[str]:
    rows = [
        "| n | ALU | table bytes | fwd ms, median (min) | fwd+bwd ms, median (min) |",
        "|---:|---|---:|---:|---:|",
    ]
    for n in ALU_SIZES:
        gen = torch.Generator().manual_seed(n)
        op_probs = torch.softmax(torch.randn(BATCH, len(ALU_OPS), generator=gen), -1)
        u, v = torch.softmax(torch.randn(2, BATCH, n, generator=gen), -1)
        alus = {
            "TableALU": TableALU(n),
            "CircuitALU ripple": CircuitALU(n, "ripple"),
            "CircuitALU prefix": CircuitALU(n, "prefix"),
        }
        times = time_forward_backward(alus, (op_probs, u, v), repeats)
        for name, alu in alus.items():
            rows.append(f"| {n} | {name} | {alu.table_bytes():,} | {times[name][0]} | {times[name][1]} |")
    return rows


def bench_adders(repeats: int) -> list[str]:
    rows = [
        "| bits | adder | gradient path (autograd nodes) | fwd ms, median (min) | fwd+bwd ms, median (min) |",
        "|---:|---|---:|---:|---:|",
    ]
    for bits in ADDER_BITS:
        a, b = torch.rand(2, BATCH, bits, generator=torch.Generator().manual_seed(bits))
        times = time_forward_backward(ADDERS, (a, b), repeats)
        for name, adder in ADDERS.items():
            depth = gradient_path_length(adder(a.detach().requires_grad_(), b)[0])
            rows.append(f"| {bits} | {name} | {depth} | {times[name][0]} | {times[name][1]} |")
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 15 (under a minute)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 15
    setting = (
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; batch {BATCH}, float32, random distributions, "
        f"median (min) of {repeats} runs{' (--quick)' if args.quick else ''}; "
        f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs."
    )
    body = "\n\n".join(
        [
            setting,
            f"## ALU step: all {len(ALU_OPS)} ops mixed (eq. 7)",
            "\n".join(bench_alus(repeats)),
            "## Adders alone (sum bits; gradient path = longest autograd chain)",
            "\n".join(bench_adders(repeats)),
        ]
    )
    write_report("# Circuit ALU vs table ALU", __spec__.name, argv, body, args.output)


if __name__ == "__main__":
    main()
