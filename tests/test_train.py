"""train.py end to end on tiny configurations (CPU): the command line, a Hub-ready output folder that loads as
remote code, resuming after a kill, the baseline without the computer, LoRA on a Llama checkpoint, predict, and a
2-process data-parallel run that trains one and the same model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from model_fixtures import NOT_IMPORTABLE_PRELUDE

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
    "--batch-size",
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


def run_train(env: dict, cwd: Path, *args: str, launcher: tuple[str, ...] = (sys.executable,)) -> str:
    """Runs train.py to completion; returns stdout + stderr."""
    result = subprocess.run(
        [*launcher, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def tiny_run(env, tmp_path_factory) -> tuple[Path, str]:
    """A tiny LlamaDComp trained for 4 steps: (output folder, output text)."""
    out = tmp_path_factory.mktemp("tiny") / "out"
    return out, run_train(env, out.parent, *TINY, "--max-steps", "4", "--output-dir", str(out))


def test_help_lists_every_option_with_its_default():
    sys.path.insert(0, str(REPO))
    from train import build_parser

    parser = build_parser()
    text = " ".join(parser.format_help().split())  # argparse wraps lines
    options = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    assert len(options) > 30
    for action in options:
        assert f"{action.option_strings[0]} " in text, action.option_strings
        assert f"(default: {action.default})" in text, action.option_strings


def test_reversed_programs_swap_the_inputs_and_link_with_the_standard_ones():
    sys.path.insert(0, str(REPO))
    from library.interpreter import run_reference
    from library.stdlib import link
    from train import library_sources

    linked = link(library_sources(["sub", "div", "rsub", "rdiv"]))
    for name, expected in {"sub": 5, "div": 2, "rsub": (4 - 9) % 128, "rdiv": 0}.items():
        run = run_reference(linked.program, registers={1: 9, 2: 4}, entry=linked.entry_points[name])
        assert run.halted and run.state.registers[0] == expected, name
    with pytest.raises(ValueError, match="unknown program 'radd'"):
        library_sources(["radd"])


def test_parse_auto_copies_where_every_value_reads_back_from_its_tokens():
    sys.path.insert(0, str(REPO))
    from train import parse_kind

    one_token_each = [[100 + value] for value in range(12)]  # LLaMA-3: "0" .. "11" are tokens
    digit_tokens = [[100 + value] for value in range(10)] + [[101, 100], [101, 101]]  # SmolLM2: "1", "0"
    unreadable = [[100 + value] for value in range(10)] + [[101, 100], [101, 555]]  # 555 is no value's token
    swapped = [[100 + value] for value in range(10)] + [[100, 101], [101, 101]]  # "10" written as "0", "1"
    assert parse_kind("auto", one_token_each) == parse_kind("auto", digit_tokens) == "copy"
    assert parse_kind("auto", unreadable) == parse_kind("auto", swapped) == "linear"
    assert parse_kind("linear", one_token_each) == "linear" and parse_kind("copy", unreadable) == "copy"


def test_sort_runs_the_computer_before_every_number_of_the_answer(env, monkeypatch):
    """sort: the computer runs where the next token starts a number of the answer, with that number as its target;
    the parse targets (length, the number's index, the list) make `sort_select` compute it."""
    monkeypatch.setenv("LLAMA_DCOMP_CACHE", env["LLAMA_DCOMP_CACHE"])
    sys.path.insert(0, str(REPO))
    import train
    from library.interpreter import run_reference
    from library.stdlib import load_program

    args = train.build_parser().parse_args(
        ["--task", "sort", "--train-size", "8", "--validation-size", "2", "--test-size", "2", "--test-long-size", "4"]
    )
    spec = train.task_spec(args)
    tokenizer = train.build_tokenizer(args)
    data = train.build_datasets(args, spec, tokenizer)
    collator = train.AnswerCollator(tokenizer.pad_token_id, True, True, with_slot_targets=True)
    program = load_program("sort_select")
    for split in ("train", "test_long"):
        rows = list(data[split])
        batch = collator(rows)
        answers = [value for row in rows for value in row["answer"]]
        marked = batch["computer_mask"].nonzero().tolist()
        following = [tokenizer.decode(batch["input_ids"][i, p + 1]) for i, p in marked]
        assert following == [str(value) for value in answers] and batch["computer_targets"].tolist() == answers
        for (length, index, *cells), answer in zip(batch["slot_targets"].tolist(), answers):
            assert cells[length:] == [-100] * (spec.memory_inputs - length)
            run = run_reference(program, registers={1: length, 2: index}, memory=cells[:length])
            assert run.state.registers[0] == answer


def test_parse_loss_is_the_parse_heads_cross_entropy_against_the_prompt_numbers(env, monkeypatch, tmp_path):
    """fibonacci: the parse targets are a, b and the depth as written; the loss adds their cross-entropy under the
    parse heads, times its weight, to the LM loss; a few steps on it make the parse read the prompt's numbers."""
    monkeypatch.setenv("LLAMA_DCOMP_CACHE", env["LLAMA_DCOMP_CACHE"])
    sys.path.insert(0, str(REPO))
    from transformers import TrainingArguments

    import train
    from modeling_llama_dcomp import record_computer_runs

    args = train.build_parser().parse_args(
        [
            "--task",
            "fibonacci",
            "--train-size",
            "16",
            "--validation-size",
            "2",
            "--test-size",
            "2",
            "--test-long-size",
            "2",
            "--hidden-size",
            "32",
            "--heads",
            "2",
        ]
    )
    spec = train.task_spec(args)
    tokenizer = train.build_tokenizer(args)
    data = train.build_datasets(args, spec, tokenizer)
    rows = list(data["train"])
    assert [row["slot_targets"] for row in rows] == [[[*row["operands"], row["depth"]]] for row in rows]
    torch.manual_seed(0)
    model = train.build_model(args, spec, tokenizer)
    collator = train.AnswerCollator(tokenizer.pad_token_id, True, False, with_slot_targets=True)
    batch = collator(rows)
    targets = batch["slot_targets"]  # (rows, slots)

    def trainer(weight: float):
        arguments = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
        return train.DCompTrainer(
            model=model, args=arguments, learning_rates={}, answer_loss_weight=0.0, parse_loss_weight=weight
        )

    def parse_cross_entropy() -> torch.Tensor:
        with record_computer_runs() as runs:
            model(**{key: value for key, value in batch.items() if key != "slot_targets"})
        probs = runs[-1].input_probs  # (rows, slots, n)
        return -probs.gather(2, targets[..., None]).log().mean()

    with torch.no_grad():
        without = trainer(0.0).compute_loss(model, dict(batch))
        with_loss = trainer(2.0).compute_loss(model, dict(batch))
        before = parse_cross_entropy()
    torch.testing.assert_close(with_loss - without, 2.0 * before, rtol=1e-4, atol=1e-4)
    parse_heads = [*model.computer.parse.parameters(), *model.computer.copy_parse.parameters()]  # linear + copy
    optimizer = torch.optim.Adam(parse_heads, lr=1e-2)
    for _ in range(20):
        optimizer.zero_grad()
        trainer(1.0).compute_loss(model, dict(batch)).backward()
        optimizer.step()
    with torch.no_grad():
        assert parse_cross_entropy() < 0.5 * before


@pytest.mark.parametrize(
    ("task", "copying"),
    [
        ("fibonacci", {0: 0, 1: 1, 2: 2}),  # a, b, depth as written
        ("sort", {2: 0, 3: 1, 4: 2, 5: 3}),
    ],
)  # cells; not length, index
def test_copy_parse_prior_points_each_slot_at_the_number_it_reads(env, monkeypatch, task, copying):
    monkeypatch.setenv("LLAMA_DCOMP_CACHE", env["LLAMA_DCOMP_CACHE"])
    sys.path.insert(0, str(REPO))
    import train
    from modeling_llama_dcomp import record_computer_runs

    args = train.build_parser().parse_args(
        [
            "--task",
            task,
            "--parse",
            "copy",
            "--train-size",
            "32",
            "--validation-size",
            "2",
            "--test-size",
            "2",
            "--test-long-size",
            "2",
            "--hidden-size",
            "32",
            "--heads",
            "2",
        ]
    )
    spec = train.task_spec(args)
    tokenizer = train.build_tokenizer(args)
    data = train.build_datasets(args, spec, tokenizer)
    torch.manual_seed(0)
    model = train.build_model(args, spec, tokenizer)
    assert train.init_copy_parse(model, spec, data["train"]["text"], scale=5.0) == copying
    rows = list(data["train"])
    batch = train.AnswerCollator(tokenizer.pad_token_id, True, False, with_slot_targets=True)(rows)
    with torch.no_grad(), record_computer_runs() as runs:
        model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], computer_mask=batch["computer_mask"]
        )
    parsed = torch.cat([runs[0].input_probs, runs[0].memory_probs], dim=1).argmax(-1)  # (positions, slots)
    slots = list(copying)
    targets = batch["slot_targets"][:, slots]
    labelled = targets >= 0
    assert (parsed[:, slots] == targets)[labelled].float().mean() > 0.95  # right from step 0, before any training


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
        "--max-steps",
        "2",
        "--output-dir",
        str(tmp_path / "sort"),
    )
    assert re.search(r"^test exact match: \d+\.\d+% \(2 ", output, re.MULTILINE), output[-2000:]
    assert re.search(r"^test_long exact match: \d+\.\d+% \(5 \d+\.\d+%, 6 ", output, re.MULTILINE)
    output = run_train(
        env, tmp_path, "predict", "--model", str(tmp_path / "sort"), "--max-new-tokens", "4", "Sort the list 5, 3, 9"
    )
    assert re.search(r"^answer: ", output, re.MULTILINE), output[-2000:]
    assert re.search(r"sort_select \(1\.00\)", output)  # the trace of the computer at the answer position


