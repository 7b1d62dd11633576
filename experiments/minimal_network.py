"""Experiment 1 (paper §4.1, Table 1): the minimal network — one linear layer before the differentiable computer
and one after — learns to route Fibonacci inputs to the library's `fib` program, at recursion depth 1, 2, 3.

Task: the numbers a, b and the depth d arrive as one-hot slots in a permuted order (a fixed, seed-drawn
derangement: the network must learn which slot feeds which register). The layer before maps the concatenated
slots to value distributions for r1 = a, r2 = b, r3 = d and to a selection over the library's programs; the
machine runs the selected program for 8·d steps (fib takes exactly 8·d); the layer after maps the
distribution of r0 to answer logits. Cross-entropy on the answer fib(a, b, d) mod n only; test accuracy on
held-out (a, b) pairs.

Variants (the paper authors' suggestions, one ablation row each; combined with `+`):
    paper          soft selection (softmax) of values and program, default init, the sequential `fib` (8·d
                   steps): the paper's setting
    hard           straight-through selection of values and program: exact one-hot forward, softmax gradient
    hard program   straight-through selection of the program only (values stay soft)
    init           the "interface" initialisation (`MinimalNetwork`): every register starts as the same mixture
                   of all slots (nothing about the routing), the layer after as a scaled identity
    parallel       `fib` replaced by `fib_parallel`, one parallel line per round (d + 2 steps)
    bootstrap      train with a lookup table of every library program's whole input→output map (one step),
                   then swap in the machine running the real programs and fine-tune

    python -m experiments.minimal_network                  # every variant, depths 1-3, seeds 0 1 2
    python -m experiments.minimal_network --quick          # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from dcomp_isa import ALU_OPS
from dcomp_machine import RegisterMachine, one_hot_values
from experiments.common import (
    MachineTool,
    Timer,
    accuracy,
    build_library,
    markdown_table,
    mean_spread,
    select,
    setup,
    split_indices,
    train_epoch,
)
from library.compiling import CompiledLibrary
from library.plotting import figure

PAPER_TABLE_1 = {1: 73.21, 2: 70.52, 3: 7.07}
N = 32  # values; the library below has 30 lines, and line addresses are values (n > lines)
# The library the network selects from: the standard programs whose inputs are registers.
PROGRAMS = (*ALU_OPS, "fib", "gcd", "mul_repeated")
INPUT_REGISTERS = (1, 2, 3)  # fib: r1 = a, r2 = b, r3 = depth
FIB_PARALLEL = """\
; fib_parallel: fib.asm's result (r0 = F(d + 1) from r1 = a, r2 = b, r3 = d) in d + 2 steps: each round is one
; parallel line, whose lanes all read the registers from before the line (so the jump tests r3 before `dec`).
    dec r3 r3
loop:
    add r1 r2 r2 | copy r2 r1 | dec r3 r3 | jump r3 loop
    copy r2 r0 | ret
"""
SOURCES = {"fib_parallel": FIB_PARALLEL}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One ablation row: how the network selects, which fib it calls, whether it bootstraps from tables."""

    values: str = "soft"  # selection of the register values: soft (softmax) or hard (straight-through)
    program: str = "soft"  # selection of the library program
    init: str = "default"
    parallel: bool = False
    bootstrap: bool = False


