"""The one arms × seeds driver of the experiments that train with train.py (`small_transformers`,
`pretrained_base`): one train.py process per arm and seed, each in its own output folder, read back from the
`run_summary.json` it writes (never from its printed output). A folder that already holds a summary is not run
again, and one with a complete checkpoint is resumed, so a killed experiment continues where it stopped; delete a
folder to run it again."""

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from experiments.common import mean_spread
from library.training.outputs import read_run_summary
from library.training.trainer import last_complete_checkpoint

REPO = Path(__file__).resolve().parents[1]


def run_folder(root: Path, arm: str, seed: int) -> Path:
    return root / f"{arm.replace(' ', '-')}-seed{seed}"


def train_argv(argv: Sequence[str], arm_argv: Sequence[str], seed: int, folder: Path, threads: int) -> list[str]:
    """train.py's command line for one run: the experiment's options, then the seed, the folder and the threads,
    then what sets the arm apart (so two arms differ only by that)."""
    return [*argv, "--seed", str(seed), "--output_dir", str(folder), "--threads", str(threads), *arm_argv]


def run_train(argv: Sequence[str], folder: Path, threads: int) -> dict:
    """One train.py run into `folder` (skipped when it has a summary, resumed when it has a complete checkpoint),
    its output in `folder/train.log`; returns its run_summary.json."""
    if (folder / "run_summary.json").is_file():
        return read_run_summary(folder)
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(REPO / "train.py"), *argv]
    if last_complete_checkpoint(folder) is not None:
        command.append("--resume")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(threads))
    with open(folder / "train.log", "w") as log:
        finished = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if finished.returncode != 0:
        raise RuntimeError(f"train.py failed ({finished.returncode}): {' '.join(command)}; see {folder / 'train.log'}")
    return read_run_summary(folder)


def run_arms(
    arms: Mapping[str, Sequence[str]],
    seeds: Sequence[int],
    argv: Sequence[str],
    root: Path,
    workers: int = 1,
    threads: int = 1,
    on_finished: Callable[[Path], None] | None = None,
) -> dict[tuple[str, int], dict]:
    """Every arm (name -> the train.py options that set it apart) with every seed, `workers` runs at once, into
    `run_folder(root, arm, seed)`; `on_finished(folder)` after each. Returns {(arm, seed): run summary}."""
    jobs = [(arm, seed) for seed in seeds for arm in arms]

    def job(arm: str, seed: int) -> dict:
        folder = run_folder(root, arm, seed)
        summary = run_train(train_argv(argv, arms[arm], seed, folder, threads), folder, threads)
        tests = ", ".join(f"{split} {100 * values['exact_match']:.1f}%" for split, values in summary["metrics"].items())
        print(f"{arm} / seed {seed}: {tests}; {summary['wall_seconds']:.0f} s", flush=True)
        if on_finished is not None:
            on_finished(folder)
        return summary

    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(jobs, pool.map(lambda pair: job(*pair), jobs)))


def seed_values(results: Mapping[tuple[str, int], dict], arm: str, seeds: Sequence[int], split: str, key: str):
    """The metric `key` of `split` (in %) of every seed of `arm` that reports it."""
    runs = (results[arm, seed]["metrics"].get(split, {}) for seed in seeds)
    return [100 * metrics[key] for metrics in runs if key in metrics]


def seed_cell(results: Mapping[tuple[str, int], dict], arm: str, seeds: Sequence[int], split: str, key: str) -> str:
    """A report's cell: `mean_spread` of `seed_values`, empty where no seed reports the metric."""
    values = seed_values(results, arm, seeds, split, key)
    return mean_spread(values) if values else ""