def test_number_starts_are_the_training_positions_of_the_computer(env, monkeypatch):
    """predict runs the computer where training did (`add_number_positions`): before each number of a list."""
    monkeypatch.setenv("LLAMA_DCOMP_CACHE", env["LLAMA_DCOMP_CACHE"])
    sys.path.insert(0, str(REPO))
    import train

    args = train.build_parser().parse_args(
        ["--task", "sort", "--train-size", "8", "--validation-size", "2", "--test-size", "2", "--test-long-size", "4"]
    )
    tokenizer = train.build_tokenizer(args)
    data = train.build_datasets(args, train.task_spec(args), tokenizer)
    for row in data["test_long"]:
        start = row["answer_position"] + 1
        ids = [token for token in row["input_ids"] if token != tokenizer.eos_token_id]  # prompt + answer
        assert train.number_starts(tokenizer, ids, start) == row["number_positions"]


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
    results = json.loads((out / "test_results.json").read_text())
    assert f"| test | {results['test']['exact_match']:.2%} |" in card and "| `add` | 0 |" in card
    assert "`--max-steps` | `4`" in card
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
    assert re.search(r"^ +(add|sub|mul|div) r[12] r[12] r0 \| ret$", output, re.MULTILINE)  # the selected program


def test_resume_continues_from_the_last_checkpoint_after_a_kill(env, tmp_path):
    out = tmp_path / "out"
    args = [*TINY, "--max-steps", "24", "--save-steps", "4", "--output-dir", str(out)]
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

    output = run_train(env, tmp_path, *args, "--resume")
    assert f"resuming from {out / f'checkpoint-{last}'}" in output
    state = json.loads((out / "checkpoint-24" / "trainer_state.json").read_text())
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    # One loss per step, 1..24: the steps up to the checkpoint come from the killed run, the rest from the resumed
    # one. A run that restarted from step 0 would have logged steps 1..last again.
    assert steps == list(range(1, 25)) and state["global_step"] == 24
    assert (out / "model.safetensors").is_file()


