"""What every benchmark shares: thread settings, timing (median and min over interleaved repeats), peak memory
from the kernel's counters, child-process isolation, and the markdown report that names the command it came from.

Memory: VmHWM (peak resident set) is reset to the current VmRSS by writing 5 to /proc/self/clear_refs (Linux);
tracemalloc does not see torch's allocations. Threads: OpenMP threads that spin while waiting can make steps many
times slower on a small shared machine, so children get OMP_WAIT_POLICY=PASSIVE unless it is set.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GB = 1 << 30


# ------------------------------------------------------------------------------------------------ threads
def thread_environment(threads: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment with OpenMP / MKL threads set to `threads` and a passive wait policy."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def set_thread_environment(threads: int) -> None:
    """`thread_environment` applied to this process; must run before torch is imported."""
    if "torch" in sys.modules:
        raise RuntimeError("set the thread environment before importing torch")
    os.environ.update(thread_environment(threads))


def load_note(start_load: float, threads: int) -> str:
    """The machine's setting, for a report header."""
    return (
        f"{os.cpu_count()} CPUs, load average {start_load:.1f} at start and {os.getloadavg()[0]:.1f} at the end; "
        f"torch threads {threads} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', threads)}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')})"
    )


# ------------------------------------------------------------------------------------------------- timing
@dataclass(frozen=True)
class Timing:
    """Milliseconds of one measured step: median and min wall time, median CPU time (`time.process_time`; on a
    shared machine the robust figure, since other processes inflate wall time, not CPU time)."""

    wall_ms: float
    min_ms: float
    cpu_ms: float

    def __str__(self) -> str:
        return f"{ms(self.wall_ms)} ({ms(self.min_ms)})"


def time_interleaved(
    steps: dict[str, Callable[[], object]], repeats: int, max_seconds: float = float("inf"), warmup: bool = True
) -> dict[str, Timing]:
    """Times every step `repeats` times, round-robin, so that load from other processes falls on every compared
    step alike; stops early once `max_seconds` have passed (after one round). `warmup` runs each step once first
    (first-call allocations, lazily built tables)."""
    if warmup:
        for step in steps.values():
            step()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    start = time.perf_counter()
    for _ in range(repeats):
        for name, step in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        if time.perf_counter() - start >= max_seconds:
            break
    return {
        name: Timing(statistics.median(wall[name]) * 1e3, min(wall[name]) * 1e3, statistics.median(cpu[name]) * 1e3)
        for name in steps
    }


def ms(value: float) -> str:
    """Milliseconds with three significant digits (whole ones from 100 on)."""
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


# ------------------------------------------------------------------------------------------------- memory
def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def reset_peak() -> bool:
    """Resets VmHWM to the current VmRSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_step_bytes(step: Callable[[], object]) -> int:
    """Peak resident memory a call of `step` adds over the resident memory before it (Linux, glibc)."""
    # Hand memory that malloc keeps after earlier frees back to the OS first: the step reusing those
    # already-resident pages would otherwise not show up in VmHWM.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = status_kib("VmRSS")
    reset_peak()
    step()
    return max(0, status_kib("VmHWM") - before) * 1024


# ------------------------------------------------------------------------------------------------ children
def measure_in_child(module: str, run_args: list[str], forwarded: list[str], env: dict[str, str]) -> dict:
    """Runs `python -m MODULE --run RUN_ARGS FORWARDED` in a fresh process (no allocation of another run can hide
    or inflate its memory peak) and returns the row it prints last, as JSON."""
    command = [sys.executable, "-m", module, "--run", *run_args, *forwarded]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[1:])} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_forked(function: Callable[..., dict], *args) -> dict:
    """`function(*args)` in a forked child (which shares the parent's imports but none of its later allocations);
    a failure in the child ends the benchmark with the child's traceback."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_forked_child, args=(function, args, send))
    process.start()
    send.close()
    result = receive.recv()
    process.join()
    if "error" in result:
        raise SystemExit(f"{getattr(function, '__name__', function)}{args[:1]} failed:\n{result['error']}")
    return result


def _forked_child(function, args, connection) -> None:
    try:
        connection.send(function(*args))
    except BaseException:
        connection.send({"error": traceback.format_exc()})
    finally:
        connection.close()


# ------------------------------------------------------------------------------------------------- report
def write_report(title: str, module: str, argv: list[str] | None, body: str, output: Path | None) -> str:
    """Prints the markdown report (title, the command that made it, the body) and writes it to `output` too."""
    command = " ".join([f"python -m {module}", *(sys.argv[1:] if argv is None else argv)])
    report = f"{title}\n\n`{command}`\n\n{body}\n"
    print(report)
    if output:
        output.write_text(report)
    return report
