"""Experiments 3 and 4 (paper §4.2, Table 2, and what its reviewers asked for): the paper's small LLaMA-3-shaped
models (2 decoder layers, hidden 128, the real 128K LLaMA-3 tokenizer) trained with `train.py`, with the
computer and without it (the baseline), over several seeds; the tasks' `test_long` splits measure length
generalisation (deeper recursion, longer lists than in training).

Each run is one `train.py` process (`--threads 1`; `--workers` of them side by side) writing its folder under
`--runs` (`experiments.runner`: a finished run is not run again, a killed one resumes). The report puts test exact
match (mean ± std (min–max) over seeds, from each run's run_summary.json) next to the paper's.

    python -m experiments.small_transformers                          # arithmetic mod 128: computer vs none
    python -m experiments.small_transformers --task fibonacci         # Fibonacci depth 1-3 (+ 4-6 in test_long)
    python -m experiments.small_transformers --task sort
    python -m experiments.small_transformers --quick                  # smoke test (a minute)
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from experiments.common import markdown_table
from experiments.runner import REPO, run_arms, seed_cell
from library.plotting import curves, figure

ARMS = {"computer": [], "no computer": ["--no_computer"]}
# The paper's numbers (§4.2): the calculator after 62 epochs, Table 2 for Fibonacci, its later version's sort.
PAPER = {
    "arithmetic": {"all": 99.2},
    "fibonacci": {"depth 1": 49.19, "depth 2": 47.87, "depth 3": 3.07},
    "sort": {"all": "33–37"},
}
QUICK_ARGS = [
    "--train-size",
    "64",
    "--validation-size",
    "16",
    "--test-size",
    "16",
    "--test-long-size",
    "16",
    "--max_steps",
    "2",
    "--eval_steps",
    "1",
    "--save_steps",
    "2",
    "--per_device_train_batch_size",
    "8",
    "--hidden-size",
    "32",
    "--heads",
    "2",
    "--probe-examples",
    "32",
]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--task",
        default="arithmetic",
        choices=("arithmetic", "fibonacci", "sort", "max"),
        help="train.py --task (default: %(default)s)",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        default=list(ARMS),
        choices=list(ARMS),
        help="with and/or without the computer (default: %(default)s)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="train.py processes at once (default: %(default)s)")
    parser.add_argument(
        "--runs",
        type=Path,
        default=REPO / "runs" / "small_transformers",
        help="one folder per run under <this>/<task> (default: %(default)s)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="write the markdown report here (default: docs/results_small_transformers_<task>.md)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="validation curves, PNG (default: docs/figures/small_transformers_<task>.png)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny data and model, 2 steps, seed 0")
    parser.add_argument(
        "train_args", nargs="*", help="more train.py options, after `--` (e.g. -- --num_train_epochs 3)"
    )
    args = parser.parse_args(argv)
    args.command = shlex.join(
        ["python", "-m", "experiments.small_transformers", *(sys.argv[1:] if argv is None else argv)]
    )
    if args.quick:
        args.seeds, args.train_args = args.seeds[:1], QUICK_ARGS + args.train_args
    args.results = args.results or REPO / "docs" / f"results_small_transformers_{args.task}.md"
    args.plot = args.plot or REPO / "docs" / "figures" / f"small_transformers_{args.task}.png"
    return args


def group_label(task: str, key: str) -> str:
    """A column of the report from a metric key: "exact_match" is "all", "exact_match_3" is "depth 3" etc."""
    if key == "exact_match":
        return "all"
    group = key.removeprefix("exact_match_")
    return {"fibonacci": f"depth {group}", "sort": f"length {group}", "max": f"length {group}"}.get(task, group)


def report(results: dict[tuple[str, int], dict], args: argparse.Namespace, seconds: float) -> str:
    """Markdown: exact match per split, arm and group (mean ± std (min–max) over seeds, %), the paper's row
    above the test split's; then the wall time of every run and the command."""
    tables = []
    for split, metrics in results[args.arms[0], args.seeds[0]]["metrics"].items():
        labels = [group_label(args.task, key) for key in metrics]
        rows = (
            [["paper", *(PAPER[args.task].get(label, "") for label in labels)]]
            if (split == "test" and args.task in PAPER)
            else []
        )
        for arm in args.arms:
            rows.append([arm, *(seed_cell(results, arm, args.seeds, split, key) for key in metrics)])
        tables.append(f"**{split}** (exact match, %, seeds {args.seeds})\n\n" + markdown_table(["arm", *labels], rows))
    times = markdown_table(
        ["arm", *(f"seed {seed}: wall (s)" for seed in args.seeds)],
        [[arm, *(f"{results[arm, seed]['wall_seconds']:.0f}" for seed in args.seeds)] for arm in args.arms],
    )
    return "\n\n".join(
        [
            *tables,
            times,
            f"Command: `{args.command}`; total wall time {seconds:.0f} s, {args.workers} "
            f"runs at once; train.py options: {' '.join(args.train_args) or 'the defaults'}.",
        ]
    )


def plot(results: dict[tuple[str, int], dict], args: argparse.Namespace) -> None:
    """Validation exact match against the training step: one line per run, a colour per arm."""
    runs = {arm: [results[arm, seed]["learning_curve"] for seed in args.seeds] for arm in args.arms}
    title = f"{args.task}: with and without the computer (seeds {args.seeds})"
    with figure(args.plot, title=title) as axes:
        curves(axes[0, 0], runs, "step", "validation_exact_match", {"validation_exact_match": 100})
        axes[0, 0].set(xlabel="training step", ylabel="validation exact match (%)", ylim=(0, 101))


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.time()
    arms = {arm: ARMS[arm] for arm in args.arms}
    root = args.runs / args.task  # one folder per task: the runner reuses any finished run it finds
    results = run_arms(arms, args.seeds, ["--task", args.task, *args.train_args], root, workers=args.workers)
    text = report(results, args, time.time() - started)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(f"# Small transformers: {args.task}\n\n{text}\n\n![curves](figures/{args.plot.name})\n")
    plot(results, args)
    return results


if __name__ == "__main__":
    main()
