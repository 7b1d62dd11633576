"""train.py end to end on tiny configurations: CLI, Hub-ready output, resume after a kill, baseline, LoRA,
predict, and 2-process data-parallel training."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_fixtures import NOT_IMPORTABLE_PRELUDE

REPO = Path(__file__).resolve().parents[1]
TINY = ["--train-size", "96", "--eval-size", "16", "--hidden-size", "32", "--batch-size", "8", "--logging-steps", "1"]


def _env(tmp_path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["LLAMA_DCOMP_CACHE"] = str(tmp_path / "cache")
    return env


def _train(tmp_path, *args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    command = (launcher or [sys.executable]) + [str(REPO / "train.py"), *args]
    result = subprocess.run(command, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_help_lists_every_option_with_its_default():
    sys.path.insert(0, str(REPO))
    from train import build_parser

    parser = build_parser()
    text = parser.format_help()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.option_strings[-1] in text
            assert action.help and "%(default)s" not in action.help
    assert text.count("(default:") >= len([a for a in parser._actions if a.option_strings]) - 1


def test_tiny_run_writes_a_hub_ready_folder_that_loads_by_remote_code(tmp_path):
    out = tmp_path / "out"
    result = _train(tmp_path, *TINY, "--max-steps", "4", "--output-dir", str(out))
    assert re.search(r"test exact match: \d+\.\d+%", result.stdout)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "modeling_llama_dcomp.py",
                 "configuration_llama_dcomp.py", "dcomp_machine.py", "dcomp_alu.py", "dcomp_isa.py"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert "$" not in card.split("```json")[0] and "| test |" in card and "`add`" in card
    assert list((out / "runs").rglob("events.out.tfevents.*")), "no TensorBoard log"
    script = NOT_IMPORTABLE_PRELUDE + (
        "from transformers import AutoModelForCausalLM\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[2], trust_remote_code=True)\n"
        "assert type(model).__name__ == 'LlamaDCompForCausalLM'\n"
        "print('loaded', model.config.auto_map)\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script, str(REPO), str(out)], cwd=tmp_path, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "AutoModelForCausalLM" in loaded.stdout


def test_resume_continues_from_the_last_checkpoint_after_a_kill(tmp_path):
    out = tmp_path / "out"
    args = [str(REPO / "train.py"), *TINY, "--max-steps", "30", "--save-steps", "3", "--output-dir", str(out)]
    process = subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=_env(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 400
    while not (out / "checkpoint-6" / "trainer_state.json").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before its checkpoint"
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "checkpoint-30").exists()
    checkpoints = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    result = _train(tmp_path, *TINY, "--max-steps", "30", "--save-steps", "3", "--output-dir", str(out), "--resume")
    # The first logged step of the resumed run comes after the last checkpoint, not at step 1.
    first_epoch = float(re.search(r"'epoch': '([0-9.e-]+)'", result.stdout + result.stderr).group(1))
    steps_per_epoch = 96 / 8
    assert first_epoch * steps_per_epoch > max(checkpoints) - 0.5
    assert (out / "checkpoint-30").exists() and (out / "model.safetensors").exists()


def test_baseline_without_the_computer_and_predict(tmp_path):
    out = tmp_path / "baseline"
    _train(tmp_path, *TINY, "--max-steps", "2", "--no-computer", "--output-dir", str(out))
    assert "llama_dcomp" not in (out / "config.json").read_text()
    model = tmp_path / "model"
    _train(tmp_path, *TINY, "--max-steps", "2", "--output-dir", str(model))
    result = _train(tmp_path, "predict", "--model", str(model), "Add 3 and 4")
    assert "answer:" in result.stdout and "r1 =" in result.stdout and "add" in result.stdout


def test_lora_on_a_llama_checkpoint(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=128256, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    llama.save_pretrained(tmp_path / "llama")
    result = _train(tmp_path, *TINY, "--max-steps", "2", "--model", str(tmp_path / "llama"), "--lora",
                    "--output-dir", str(tmp_path / "lora"))
    assert "test exact match" in result.stdout and (tmp_path / "lora" / "model.safetensors").exists()


def test_two_process_data_parallel_run_trains_one_model(tmp_path):
    pytest.importorskip("torch.distributed.run")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    result = _train(tmp_path, *TINY, "--max-steps", "3", "--output-dir", str(tmp_path / "ddp"), launcher=launcher)
    text = result.stdout + result.stderr
    digests = dict(re.findall(r"rank (\d) parameter digest: ([0-9a-f]{64})", text))
    initial = set(re.findall(r"initial parameter digest: ([0-9a-f]{64})", text))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], text[-2000:]
    assert len(initial) == 1 and digests["0"] not in initial  # both started equal and both trained
