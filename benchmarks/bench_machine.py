"""Time the whole differentiable machine: one interpreter step, and a whole Fibonacci depth-3 run (24 steps).

Same method as bench_alu (benchmarks/harness.py): every (n, batch, ALU, workload) runs in a fresh child
process; forward under torch.no_grad and forward+backward (the input distributions require grad; loss =
sum(r0²)); median wall and CPU time; peak memory = rise of VmHWM over VmRSS during the first forward+backward.
The machine runs the standard library's `fib` with the full instruction set (every op is evaluated each step,
since gradients w.r.t. the program would need them all), with three ALUs: ours (`TableALU`, closed forms +
index tables) and the two dense baselines of eq. 7 (the literal einsum, and the dense table as one matrix
product), each only where its table/scratch fits.

Example: python -m benchmarks.bench_machine --quick

`--backward` prints instead the recurrence's backward table (issue 11, item 5): the whole `fib` run at batch 64
on the unit machine at n = 1024 and the binary machine at 64 bits, each plain (`checkpoint=0`: every step's
tensors kept), checkpointed (`checkpoint=CHECKPOINT_STEPS`) and with `run`'s default (checkpointed steps where
a run would keep many state values), side by side: fwd,
fwd+bwd, their ratio (CPU time) and two peaks of the fwd+bwd, the harness's (rise of VmHWM, which includes
memory that glibc keeps after frees) and the live one (the same with MALLOC_MMAP_THRESHOLD_ = 128 KiB, so that
freed tensors go back to the OS at once). The cells are bench_binary's (`benchmarks.bench_binary --run`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchmarks.bench_alu import NUM_OPS
from benchmarks.harness import (
    GB,
    load_note,
    measure_in_child,
    ms,
    peak_step_bytes,
    thread_environment,
    time_interleaved,
    write_report,
)

ALUS = ("ours", "dense matmul", "dense einsum")
WORKLOADS = ("step", "fib depth 3")
FIB_DEPTH = 3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n in {64, 128}, batch in {1, 64}, 2 repeats")
    parser.add_argument("--ns", type=int, nargs="+", default=[64, 128, 256, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512])
    parser.add_argument("--alus", nargs="+", default=list(ALUS), choices=ALUS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="stop repeating a measurement after this")
    parser.add_argument("--max-dense-gb", type=float, default=2.0, help="skip dense baselines above this table size")
    parser.add_argument("--max-einsum-gb", type=float, default=1.0, help="skip einsum above this scratch size")
    parser.add_argument(
        "--max-einsum-work",
        type=float,
        default=2e9,
        help="skip the einsum fib run above batch·n³·steps multiply-adds (it would take minutes)",
    )
    parser.add_argument("--backward", action="store_true", help="the recurrence's backward table (see above)")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    parser.add_argument("--run", nargs=4, metavar=("N", "BATCH", "ALU", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.ns, args.batches, args.repeats, args.max_seconds = [64, 128], [1, 64], 2, 10.0
    return args


def run_one(n: int, batch: int, alu_name: str, workload: str, args) -> dict:
    import torch

    from dcomp_alu import TableALU, dense_alu, dense_alu_table
    from dcomp_machine import RegisterMachine
    from library.compiling import compile_library

    torch.set_num_threads(args.threads)

    class DenseALU(torch.nn.Module):
        """Eq. 7 against the dense |A|·n³ table, in the given contraction order (the baselines)."""

        def __init__(self, form: str):
            super().__init__()
            self.n, self.form, self.table = n, form, dense_alu_table(n)

        def forward(self, op_probs, u, v):
            return dense_alu(self.table, op_probs, u, v, form=self.form)

    alu = TableALU(n) if alu_name == "ours" else DenseALU(alu_name.split()[1])
    table_bytes = (
        sum(b.numel() * b.element_size() for b in alu.buffers())
        if alu_name == "ours"
        else (alu.table.numel() * alu.table.element_size())
    )
    machine = RegisterMachine(n, 16, 32, alu=alu)
    fib = compile_library(["fib"], n=n, num_registers=16)
    gen = torch.Generator().manual_seed(0)
    logits = {r: torch.randn(batch, n, generator=gen).requires_grad_() for r in (1, 2)}
    depth = torch.zeros(batch, n)
    depth[:, FIB_DEPTH] = 1
    steps = 1 if workload == "step" else 8 * FIB_DEPTH

    def run():
        inputs = {1: torch.softmax(logits[1], -1), 2: torch.softmax(logits[2], -1), 3: depth}
        state = machine.initial_state(batch, fib.lines, inputs=inputs)
        return machine.run(fib.tensors, state, max_steps=steps).state.registers[:, 0]

    def forward():
        with torch.no_grad():
            run()

    def forward_backward():
        run().square().sum().backward()

    forward_backward()  # one-time lazy initialisation (autograd engine, FFT plans) is not part of a run
    row = {"table_bytes": table_bytes, "peak_bytes": peak_step_bytes(forward_backward)}
    timings = time_interleaved(
        {"fwd": forward, "fwd_bwd": forward_backward}, args.repeats, args.max_seconds, warmup=False
    )
    row["fwd_ms"] = timings["fwd"].wall_ms
    row["fwd_bwd_ms"], row["fwd_bwd_cpu_ms"] = timings["fwd_bwd"].wall_ms, timings["fwd_bwd"].cpu_ms
    return row


def skip_reason(n: int, batch: int, alu: str, workload: str, args) -> str | None:
    dense_bytes, scratch = NUM_OPS * n**3 * 4, batch * n**3 * 4
    if alu.startswith("dense") and dense_bytes > args.max_dense_gb * GB:
        return f"n/a (table {dense_bytes / GB:.1f} GiB)"
    if alu == "dense einsum" and scratch > args.max_einsum_gb * GB:
        return f"n/a (scratch {scratch / GB:.1f} GiB)"
    steps = 1 if workload == "step" else 8 * FIB_DEPTH
    if alu == "dense einsum" and batch * n**3 * NUM_OPS * steps > args.max_einsum_work:
        return f"n/a ({batch * n**3 * NUM_OPS * steps:.0e} multiply-adds)"
    return None


def markdown(rows: list[dict]) -> str:
    lines = [
        "| workload | n | batch | ALU | table bytes | fwd ms | fwd+bwd ms | fwd+bwd CPU ms | peak MiB "
        "| matmul / ours | einsum / ours |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cells = {}
    for row in rows:
        cells.setdefault((row["workload"], row["n"], row["batch"]), {})[row["alu"]] = row
    for (workload, n, batch), cell in cells.items():
        for alu, row in cell.items():
            if "skip" in row:
                lines.append(f"| {workload} | {n} | {batch} | {alu} | {row['skip']} | | | | | | |")
                continue
            ratios = []
            for baseline in ("dense matmul", "dense einsum"):
                base = cell.get(baseline)
                ok = alu == "ours" and base and "skip" not in base
                ratios.append(f"{base['fwd_bwd_cpu_ms'] / row['fwd_bwd_cpu_ms']:.1f}×" if ok else "—")
            lines.append(
                f"| {workload} | {n} | {batch} | {alu} | {row['table_bytes']:,} | {ms(row['fwd_ms'])} | "
                f"{ms(row['fwd_bwd_ms'])} | {ms(row['fwd_bwd_cpu_ms'])} | {row['peak_bytes'] / (1 << 20):.1f} | "
                f"{ratios[0]} | {ratios[1]} |"
            )
    return "\n".join(lines)


BACKWARD_MACHINES = ("unit 1024", "binary 64")
BACKWARD_WORKLOADS = {"plain": "run, no checkpoint", "checkpointed": "run, checkpointed", "default": "run"}
BACKWARD_BATCH = 64
# Big enough to hold small tensors in the heap, small enough that every state-sized tensor is its own mapping.
LIVE_MMAP_THRESHOLD = 128 << 10


def backward_rows(args) -> list[dict]:
    """Every (machine, plain/checkpointed/default) cell of the backward table, each in fresh child processes: one
    timed, one for the live peak."""
    env = thread_environment(args.threads)
    live_env = {**env, "MALLOC_MMAP_THRESHOLD_": str(LIVE_MMAP_THRESHOLD)}
    timed = ["--repeats", str(args.repeats), "--max-seconds", str(args.max_seconds)]
    rows = []
    for machine in BACKWARD_MACHINES:
        for mode, workload in BACKWARD_WORKLOADS.items():
            cell = [machine, str(BACKWARD_BATCH), workload]
            row = {"machine": machine, "mode": mode, **measure_in_child("benchmarks.bench_binary", cell, timed, env)}
            live = measure_in_child("benchmarks.bench_binary", cell, ["--repeats", "1", "--max-seconds", "0"], live_env)
            rows.append({**row, "live_peak_bytes": live["peak_bytes"]})
            print(f"  {machine} {mode} done", file=sys.stderr, flush=True)
    return rows


def backward_markdown(rows: list[dict]) -> str:
    lines = [
        "| machine | run | fwd ms | fwd+bwd ms | fwd CPU ms | fwd+bwd CPU ms | fwd+bwd / fwd (CPU) "
        "| peak MiB (harness) | live peak MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        times = " | ".join(ms(row[key] * 1e3) for key in ("fwd_s", "fwd_bwd_s", "fwd_cpu_s", "fwd_bwd_cpu_s"))
        lines.append(
            f"| {row['machine']} | {row['mode']} | {times} | {row['fwd_bwd_cpu_s'] / row['fwd_cpu_s']:.2f}× | "
            f"{row['peak_bytes'] / (1 << 20):.0f} | {row['live_peak_bytes'] / (1 << 20):.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.run:
        n, batch, alu, workload = args.run
        print(json.dumps(run_one(int(n), int(batch), alu, workload, args)))
        return
    if args.backward:
        start, load = time.perf_counter(), os.getloadavg()[0]
        rows = backward_rows(args)
        header = (
            f"{load_note(load, args.threads)}; median of {args.repeats} interleaved runs (fewer past "
            f"{args.max_seconds:g} s); the standard library's `fib` at depth {FIB_DEPTH} ({8 * FIB_DEPTH} steps), "
            f"batch {BACKWARD_BATCH}, soft inputs, 16 registers, 32 memory cells; plain = `run(checkpoint=0)`, "
            f"default = `run()`. Total {time.perf_counter() - start:.0f} s."
        )
        title = "# The recurrence's backward pass: plain vs run's default"
        write_report(title, __spec__.name, argv, f"{header}\n\n{backward_markdown(rows)}", args.output)
        return
    env = thread_environment(args.threads)
    forwarded = [f"--threads={args.threads}", f"--repeats={args.repeats}", f"--max-seconds={args.max_seconds}"]
    rows, start, load = [], time.perf_counter(), os.getloadavg()[0]
    for workload in WORKLOADS:
        for n in args.ns:
            for batch in args.batches:
                for alu in args.alus:
                    row = {"workload": workload, "n": n, "batch": batch, "alu": alu}
                    reason = skip_reason(n, batch, alu, workload, args)
                    if reason:
                        row["skip"] = reason
                    else:
                        row.update(measure_in_child(__spec__.name, [str(n), str(batch), alu, workload], forwarded, env))
                    rows.append(row)
                print(
                    f"  {workload} n={n} batch={batch} done ({time.perf_counter() - start:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    header = (
        f"{load_note(load, args.threads)}; median of {args.repeats} interleaved runs "
        f"(fewer past {args.max_seconds:g} s); ratios = CPU time of the baseline / ours (fwd+bwd); 16 registers, "
        f"32 memory cells, the standard library's `fib` at depth {FIB_DEPTH} ({8 * FIB_DEPTH} steps). "
        f"Total {time.perf_counter() - start:.0f} s."
    )
    title = "# The machine: one step and a whole Fibonacci run"
    write_report(title, __spec__.name, argv, f"{header}\n\n{markdown(rows)}", args.output)


if __name__ == "__main__":
    main()
