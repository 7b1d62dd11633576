"""experiments/small_transformers.py and the arms × seeds runner it shares (experiments/runner.py): the runner
launches train.py only for runs without a summary, resumes a run with a complete checkpoint, reads every result
from run_summary.json and stops on a failed run; the report aggregates seeds (mean ± std (min–max)) under the
paper's row; end to end on a tiny configuration, the report's numbers are the runs' summaries."""

import json
import subprocess

import pytest

from experiments import runner
from experiments import small_transformers as st


def summary(accuracy: float, seconds: float = 10.0, split_groups=("1", "2", "3")) -> dict:
    metrics = {"exact_match": accuracy, **{f"exact_match_{group}": accuracy for group in split_groups}}
    return {
        "metrics": {"test": metrics, "test_pairs": metrics},
        "learning_curve": [{"step": 1, "seconds": 1.0, "validation_exact_match": accuracy}],
        "wall_seconds": seconds,
    }


@pytest.fixture
def fake_train(monkeypatch):
    """train.py replaced by a recorder that writes the summary a run would (accuracy 0.25)."""
    commands: list[list[str]] = []

    def run(command, cwd, env, stdout, stderr):
        commands.append(command)
        folder = command[command.index("--output_dir") + 1]
        (runner.Path(folder) / "run_summary.json").write_text(json.dumps(summary(0.25)))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(runner.subprocess, "run", run)
    return commands


def test_the_runner_skips_finished_runs_resumes_checkpointed_ones_and_reads_summaries(tmp_path, fake_train):
    arms = {"computer": [], "no computer": ["--no_computer"]}
    finished = runner.run_folder(tmp_path, "computer", 0)
    finished.mkdir(parents=True)
    (finished / "run_summary.json").write_text(json.dumps(summary(0.75)))
    checkpointed = runner.run_folder(tmp_path, "computer", 1) / "checkpoint-4"
    checkpointed.mkdir(parents=True)
    (checkpointed / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    partial = runner.run_folder(tmp_path, "no computer", 1) / "checkpoint-4"  # killed mid-save: start afresh
    partial.mkdir(parents=True)

    results = runner.run_arms(arms, [0, 1], ["--task", "fibonacci"], tmp_path)
    assert results["computer", 0]["metrics"]["test"]["exact_match"] == 0.75  # read, not run again
    assert all(results[key]["metrics"]["test"]["exact_match"] == 0.25 for key in results if key != ("computer", 0))
    launched = {(command[command.index("--seed") + 1], command[-1]) for command in fake_train}
    assert launched == {("0", "--no_computer"), ("1", "--resume"), ("1", "--no_computer")}
    resumed = next(command for command in fake_train if command[-1] == "--resume")
    assert resumed[-5:-1] == ["--output_dir", str(checkpointed.parent), "--threads", "1"]
    assert all(command[2:4] == ["--task", "fibonacci"] for command in fake_train)


def test_a_failed_run_stops_the_experiment_and_names_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(runner.subprocess, "run", lambda command, **kwargs: subprocess.CompletedProcess(command, 1))
    with pytest.raises(RuntimeError, match="train.py failed \\(1\\).*computer-seed0/train.log"):
        runner.run_arms({"computer": []}, [0], [], tmp_path)


def test_the_report_aggregates_seeds_under_the_papers_row(tmp_path):
    args = st.parse_args(["--task", "fibonacci", "--seeds", "0", "1", "--plot", str(tmp_path / "curves.png")])
    results = {
        ("computer", 0): summary(0.5, 100.0),
        ("computer", 1): summary(0.7, 120.0),
        ("no computer", 0): summary(0.1, 90.0),
        ("no computer", 1): summary(0.1, 95.0),
    }
    text = st.report(results, args, 5.0)
    assert "| paper | 49.19 | 47.87 | 3.07 |" in text.replace(" |  |", " |")
    assert "| arm | all | depth 1 | depth 2 | depth 3 |" in text
    assert "| computer | 60.0 ± 14.1 (50.0–70.0) | 60.0 ± 14.1 (50.0–70.0) |" in text
    assert "| no computer | 10.0 ± 0.0 (10.0–10.0) |" in text
    assert "| computer | 100 | 120 |" in text and "| no computer | 90 | 95 |" in text  # wall times
    assert "Command: `python -m experiments.small_transformers --task fibonacci --seeds 0 1" in text
    st.plot(results, args)
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_group_labels():
    assert st.group_label("fibonacci", "exact_match_3") == "depth 3"
    assert st.group_label("sort", "exact_match_5") == "length 5"
    assert st.group_label("arithmetic", "exact_match_mul") == "mul"
    assert st.group_label("arithmetic", "exact_match") == "all"


@pytest.mark.slow
def test_quick_run_end_to_end_reports_the_runs_summaries(tmp_path):
    argv = ["--quick", "--task", "fibonacci", "--arms", "computer", "--runs", str(tmp_path / "runs")]
    argv += ["--results", str(tmp_path / "results.md"), "--plot", str(tmp_path / "curves.png")]
    results = st.main(argv)
    folder = runner.run_folder(tmp_path / "runs" / "fibonacci", "computer", 0)
    written = json.loads((folder / "run_summary.json").read_text())
    assert results["computer", 0] == written and written["steps"] == 2 and len(written["learning_curve"]) == 2
    test = written["metrics"]["test"]["exact_match"]
    assert f"| computer | {100 * test:.1f} |" in (tmp_path / "results.md").read_text()
    assert set(written["metrics"]) == {"test", "test_pairs", "test_long"}
