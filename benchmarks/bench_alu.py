"""Time one ALU step (eq. 7 / eq. 11): TableALU (auto, table) against the dense-table baselines.

Every (n, batch, implementation) runs in a fresh child process, so that no allocation of another run can
hide or inflate its memory peak. It measures:

* forward (under torch.no_grad) and forward+backward (op_probs, u and v all require grad; loss sum(out²)):
  median wall time of --repeats runs after a warm-up run, and the median CPU time (time.process_time) of the
  forward+backward runs. On a shared machine CPU time is the robust number (other processes inflate wall
  time, not CPU time), so the speed-up ratios use it; with --threads 1 it is the wall time of an idle machine;
* peak memory of one forward+backward step: the rise of the process's peak resident set (VmHWM, reset through
  /proc/self/clear_refs) over its resident set just before the first full-size step (after malloc_trim), i.e.
  everything the step allocates beyond the inputs and the already built tables (Linux, glibc);
* the bytes of the tables each implementation holds (index tables, or the dense |A|·n³ float32 table).

Dense baselines run only where they fit: the dense table must stay under --max-dense-gb, and the literal
einsum's op-first (batch, n, n, n) intermediate under --max-einsum-gb; otherwise the row says
"n/a (table X GiB)" / "n/a (scratch X GiB)".

Example: python -m benchmarks.bench_alu --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

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
from dcomp_isa import ALU_OPS

IMPLS = ("auto", "table", "dense matmul", "dense einsum")
NUM_OPS = len(ALU_OPS)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Threads: every run uses torch.set_num_threads(--threads), with OMP_NUM_THREADS and MKL_NUM_THREADS set "
            "to the same value. On a small shared machine, OpenMP threads that spin while waiting can make steps "
            "~10x slower: the children get OMP_WAIT_POLICY=PASSIVE unless OMP_WAIT_POLICY is already set "
            "(export OMP_WAIT_POLICY=PASSIVE for your own runs too)."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="n in {64, 128}, batch 64, 3 repeats, 3 s cap (< 2 min)")
    parser.add_argument("--ns", type=int, nargs="+", default=[64, 128, 256, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512])
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="stop repeating a measurement after this")
    parser.add_argument("--max-dense-gb", type=float, default=2.0, help="skip dense baselines above this table (GiB)")
    parser.add_argument("--max-einsum-gb", type=float, default=2.0, help="skip einsum above this intermediate (GiB)")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    parser.add_argument("--run", nargs=3, metavar=("N", "BATCH", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.ns, args.batches, args.repeats, args.max_seconds = [64, 128], [64], 3, 3.0
    return args


# ---------------------------------------------------------------------------------------------------------
# One run (child process)
# ---------------------------------------------------------------------------------------------------------


def run_one(n: int, batch: int, impl: str, args) -> dict:
    import torch

    from dcomp_alu import TableALU, dense_alu, dense_alu_table

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)

    def distributions(width):
        x = torch.rand(batch, width, generator=gen)
        return (x / x.sum(-1, keepdim=True)).requires_grad_()

    op_probs, u, v = distributions(len(ALU_OPS)), distributions(n), distributions(n)
    if impl.startswith("dense"):
        table, form = dense_alu_table(n), impl.split()[1]
        alu = lambda f, a, b: dense_alu(table, f, a, b, form=form)  # noqa: E731
        table_bytes = table.numel() * table.element_size()
    else:
        alu = TableALU(n, mode=impl)
        table_bytes = alu.table_bytes()
    # One-time lazy initialisation (autograd engine, MKL FFT and BLAS) is not part of a step.
    small = torch.full((1, 40), 1 / 40, requires_grad=True)
    TableALU(40)(op_probs[:1], small, small).sum().backward()
    dense_alu(dense_alu_table(4), op_probs[:1], small[:, :4], small[:, :4], form="matmul").sum().backward()

    def forward():
        with torch.no_grad():
            alu(op_probs, u, v)

    def forward_backward():
        alu(op_probs, u, v).square().sum().backward()

    row = {"table_bytes": table_bytes, "peak_bytes": peak_step_bytes(forward_backward)}  # also the warm-up
    timings = time_interleaved(
        {"fwd": forward, "fwd_bwd": forward_backward}, args.repeats, args.max_seconds, warmup=False
    )
    row["fwd_ms"] = timings["fwd"].wall_ms
    row["fwd_bwd_ms"], row["fwd_bwd_cpu_ms"] = timings["fwd_bwd"].wall_ms, timings["fwd_bwd"].cpu_ms
    return row


# ---------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------


def skip_reason(n: int, batch: int, impl: str, args) -> str | None:
    dense_bytes, einsum_scratch = NUM_OPS * n**3 * 4, batch * n**3 * 4
    if impl.startswith("dense") and dense_bytes > args.max_dense_gb * GB:
        return f"n/a (table {dense_bytes / GB:.1f} GiB)"
    if impl == "dense einsum" and einsum_scratch > args.max_einsum_gb * GB:
        return f"n/a (scratch {einsum_scratch / GB:.1f} GiB)"
    return None


def _ratio(baseline: dict | None, row: dict) -> str:
    if not baseline or "skip" in baseline:
        return "—"
    ratio = baseline["fwd_bwd_cpu_ms"] / row["fwd_bwd_cpu_ms"]
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| n | batch | implementation | table bytes | fwd ms | fwd+bwd ms | fwd+bwd CPU ms | peak MiB (fwd+bwd) "
        "| matmul / this (fwd+bwd CPU) | einsum / this (fwd+bwd CPU) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cells = {}
    for row in rows:
        cells.setdefault((row["n"], row["batch"]), {})[row["impl"]] = row
    for (n, batch), cell in cells.items():
        for impl, row in cell.items():
            if "skip" in row:
                lines.append(f"| {n} | {batch} | {impl} | {row['skip']} | | | | | | |")
                continue
            ours = not impl.startswith("dense")
            matmul = _ratio(cell.get("dense matmul"), row) if ours else "—"
            einsum = _ratio(cell.get("dense einsum"), row) if ours else "—"
            lines.append(
                f"| {n} | {batch} | {impl} | {row['table_bytes']:,} | {ms(row['fwd_ms'])} | "
                f"{ms(row['fwd_bwd_ms'])} | {ms(row['fwd_bwd_cpu_ms'])} | {row['peak_bytes'] / (1 << 20):.1f} | "
                f"{matmul} | {einsum} |"
            )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.run:
        n, batch, impl = args.run
        print(json.dumps(run_one(int(n), int(batch), impl, args)))
        return
    env = thread_environment(args.threads)
    forwarded = [f"--threads={args.threads}", f"--repeats={args.repeats}", f"--max-seconds={args.max_seconds}"]
    rows, start = [], time.perf_counter()
    load = os.getloadavg()[0]
    for n in args.ns:
        for batch in args.batches:
            for impl in args.impls:
                row = {"n": n, "batch": batch, "impl": impl}
                reason = skip_reason(n, batch, impl, args)
                if reason:
                    row["skip"] = reason
                else:
                    row.update(measure_in_child(__spec__.name, [str(n), str(batch), impl], forwarded, env))
                rows.append(row)
            print(f"  n={n} batch={batch} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    header = (
        f"{load_note(load, args.threads)}; median of {args.repeats} interleaved runs (fewer past "
        f"{args.max_seconds:g} s); ratios = CPU time of the baseline / CPU time of this row; peak = rise of "
        f"VmHWM over VmRSS (after malloc_trim) during the first fwd+bwd step in a fresh process; fwd+bwd loss = "
        f"sum(out²), with "
        f"op_probs, u, v all requiring grad. Total {time.perf_counter() - start:.0f} s."
    )
    title = "# One ALU step (eq. 7): TableALU against the dense table"
    write_report(title, __spec__.name, argv, f"{header}\n\n{markdown(rows)}", args.output)


if __name__ == "__main__":
    main()
