"""experiments/small_transformers.py on a tiny configuration: both arms train, the report holds every split and
arm, the paper's row, the plot is written, and a second invocation reuses the finished runs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import small_transformers


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_transformers")
    argv = [
        "--quick",
        "--task",
        "fibonacci",
        "--runs",
        str(root / "runs"),
        "--results",
        str(root / "results.md"),
        "--plot",
        str(root / "curves.png"),
    ]
    return root, argv, small_transformers.main(argv)


def test_both_arms_train_and_the_report_has_every_split(quick):
    root, _, results = quick
    assert set(results) == {("computer", 0), ("no computer", 0)}
    text = (root / "results.md").read_text()
    for split in ("test", "test_pairs", "test_long"):
        assert f"**{split}**" in text
    assert "| paper | 49.19 | 47.87 | 3.07 |" in text.replace(" |  |", " |")  # Table 2 above the test rows
    assert "| arm | all | depth 1 | depth 2 | depth 3 |" in text
    assert "| arm | all | depth 4 | depth 5 | depth 6 |" in text  # test_long: deeper recursion
    assert text.count("| computer |") == 4 and text.count("| no computer |") == 4  # 3 splits and the wall times
    assert "Command: `python experiments/small_transformers.py --quick --task fibonacci" in text
    assert (root / "curves.png").stat().st_size > 0
    for run in results.values():
        assert run["curve"] and 0 <= run["test"]["test"]["exact_match"] <= 1


def test_finished_runs_are_not_run_again(quick):
    root, argv, results = quick
    logs = sorted((root / "runs").glob("*/train.log"))
    assert len(logs) == 2
    before = [log.stat().st_mtime_ns for log in logs]
    again = small_transformers.main(argv)
    assert [log.stat().st_mtime_ns for log in logs] == before
    assert again[("computer", 0)]["test"] == results[("computer", 0)]["test"]


def test_group_labels():
    assert small_transformers.group_label("fibonacci", "exact_match_3") == "depth 3"
    assert small_transformers.group_label("sort", "exact_match_5") == "length 5"
    assert small_transformers.group_label("arithmetic", "exact_match_mul") == "mul"
    assert small_transformers.group_label("arithmetic", "exact_match") == "all"
