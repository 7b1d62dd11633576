"""experiments.calibrate_votes: what it refuses before it loads anything (the calibration itself: test_training.py,
and on a trained folder, test_train.py)."""

import json

import pytest

from experiments.calibrate_votes import calibrate_votes


def test_a_list_run_a_folder_that_is_no_run_and_an_existing_output_are_refused(tmp_path):
    run = tmp_path / "sort_run"
    run.mkdir()
    (run / "run_settings.json").write_text(json.dumps({"data": {"task": "sort"}}))
    with pytest.raises(ValueError, match="a sort run answers with whole lists"):
        calibrate_votes(run, tmp_path / "calibrated", prompts=8)
    with pytest.raises(ValueError, match="no run_settings.json, so not a train.py output folder"):
        calibrate_votes(tmp_path / "missing", tmp_path / "other", prompts=8)
    with pytest.raises(FileExistsError, match="already exists"):
        calibrate_votes(run, run, prompts=8)
    assert not (tmp_path / "calibrated").exists()
