"""train.py end to end on tiny configurations (CPU, one subprocess each): a Hub-ready output folder with
run_summary.json that loads as remote code, predict, resuming after a kill (only from a complete checkpoint of the
same run, with its library verified), the output-folder lock, the stop on a non-finite loss, the baseline without
the computer, LoRA on a Llama checkpoint, the fitted hidden votes kept fixed, and a 2-process data-parallel run that
trains one and the same model.
The pieces of library/training are tested in-process in tests/test_training.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from model_fixtures import NOT_IMPORTABLE_PRELUDE, tiny_llama
from safetensors.torch import load_file, save_file

from experiments.calibrate_votes import calibrate_votes
from library.training.calibration import SCALES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--train-size",
    "96",
    "--validation-size",
    "16",
    "--test-size",
    "16",
    "--hidden-size",
    "32",
    "--per_device_train_batch_size",
    "8",
    "--probe-examples",
    "32",
    "--logging-steps",
    "1",
    "--eval-steps",
    "1000",
]
CODE_FILES = (
    "modeling_llama_dcomp.py",
    "configuration_llama_dcomp.py",
    "dcomp_machine.py",
    "dcomp_alu.py",
    "dcomp_isa.py",
    "dcomp_circuits.py",
)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """Offline, one thread per process, caches (tokenizer, tasks, HF modules) in a fresh folder for this file."""
    caches = tmp_path_factory.mktemp("caches")
    return dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        LLAMA_DCOMP_CACHE=str(caches / "llama_dcomp"),
        HF_HOME=str(caches / "hf"),
    )


def run_train(env: dict, cwd: Path, *args: str, launcher: tuple[str, ...] = (sys.executable,), status: int = 0) -> str:
    """Runs train.py to completion, expecting exit `status`; returns stdout + stderr."""
    result = subprocess.run(
        [*launcher, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == status, output[-4000:]
    return output


@pytest.fixture(scope="module")
def tiny_run(env, tmp_path_factory) -> tuple[Path, str]:
    """A tiny LlamaDComp trained for 4 steps: (output folder, output text)."""
    out = tmp_path_factory.mktemp("tiny") / "out"
    return out, run_train(env, out.parent, *TINY, "--max_steps", "4", "--output_dir", str(out))


def test_tiny_sort_run_reports_the_longer_lists_and_predicts_with_a_trace(env, tmp_path):
    output = run_train(
        env,
        tmp_path,
        *TINY,
        "--task",
        "sort",
        "--parse-loss-weight",
        "1",
        "--test-long-size",
        "16",
        "--max_steps",
        "2",
        "--output_dir",
        str(tmp_path / "sort"),
    )
    assert re.search(r"^test exact match: \d+\.\d+% \(2 ", output, re.MULTILINE), output[-2000:]
    assert re.search(r"^test_long exact match: \d+\.\d+% \(5 \d+\.\d+%, 6 ", output, re.MULTILINE)
    output = run_train(
        env, tmp_path, "predict", "--model", str(tmp_path / "sort"), "--max-new-tokens", "4", "Sort the list 5, 3, 9"
    )
    assert re.search(r"^answer: ", output, re.MULTILINE), output[-2000:]
    assert re.search(r"sort_select \(1\.00\)", output)  # the trace of the computer at the answer position


def test_tiny_run_writes_a_hub_ready_folder_that_loads_by_remote_code(tiny_run, env, tmp_path):
    out, output = tiny_run
    assert re.search(r"^test exact match: \d+\.\d+%", output, re.MULTILINE), output[-2000:]
    assert re.search(r"^test_pairs exact match: \d+\.\d+%", output, re.MULTILINE)
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        *CODE_FILES,
    ):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
    card = (out / "README.md").read_text()
    assert not re.search(r"\$\{?[A-Za-z_]", card), "unrendered placeholder"
    written = summary(out)
    results = written["metrics"]
    assert set(results) == {"test", "test_pairs"} and written["steps"] == 4
    assert {"add", "sub", "mul", "div"} <= {key.removeprefix("exact_match_") for key in results["test"]}
    assert written["settings"]["training"]["max_steps"] == 4 and written["settings"]["model"]["hidden_size"] == 32
    assert 0 < written["train_seconds"] < written["wall_seconds"] and written["learning_curve"][-1]["step"] == 4
    assert written["initialisation"]["copying"] == {"0": 0, "1": 1}  # JSON keys
    assert f"| test | {results['test']['exact_match']:.2%} |" in card and "| `add` | 0 |" in card
    assert "`--max_steps` | `4`" in card and "`--hidden_size` | `32`" in card
    assert (out / "learning_curve.png").stat().st_size > 0
    assert list((out / "runs").rglob("events.out.tfevents.*")), "no TensorBoard log under the output folder"
    script = NOT_IMPORTABLE_PRELUDE + (
        "from transformers import AutoModelForCausalLM\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[2], trust_remote_code=True)\n"
        "print(type(model).__name__, model.config.library_programs)\n"
    )
    env = {**env, "PYTHONPATH": "", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    loaded = subprocess.run(
        [sys.executable, "-c", script, str(REPO), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "LlamaDCompForCausalLM ['add', 'sub', 'mul', 'div', 'rsub', 'rdiv']" in loaded.stdout


def test_predict_prints_the_answer_and_the_trace(tiny_run, env):
    out, _ = tiny_run
    output = run_train(env, out.parent, "predict", "--model", str(out), "Add 3 and 4")
    assert re.search(r"^answer: ", output, re.MULTILINE), output[-2000:]
    assert re.search(r"^  r1 = \d+ \(\d\.\d\d\)", output, re.MULTILINE)  # parsed inputs with probabilities
    assert re.search(r"-> r0 = \d+ \(\d\.\d\d\)", output)  # the result
    assert re.search(r"^ +(add|sub|mul|div) +r[12] +r[12] +r0 +\| +ret\b", output, re.MULTILINE)  # the selected program


def test_resume_continues_from_the_last_complete_checkpoint_after_a_kill(env, tmp_path):
    """Killed, a run resumes from its last complete checkpoint (not from a partial one a kill mid-save leaves) and
    ends where an uninterrupted run ends; a resume with another seed, or into a folder without checkpoints, is
    refused."""
    out = tmp_path / "out"
    args = [*TINY, "--max_steps", "24", "--save_steps", "4", "--output_dir", str(out)]
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while not (out / "checkpoint-8" / "trainer_state.json").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its checkpoint"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "checkpoint-24").exists() and not (out / "model.safetensors").exists()
    last = max(
        int(path.name.split("-")[1]) for path in out.glob("checkpoint-*") if (path / "trainer_state.json").exists()
    )
    partial = out / f"checkpoint-{last + 4}"  # what a kill during the next save leaves: weights, no trainer state
    partial.mkdir(exist_ok=True)
    (partial / "model.safetensors").write_bytes(b"torn")
    (partial / "trainer_state.json").unlink(missing_ok=True)

    other_seed = run_train(env, tmp_path, *args, "--resume", "--seed", "1", status=1)
    assert "was trained with other settings (--seed: 0 -> 1; --data_seed: 0 -> 1)" in other_seed
    empty = run_train(env, tmp_path, *TINY, "--resume", "--output_dir", str(tmp_path / "empty"), status=1)
    assert f"--resume: {tmp_path / 'empty'} holds no complete checkpoint" in empty

    output = run_train(env, tmp_path, *args, "--resume")
    assert f"resuming from {out / f'checkpoint-{last}'}" in output
    state = json.loads((out / "checkpoint-24" / "trainer_state.json").read_text())
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    # One loss per step, 1..24: the steps up to the checkpoint come from the killed run, the rest from the resumed
    # one. A run that restarted from step 0 would have logged steps 1..last again.
    assert steps == list(range(1, 25)) and state["global_step"] == 24
    assert (out / "model.safetensors").is_file()
    uninterrupted = tmp_path / "uninterrupted"
    run_train(env, tmp_path, *args[:-1], str(uninterrupted))
    assert summary(out)["parameter_digest"] == summary(uninterrupted)["parameter_digest"]  # bit-identical


def summary(out: Path) -> dict:
    return json.loads((out / "run_summary.json").read_text())


def test_a_second_run_into_a_held_folder_is_refused(env, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *TINY, "--max_steps", "100000", "--output_dir", str(out)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while not (out / "_train.lock").is_file() or (out / "_train.lock").read_text() != str(process.pid):
            assert process.poll() is None and time.time() < deadline, "the run ended before it took the lock"
            time.sleep(0.2)
        refused = run_train(env, tmp_path, *TINY, "--output_dir", str(out), status=1)
        assert f"another train.py run (pid {process.pid}) is writing to {out}" in refused
        assert process.poll() is None  # the first run goes on
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_resume_verifies_the_checkpoint_library(tiny_run, env, tmp_path):
    """A checkpoint whose program tensors were edited is refused on resume, naming the library."""
    out = tmp_path / "edited"
    shutil.copytree(tiny_run[0], out)
    weights = out / "checkpoint-4" / "model.safetensors"
    tensors = load_file(weights)
    name = next(key for key in tensors if key.endswith("computer.program_imm"))
    tensors[name] = tensors[name].roll(1, dims=-1)
    save_file(tensors, weights, metadata={"format": "pt"})
    output = run_train(env, tmp_path, *TINY, "--max_steps", "6", "--output_dir", str(out), "--resume", status=1)
    assert "train.py: error:" in output and "library" in output and "Traceback" not in output


def test_resume_refuses_a_run_whose_held_out_questions_the_task_code_no_longer_draws(tiny_run, env, tmp_path):
    """run_settings.json keeps a fingerprint of each held-out split; a resume that rebuilds other questions (the
    task code changed since the run started) would train on another split, and is refused."""
    out = tmp_path / "changed"
    shutil.copytree(tiny_run[0], out)
    settings = json.loads((out / "run_settings.json").read_text())
    assert set(settings["splits"]) == {"test", "test_pairs"}
    settings["splits"]["test"] = "0" * 64
    (out / "run_settings.json").write_text(json.dumps(settings))
    output = run_train(env, tmp_path, *TINY, "--max_steps", "6", "--output_dir", str(out), "--resume", status=1)
    assert "library.tasks now draws other test questions" in output and "Traceback" not in output


def test_a_non_finite_loss_stops_the_run_before_it_is_saved(env, tmp_path):
    out = tmp_path / "diverged"
    rates = ["--learning_rate", "1e10", "--embedding_learning_rate", "1e10"]  # finite, but the run diverges
    output = run_train(
        env, tmp_path, *TINY, *rates, "--max_steps", "8", "--save_steps", "1", "--output_dir", str(out), status=1
    )
    what = r"(the loss is nan|parameter \S+ holds non-finite|the weights' norm overflows)"
    stopped = re.search(r"training stopped at step (\d+): " + what, output)
    assert stopped, output[-3000:]
    step = int(stopped.group(1))
    assert f"the last good checkpoint is {out / f'checkpoint-{step - 1}'}" in output
    assert not (out / f"checkpoint-{step}").exists() and not (out / "model.safetensors").exists()
    assert (out / f"checkpoint-{step - 1}" / "trainer_state.json").is_file()


def test_baseline_without_the_computer(env, tmp_path):
    out = tmp_path / "baseline"
    output = run_train(env, tmp_path, *TINY, "--max_steps", "2", "--no_computer", "--output_dir", str(out))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and "auto_map" not in config
    assert re.search(r"^test exact match: ", output, re.MULTILINE)


def test_lora_on_a_llama_checkpoint(env, tmp_path):

    # A Llama the size of the LLaMA-3 vocabulary (the tokenizer the runs use), tiny otherwise.
    llama = tiny_llama(vocab_size=128256, hidden_size=16, intermediate_size=32, pad_token_id=None)
    llama.save_pretrained(tmp_path / "llama")
    out = tmp_path / "lora"
    output = run_train(
        env, tmp_path, *TINY, "--max_steps", "2", "--model", str(tmp_path / "llama"), "--lora", "--output_dir", str(out)
    )
    assert re.search(r"^test exact match: ", output, re.MULTILINE), output[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama_dcomp" and config["hidden_size"] == 16
    assert not (out / "adapter_config.json").exists()  # the adapters are merged into the saved model


def test_fitted_hidden_votes_stay_as_fitted_while_the_rest_trains_under_lora_and_after_a_resume(env, tmp_path):
    """--fit_hidden_votes (half of its prompts in the wide set's phrasings, --fit_phrasings): W_vote is fitted before
    the first step and no step changes it, though LoRA keeps a trainable copy of the computer and a resumed run skips
    the fit (its checkpoint holds the fitted head); the selection head W_sel, beside it, trains. So with the copy
    parse's pointer by the ordinal alone (--copy_from_end): its query weights stay 0, and the resumed run's
    optimizer finds the parameter groups it saved. After the last step --calibrate_hidden_votes scales the head (the
    resumed run rebuilds the prompts it calibrates on), and so does experiments.calibrate_votes on the saved run.
    --selection_within_turn bounds the window at the tokenizer's turn openers."""
    llama = tiny_llama(vocab_size=128256, hidden_size=16, intermediate_size=32, pad_token_id=None)
    llama.save_pretrained(tmp_path / "llama")
    out = tmp_path / "fitted"
    args = [
        *TINY, "--model", str(tmp_path / "llama"), "--lora", "--encoding", "binary", "--selection_context", "8",
        "--selection_hidden_votes", "--fit_hidden_votes", "32", "--fit_phrasings", "wide", "--save_steps", "2",
        "--copy_from_end", "--calibrate_hidden_votes", "--calibration_prompts", "16", "--selection_within_turn",
        "--output_dir", str(out),
    ]  # fmt: skip
    output = run_train(env, tmp_path, *args, "--max_steps", "2")
    fit = r"^hidden votes: a probe fitted on 32 prompts \(16 in phrasings the run lacks\), right on \d+\.\d+% of them$"
    assert re.search(fit, output, re.MULTILINE), output[-2000:]
    resumed = run_train(env, tmp_path, *args, "--max_steps", "4", "--resume")
    assert "hidden votes: a probe" not in resumed and f"resuming from {out / 'checkpoint-2'}" in resumed
    calibrated = r"^hidden votes: scaled ×(\S+), selection right on 32 prompts: ×1 \d+\.\d+%, ×1\.5 .*, ×8 \d+\.\d+%$"
    (scale,) = re.findall(calibrated, resumed, re.MULTILINE)  # the validation split (16) and 16 more
    summary = json.loads((out / "run_summary.json").read_text())["hidden_vote_scale"]
    assert summary["scale"] == float(scale) and summary["prompts"] == 32 and len(summary["right"]) == 7
    boundaries = json.loads((out / "config.json").read_text())["computer_selection_boundary_ids"]
    assert 128006 in boundaries  # --selection_within_turn: LLaMA-3's "<|start_header_id|>" opens a turn

    def head(weights: dict, name: str):
        (key,) = [key for key in weights if key.endswith(f"computer.{name}.weight")]
        return weights[key]

    after_2 = load_file(out / "checkpoint-2" / "adapter_model.safetensors")
    final = load_file(out / "model.safetensors")  # the adapters merged, after 4 steps
    fitted, calibrated_head = head(after_2, "selection_hidden_votes"), head(final, "selection_hidden_votes")
    assert fitted.abs().sum() > 0
    torch.testing.assert_close(fitted * float(scale), calibrated_head)
    again, shares = calibrate_votes(out, tmp_path / "again", prompts=16)
    recalibrated = load_file(tmp_path / "again" / "model.safetensors")
    torch.testing.assert_close(calibrated_head * again, head(recalibrated, "selection_hidden_votes"))
    assert set(shares) == set(SCALES) and (tmp_path / "again" / "run_settings.json").is_file()
    assert not torch.equal(head(after_2, "select"), head(final, "select"))
    assert head(final, "copy_parse.query").abs().sum() == 0 and head(final, "copy_parse.key").abs().sum() == 0


def test_two_process_data_parallel_run_trains_one_model(env, tmp_path):
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531")
    output = run_train(
        env, tmp_path, *TINY, "--max_steps", "3", "--output_dir", str(tmp_path / "ddp"), launcher=launcher
    )
    final = dict(re.findall(r"rank (\d) parameter digest: ([0-9a-f]{64})", output))
    initial = set(re.findall(r"initial parameter digest: ([0-9a-f]{64})", output))
    assert set(final) == {"0", "1"} and final["0"] == final["1"], output[-3000:]
    assert len(initial) == 1 and final["0"] not in initial  # both ranks started equal, trained, and agree
    assert (tmp_path / "ddp" / "model.safetensors").is_file()