def test_baseline_without_the_computer(env, tmp_path):
    out = tmp_path / "baseline"
    output = run_train(env, tmp_path, *TINY, "--max-steps", "2", "--no-computer", "--output-dir", str(out))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and "auto_map" not in config
    assert re.search(r"^test exact match: ", output, re.MULTILINE)


def test_lora_on_a_llama_checkpoint(env, tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=128256,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
    )
    llama.save_pretrained(tmp_path / "llama")
    out = tmp_path / "lora"
    output = run_train(
        env, tmp_path, *TINY, "--max-steps", "2", "--model", str(tmp_path / "llama"), "--lora", "--output-dir", str(out)
    )
    assert re.search(r"^test exact match: ", output, re.MULTILINE), output[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama_dcomp" and config["hidden_size"] == 16
    assert not (out / "adapter_config.json").exists()  # the adapters are merged into the saved model


def test_two_process_data_parallel_run_trains_one_model(env, tmp_path):
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531")
    output = run_train(
        env, tmp_path, *TINY, "--max-steps", "3", "--output-dir", str(tmp_path / "ddp"), launcher=launcher
    )
    final = dict(re.findall(r"rank (\d) parameter digest: ([0-9a-f]{64})", output))
    initial = set(re.findall(r"initial parameter digest: ([0-9a-f]{64})", output))
    assert set(final) == {"0", "1"} and final["0"] == final["1"], output[-3000:]
    assert len(initial) == 1 and final["0"] not in initial  # both ranks started equal, trained, and agree
    assert (tmp_path / "ddp" / "model.safetensors").is_file()


def test_isolated_gradients_route_the_lm_loss_to_the_read_out_and_the_answer_loss_to_the_heads():
    """`isolate_gradients` leaves the forward values alone; the LM loss then reaches only the read-out, a loss on
    the recorded output register reaches the selection/parse heads and the base."""
    import torch
    from model_fixtures import random_ids, tiny_model

    from modeling_llama_dcomp import record_computer_runs

    model = tiny_model(gate=1.0).train()
    ids = random_ids(2, 6)
    with torch.no_grad():
        expected = model(ids).logits
    computer = model.computer
    computer.isolate_gradients = True
    with record_computer_runs() as runs:
        outputs = model(ids, labels=ids)
    torch.testing.assert_close(outputs.logits, expected, rtol=0, atol=0)
    outputs.loss.backward(retain_graph=True)
    assert computer.parse.weight.grad is None and computer.select.weight.grad is None
    assert computer.output_proj.weight.grad.abs().sum() > 0 and computer.gate.grad.abs().sum() > 0
    base = model.model.layers[0].self_attn.q_proj.weight
    from_lm_loss = base.grad.clone()
    register = torch.cat([run.state.registers[:, 0] for run in runs])
    register.clamp_min(1e-12).log()[:, 3].sum().neg().backward()
    assert computer.parse.weight.grad.abs().sum() > 0 and computer.select.weight.grad.abs().sum() > 0
    assert not torch.equal(base.grad, from_lm_loss)  # the answer loss reaches the base through the heads


def test_digit_classes_and_the_cross_entropy_of_distributions():
    sys.path.insert(0, str(REPO))
    from train import digit_classes, distribution_cross_entropy

    classes = digit_classes(torch.tensor([0, 7, 42, 127]), 128)  # units, tens, hundreds (10 columns each), length
    assert classes.tolist() == [[0, 10, 20, 30], [7, 10, 20, 30], [2, 14, 20, 31], [7, 12, 21, 32]]
    probs = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]]])  # (1, 2 slots, n = 3)
    loss = distribution_cross_entropy(probs, torch.tensor([[0, -100]]))  # the second slot ignored
    assert torch.allclose(loss, torch.tensor(0.5).log().neg())
    assert torch.allclose(
        distribution_cross_entropy(probs[0], torch.tensor([1, 2])),
        -(torch.tensor(0.5).log() + torch.tensor(0.75).log()) / 2,
    )