VARIANTS = {
    "paper": Variant(),
    "hard": Variant(values="hard", program="hard"),
    "init": Variant(init="interface"),
    "init+hard": Variant(init="interface", values="hard", program="hard"),
    "init+hard program": Variant(init="interface", program="hard"),
    "init+parallel": Variant(init="interface", parallel=True),
    "init+parallel+hard program": Variant(init="interface", program="hard", parallel=True),
    "bootstrap": Variant(bootstrap=True),
    "init+bootstrap": Variant(init="interface", bootstrap=True),
    "init+bootstrap+hard program": Variant(init="interface", program="hard", bootstrap=True),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes and optimisation of one run (the command line's defaults)."""

    n: int = N
    programs: tuple[str, ...] = PROGRAMS
    depths: tuple[int, ...] = (1, 2, 3)  # the bootstrap tables are computed once for all of them
    epochs: int = 10
    table_epochs: int = 6  # bootstrap: epochs with the lookup-table tool before the swap (of `epochs`)
    batch_size: int = 128
    lr: float = 3e-2
    test_fraction: float = 0.2
    split_seed: int = 0  # the held-out (a, b) pairs are the same for every model seed


# ------------------------------------------------------------------------------------------------- data
def derangement(size: int, seed: int) -> list[int]:
    """A seeded permutation of range(size) that moves every slot (the routing is never the identity)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(size, generator=generator).tolist()
        if all(slot != i for i, slot in enumerate(order)):
            return order


def fibonacci_answers(a: torch.Tensor, b: torch.Tensor, depth: int, n: int) -> torch.Tensor:
    """b after `depth` steps of (a, b) -> (b, a + b mod n): fib.asm's r0 = F(depth + 1)."""
    for _ in range(depth):
        a, b = b, (a + b) % n
    return b


def fibonacci_data(n: int, depth: int, order: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair (a, b) in [0, n)²: slots `(n², 3)` holding (a, b, depth) permuted by `order`, and answers."""
    a, b = torch.cartesian_prod(torch.arange(n), torch.arange(n)).T
    numbers = torch.stack([a, b, torch.full_like(a, depth)], 1)
    return numbers[:, order], fibonacci_answers(a, b, depth, n)


# ----------------------------------------------------------------------------------------------- tools
def library_for(variant: Variant, programs: Sequence[str], n: int) -> CompiledLibrary:
    """The library the network selects from (with `fib_parallel` in place of `fib` for `parallel`)."""
    if variant.parallel:
        programs = tuple("fib_parallel" if name == "fib" else name for name in programs)
    return build_library(programs, n, SOURCES)


def fib_steps(variant: Variant, depth: int) -> int:
    """Steps the machine runs: exactly what the selected fib needs at this depth."""
    return depth + 2 if variant.parallel else 8 * depth


_TABLES: dict[tuple, dict[int, torch.Tensor]] = {}


def program_tables(
    library: CompiledLibrary, sources: Mapping[str, str], n: int, step_counts: Sequence[int]
) -> dict[int, torch.Tensor]:
    """{steps: `(programs, n, n, n)` long}: r0 after running each library program from r1 = a, r2 = b, r3 = d
    (one-hot) for `steps` steps — every program as a lookup table of its whole input→output map. Exact (the
    machine is exact on one-hot input). Each program runs alone (the same r0 as in the linked library: these
    programs call no other), one pass for all step counts; memoised per process."""
    key = (library.names, n, tuple(sorted(step_counts)))
    if key not in _TABLES:
        _TABLES[key] = _compute_tables(library.names, sources, n, key[2])
    return _TABLES[key]


@torch.no_grad()
def _compute_tables(
    names: Sequence[str], sources: Mapping[str, str], n: int, step_counts: Sequence[int], batch_size: int = 4096
) -> dict[int, torch.Tensor]:
    inputs = torch.cartesian_prod(*(torch.arange(n),) * len(INPUT_REGISTERS))  # (n³, 3)
    tables = {steps: torch.empty(len(names), len(inputs), dtype=torch.long) for steps in step_counts}
    machine = RegisterMachine(n, memory_size=n)
    for p, name in enumerate(tqdm(names, desc="program tables", leave=False)):
        alone = build_library([name], n, sources)
        for chunk in torch.arange(len(inputs)).split(batch_size):
            registers = {r: one_hot_values(inputs[chunk, i], n) for i, r in enumerate(INPUT_REGISTERS)}
            state, done = machine.initial_state(len(chunk), alone.lines, inputs=registers), 0
            for steps in step_counts:
                state, done = machine.run(alone.tensors, state, max_steps=steps - done).state, steps
                r0 = state.registers[:, 0]
                if not bool((r0.max(-1).values > 1 - 1e-4).all()):
                    raise RuntimeError(f"{name}: a one-hot run did not end in a one-hot r0")
                tables[steps][p, chunk] = r0.argmax(-1)
    return {steps: table.view(-1, n, n, n) for steps, table in tables.items()}


class TableTool(nn.Module):
    """Every library program as one lookup table (the bootstrapping tool): the multilinear extension
    r0[c] = Σ_p s_p Σ_{a,b,d: T_p(a,b,d) = c} u_a v_b w_d, which equals the machine on one-hot inputs and puts
    the whole program on a one-step gradient path. A table is contracted only over the inputs its program
    reads (the others' distributions sum to 1): fib's over (a, b, d), add's over (a, b), inc's over a."""

    def __init__(self, tables: torch.Tensor):
        super().__init__()
        self.n = tables.shape[-1]
        self.used = [_used_axes(table) for table in tables]
        for p, (table, axes) in enumerate(zip(tables, self.used)):
            index = tuple(slice(None) if axis in axes else 0 for axis in range(table.dim()))
            self.register_buffer(f"table{p}", table[index].flatten(), persistent=False)

    def forward(self, registers: Mapping[int, torch.Tensor], selection: torch.Tensor) -> torch.Tensor:
        inputs = [registers[r].T for r in INPUT_REGISTERS]  # (n, batch) each
        out = inputs[0].new_zeros(self.n, selection.shape[0])
        for p, axes in enumerate(self.used):
            joint = inputs[0].new_ones(1, selection.shape[0])
            for axis in axes:  # (n^k, batch), the first axis slowest, as the flattened table
                joint = (joint[:, None, :] * inputs[axis][None]).flatten(0, 1)
            out = out + torch.zeros_like(out).index_add(0, getattr(self, f"table{p}"), joint) * selection[:, p]
        return out.T


def _used_axes(table: torch.Tensor) -> tuple[int, ...]:
    """The axes along which the table's value changes (the inputs its program reads)."""
    return tuple(
        axis for axis in range(table.dim()) if not torch.equal(table, table.narrow(axis, 0, 1).expand_as(table))
    )


# ----------------------------------------------------------------------------------------------- model
class MinimalNetwork(nn.Module):
    """One linear layer before the computer (slots → register values and program selection) and one after
    (r0's distribution → answer logits).

    `init="interface"` starts from a prior that says nothing about the routing: every register's logits get
    +`value_scale` on each value present in any slot (the same for every slot: a register starts as a
    mixture of the inputs), and the layer after starts as `answer_scale` · identity (the answer is r0)."""

    def __init__(
        self,
        n: int,
        slots: int,
        programs: int,
        values: str = "soft",
        program: str = "soft",
        init: str = "default",
        value_scale: float = 3.0,
        answer_scale: float = 10.0,
    ):
        super().__init__()
        self.n, self.values, self.program = n, values, program
        self.before = nn.Linear(slots * n, len(INPUT_REGISTERS) * n + programs)
        self.after = nn.Linear(n, n)
        if init == "interface":
            self._interface_init(slots, value_scale, answer_scale)
        elif init != "default":
            raise ValueError(f"init must be 'default' or 'interface', got {init!r}")

    @torch.no_grad()
    def _interface_init(self, slots: int, value_scale: float, answer_scale: float) -> None:
        eye = torch.eye(self.n)
        values = len(INPUT_REGISTERS) * self.n
        self.before.weight[:values] += value_scale * eye.repeat(len(INPUT_REGISTERS), slots)
        self.after.weight.copy_(answer_scale * eye)
        self.after.bias.zero_()

    def route(self, slots: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """Slots `(batch, slots)` → {register: value distribution}, program selection."""
        hidden = self.before(one_hot_values(slots, self.n).flatten(1))
        split = len(INPUT_REGISTERS) * self.n
        values = select(hidden[:, :split].view(len(slots), -1, self.n), self.values)
        registers = {r: values[:, i] for i, r in enumerate(INPUT_REGISTERS)}
        return registers, select(hidden[:, split:], self.program)

    def forward(self, slots: torch.Tensor, tool: nn.Module) -> torch.Tensor:
        return self.after(tool(*self.route(slots)))


# ------------------------------------------------------------------------------------------------- runs
def run(variant: Variant, depth: int, seed: int, settings: Settings) -> dict:
    """Trains one network. Returns the test accuracy after every epoch (`curve`) and at the end (`test`), for
    bootstrap also with the table tool (`table`) and right after the swap (`swap`), the decoded accuracy, the
    program it selects, the slot order and the wall time."""
    timer = Timer()
    generator = setup(seed)
    order = derangement(len(INPUT_REGISTERS), seed)
    slots, answers = fibonacci_data(settings.n, depth, order)
    train, test = split_indices(len(answers), settings.test_fraction, settings.split_seed)
    library = library_for(variant, settings.programs, settings.n)
    machine = MachineTool(library, RegisterMachine(settings.n, memory_size=settings.n), fib_steps(variant, depth))
    model = MinimalNetwork(
        settings.n, slots.shape[1], len(library.names), variant.values, variant.program, variant.init
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    result = {"order": order, "curve": []}

    def test_accuracy(tool: nn.Module) -> float:
        return accuracy(lambda i: model(slots[test[i]], tool), answers[test], 256)

    def train_with(tool: nn.Module, epochs: int, label: str) -> None:
        steps = epochs * -(-len(train) // settings.batch_size)
        with tqdm(total=steps, desc=f"{label} d={depth} seed={seed}", leave=False) as progress:
            for _ in range(epochs):
                train_epoch(
                    lambda i: model(slots[train[i]], tool),
                    answers[train],
                    optimizer,
                    settings.batch_size,
                    generator,
                    lambda: progress.update(1),
                )
                result["curve"].append(test_accuracy(tool))

    epochs = settings.epochs
    if variant.bootstrap:
        steps = [fib_steps(variant, d) for d in settings.depths]
        table = TableTool(program_tables(library, SOURCES, settings.n, steps)[fib_steps(variant, depth)])
        train_with(table, settings.table_epochs, "table")
        result["table"] = test_accuracy(table)
        result["swap"] = test_accuracy(machine)
        result["swap_decoded"] = decoded_accuracy(model, slots[test], answers[test], machine)
        epochs -= settings.table_epochs
    train_with(machine, epochs, "machine")
    result["test"] = test_accuracy(machine)
    result["decoded"] = decoded_accuracy(model, slots[test], answers[test], machine)
    result["program"] = selected_program(model, slots[test], library)
    result["seconds"], result["cpu_seconds"] = timer.seconds, timer.cpu_seconds
    return result


@torch.no_grad()
def decoded_accuracy(model: MinimalNetwork, slots: torch.Tensor, answers: torch.Tensor, tool: nn.Module) -> float:
    """Accuracy when the tool runs the network's most likely inputs and program (one-hot: exact execution),
    i.e. how often the routing itself is right, read out by the layer after."""
    modes = model.values, model.program
    model.values = model.program = "hard"
    try:
        return accuracy(lambda i: model(slots[i], tool), answers, 256)
    finally:
        model.values, model.program = modes


@torch.no_grad()
def selected_program(model: MinimalNetwork, slots: torch.Tensor, library: CompiledLibrary) -> str:
    """The program most often selected, with its share of the examples."""
    chosen = model.route(slots)[1].argmax(-1)
    top = int(chosen.mode().values)
    return f"{library.names[top]} {100.0 * float((chosen == top).float().mean()):.0f}%"


# --------------------------------------------------------------------------------------------- command
QUICK = Settings(n=16, programs=("add", "sub", "fib"), depths=(1,), epochs=2, table_epochs=1)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--depths", type=int, nargs="+", default=list(Settings.depths))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=Settings.epochs)
    parser.add_argument("--table-epochs", type=int, default=Settings.table_epochs)
    parser.add_argument("--json", type=Path, default=None, help="write every run's result here")
    parser.add_argument("--plot", type=Path, default=None, help="write the test-accuracy curves here (PNG)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: n = 16, library add/sub/fib, depth 1, one seed, 2 epochs"
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """The run settings: the defaults (or the quick ones) with the command line's depths and epochs."""
    if args.quick:
        args.seeds, args.depths = args.seeds[:1], list(QUICK.depths)
        return QUICK
    return Settings(depths=tuple(args.depths), epochs=args.epochs, table_epochs=args.table_epochs)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    settings = settings_from(args)
    timer = Timer()
    results = {}
    for name in args.variants:
        for depth in args.depths:
            for seed in args.seeds:
                results[f"{name}/{depth}/{seed}"] = result = run(VARIANTS[name], depth, seed, settings)
                print(f"{name} depth={depth} seed={seed}: {json.dumps(result)}", flush=True)
    print(report(results, args, settings, timer))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.plot:
        plot_curves(results, args, settings, args.plot)
    return results


def report(results: dict, args: argparse.Namespace, settings: Settings, timer: Timer) -> str:
    """Markdown: test accuracy per variant and depth (mean ± std (min–max) over seeds) under the paper's
    Table 1, then the details of every variant and depth."""

    def runs(name: str, depth: int) -> list[dict]:
        return [results[f"{name}/{depth}/{seed}"] for seed in args.seeds]

    def cell(name: str, depth: int, key: str) -> str:
        values = [r[key] for r in runs(name, depth) if key in r]
        return mean_spread(values) if values else ""

    header = ["variant", *(f"depth {d}" for d in args.depths)]
    rows = [["paper, Table 1", *(f"{PAPER_TABLE_1.get(d, float('nan')):.2f}" for d in args.depths)]]
    rows += [[name, *(cell(name, d, "test") for d in args.depths)] for name in args.variants]
    details = [
        [
            name,
            d,
            cell(name, d, "table"),
            cell(name, d, "swap"),
            cell(name, d, "swap_decoded"),
            cell(name, d, "test"),
            cell(name, d, "decoded"),
            ", ".join(r["program"] for r in runs(name, d)),
            f"{sum(r['seconds'] for r in runs(name, d)):.0f} ({sum(r['cpu_seconds'] for r in runs(name, d)):.0f})",
        ]
        for name in args.variants
        for d in args.depths
    ]
    detail_header = [
        "variant",
        "depth",
        "table tool",
        "right after swap",
        "decoded after swap",
        "test",
        "decoded",
        "selected program (per seed)",
        "wall (CPU) time, all seeds (s)",
    ]
    sizes = (
        f"n = {settings.n}, library {', '.join(settings.programs)}; {settings.n**2} (a, b) pairs, "
        f"{settings.test_fraction:.0%} held out; {settings.epochs} epochs (bootstrap: {settings.table_epochs} "
        f"with the table tool), batch {settings.batch_size}, Adam lr {settings.lr}; seeds {args.seeds}; "
        f"total wall time {timer.seconds:.0f} s (CPU {timer.cpu_seconds:.0f} s)"
    )
    return "\n\n".join([markdown_table(header, rows), markdown_table(detail_header, details), sizes])


def plot_curves(results: dict, args: argparse.Namespace, settings: Settings, path: Path) -> None:
    """Test accuracy after every epoch, mean over seeds: one panel per depth, one line per variant."""
    title = (
        "Minimal network on fib, mean over seeds (grey: the paper's Table 1; dotted: the swap of the "
        "bootstrap variants; dashed: soft program selection)"
    )
    size = (4.5 * len(args.depths) + 2.0, 3.8)
    with figure(path, columns=len(args.depths), size=size, title=title) as axes:
        for ax, depth in zip(axes[0], args.depths):
            for i, name in enumerate(args.variants):
                curves = torch.tensor([results[f"{name}/{depth}/{seed}"]["curve"] for seed in args.seeds])
                style = "-" if VARIANTS[name].program == "hard" else "--"
                ax.plot(
                    range(1, curves.shape[1] + 1), curves.mean(0), style, marker=".", color=f"C{i % 10}", label=name
                )
            if any(VARIANTS[name].bootstrap for name in args.variants):
                ax.axvline(settings.table_epochs + 0.5, color="gray", linestyle=":", linewidth=1)
            ax.axhline(PAPER_TABLE_1.get(depth, float("nan")), color="black", linewidth=2, alpha=0.3)
            ax.set(title=f"depth {depth}", xlabel="epoch", ylabel="test accuracy (%)", ylim=(0, 101))
        axes[0, -1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)


if __name__ == "__main__":
    main()
