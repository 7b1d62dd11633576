"""The binary machine against the one-hot (unit) machine: one step and a whole Fibonacci run, fwd and fwd+bwd.

Every cell (machine, batch, workload) runs in a fresh child process (`--run`), so that timings and peak memory
do not mix: forward under torch.no_grad, forward+backward with the input values requiring grad (loss =
sum(r0²)); median wall and CPU time of the repeats (ratios from CPU time, which other jobs on a shared machine
inflate far less); peak = the rise of the child's peak RSS (VmHWM, reset through
/proc/self/clear_refs) over its RSS before the first forward+backward. The program is the standard library's
`fib` at depth 3 (24 steps, 16 registers, 32 memory cells); the inputs are soft values (softmax over n for the
unit machine, sigmoid bits for the binary one).

Machines: the unit machine with the table ALU at n = 256 and n = 1024, the binary machine at the same range
(8 and 10 bits) and at 32 and 64 bits, where no table fits. Workloads: `step` (the first line), `run` (the whole
run; `run` checkpoints its steps by default for large runs), `run, no checkpoint` (batch 64 only), `run,
checkpointed` (every `CHECKPOINT_STEPS` steps, whatever the size; bench_machine's backward table only) and
`step, all ops` (batch 64, binary: a program being trained needs every op's result, so every circuit runs).
Ratios, side by side in the same run: fwd+bwd / fwd per cell, unit / binary at equal range, 64 / 32 bits.

    python -m benchmarks.bench_binary [--quick] [--output benchmarks/results_binary.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchmarks import harness

MACHINES = ("unit 256", "binary 8", "unit 1024", "binary 10", "binary 32", "binary 64")
EQUAL_RANGE = {"unit 256": "binary 8", "unit 1024": "binary 10"}
FIB_DEPTH = 3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 1 and 64, one repeat, no 512")
    parser.add_argument("--machines", nargs="+", default=list(MACHINES), choices=MACHINES)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="stop repeating a measurement after this")
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    parser.add_argument("--run", nargs=3, metavar=("MACHINE", "BATCH", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.repeats, args.max_seconds = [1, 64], 1, 5.0
    return args


def run_cell(machine_name: str, batch: int, workload: str, args) -> dict:
    """One cell, in this (child) process: fwd and fwd+bwd times and the fwd+bwd peak."""
    import torch

    from dcomp_machine import CHECKPOINT_STEPS, ProgramTensors, RegisterMachine
    from library.compiler import compile_program
    from library.stdlib import load_program

    torch.set_num_threads(1)
    encoding, width = machine_name.split()
    width = int(width)
    bits = width if encoding == "binary" else None
    machine = RegisterMachine(None if bits else width, 16, 32, bits=bits)
    program = load_program("fib", n=width if bits is None else 128, bits=bits)
    tensors = compile_program(program, n=width, bits=bits)
    generator = torch.Generator().manual_seed(0)
    logits = {r: torch.randn(batch, width, generator=generator).requires_grad_() for r in (1, 2)}
    depth = machine.encode(torch.full((batch,), FIB_DEPTH))
    to_value = torch.sigmoid if bits else (lambda x: torch.softmax(x, -1))
    steps = 1 if workload.startswith("step") else 8 * FIB_DEPTH
    checkpoint = {"run, no checkpoint": 0, "run, checkpointed": CHECKPOINT_STEPS}.get(workload)
    op_logits = (tensors.op * 8).requires_grad_()

    def run():
        inputs = {1: to_value(logits[1]), 2: to_value(logits[2]), 3: depth}
        state = machine.initial_state(batch, len(program), inputs=inputs)
        # A sharp program, or one being trained (soft ops whose logits need a gradient: every op is live).
        op = torch.softmax(op_logits, -1) if workload == "step, all ops" else tensors.op
        program_tensors = ProgramTensors(op, tensors.a, tensors.b, tensors.out, tensors.imm)
        return machine.run(program_tensors, state, max_steps=steps, checkpoint=checkpoint).state.registers[:, 0]

    def forward():
        with torch.no_grad():
            run()

    def forward_backward():
        run().square().sum().backward()

    forward()  # one-time lazy initialisation is not part of a measurement
    peak = harness.peak_step_bytes(forward_backward)
    timing = harness.time_interleaved(
        {"fwd": forward, "fwd_bwd": forward_backward}, args.repeats, args.max_seconds, warmup=False
    )
    return {
        "fwd_s": timing["fwd"].wall_ms / 1e3,
        "fwd_cpu_s": timing["fwd"].cpu_ms / 1e3,
        "fwd_bwd_s": timing["fwd_bwd"].wall_ms / 1e3,
        "fwd_bwd_cpu_s": timing["fwd_bwd"].cpu_ms / 1e3,
        "peak_bytes": peak,
    }


def cells(args) -> list[tuple[str, int, str]]:
    out = []
    for machine in args.machines:
        for batch in args.batches:
            out += [(machine, batch, "step"), (machine, batch, "run")]
        if 64 in args.batches:
            out.append((machine, 64, "run, no checkpoint"))
            if machine.startswith("binary"):
                out.append((machine, 64, "step, all ops"))
    return out


def _ratio(row: dict, base: dict, digits: int) -> str:
    """CPU-time ratio row / base for fwd+bwd, with the forward ratio beside it."""
    both, fwd = row["fwd_bwd_cpu_s"] / base["fwd_bwd_cpu_s"], row["fwd_cpu_s"] / base["fwd_cpu_s"]
    return f"{both:.{digits}f}× (fwd {fwd:.{digits}f}×)"


def markdown(rows: list[dict]) -> str:
    by_key = {(r["machine"], r["batch"], r["workload"]): r for r in rows}
    lines = [
        "| machine | batch | workload | fwd ms | fwd+bwd ms | fwd CPU ms | fwd+bwd CPU ms | fwd+bwd / fwd (CPU) "
        "| peak MiB (fwd+bwd) | unit / binary (equal range, CPU fwd+bwd) | 64 / 32 bits (CPU fwd+bwd) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        key = (row["machine"], row["batch"], row["workload"])
        versus, wide = "", ""
        binary = by_key.get((EQUAL_RANGE.get(key[0]), key[1], key[2]))
        if binary:
            versus = _ratio(row, binary, 1)
        narrow = by_key.get(("binary 32", key[1], key[2])) if key[0] == "binary 64" else None
        if narrow:
            wide = _ratio(row, narrow, 2)
        times = " | ".join(harness.ms(row[k] * 1e3) for k in ("fwd_s", "fwd_bwd_s", "fwd_cpu_s", "fwd_bwd_cpu_s"))
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {times} | {row['fwd_bwd_cpu_s'] / row['fwd_cpu_s']:.1f} | "
            f"{row['peak_bytes'] / (1 << 20):.1f} | {versus} | {wide} |"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.run:
        machine, batch, workload = args.run
        print(json.dumps(run_cell(machine, int(batch), workload, args)))
        return
    env = harness.thread_environment(1)
    passed = ["--repeats", str(args.repeats), "--max-seconds", str(args.max_seconds)]
    rows, start, load = [], time.perf_counter(), os.getloadavg()[0]
    for machine, batch, workload in cells(args):
        row = {"machine": machine, "batch": batch, "workload": workload}
        row.update(harness.measure_in_child("benchmarks.bench_binary", [machine, str(batch), workload], passed, env))
        rows.append(row)
        print(f"  {machine} batch {batch} {workload}: done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    header = (
        f"{harness.load_note(load, 1)}; median of {args.repeats} interleaved runs (fewer past "
        f"{args.max_seconds:g} s); `fib` at depth {FIB_DEPTH} ({8 * FIB_DEPTH} steps). Total "
        f"{time.perf_counter() - start:.0f} s."
    )
    title = "# The binary machine vs the unit machine"
    harness.write_report(title, "benchmarks.bench_binary", argv, f"{header}\n\n{markdown(rows)}", args.output)


if __name__ == "__main__":
    main()
