"""Experiment 2 (paper §4.1, "Bootstrapping From Learnability to Generalization", Figure 3): the same minimal
network learns one-step arithmetic through the machine with a table ALU, with a circuit ALU, and with a table
that is swapped for the circuit after `--swap-epochs` (the bootstrapping trick); then the trained networks are
run with the circuit at a larger n, beyond the table's range.

Task: an op (add, sub, mul, max; one-hot over the ops) and three numbers x, y, z in slots permuted by a fixed,
seed-drawn derangement; the answer is op(x, y) mod n, and z is a distractor. The library is the 14 calculator
programs (`add r1 r2 r0 | ret`, ...), so the machine runs one step of the selected program.

The network's parameters do not depend on n, so one trained network runs at any n:
    layer before   program selection = softmax(W · onehot(op))            (W: ops × programs)
                   register r = Σ_slot softmax(A_r)[slot] · onehot(value in slot)  (A: registers × slots)
                   i.e. a linear layer over the concatenated one-hot slots whose weights are tied across values:
                   a learned soft permutation of slots onto r1, r2
    layer after    answer logits = w · log(max(r0, 0) + 1e-9)               (w: a scalar; FFT rounding can
                   leave -1e-8 in r0)

Generalisation beyond the table's range, stated honestly: training uses n = 32 and values < 32. A table ALU
built for n = 32 has no entries for larger values, so on the large-range test (values < 256, answers mod 256)
it can only be right where all the numbers and the answer are < 32. The circuit ALU is the same gates at any
width, so the trained network runs unchanged with CircuitALU(256). For reference we also run it with a
table ALU rebuilt at n = 256 (a 64× larger table per op): that the routing transfers is a property of the
value-tied layers; what the circuit adds is that it needs no table at all (`table_bytes() == 0`).

    python -m experiments.circuits_vs_tables --seeds 0 1 2 --plot docs/figures/circuits_vs_tables.png
    python -m experiments.circuits_vs_tables --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from dcomp_alu import TableALU
from dcomp_circuits import CircuitALU
from dcomp_isa import ALU_OPS, alu_index_table
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
from experiments.minimal_network import MinimalNetwork, derangement
from library.plotting import figure

TASK_OPS = ("add", "sub", "mul", "max")
SLOTS = 3  # x, y and a distractor z
INPUT_REGISTERS = (1, 2)
ARMS = ("table", "circuit", "table→circuit")
NETWORKS = ("dense", "tied")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes and optimisation (the command line's defaults)."""

    n: int = 32  # training width and value range
    large_n: int = 256  # the generalisation test's width and value range
    large_examples: int = 2000
    epochs: int = 12
    swap_epochs: int = 3  # table→circuit: epochs with the table before the swap (of `epochs`)
    eval_every: int = 5  # steps between test evaluations of the learning curve
    batch_size: int = 128
    lr: float = 3e-2
    test_fraction: float = 0.2
    split_seed: int = 0


@dataclasses.dataclass(frozen=True)
class Data:
    """Examples: op index `(count,)`, slot values `(count, SLOTS)`, answers `(count,)`."""

    ops: torch.Tensor
    slots: torch.Tensor
    answers: torch.Tensor

    def __getitem__(self, index: torch.Tensor) -> Data:
        return Data(self.ops[index], self.slots[index], self.answers[index])

    def __len__(self) -> int:
        return len(self.answers)


