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

Example: python benchmarks/bench_alu.py --quick
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMPLS = ("auto", "table", "dense matmul", "dense einsum")
NUM_OPS = 14  # len(dcomp_isa.ALU_OPS); the driver does not import torch
GB = 1 << 30


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


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def peak_step_bytes(step) -> int:
    """Peak resident memory a call of `step` adds over the resident memory before it (Linux, glibc)."""
    # Hand memory that malloc keeps after earlier frees back to the OS first: the step reusing those
    # already-resident pages would otherwise not show up in VmHWM.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    step()
    return max(0, _status_kib("VmHWM") - before) * 1024


def median_ms(step, repeats: int, max_seconds: float) -> tuple[float, float]:
    """Median wall and CPU milliseconds of `step` over `repeats` runs (fewer once max_seconds have passed)."""
    wall, cpu, start = [], [], time.perf_counter()
    while len(wall) < repeats and (not wall or time.perf_counter() - start < max_seconds):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def run_one(n: int, batch: int, impl: str, args) -> dict:
    import torch

    sys.path.insert(0, str(REPO))
    from dcomp_alu import TableALU, dense_alu, dense_alu_table
    from dcomp_isa import ALU_OPS

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
    row["fwd_ms"], _ = median_ms(forward, args.repeats, args.max_seconds)
    row["fwd_bwd_ms"], row["fwd_bwd_cpu_ms"] = median_ms(forward_backward, args.repeats, args.max_seconds)
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


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def measure_in_child(script: str, run_args: list[str], args, env: dict) -> dict:
    """Run `script --run RUN_ARGS` in a fresh process (so no other run's allocations hide its memory peak)
    and return the row it prints as JSON."""
    forwarded = [f"--threads={args.threads}", f"--repeats={args.repeats}", f"--max-seconds={args.max_seconds}"]
    cmd = [sys.executable, script, "--run", *run_args, *forwarded]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_report(title: str, script: str, argv, header: str, table: str, output: Path | None) -> None:
    """Print the markdown report (title, the command that made it, the setting, the table); save it too."""
    command = " ".join([f"python benchmarks/{script}", *(sys.argv[1:] if argv is None else argv)])
    report = f"{title}\n\n`{command}`\n\n{header}\n\n{table}\n"
    print(report)
    if output:
        output.write_text(report)


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


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
                f"| {n} | {batch} | {impl} | {row['table_bytes']:,} | {_ms(row['fwd_ms'])} | "
                f"{_ms(row['fwd_bwd_ms'])} | {_ms(row['fwd_bwd_cpu_ms'])} | {row['peak_bytes'] / (1 << 20):.1f} | "
                f"{matmul} | {einsum} |"
            )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.run:
        n, batch, impl = args.run
        print(json.dumps(run_one(int(n), int(batch), impl, args)))
        return
    env = child_env(args.threads)
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
                    row.update(measure_in_child(__file__, [str(n), str(batch), impl], args, env))
                rows.append(row)
            print(f"  n={n} batch={batch} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    header = (
        f"{os.cpu_count()} CPUs, load average {load:.1f} at start and {os.getloadavg()[0]:.1f} at the end; "
        f"torch threads {args.threads} (OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, "
        f"OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}); median of {args.repeats} runs (fewer past "
        f"{args.max_seconds:g} s); ratios = CPU time of the baseline / CPU time of this row; peak = rise of "
        f"VmHWM over VmRSS (after malloc_trim) during the first fwd+bwd step in a fresh process; fwd+bwd loss = "
        f"sum(out²), with "
        f"op_probs, u, v all requiring grad. Total {time.perf_counter() - start:.0f} s."
    )
    title = "# One ALU step (eq. 7): TableALU against the dense table"
    write_report(title, "bench_alu.py", argv, header, markdown(rows), args.output)


if __name__ == "__main__":
    main()
