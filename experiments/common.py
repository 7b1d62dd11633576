"""Shared helpers of the §4.1 experiments (`minimal_network.py`, `circuits_vs_tables.py`): a linked library as
tensors, the machine as a differentiable tool with one call interface, low-entropy selection, data splits,
training/evaluation loops and result formatting.

A *tool* is a module called as ``tool(registers, selection) -> (batch, n)``: `registers` maps an input
register index to its value distributions `(batch, n)`, `selection` is a distribution `(batch, programs)` over
the library's programs, and the result is the distribution of the read-out register r0. `MachineTool` runs
the library on the differentiable register machine; other tools (lookup tables) share the interface, so a
trained network can swap one for another (the paper's bootstrapping, §4.1).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from dcomp_machine import RegisterMachine
from library.compiling import CompiledLibrary, compile_library
from modeling_llama_dcomp import record_computer_runs, run_selected

SELECTIONS = ("soft", "hard")


def setup(seed: int) -> torch.Generator:
    """One CPU thread (the machine is shared) and seeded torch; returns a generator for data order."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ library
def build_library(names: Sequence[str], n: int, sources: Mapping[str, str] | None = None) -> CompiledLibrary:
    """Links `names` in order: standard programs, others from `sources` (assembly)."""
    return compile_library(names, n=n, sources=sources)


class MachineTool(nn.Module):
    """The library run on the differentiable register machine for `max_steps` steps; returns r0."""

    def __init__(self, library: CompiledLibrary, machine: RegisterMachine, max_steps: int):
        super().__init__()
        self.library, self.machine, self.max_steps = library, machine, max_steps
        self.entry_points = torch.tensor(list(library.entry_points.values()))

    def forward(self, registers: Mapping[int, torch.Tensor], selection: torch.Tensor) -> torch.Tensor:
        run = run_selected(
            self.machine, self.library.tensors, self.entry_points, selection, inputs=registers, max_steps=self.max_steps
        )
        return run.state.registers[:, 0]


# ---------------------------------------------------------------------------------------------- selection
def select(logits: torch.Tensor, mode: str, temperature: float = 1.0) -> torch.Tensor:
    """A distribution over the last axis: `soft` = softmax(logits / T); `hard` = straight-through, i.e. the
    exact one-hot argmax forward and the softmax's gradient backward (the lowest-entropy selection)."""
    probs = (logits / temperature).softmax(-1)
    if mode == "soft":
        return probs
    if mode == "hard":
        return _StraightThrough.apply(probs)
    raise ValueError(f"selection must be one of {SELECTIONS}, got {mode!r}")


class _StraightThrough(torch.autograd.Function):
    """Forward: the exact one-hot of the argmax (no rounding residue, unlike `hard + p - p.detach()`, whose
    1 ± 6e-8 entries leave tiny running masses in the machine); backward: the gradient unchanged."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


# ------------------------------------------------------------------------------------------------- data
def split_indices(count: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random train/test split of `range(count)`."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    test = int(round(count * test_fraction))
    return order[test:].sort().values, order[:test].sort().values


def batches(count: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Index batches over `range(count)`: shuffled with `generator`, in order without one."""
    order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    yield from order.split(batch_size)


# ------------------------------------------------------------------------------------------------ loops
Forward = Callable[[torch.Tensor], torch.Tensor]  # example indices -> answer logits


def train_epoch(
    forward: Forward,
    answers: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    on_step: Callable[[], None] | None = None,
) -> float:
    """One epoch of cross-entropy on the answers, calling `on_step` after every step; returns the mean loss."""
    total = 0.0
    for index in batches(len(answers), batch_size, generator):
        loss = nn.functional.cross_entropy(forward(index), answers[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(index)
        if on_step is not None:
            on_step()
    return total / len(answers)


@torch.no_grad()
def accuracy(forward: Forward, answers: torch.Tensor, batch_size: int) -> float:
    """Exact-match accuracy (argmax of the answer logits) in percent."""
    correct = sum(
        int((forward(index).argmax(-1) == answers[index]).sum()) for index in batches(len(answers), batch_size, None)
    )
    return 100.0 * correct / len(answers)


class Timer:
    """Wall-clock and CPU seconds of this process since construction (the CPU time does not count the
    other jobs on a shared machine; the wall time does)."""

    def __init__(self):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    @property
    def cpu_seconds(self) -> float:
        return time.process_time() - self.cpu_start


# ----------------------------------------------------------------------------------------------- report
def mean_spread(values: Sequence[float]) -> str:
    """'mean ± std (min–max)' over seeds, in percent with one decimal; a single value as is."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def runs_of(model):
    """`record_computer_runs` of the module that defined `model`: a model loaded with trust_remote_code runs its
    folder's copy of the modeling file, whose records this checkout's function would never see."""
    return getattr(sys.modules[type(model).__module__], "record_computer_runs", record_computer_runs)


def refuse_existing(output: Path, copy: str) -> None:
    """An edited copy of a run goes into a new folder: raises FileExistsError naming `output` when it exists."""
    if output.exists():
        raise FileExistsError(f"{output}: already exists (the {copy} copy goes into a new folder)")


def save_run_copy(model, model_dir: Path, output: Path) -> None:
    """`model_dir` copied to `output` (checkpoints and the training lock left out) with `model`'s weights, config and
    code saved over it: the copy reads its run_settings.json and evaluates like the run."""
    shutil.copytree(model_dir, output, ignore=shutil.ignore_patterns("checkpoint-*", "_train.lock"))
    model.save_pretrained(output)