# ------------------------------------------------------------------------------------------------- data
def answers_for(ops: torch.Tensor, x: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    """op(x, y) mod n, by the instruction set's own tables."""
    tables = torch.stack([alu_index_table(op, n) for op in TASK_OPS])
    return tables[ops, x, y]


def make_data(
    ops: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, order: Sequence[int], n: int
) -> Data:
    """Slots hold (x, y, z) permuted by `order`; the answer is op(x, y) mod n."""
    return Data(ops, torch.stack([x, y, z], 1)[:, order], answers_for(ops, x, y, n))


def training_data(settings: Settings, order: Sequence[int]) -> tuple[Data, Data]:
    """Every op with every (x, y) in [0, n)² and a random distractor; held-out (x, y) pairs form the test set
    (the same pairs for every op)."""
    n, generator = settings.n, torch.Generator().manual_seed(settings.split_seed)
    x, y = torch.cartesian_prod(torch.arange(n), torch.arange(n)).T
    train_pairs, test_pairs = split_indices(n * n, settings.test_fraction, settings.split_seed)

    def build(pairs: torch.Tensor) -> Data:
        ops = torch.arange(len(TASK_OPS)).repeat_interleave(len(pairs))
        px, py = x[pairs].repeat(len(TASK_OPS)), y[pairs].repeat(len(TASK_OPS))
        return make_data(ops, px, py, torch.randint(n, (len(ops),), generator=generator), order, n)

    return build(train_pairs), build(test_pairs)


def large_range_data(settings: Settings, order: Sequence[int]) -> Data:
    """Random ops and numbers in [0, large_n); answers mod large_n."""
    generator = torch.Generator().manual_seed(settings.split_seed + 1)
    count, n = settings.large_examples, settings.large_n
    ops = torch.randint(len(TASK_OPS), (count,), generator=generator)
    x, y, z = torch.randint(n, (3, count), generator=generator)
    return make_data(ops, x, y, z, order, n)


# ------------------------------------------------------------------------------------------------ model
class PermutationNetwork(nn.Module):
    """The minimal network with value-tied layers (no parameter depends on n): op → program selection, a
    soft permutation of slots onto the input registers, and a scalar log-linear readout of r0."""

    def __init__(self, programs: int, selection: str = "soft"):
        super().__init__()
        self.selection = selection
        self.program = nn.Linear(len(TASK_OPS), programs)
        self.routing = nn.Parameter(0.01 * torch.randn(len(INPUT_REGISTERS), SLOTS))
        self.readout = nn.Parameter(torch.ones(()))

    def forward(self, data: Data, tool: nn.Module) -> torch.Tensor:
        n = tool.machine.n
        selection = select(self.program(one_hot_values(data.ops, len(TASK_OPS))), self.selection)
        routing = select(self.routing, self.selection)  # (registers, slots)
        values = torch.einsum("rs,bsn->brn", routing, one_hot_values(data.slots, n))
        registers = {r: values[:, i] for i, r in enumerate(INPUT_REGISTERS)}
        return self.readout * torch.log(tool(registers, selection).clamp_min(0) + 1e-9)


class DenseNetwork(nn.Module):
    """Experiment 1's minimal network (a full linear layer over the concatenated one-hot slots, with the
    interface initialisation, and a linear layer after), reading the op as one more slot (value = op index).
    Its weights are n × n blocks, so it runs only at the n it was trained for."""

    def __init__(self, n: int, programs: int):
        super().__init__()
        self.network = MinimalNetwork(n, SLOTS + 1, programs, init="interface")

    def forward(self, data: Data, tool: nn.Module) -> torch.Tensor:
        return self.network(torch.cat([data.ops[:, None], data.slots], 1), tool)


def make_network(kind: str, n: int) -> nn.Module:
    """`dense` (n-specific, experiment 1's) or `tied` (n-independent) minimal network over the calculator."""
    return DenseNetwork(n, len(ALU_OPS)) if kind == "dense" else PermutationNetwork(len(ALU_OPS))


def calculator(n: int, alu: str) -> MachineTool:
    """The 14 calculator programs on a machine of width n with a table or circuit ALU; one step."""
    library = build_library(ALU_OPS, n)
    unit = TableALU(n) if alu == "table" else CircuitALU(n)
    return MachineTool(library, RegisterMachine(n, memory_size=min(n, 32), alu=unit), max_steps=1)


# ------------------------------------------------------------------------------------------------- runs
def train_arm(network: str, arm: str, seed: int, settings: Settings) -> dict:
    """Trains one network with the table, the circuit or table→circuit; returns its learning curve
    (test accuracy every `eval_every` steps), accuracies around the swap, and (tied network) the
    large-range results."""
    timer = Timer()
    generator = setup(seed)
    order = derangement(SLOTS, seed)
    train, test = training_data(settings, order)
    tools = {alu: calculator(settings.n, alu) for alu in ("table", "circuit")}
    model = make_network(network, settings.n)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    result = {"order": order, "curve": []}
    steps_per_epoch = -(-len(train) // settings.batch_size)

    def test_accuracy(tool: MachineTool, data: Data = test) -> float:
        return accuracy(lambda i: model(data[i], tool), data.answers, 512)

    def train_with(tool: MachineTool, epochs: int, progress: tqdm) -> None:
        def record() -> None:
            result["curve"].append((progress.n / steps_per_epoch, test_accuracy(tool)))

        def on_step() -> None:
            progress.update(1)
            if progress.n % settings.eval_every == 0 or progress.n % steps_per_epoch == 0:
                record()

        for _ in range(epochs):
            train_epoch(
                lambda i: model(train[i], tool), train.answers, optimizer, settings.batch_size, generator, on_step
            )

    label = f"{network} {arm} seed={seed}"
    with tqdm(total=settings.epochs * steps_per_epoch, desc=label, leave=False) as progress:
        result["curve"].append((0.0, test_accuracy(tools[arm.split("→")[0]])))
        if arm == "table→circuit":
            train_with(tools["table"], settings.swap_epochs, progress)
            result["before_swap"] = test_accuracy(tools["table"])
            result["after_swap"] = test_accuracy(tools["circuit"])
            train_with(tools["circuit"], settings.epochs - settings.swap_epochs, progress)
        else:
            train_with(tools[arm], settings.epochs, progress)
    final = "circuit" if arm != "table" else "table"
    result["test"] = test_accuracy(tools[final])
    result["seconds"], result["cpu_seconds"] = timer.seconds, timer.cpu_seconds
    if network == "tied":
        result.update(large_range(model, settings, order))
        result["routing"] = model.routing.softmax(-1).tolist()
    return result


@torch.no_grad()
def large_range(model: PermutationNetwork, settings: Settings, order: Sequence[int]) -> dict:
    """The trained network on numbers < large_n: with the circuit and a rebuilt table at large_n, and with
    the n = 32 table, which can be right only where every number and the answer fit below n (counted over
    the whole test set)."""
    data = large_range_data(settings, order)

    def score(examples: Data, tool: MachineTool) -> float:
        return accuracy(lambda i: model(examples[i], tool), examples.answers, 512) if len(examples) else 0.0

    result = {f"large_{alu}": score(data, calculator(settings.large_n, alu)) for alu in ("circuit", "table")}
    in_range = (data.slots < settings.n).all(1) & (data.answers < settings.n)
    small = data[in_range.nonzero().squeeze(1)]
    result["large_small_table"] = score(small, calculator(settings.n, "table")) * len(small) / len(data)
    result["large_in_range"] = 100.0 * len(small) / len(data)
    return result


# --------------------------------------------------------------------------------------------- command
QUICK = Settings(large_examples=200, epochs=2, swap_epochs=1, eval_every=10)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--epochs", type=int, default=Settings.epochs)
    parser.add_argument("--swap-epochs", type=int, default=Settings.swap_epochs)
    parser.add_argument("--json", type=Path, default=None, help="write every run's result here")
    parser.add_argument("--plot", type=Path, default=None, help="write the learning curves here (PNG)")
    parser.add_argument("--quick", action="store_true", help="smoke test: one seed, 2 epochs, 200 large examples")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    settings = Settings(epochs=args.epochs, swap_epochs=args.swap_epochs)
    if args.quick:
        args.seeds, settings = args.seeds[:1], QUICK
    timer = Timer()
    results = {}
    for network in args.networks:
        for arm in ARMS:
            for seed in args.seeds:
                results[f"{network}/{arm}/{seed}"] = result = train_arm(network, arm, seed, settings)
                print(f"{network} {arm} seed={seed}: {json.dumps(result)}", flush=True)
    print(report(results, args.networks, args.seeds, settings, timer))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.plot:
        plot_curves(results, args.networks, args.seeds, settings, args.plot)
    return results


def first_epoch_reaching(curve: Sequence[tuple[float, float]], level: float) -> str:
    """The first point of the learning curve (in epochs) with test accuracy ≥ level, or 'never'."""
    return next((f"{epoch:.1f}" for epoch, value in curve if value >= level), "never")


def report(results: dict, networks: Sequence[str], seeds: Sequence[int], settings: Settings, timer: Timer) -> str:
    """Markdown: per network and arm, the test accuracy after the first epoch and at the end, when it reached
    99 %, the swap; then the tied network's large-range results."""

    def runs(network: str, arm: str) -> list[dict]:
        return [results[f"{network}/{arm}/{seed}"] for seed in seeds]

    def cell(network: str, arm: str, key: str | Callable[[dict], float]) -> str:
        values = [key(r) if callable(key) else r.get(key) for r in runs(network, arm)]
        return mean_spread(values) if None not in values else ""

    def after_epoch(epoch: float) -> Callable[[dict], float]:
        return lambda r: next(value for point, value in r["curve"] if abs(point - epoch) < 1e-9)

    header = [
        "network",
        "tool during training",
        "test after epoch 1",
        f"test after {settings.epochs}",
        "epochs to ≥ 99 % (per seed)",
        "before swap",
        "right after swap",
        "wall time, all seeds (s)",
    ]
    rows = [
        [
            network,
            arm,
            cell(network, arm, after_epoch(1.0)),
            cell(network, arm, "test"),
            ", ".join(first_epoch_reaching(r["curve"], 99.0) for r in runs(network, arm)),
            cell(network, arm, "before_swap"),
            cell(network, arm, "after_swap"),
            f"{sum(r['seconds'] for r in runs(network, arm)):.0f}",
        ]
        for network in networks
        for arm in ARMS
    ]
    tables = [markdown_table(header, rows)]
    if "tied" in networks:
        in_range = mean_spread([r["large_in_range"] for r in runs("tied", ARMS[0])])
        large_header = [
            "tied network trained with",
            f"circuit at n = {settings.large_n}",
            f"table rebuilt at n = {settings.large_n}",
            f"the n = {settings.n} table (encodes {in_range} % of the examples)",
        ]
        tables.append(
            markdown_table(
                large_header,
                [
                    [
                        arm,
                        cell("tied", arm, "large_circuit"),
                        cell("tied", arm, "large_table"),
                        cell("tied", arm, "large_small_table"),
                    ]
                    for arm in ARMS
                ],
            )
        )
    sizes = (
        f"ops {', '.join(TASK_OPS)}; train n = {settings.n}: {len(TASK_OPS)} × {settings.n}² examples, "
        f"{settings.test_fraction:.0%} of the (x, y) pairs held out; large-range test: "
        f"{settings.large_examples} random examples with numbers < {settings.large_n}; {settings.epochs} "
        f"epochs (table→circuit: swap after {settings.swap_epochs}), batch {settings.batch_size}, Adam lr "
        f"{settings.lr}; seeds {list(seeds)}; total wall time {timer.seconds:.0f} s "
        f"(CPU {timer.cpu_seconds:.0f} s)"
    )
    return "\n\n".join([*tables, sizes])


def plot_curves(results: dict, networks: Sequence[str], seeds: Sequence[int], settings: Settings, path: Path) -> None:
    """Test accuracy against epochs, one panel per network, one colour per arm: mean over seeds (thick) and
    single seeds (thin)."""
    with figure(path, columns=len(networks), size=(6.0 * len(networks), 4.0)) as axes:
        for ax, network in zip(axes[0], networks):
            for arm, color in zip(ARMS, ("tab:blue", "tab:red", "tab:green")):
                curves = torch.tensor([results[f"{network}/{arm}/{s}"]["curve"] for s in seeds])  # (seeds, points, 2)
                for curve in curves:
                    ax.plot(curve[:, 0], curve[:, 1], color=color, linewidth=0.6, alpha=0.35)
                ax.plot(curves[0, :, 0], curves[:, :, 1].mean(0), color=color, linewidth=2, label=arm)
            ax.axvline(settings.swap_epochs, color="gray", linestyle=":", linewidth=1)
            ax.set(
                xlabel="epoch",
                ylabel=f"test accuracy (%), n = {settings.n}",
                ylim=(0, 101),
                title=f"{network} network (dotted: the swap)",
            )
            ax.legend(loc="lower right")


if __name__ == "__main__":
    main()
