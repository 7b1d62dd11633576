"""library/training in-process: the arguments (every Trainer flag, dash aliases, JSON/YAML files, clear errors
naming the argument), the task data and collator, the initialisation recipes, the model's parameter groups, the
losses, the guards (non-finite stop, output-folder lock, last complete checkpoint, resume settings) and the
positions predict runs the computer at. train.py end to end: tests/test_train.py."""

import dataclasses
import json
import math
import multiprocessing
import os
from pathlib import Path

import pytest
import torch
from model_fixtures import REPO, random_ids, tiny_model
from transformers import TrainingArguments

from library.interpreter import run_reference
from library.stdlib import link, load_program
from library.tasks import PLAIN_ENDINGS, WIDE_ENDINGS
from library.training.arguments import (
    RESUME_FIXED,
    ArgumentError,
    check_combinations,
    parse_arguments,
    resume_mismatches,
    settings,
)
from library.training.data import (
    AnswerCollator,
    beyond_phrasings,
    build_datasets,
    library_sources,
    task_spec,
    written_numbers,
)
from library.training.losses import distillation_kl, distribution_cross_entropy, value_nll
from library.training.models import build_model, build_tokenizer, parse_kind
from library.training.predict import number_starts
from library.training.recipes import digit_classes, fit_selection_probe, init_copy_parse
from library.training.trainer import (
    RUNNING_CODE,
    DCompTrainer,
    TrainingError,
    TrainingGuard,
    last_complete_checkpoint,
    lead_and_answer_positions,
    lead_positions,
    output_lock,
)
from modeling_llama_dcomp import LlamaDCompPreTrainedModel, record_computer_runs


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LLAMA_DCOMP_CACHE", str(tmp_path_factory.getbasetemp() / "llama_dcomp_cache"))


def arguments(*argv: str):
    return parse_arguments(["--output_dir", "unused", *argv])


def task(*argv: str):
    """(model, data, computer, training arguments, spec, tokenizer, tokenized splits) of a command line."""
    model_args, data_args, computer_args, training_args = arguments(*argv)
    spec = task_spec(data_args, computer_args.reversed_programs)
    tokenizer = build_tokenizer(model_args)
    data = build_datasets(data_args, spec, tokenizer, training_args.seed)
    return model_args, data_args, computer_args, training_args, spec, tokenizer, data


# ------------------------------------------------------------------------------------------------ arguments
def test_defaults_are_the_papers_calculator_run():
    model_args, data_args, computer_args, training_args = parse_arguments([])
    assert (data_args.task, data_args.n, data_args.train_size) == ("arithmetic", 128, 20000)
    assert (model_args.hidden_size, model_args.layers, model_args.heads) == (128, 2, 4)
    assert training_args.output_dir == "runs/default" and training_args.num_train_epochs == 1.0
    assert training_args.learning_rates == {"layers": 1e-4, "embeddings": 3e-4, "computer": 3e-3, "parse": 1e-3}
    assert (training_args.per_device_train_batch_size, training_args.eval_steps, training_args.save_steps) == (
        32,
        100,
        200,
    )
    assert training_args.seed == training_args.data_seed == 0 and training_args.report_to == ["tensorboard"]
    assert computer_args.parse == "auto" and computer_args.reversed_programs


def test_every_trainer_flag_and_both_spellings_work():
    _, data_args, computer_args, training_args = arguments(
        "--train-size", "7", "--no-reversed-programs", "--activation_checkpointing", "--torch_compile", "false",
        "--report_to", "none", "--learning-rate", "0.5", "--output-dir", "elsewhere", "--weight_decay", "0.1",
    )  # fmt: skip
    assert data_args.train_size == 7 and not computer_args.reversed_programs
    assert training_args.activation_checkpointing and not training_args.torch_compile
    assert training_args.learning_rate == 0.5 and training_args.output_dir == "elsewhere"
    assert training_args.report_to == [] and training_args.weight_decay == 0.1


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_one_json_or_yaml_file_holds_the_arguments(tmp_path, suffix):
    values = {"task": "fibonacci", "train_size": 64, "hidden_size": 32, "max_steps": 3, "output_dir": "x"}
    path = tmp_path / f"config{suffix}"
    path.write_text(json.dumps(values) if suffix == ".json" else "\n".join(f"{k}: {v}" for k, v in values.items()))
    model_args, data_args, _, training_args = parse_arguments([str(path)])
    assert (data_args.task, data_args.train_size, model_args.hidden_size) == ("fibonacci", 64, 32)
    assert training_args.max_steps == 3 and training_args.output_dir == "x"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--heads", "0"], "--heads: must be >= 1, got 0"),
        (["--hidden_size", "0"], "--hidden_size: must be >= 1, got 0"),
        (["--layers", "0"], "--layers: must be >= 1, got 0"),
        (["--hidden_size", "30", "--heads", "4"], "--hidden_size: 30 must be an even multiple of --heads 4"),
        (["--n", "1"], "--n: the machine needs at least 2 values, got 1"),
        (["--train_size", "0"], "--train_size: needs at least 1 example, got 0"),
        (["--operations", "add,pow"], "--operations: unknown operation(s) ['pow']"),
        (["--max_steps", "0"], "--max_steps: must be >= 1 or -1, got 0"),
        (["--learning_rate", "-1"], "--learning_rate: must be > 0, got -1.0"),
        (["--learning_rate", "nan"], "--learning_rate: must be a finite number, got nan"),
        (["--parse_learning_rate", "inf"], "--parse_learning_rate: must be a finite number, got inf"),
        (["--gate_init", "nan"], "--gate_init: must be a finite number, got nan"),
        (["--selection_temperature", "0"], "--selection_temperature: must be > 0, got 0.0"),
        (["--trigger_positive_weight", "0"], "--trigger_positive_weight: must be > 0, got 0.0"),
        (["--trigger_text_weight", "-1"], "--trigger_text_weight: must be > 0, got -1.0"),
        (["--selection_context", "8", "--selection_dropout", "1"], "--selection_dropout: must be in [0, 1), got 1.0"),
        (["--trigger_context", "-1"], "--trigger_context: must be >= 0, got -1"),
        (["--trigger_context", "4", "--trigger_dropout", "1"], "--trigger_dropout: must be in [0, 1), got 1.0"),
        (["--trigger_numbers", "-1"], "--trigger_numbers: must be >= 0, got -1"),
        (["--selection_dropout", "0.5"], "--selection_dropout: drops the token votes of --selection_context: give"),
        (["--selection_hidden_votes"], "--selection_hidden_votes: votes over the window of --selection_context: give"),
        (["--selection_within_turn"], "--selection_within_turn: bounds the window of --selection_context: give"),
        (["--selection_vote_from_layer", "1"], "--selection_vote_from_layer: chooses the layers the hidden"),
        (["--hidden_vote_loss_weight", "-1"], "--hidden_vote_loss_weight: must be >= 0, got -1.0"),
        (["--hidden_vote_loss_weight", "1"], "--hidden_vote_loss_weight: trains the hidden-state votes: give --select"),
        (["--fit_hidden_votes", "-1"], "--fit_hidden_votes: must be >= 0, got -1"),
        (["--fit_hidden_votes", "8"], "--fit_hidden_votes: fits the hidden-state votes: give --selection_hidden_votes"),
        (
            [
                "--selection_context",
                "4",
                "--selection_hidden_votes",
                "--fit_hidden_votes",
                "8",
                "--hidden_vote_loss_weight",
                "1",
            ],
            "--fit_hidden_votes: keeps the hidden-state votes fixed, so --hidden_vote_loss_weight would train nothing",
        ),
        (["--fit_phrasings", "wide"], "--fit_phrasings: chooses the prompts of the hidden votes' fit: give --fit_hid"),
        (["--fit_standardised"], "--fit_standardised: changes how the hidden votes' head is fitted: give --fit_hid"),
        (["--fit_steps", "0"], "--fit_steps: must be > 0, got 0"),
        (["--phrasings", "wide"], "--phrasings: wide phrasings are for --task arithmetic --encoding binary"),
        (["--ending_fraction", "0.3"], "--ending_fraction: other prompt endings are for --task arithmetic --encoding"),
        (["--encoding", "binary", "--ending_fraction", "2"], "--ending_fraction: must be in [0, 1], got 2.0"),
        (["--encoding", "binary", "--endings", "wide"], "--endings: wide endings end a share --ending_fraction"),
        (["--encoding", "binary", "--text_layout", "lines"], "--text_layout: lays out the ordinary-text rows: set"),
        (
            ["--encoding", "binary", "--text_fraction", "0.2", "--text_layout", "pages"],
            "--text-layout: invalid choice: 'pages'",
        ),
        (["--model", "/nonexistent/llama"], "--model: /nonexistent/llama does not exist"),
    ],
)
def test_bad_arguments_exit_with_a_message_naming_the_argument(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        arguments(*argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_too_few_values_for_the_split_sizes_is_an_argument_error(cache):
    with pytest.raises(ArgumentError, match="--n 3 with these split sizes: could only draw 3 distinct 'test'"):
        task("--n", "3", "--train_size", "50", "--validation_size", "5", "--test_size", "5")


def test_a_computer_layer_the_model_lacks_is_refused(cache):
    model_args, data_args, computer_args, _, spec, tokenizer, _ = task(
        "--computer_layer", "5", "--train_size", "8", "--validation_size", "2", "--test_size", "2", "--hidden_size",
        "32",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"--computer_layer: 5 is not a layer of this 2-layer model \(choose from -2"):
        build_model(model_args, data_args, computer_args, spec, tokenizer)


@pytest.mark.parametrize(("first", "layers"), [("-2", [0, 1]), ("1", [1]), ("0", [0, 1])])
def test_the_hidden_votes_read_the_layers_from_the_one_given_up_to_the_computers(cache, first, layers):
    model_args, data_args, computer_args, _, spec, tokenizer, _ = task(
        "--encoding", "binary", "--selection_context", "4", "--selection_hidden_votes", "--selection_vote_from_layer",
        first, "--train_size", "8", "--validation_size", "2", "--test_size", "2", "--hidden_size", "32",
    )  # fmt: skip
    model = build_model(model_args, data_args, computer_args, spec, tokenizer)
    assert model.config.computer_selection_vote_layers == layers and model.computer.vote_layers == layers


@pytest.mark.parametrize("first", ["2", "-3"])
def test_a_vote_layer_the_model_lacks_is_refused(cache, first):
    model_args, data_args, computer_args, _, spec, tokenizer, _ = task(
        "--encoding", "binary", "--selection_context", "4", "--selection_hidden_votes", "--selection_vote_from_layer",
        first, "--computer_layer", "-1", "--train_size", "8", "--validation_size", "2", "--test_size", "2",
        "--hidden_size", "32",
    )  # fmt: skip
    with pytest.raises(ValueError, match=rf"--selection_vote_from_layer: {first} is not a layer of this 2-layer model"):
        build_model(model_args, data_args, computer_args, spec, tokenizer)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--trigger_dropout", "0.5"), "--trigger_dropout: drops the trigger's token logits, and --encoding unit has"),
        (("--encoding", "binary", "--trigger_dropout", "0.5"), "--trigger_dropout: drops the token logits of --trig"),
    ],
)
def test_a_trigger_dropout_without_token_logits_is_refused(argv, message):
    with pytest.raises(ArgumentError, match=message):
        check_combinations(*arguments(*argv)[:3])


def test_fitting_the_hidden_votes_is_for_arithmetic():
    model_args, data_args, computer_args, _ = arguments(
        "--task", "sort", "--encoding", "binary", "--selection_context", "4", "--selection_hidden_votes",
        "--fit_hidden_votes", "8",
    )  # fmt: skip
    with pytest.raises(ArgumentError, match="--fit_hidden_votes: fits the votes on arithmetic answers, and --task is"):
        check_combinations(model_args, data_args, computer_args)


@pytest.mark.parametrize(("run", "fit"), [("default", "wide"), ("wide", "wider")])
def test_the_hidden_votes_fit_on_the_phrasings_a_wider_set_adds_and_never_on_a_test_question(cache, run, fit):
    """--fit_phrasings: the extra prompts are the wider set's, in phrasings the run's set lacks (none is a phrasing
    the run holds out), on the run's training operands (none is a held-out operand pair of the test split); a set
    no wider than the run's is refused."""
    argv = ("--encoding", "binary", "--phrasings", run, "--train_size", "64", "--validation_size", "2")
    # the run's text, in its lines: none of it in the fit's prompts
    argv += ("--text_fraction", "0.2", "--text_continuation_fraction", "0.5", "--text_layout", "lines")
    _, data_args, _, training_args, spec, tokenizer, data = task(*argv, "--test_size", "32")
    beyond = beyond_phrasings(data_args, spec, tokenizer, training_args.seed, fit)
    wider = task_spec(dataclasses.replace(data_args, phrasings=fit)).templates
    flat = [phrasing for options in wider.values() for phrasing in options]
    phrasings = {flat[template] for template in beyond["template"]}
    assert len(beyond) > 32 and len(phrasings) > 32  # most of a wider set's prompts are in its new phrasings
    assert not phrasings & {phrasing for options in spec.templates.values() for phrasing in options}
    assert not {tuple(pair) for pair in beyond["operands"]} & {tuple(pair) for pair in data["test"]["operands"]}
    assert "input_ids" in beyond.column_names and min(beyond["answer_position"]) >= 0
    fitting = ("--selection_context", "4", "--selection_hidden_votes", "--fit_hidden_votes", "8")
    narrower = ("--encoding", "binary", "--phrasings", fit, *fitting, "--fit_phrasings", "wide")
    with pytest.raises(ArgumentError, match=f"--fit_phrasings wide: holds no phrasing that --phrasings {fit} lacks"):
        check_combinations(*arguments(*narrower)[:3])


def test_resume_compares_the_model_data_and_seed_only():
    base = settings(*arguments())
    assert resume_mismatches(base, settings(*arguments("--max_steps", "9", "--eval_steps", "3"))) == []
    assert resume_mismatches(base, settings(*arguments("--hidden_size", "64", "--seed", "2"))) == [
        "--hidden_size: 128 -> 64",
        "--seed: 0 -> 2",
        "--data_seed: 0 -> 2",
    ]
    assert set(RESUME_FIXED) >= {"model", "data", "computer", "seed"}
    older = json.loads(json.dumps(base))  # a run saved before --text_distillation_weight existed: its default
    del older["computer"]["text_distillation_weight"]
    assert resume_mismatches(older, base) == []
    assert resume_mismatches(older, settings(*arguments("--text_distillation_weight", "1"))) == [
        "--text_distillation_weight: 0.0 -> 1.0"
    ]


# ---------------------------------------------------------------------------------------------- data, recipes
def test_reversed_programs_swap_the_inputs_and_link_with_the_standard_ones():
    linked = link(library_sources(["sub", "div", "rsub", "rdiv"]))
    for name, expected in {"sub": 5, "div": 2, "rsub": (4 - 9) % 128, "rdiv": 0}.items():
        run = run_reference(linked.program, registers={1: 9, 2: 4}, entry=linked.entry_points[name])
        assert run.halted and run.state.registers[0] == expected, name
    with pytest.raises(ValueError, match="unknown program 'radd'"):
        library_sources(["radd"])


def test_parse_auto_copies_where_every_value_reads_back_from_its_tokens():
    one_token_each = [[100 + value] for value in range(12)]  # LLaMA-3: "0" .. "11" are tokens
    digit_tokens = [[100 + value] for value in range(10)] + [[101, 100], [101, 101]]  # SmolLM2: "1", "0"
    unreadable = [[100 + value] for value in range(10)] + [[101, 100], [101, 555]]  # 555 is no value's token
    swapped = [[100 + value] for value in range(10)] + [[100, 101], [101, 101]]  # "10" written as "0", "1"
    assert parse_kind("auto", one_token_each) == parse_kind("auto", digit_tokens) == "copy"
    assert parse_kind("auto", unreadable) == parse_kind("auto", swapped) == "linear"
    assert parse_kind("linear", one_token_each) == "linear" and parse_kind("copy", unreadable) == "copy"


def test_sort_runs_the_computer_before_every_number_of_the_answer(cache):
    """sort: the computer runs where the next token starts a number of the answer, with that number as its target;
    the parse targets (length, the number's index, the list) make `sort_select` compute it."""
    *_, spec, tokenizer, data = task(
        "--task", "sort", "--train_size", "8", "--validation_size", "2", "--test_size", "2", "--test_long_size", "4"
    )
    collator = AnswerCollator(tokenizer.pad_token_id, True, True, with_slot_targets=True)
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


def test_number_starts_are_the_training_positions_of_the_computer(cache):
    """predict runs the computer where training did (`add_number_positions`): before each number of a list."""
    *_, tokenizer, data = task(
        "--task", "sort", "--train_size", "8", "--validation_size", "2", "--test_size", "2", "--test_long_size", "4"
    )
    for row in data["test_long"]:
        start = row["answer_position"] + 1
        ids = [token for token in row["input_ids"] if token != tokenizer.eos_token_id]  # prompt + answer
        assert number_starts(tokenizer, ids, start) == row["number_positions"]


def test_parse_loss_is_the_parse_heads_cross_entropy_against_the_prompt_numbers(cache, tmp_path):
    """fibonacci: the parse targets are a, b and the depth as written; the loss adds their cross-entropy under the
    parse heads, times its weight, to the LM loss; a few steps on it make the parse read the prompt's numbers."""
    model_args, data_args, computer_args, _, spec, tokenizer, data = task(
        "--task", "fibonacci", "--train_size", "16", "--validation_size", "2", "--test_size", "2",
        "--test_long_size", "2", "--hidden_size", "32", "--heads", "2",
    )  # fmt: skip
    rows = list(data["train"])
    assert [row["slot_targets"] for row in rows] == [[[*row["operands"], row["depth"]]] for row in rows]
    torch.manual_seed(0)
    model = build_model(model_args, data_args, computer_args, spec, tokenizer)
    batch = AnswerCollator(tokenizer.pad_token_id, True, False, with_slot_targets=True)(rows)
    targets = batch["slot_targets"]  # (rows, slots)

    def parse_cross_entropy() -> torch.Tensor:
        with record_computer_runs() as runs:
            model(**{key: value for key, value in batch.items() if not key.startswith("slot_")})
        probs = runs[-1].input_probs  # (rows, slots, n)
        return -probs.gather(2, targets[..., None]).log().mean()

    parse_heads = [*model.computer.parse.parameters(), *model.computer.copy_parse.parameters()]  # linear + copy
    check_auxiliary_loss(model, batch, parse_heads, parse_cross_entropy, tmp_path)


def test_the_binary_parse_loss_is_the_bits_likelihood_of_the_written_numbers(cache, tmp_path):
    """--encoding binary: the parse targets are the numbers as written, signs included (ordinary-text rows have
    none); the loss adds −log P(slot = number), bits read as independent (`BinaryValues.nll`), times its weight; a
    few steps on it make the copy parse read the prompt's numbers."""
    model_args, data_args, computer_args, _, spec, tokenizer, data = task(
        "--encoding", "binary", "--text_fraction", "0.25", "--train_size", "24", "--validation_size", "2",
        "--test_size", "2", "--hidden_size", "32", "--heads", "2",
    )  # fmt: skip
    rows = list(data["train"])
    text = [row for row in rows if row["operation"] == "text"]
    asked = [row for row in rows if row["operation"] != "text"]
    assert text and all(row["slot_targets"] == row["slot_known"] == [] for row in text)
    assert all(row["slot_targets"] == [written_numbers(row["text"], signed=True)] for row in asked)
    assert all(row["slot_known"] == [[1, 1]] for row in asked) and min(min(r["slot_targets"][0]) for r in asked) < 0
    torch.manual_seed(0)
    model = build_model(model_args, data_args, computer_args, spec, tokenizer).train()  # trains where the mask says
    batch = AnswerCollator(tokenizer.pad_token_id, True, False, with_slot_targets=True)(rows)
    assert batch["slot_targets"].shape == (len(asked), 2) and batch["slot_known"].all()

    def parse_nll() -> torch.Tensor:
        with record_computer_runs() as runs:
            model(**{key: value for key, value in batch.items() if not key.startswith("slot_")})
        return model.computer.machine.values.nll(runs[-1].input_probs, batch["slot_targets"]).mean()

    check_auxiliary_loss(model, batch, list(model.computer.copy_parse.parameters()), parse_nll, tmp_path)
    model.eval()  # evaluation computes where the trigger fires: no parse loss, whatever the positions
    with torch.no_grad():
        for weight in (0.0, 1.0):
            arguments = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
            trainer = DCompTrainer(model=model, args=arguments, parse_loss_weight=weight)
            assert torch.isfinite(trainer.compute_loss(model, dict(batch)))


@pytest.mark.parametrize("task_name", ["arithmetic", "sort"])
def test_the_hidden_vote_loss_is_the_answer_likelihood_of_the_hidden_votes_alone(cache, tmp_path, task_name):
    """--hidden_vote_loss_weight: the selection's answer loss, −log Σ_k π_k [program k's answer = the answer], with π
    the softmax of the hidden-state votes alone; W_vote learns from it, for a number and for a whole list."""
    from library.training.recipes import initialise
    from library.training.trainer import right_lists

    model_args, data_args, computer_args, _, spec, tokenizer, data = task(
        "--task", task_name, "--encoding", "binary", "--selection_context", "8", "--selection_hidden_votes",
        "--hidden_vote_loss_weight", "1", "--train_size", "24", "--validation_size", "2", "--test_size", "2",
        "--test_long_size", "2", "--hidden_size", "32", "--heads", "2",
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(model_args, data_args, computer_args, spec, tokenizer).train()
    lists = task_name == "sort"
    collator = AnswerCollator(tokenizer.pad_token_id, True, with_targets=True, list_answers=lists)
    if lists:  # the count and the cells read right: the sort is right, a fold only for a list of one
        initialise(model, tokenizer, spec, data["train"], collator, computer_args, from_scratch=True)
    else:  # the operands read right: a program is right where its operation is the row's
        model.computer.copy_parse.init_ordinals({0: 0, 1: 1}, scale=30.0)
    batch = collator(list(data["train"]))
    inputs = {key: value for key, value in batch.items() if not key.startswith("computer_target")}

    def hidden_vote_nll() -> torch.Tensor:
        with record_computer_runs() as runs:
            model(**inputs)
        run, targets = runs[-1], batch["computer_targets"]
        if lists:
            right = right_lists(run, targets, batch["computer_target_lengths"], model)  # (rows, programs)
        else:
            right = model.computer.program_outputs(run) == targets[:, None]
        assert right.any(-1).all() and not right.all()
        return -(run.hidden_votes.softmax(-1) * right).sum(-1).log().mean()

    votes = model.computer.selection_hidden_votes
    weight = "hidden_vote_loss_weight"  # beside the answer loss, as train.py gives it
    check_auxiliary_loss(model, batch, [votes.weight], hidden_vote_nll, tmp_path, weight, 3e-2, answer_loss_weight=1)


def test_the_fitted_hidden_votes_pick_a_program_that_answers_the_prompts_they_were_fitted_on(cache):
    """--fit_hidden_votes: W_vote := a probe from the window's hidden states to the programs whose output on the
    prompt's operands is the answer; the selection of the hidden votes alone, run through the model, is that probe's:
    it picks a program that answers (the operation written, or its swapped twin where the operands come the other
    way) for the prompts it was fitted on, where the head at zero picks one for a quarter of them."""
    from library.training.recipes import init_hidden_votes_from_probe

    model_args, data_args, computer_args, _, spec, tokenizer, data = task(
        "--encoding", "binary", "--selection_context", "8", "--selection_hidden_votes", "--train_size", "48",
        "--validation_size", "2", "--test_size", "2", "--hidden_size", "32", "--heads", "2",
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(model_args, data_args, computer_args, spec, tokenizer)
    model.computer.copy_parse.init_ordinals({0: 0, 1: 1}, scale=30.0)  # the operands read right, for the check
    rows = data["train"].filter(lambda position: position >= 0, input_columns="answer_position")
    collator = AnswerCollator(tokenizer.pad_token_id, True, with_targets=True, with_slot_targets=True)

    def hidden_choice_answers() -> torch.Tensor:
        batch = collator(list(rows))
        with torch.no_grad(), record_computer_runs() as runs:
            model(batch["input_ids"], attention_mask=batch["attention_mask"], computer_mask=batch["computer_mask"])
        run = runs[-1]
        outputs = model.computer.program_outputs(run)  # (rows, programs)
        chosen = run.hidden_votes.argmax(-1, keepdim=True)
        return (outputs.gather(1, chosen)[:, 0] == batch["computer_targets"]).float().mean()

    assert hidden_choice_answers() < 0.5  # W_vote at 0: every program ties and the first one (add) is picked
    mode = model.training
    fitted = init_hidden_votes_from_probe(model, rows, collator)
    assert fitted >= 0.95 and model.training == mode  # the fit leaves the model's mode as it found it
    torch.testing.assert_close(hidden_choice_answers(), torch.tensor(fitted))
    raw = model.computer.selection_hidden_votes.weight.clone()
    standardised = init_hidden_votes_from_probe(model, rows, collator, standardised=True)  # --fit_standardised
    assert standardised >= 0.95 and not torch.allclose(model.computer.selection_hidden_votes.weight, raw)
    torch.testing.assert_close(hidden_choice_answers(), torch.tensor(standardised))
    unanswered = rows.map(lambda row: {"answer": row["answer"] + 10**6})  # no program gives these answers
    with pytest.raises(ValueError, match=r"no program of the library answers any of the 48 prompts from their"):
        init_hidden_votes_from_probe(model, unanswered, collator)


def test_the_calibration_scales_the_hidden_votes_by_the_factor_that_selects_right_most_often(cache):
    """calibrate_hidden_votes: where the token votes all vote for one program, the fitted hidden votes at ×1 are
    outvoted and the selection is right only where that program is; the factor that lets them speak is chosen, and
    W_vote is the fit times it. Where nothing else votes every factor selects alike, and the smallest (×1) is kept.
    Prompts with no answer (ordinary text) are skipped; a computer without hidden votes is refused."""
    from library.training.calibration import calibrate_hidden_votes
    from library.training.recipes import init_hidden_votes_from_probe

    model_args, data_args, computer_args, _, spec, tokenizer, data = task(
        "--encoding", "binary", "--selection_context", "8", "--selection_hidden_votes", "--train_size", "48",
        "--validation_size", "2", "--test_size", "2", "--hidden_size", "32", "--heads", "2", "--text_fraction", "0.2",
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(model_args, data_args, computer_args, spec, tokenizer)
    model.computer.copy_parse.init_ordinals({0: 0, 1: 1}, scale=30.0)  # the operands read right
    rows = list(data["train"])
    assert any(row["answer_position"] < 0 for row in rows)  # ordinary text among them: skipped
    collator = AnswerCollator(tokenizer.pad_token_id, True, with_targets=True, with_slot_targets=True)
    asked = [row for row in rows if row["answer_position"] >= 0]
    fitted_share = init_hidden_votes_from_probe(model, asked, collator)
    computer = model.computer
    with torch.no_grad():
        computer.select.weight.zero_()
        computer.selection_tokens.zero_()
    fitted = computer.selection_hidden_votes.weight.clone()
    scale, shares = calibrate_hidden_votes(model, rows, collator, scales=(1.0, 2.0))
    assert scale == 1.0 and shares[1.0] == shares[2.0] == pytest.approx(fitted_share)
    torch.testing.assert_close(computer.selection_hidden_votes.weight, fitted)

    with torch.no_grad():
        computer.selection_tokens[:, computer.program_names.index("mul")] = 1.0  # every window votes mul, loudly
    mode = model.training
    scale, shares = calibrate_hidden_votes(model, rows, collator, scales=(1.0, 1e3))
    assert shares[1.0] < 0.5 and shares[1e3] == pytest.approx(fitted_share) and scale == 1e3
    torch.testing.assert_close(computer.selection_hidden_votes.weight, fitted * 1e3)
    assert model.training == mode
    with pytest.raises(ValueError, match="no prompt with an answer to calibrate on"):
        calibrate_hidden_votes(model, [row for row in rows if row["answer_position"] < 0], collator)
    plain = arguments("--encoding", "binary", "--hidden_size", "32", "--heads", "2")[:3]
    unvoted = build_model(*plain, spec, tokenizer)
    with pytest.raises(ValueError, match="needs a computer with computer_selection_hidden_votes"):
        calibrate_hidden_votes(unvoted, asked, collator)


def test_the_calibration_reads_the_validation_split_and_phrasings_the_fit_did_not(cache):
    """calibration_rows: the validation split, then up to `count` prompts of the wider set after the `skip` the
    hidden votes' fit read, none in a phrasing those have; without a wider set, the validation split alone."""
    from library.training.calibration import calibration_rows

    argv = ("--encoding", "binary", "--train_size", "96", "--validation_size", "4", "--test_size", "8")
    _, data_args, _, training_args, spec, tokenizer, data = task(*argv)
    beyond = beyond_phrasings(data_args, spec, tokenizer, training_args.seed, "wide")
    rows = calibration_rows(data["validation"], beyond, skip=16, count=20)
    assert [row["text"] for row in rows[:4]] == data["validation"]["text"]
    read = set(beyond["template"][:16])
    extra = rows[4:]
    assert 0 < len(extra) <= 20 and not {row["template"] for row in extra} & read
    assert {row["text"] for row in extra} <= set(beyond["text"][16:])
    assert calibration_rows(data["validation"], None, skip=16, count=20) == list(data["validation"])
    with pytest.raises(ValueError, match="the prompts skipped and asked must be >= 0, got 16 and -1"):
        calibration_rows(data["validation"], beyond, skip=16, count=-1)


def test_the_standardised_selection_probe_reads_features_whatever_their_scale():
    """fit_selection_probe(standardised=True) fits on standardised features and folds the scale back: rescaling a
    feature by s rescales its weight by 1/s, so every choice stays as it was; the default fit, on the raw
    features, does not. Both pick a right program, also where two programs answer a row."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (96,), generator=generator)
    x = torch.randn(96, 5, generator=generator) + 4.0 * torch.nn.functional.one_hot(labels, 5).float()
    right = torch.nn.functional.one_hot(labels, 3).bool()
    right[:, 2] |= labels == 1  # program 2 also answers program 1's rows
    scale = torch.tensor([0.01, 1.0, 100.0, 0.1, 10.0])
    weight = fit_selection_probe(x, right, steps=200, standardised=True)
    rescaled = fit_selection_probe(x * scale, right, steps=200, standardised=True)
    torch.testing.assert_close(rescaled, weight / scale, rtol=1e-4, atol=1e-6)
    assert right.gather(1, (x @ weight.T).argmax(-1, keepdim=True)).float().mean() >= 0.95
    raw, raw_rescaled = fit_selection_probe(x, right, steps=200), fit_selection_probe(x * scale, right, steps=200)
    assert not torch.allclose(raw_rescaled, raw / scale, rtol=1e-2)  # the default fits the features as they come
    assert right.gather(1, (x @ raw.T).argmax(-1, keepdim=True)).float().mean() >= 0.95


def check_auxiliary_loss(
    model, batch: dict, parameters: list, nll, tmp_path, weight="parse_loss_weight", lr=1e-2, **fixed: float
) -> None:
    """The trainer's loss `weight` (an argument of DCompTrainer; the others `fixed`) adds its value times `nll()` to
    the loss, and 20 Adam steps (`lr`) on the loss over `parameters` (the heads it trains) halve `nll()`."""

    def trainer(value: float):
        arguments = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
        return DCompTrainer(model=model, args=arguments, **fixed, **{weight: value})

    with torch.no_grad():
        without = trainer(0.0).compute_loss(model, dict(batch))
        with_loss = trainer(2.0).compute_loss(model, dict(batch))
        before = nll()
    torch.testing.assert_close(with_loss - without, 2.0 * before, rtol=1e-4, atol=1e-4)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    for _ in range(20):
        optimizer.zero_grad()
        trainer(1.0).compute_loss(model, dict(batch)).backward()
        optimizer.step()
    with torch.no_grad():
        assert nll() < 0.5 * before


@pytest.mark.parametrize(
    ("task_name", "copying", "extra"),
    [
        ("fibonacci", {0: 0, 1: 1, 2: 2}, ()),  # a, b, depth as written
        ("fibonacci", {0: 2, 1: 1, 2: 0}, ("--copy_from_end",)),  # the same, counted back from the answer
        ("sort", {2: 0, 3: 1, 4: 2, 5: 3}, ()),  # cells; not length, index
    ],
)
def test_copy_parse_prior_points_each_slot_at_the_number_it_reads(cache, task_name, copying, extra):
    model_args, data_args, computer_args, _, spec, tokenizer, data = task(
        "--task", task_name, "--parse", "copy", "--train_size", "32", "--validation_size", "2", "--test_size", "2",
        "--test_long_size", "2", "--hidden_size", "32", "--heads", "2", *extra,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(model_args, data_args, computer_args, spec, tokenizer)
    assert init_copy_parse(model, spec, data["train"]["text"], scale=5.0) == copying
    by_ordinal = model.config.computer_copy_from_end  # the pointer by ordinal alone: no hidden-state part, frozen
    for weight in (model.computer.copy_parse.query.weight, model.computer.copy_parse.key.weight):
        assert bool((weight == 0).all()) == by_ordinal and weight.requires_grad != by_ordinal
    rows = list(data["train"])
    batch = AnswerCollator(tokenizer.pad_token_id, True, False, with_slot_targets=True)(rows)
    with torch.no_grad(), record_computer_runs() as runs:
        model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], computer_mask=batch["computer_mask"]
        )
    parsed = torch.cat([runs[0].input_probs, runs[0].memory_probs], dim=1).argmax(-1)  # (positions, slots)
    slots = list(copying)
    targets = batch["slot_targets"][:, slots]
    labelled = targets >= 0
    assert (parsed[:, slots] == targets)[labelled].float().mean() > 0.95  # right from step 0, before any training


def test_isolated_gradients_route_the_lm_loss_to_the_read_out_and_the_answer_loss_to_the_heads():
    """`isolate_gradients` leaves the forward values alone; the LM loss then reaches only the read-out, a loss on
    the recorded output register reaches the selection/parse heads and the base."""
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
    distribution_cross_entropy(register, torch.full((len(register),), 3)).backward()
    assert computer.parse.weight.grad.abs().sum() > 0 and computer.select.weight.grad.abs().sum() > 0
    assert not torch.equal(base.grad, from_lm_loss)  # the answer loss reaches the base through the heads


def test_digit_classes_and_the_cross_entropy_of_distributions():
    classes = digit_classes(torch.tensor([0, 7, 42, 127]), 128)  # units, tens, hundreds (10 columns each), length
    assert classes.tolist() == [[0, 10, 20, 30], [7, 10, 20, 30], [2, 14, 20, 31], [7, 12, 21, 32]]
    probs = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]]])  # (1, 2 slots, n = 3)
    loss = distribution_cross_entropy(probs, torch.tensor([[0, -100]]))  # the second slot ignored
    assert torch.allclose(loss, torch.tensor(0.5).log().neg())
    assert torch.allclose(
        distribution_cross_entropy(probs[0], torch.tensor([1, 2])),
        -(torch.tensor(0.5).log() + torch.tensor(0.75).log()) / 2,
    )
    nll = value_nll(probs, torch.tensor([[1, -100]]))  # per item, 0 where ignored
    assert nll.shape == (1, 2) and torch.allclose(nll, torch.tensor([[-torch.tensor(0.5).log(), 0.0]]))


# ------------------------------------------------------------------------------------------------ the trainer
def test_parameter_groups_split_the_model_by_part_with_one_rate_each():
    model = tiny_model()
    rates = {"layers": 1.0, "embeddings": 2.0, "computer": 3.0, "parse": 4.0}
    groups = {group["name"]: group for group in model.parameter_groups(rates)}
    assert list(groups) == ["computer", "embeddings", "layers", "parse"]
    ids = {name: {id(p) for p in group["params"]} for name, group in groups.items()}
    computer = model.computer
    assert ids["parse"] == {id(computer.parse.weight)}
    assert {id(computer.gate), id(computer.select.weight), id(computer.norm.weight)} <= ids["computer"]
    assert {id(computer.output_proj.weight), id(model.lm_head.weight), id(model.model.norm.weight)} <= ids["embeddings"]
    assert all(group["lr"] == rates[name] for name, group in groups.items())
    assert sum(len(group) for group in ids.values()) == sum(1 for p in model.parameters() if p.requires_grad)
    model.computer.gate.requires_grad_(False)
    assert id(computer.gate) not in {id(p) for group in model.parameter_groups(rates) for p in group["params"]}
    plain = model.model.layers[0]  # any module: grouped by name, so the plain Llama baseline works too
    assert {group["name"] for group in LlamaDCompPreTrainedModel.parameter_groups(plain, rates)} == {"layers"}


def test_a_saved_folder_holds_the_code_the_run_is_running_not_the_code_on_disk(tmp_path, monkeypatch):
    """save_pretrained copies the code files from disk; a checkout edited during a run must not reach its folder."""
    import library.training.trainer as trainer_module

    saved = tiny_model().save_pretrained  # what save_pretrained copies: the snapshot covers exactly those files
    saved(tmp_path / "plain")
    assert set(RUNNING_CODE) == {path.name for path in (tmp_path / "plain").glob("*.py")}
    assert RUNNING_CODE["dcomp_isa.py"] == (REPO / "dcomp_isa.py").read_bytes()  # the source as imported
    running = dict(RUNNING_CODE, **{"dcomp_isa.py": RUNNING_CODE["dcomp_isa.py"] + b"# the running version\n"})
    monkeypatch.setattr(trainer_module, "RUNNING_CODE", running)  # the disk's copy is now the edited "other" one
    args = TrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True, report_to=[])
    DCompTrainer(model=tiny_model(), args=args).save_model()
    assert {name: (tmp_path / "run" / name).read_bytes() for name in running} == running


def test_a_non_finite_loss_or_weight_stops_training(tmp_path):
    model = tiny_model().train()
    trainer = DCompTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]))
    ids = random_ids(2, 6)
    batch = {"input_ids": ids, "labels": ids}
    assert math.isfinite(float(trainer.compute_loss(model, dict(batch)).detach()))
    TrainingGuard._check(model, 3, str(tmp_path))
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(TrainingError, match="training stopped at step 1: the loss is nan"):
        trainer.compute_loss(model, dict(batch))
    with pytest.raises(TrainingError, match="step 3: parameter lm_head.weight holds non-finite values"):
        TrainingGuard._check(model, 3, str(tmp_path))


def test_the_last_complete_checkpoint_skips_a_partial_or_torn_one(tmp_path):
    def checkpoint(step: int, state: str | None) -> None:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state)

    assert last_complete_checkpoint(tmp_path) is None
    checkpoint(4, json.dumps({"global_step": 4}))
    checkpoint(8, json.dumps({"global_step": 8}))
    checkpoint(12, None)  # killed before the trainer state
    checkpoint(16, '{"global_st')  # killed while writing it
    checkpoint(20, json.dumps({"global_step": 4}))  # not this checkpoint's state
    (tmp_path / "checkpoint-x").mkdir()
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-8"


def _hold_lock(folder, ready, release):
    with output_lock(folder):
        ready.set()
        release.wait(30)


def test_the_output_lock_refuses_a_second_run_and_names_its_pid(tmp_path):
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(tmp_path, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        refused = pytest.raises(TrainingError, match=f"another train.py run \\(pid {holder.pid}\\) is writing to")
        with refused, output_lock(tmp_path):
            pass
    finally:
        release.set()
        holder.join(30)
    with output_lock(tmp_path):  # released when its holder ended
        assert (tmp_path / "_train.lock").read_text() == str(os.getpid())


@pytest.mark.parametrize("with_computer", [True, False])  # LoRA + computer, and the --no_computer arm
def test_text_distillation_is_the_kl_from_the_base_llama_on_the_text_rows_alone(with_computer, tmp_path):
    """--text_distillation_weight: the collator keeps every logit of a row with no label (ordinary text) and marks
    it; the loss adds w · KL(base || model) there, the base being the PEFT model with its adapters off and the
    computer (if any) nowhere — the original Llama. Zero while the adapters are the identity; gradients reach them."""
    from model_fixtures import tiny_llama
    from peft import LoraConfig, get_peft_model

    ids = random_ids(2, 7).tolist()
    text = {"input_ids": ids[0], "attention_mask": [1] * 7, "labels": [-100] * 7, "answer_position": -1}
    answered = {"input_ids": ids[1][:5], "attention_mask": [1] * 5, "labels": [-100] * 4 + [ids[1][4]]}
    collate = AnswerCollator(0, with_computer, with_targets=False, text_logits=True)
    batch = collate([text, answered | {"answer_position": 3}])
    assert batch["text_rows"].tolist() == [True, False]
    assert batch["logits_to_keep"].sum(1).tolist() == [7, 1] and (batch["shift_labels"][:7] == -100).all()
    assert AnswerCollator(0, True, with_targets=False)([text]).get("text_rows") is None

    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    model = get_peft_model(tiny_model() if with_computer else tiny_llama(0), lora).train()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer, plain = (DCompTrainer(model=model, args=args, text_distillation_weight=w) for w in (2.0, 0.0))
    assert float((trainer.compute_loss(model, dict(batch)) - plain.compute_loss(model, dict(batch))).detach()) == 0.0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    reference = tiny_llama(0)(torch.tensor([ids[0]])).logits[0]  # (7, vocab): the Llama the model was made from
    nowhere = {"computer_mask": torch.zeros(1, 7, dtype=torch.bool)} if with_computer else {}  # the text row's
    ours = model(input_ids=torch.tensor([ids[0]]), **nowhere).logits[0]
    expected = distillation_kl(reference, ours)
    assert float(expected.detach()) > 1e-4
    loss = trainer.compute_loss(model, dict(batch))
    difference = (loss - plain.compute_loss(model, dict(batch))).detach()
    assert float(difference) == pytest.approx(2 * float(expected.detach()), rel=1e-4)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_A" in n)


@pytest.mark.parametrize("argv", [["--lora"], ["--encoding", "binary", "--text_fraction", "0.2"]])
def test_text_distillation_needs_adapters_and_ordinary_text(argv, tmp_path):
    import train

    with pytest.raises(SystemExit, match="--text_distillation_weight: .* needs --lora and --text_fraction > 0"):
        train.main(["--output_dir", str(tmp_path / "run"), "--text_distillation_weight", "1", *argv])


COMPUTER_PARTS = [
    ("--parse_loss_weight", "supervises the computer's parse"),
    ("--trigger_positive_weight", "weighs the token read-out's trigger"),
    ("--trigger_text_weight", "weighs the token read-out's trigger"),
    ("--selection_context", "adds token votes to the selection of the token read-out's computer"),
    ("--trigger_context", "adds token logits to the trigger of the token read-out's computer"),
    ("--trigger_numbers", "counts numbers for the trigger of the token read-out's computer"),
]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--trigger_context", "0"], "--trigger_context 0: a list task's trigger reads the token ids alone"),
        (["--trigger_dropout", "0.5"], "--trigger_dropout: a list task's trigger reads the token ids alone"),
        (["--copy_from_end"], "--copy_from_end: a list's k-th element is the k-th number from the start"),
        (["--copy_from_end", "--parse", "linear"], "--copy_from_end: orders the copy parse's ordinals, and --parse"),
    ],
)
def test_a_list_trigger_without_its_token_context_is_refused(tmp_path, extra, message):
    """The list task's trigger reads the token ids alone (its hidden-state weights stay 0): with k = 0 it would
    never fire, and with its token logits dropped and weighed 1 − p it would be silenced. Its copy prior points
    cell k at the k-th number from the start, and a linear parse has no ordinals to order."""
    import train

    argv = ["--output_dir", str(tmp_path / "run"), "--encoding", "binary", "--task", "sort", *extra]
    with pytest.raises(SystemExit, match=message):
        train.main(argv)


@pytest.mark.parametrize(
    ("argv", "context", "dropout", "numbers"),
    [
        ((), 0, 0.0, 0),
        (("--trigger_context", "3"), 3, 0.0, 0),
        (("--trigger_context", "3", "--trigger_dropout", "0.25"), 3, 0.25, 0),
        (("--trigger_numbers", "24", "--lead_token"), 0, 0.0, 24),
    ],
)
def test_the_trigger_reads_the_token_context_it_is_given(argv, context, dropout, numbers):
    model_args, data_args, computer_args, _ = arguments("--encoding", "binary", *argv)
    spec = task_spec(data_args, computer_args.reversed_programs)
    model = build_model(model_args, data_args, computer_args, spec, build_tokenizer(model_args))
    assert model.config.computer_trigger_context == context
    assert model.config.computer_trigger_dropout == dropout
    assert model.config.computer_trigger_numbers == numbers
    assert (model.computer.trigger_tokens is None) == (context == 0)
    assert (model.computer.trigger_numbers is None) == (model.computer.lead_numbers is None) == (numbers == 0)


def test_the_lead_head_learns_where_the_space_before_an_answer_comes_next():
    """Its targets: the position before an answer position that holds the space, whether the model writes that
    space (labelled) or the prompt does; none before an answer that starts after another token (chat, a line
    break) or in a row without an answer."""
    space = 7
    answer_positions = torch.zeros(4, 6, dtype=torch.bool)
    answer_positions[0, 3] = answer_positions[1, 3] = answer_positions[2, 3] = True
    input_ids = torch.full((4, 6), 5)
    input_ids[0, 3] = input_ids[1, 3] = space  # the model writes it (labelled) / the prompt ends with it
    assert lead_positions(answer_positions, input_ids, space).nonzero().tolist() == [[0, 2], [1, 2]]


@pytest.mark.parametrize("adapters", [[], ["--lora"]])
def test_vote_completion_runs_after_training_and_is_in_the_saved_model(cache, tmp_path, adapters):
    """--vote_completion_margin: after the last step, tokens that never voted take predicted votes (counted in
    run_summary.json); the checkpoint written before it has them at 0, the saved model does not. With LoRA, the
    trained copy of the computer is completed, not PEFT's untrained original (whose votes are all 0)."""
    import json

    from safetensors.torch import load_file

    import train

    out = tmp_path / "run"
    argv = [
        "--output_dir", str(out), "--encoding", "binary", "--selection_context", "8",
        "--vote_completion_margin", "0.01", "--train_size", "32", "--validation_size", "2", "--test_size", "2",
        "--max_steps", "2", "--save_steps", "2", "--report_to", "none", *adapters,
    ]  # fmt: skip
    train.main(argv)  # two steps move a vote by about 0.2 logits: hence the small margin
    completed = json.loads((out / "run_summary.json").read_text())["completed_votes"]

    def voting(weights: Path) -> int:  # a LoRA checkpoint holds the adapters and the computer's trained copy
        (votes,) = [tensor for name, tensor in load_file(weights).items() if name.endswith("selection_tokens")]
        return int((votes.abs().sum(1) > 0).sum())

    before = voting(out / "checkpoint-2" / ("adapter_model.safetensors" if adapters else "model.safetensors"))
    assert completed > 0 and voting(out / "model.safetensors") == before + completed
    with pytest.raises(SystemExit):
        arguments("--encoding", "binary", "--vote_completion_margin", "2")


def test_the_lead_token_is_the_space_and_needs_the_token_read_out(tmp_path):
    import train

    argv = ("--encoding", "binary", "--lead_token", "--ending_fraction", "0.3")
    model_args, data_args, computer_args, _ = arguments(*argv)
    spec = task_spec(data_args, computer_args.reversed_programs)
    tokenizer = build_tokenizer(model_args)
    model = build_model(model_args, data_args, computer_args, spec, tokenizer)
    assert model.config.computer_lead_token_id == tokenizer(" ", add_special_tokens=False)["input_ids"][-1]
    assert tokenizer.decode([model.config.computer_lead_minus_token_id]) == " -"
    assert model.computer.lead is not None
    with pytest.raises(SystemExit, match="--lead_token: adds a lead head .*, and --encoding unit has none"):
        train.main(["--output_dir", str(tmp_path / "run"), "--lead_token"])


@pytest.mark.parametrize(("flag", "window"), [((), None), (("--own_text_window", "2"), 2)])
def test_the_own_text_window_is_the_saved_policy_and_needs_the_token_read_out(tmp_path, capsys, flag, window):
    import train

    model_args, data_args, computer_args, _ = arguments("--encoding", "binary", *flag)
    spec = task_spec(data_args, computer_args.reversed_programs)
    model = build_model(model_args, data_args, computer_args, spec, build_tokenizer(model_args))
    assert model.config.computer_own_text_window == model.computer.own_text_window == window
    if flag:
        with pytest.raises(SystemExit, match="--own_text_window: is where .*, and --encoding unit has none"):
            train.main(["--output_dir", str(tmp_path / "run"), *flag])
        with pytest.raises(SystemExit):
            arguments("--encoding", "binary", "--own_text_window", "-1")
        assert "--own_text_window: must be >= 0, got -1" in capsys.readouterr().err


@pytest.mark.parametrize("flag, message", COMPUTER_PARTS)
def test_the_computer_settings_need_the_computer(tmp_path, flag, message):
    import train

    with pytest.raises(SystemExit, match=f"{flag}: {message}, and --no_computer has none"):
        train.main(["--output_dir", str(tmp_path / "run"), flag, "2", "--no_computer"])


@pytest.mark.parametrize(
    "argv",
    [
        ("--copy_from_end",),
        ("--copy_from_end", "--parse_init_scale", "0"),
        ("--task", "sort", "--test_long_size", "2"),
        ("--selection_context", "8", "--selection_hidden_votes", "--fit_hidden_votes", "8"),
    ],
)
def test_what_a_resumed_run_freezes_is_what_the_recipe_froze(cache, argv):
    """`fixed_by_the_recipe` (what train.py freezes on the fresh and the resumed path alike) names exactly the
    parameters `initialise` froze, and the fitted hidden-vote head that train.py keeps fixed: a recipe that freezes
    something new fails here until the resumed path freezes it too."""
    from library.training.recipes import fixed_by_the_recipe, initialise

    model_args, data_args, computer_args, _, spec, tokenizer, data = task(
        "--encoding", "binary", "--train_size", "16", "--validation_size", "2", "--test_size", "2",
        "--hidden_size", "32", "--heads", "2", *argv,
    )  # fmt: skip
    model = build_model(model_args, data_args, computer_args, spec, tokenizer)
    collator = AnswerCollator(tokenizer.pad_token_id, True, True, list_answers=spec.count_register >= 0)
    initialise(model, tokenizer, spec, data["train"], collator, computer_args, from_scratch=True)
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    if computer_args.fit_hidden_votes:
        frozen.add("model.layers.1.computer.selection_hidden_votes.weight")
    fixed = {names[id(parameter)] for parameter in fixed_by_the_recipe(model, spec, computer_args)}
    assert fixed == frozen and (fixed == set()) == ("--parse_init_scale" in argv)


def test_lora_keeps_the_weights_the_recipe_froze_frozen():
    """PEFT trains a full copy of the computer (`modules_to_save`); the pointer's hidden-state weights that
    `point_by_ordinal_alone` froze stay frozen in it, and the rest of the copy trains."""
    from test_readout import calculator, smollm2_tokenizer

    from library.training.models import add_lora
    from library.training.recipes import point_by_ordinal_alone

    model = calculator(smollm2_tokenizer(), "add", computer_copy_from_end=True)
    point_by_ordinal_alone(model.computer.copy_parse)
    trainable = {
        name: p.requires_grad for name, p in add_lora(model, 4).named_parameters() if ".modules_to_save." in name
    }
    frozen = {name for name, grad in trainable.items() if not grad}
    assert frozen and all(name.endswith(("copy_parse.query.weight", "copy_parse.key.weight")) for name in frozen)
    assert any(name.endswith("copy_parse.query.bias") and grad for name, grad in trainable.items())


def test_ordinals_from_the_end_need_the_computer(tmp_path):
    import train

    with pytest.raises(SystemExit, match="--copy_from_end: orders the copy parse's ordinals, and --no_computer has"):
        train.main(["--output_dir", str(tmp_path / "run"), "--copy_from_end", "--no_computer"])


@pytest.mark.parametrize("flag, message", COMPUTER_PARTS[1:])
def test_the_token_read_out_settings_need_the_binary_machine(tmp_path, flag, message):
    """The unit machine adds its output to the residual stream: it has no trigger and no token votes, so these
    settings would be ignored there."""
    import train

    with pytest.raises(SystemExit, match=f"{flag}: {message}, and --encoding unit has none"):
        train.main(["--output_dir", str(tmp_path / "run"), flag, "2", "--encoding", "unit"])


def test_the_trigger_loss_weighs_its_positives():
    """pos_weight w: −w·log σ(x) at an answer start, −log(1 − σ(x)) elsewhere, averaged over non-padding positions;
    a miss then costs w times as much, and padding costs nothing."""
    from library.training.trainer import trigger_loss

    logits = torch.tensor([[-1.0, 2.0, 0.5, 3.0]], requires_grad=True)
    starts = torch.tensor([[0, 0, 1, 0]])
    attention = torch.tensor([[1, 1, 1, 0]])  # the last position is padding
    log_sigmoid = torch.nn.functional.logsigmoid
    expected = -(log_sigmoid(-logits[0, 0]) + log_sigmoid(-logits[0, 1]) + 4 * log_sigmoid(logits[0, 2])) / 3
    loss = trigger_loss(logits, starts, attention, positive_weight=4.0)
    assert torch.allclose(loss, expected)
    (grad,) = torch.autograd.grad(loss, logits)
    plain = torch.autograd.grad(trigger_loss(logits, starts, attention), logits)[0]
    assert torch.allclose(grad[0, 2], 4 * plain[0, 2]) and torch.allclose(grad[0, :2], plain[0, :2])
    assert grad[0, 3] == 0


def test_the_trigger_loss_weighs_whole_rows():
    """Row weights (the trainer's `--trigger_text_weight` on rows with no answer) scale every position of their row,
    positives included, and the mean still runs over every non-padding position."""
    from library.training.trainer import text_row_weights, trigger_loss

    logits = torch.tensor([[-1.0, 2.0, 0.5], [0.3, -0.2, 1.0]], requires_grad=True)
    starts = torch.tensor([[0, 0, 1], [0, 0, 0]])  # a question, then ordinary text
    attention = torch.ones(2, 3)
    per_row = torch.tensor([1.0, 3.0])
    weighted = trigger_loss(logits, starts, attention, positive_weight=2.0, row_weights=per_row)
    (grad,) = torch.autograd.grad(weighted, logits)
    plain = torch.autograd.grad(trigger_loss(logits, starts, attention, positive_weight=2.0), logits)[0]
    assert torch.allclose(grad[0], plain[0]) and torch.allclose(grad[1], 3 * plain[1])
    ones = trigger_loss(logits, starts, attention, 2.0, torch.ones(2))
    assert torch.allclose(ones, trigger_loss(logits, starts, attention, 2.0))
    assert text_row_weights(starts, 3.0).tolist() == per_row.tolist()  # the row with no answer is text


def test_distillation_kl_is_zero_only_where_the_distributions_agree():
    logits = torch.randn(5, 11)
    assert float(distillation_kl(logits, logits + 3.0)) == pytest.approx(0.0, abs=1e-6)  # a shift: same softmax
    other = torch.randn(5, 11)
    p, q = logits.softmax(-1), other.softmax(-1)
    assert float(distillation_kl(logits, other)) == pytest.approx(float((p * (p / q).log()).sum(-1).mean()), rel=1e-5)


# ------------------------------------------------------------------------------ the binary machine's recipe
def test_binary_encoding_is_for_arithmetic_and_lists(capsys):
    with pytest.raises(SystemExit):
        parse_arguments(["--encoding", "binary", "--task", "fibonacci"])
    assert "--encoding: the binary machine is wired into train.py for --task arithmetic, sort, max and min" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        parse_arguments(["--task", "min"])
    assert "min of a list needs --encoding binary" in capsys.readouterr().err


def test_the_binary_list_task_computes_once_with_the_count_and_a_copy_of_every_cell(cache):
    """--task sort --encoding binary (issue 13): one computation at the answer position, the whole list as its
    target; the model counts the numbers into r1, cell k copies the k-th number (all 16 cells, not only the
    training lengths'), and its answer loss is the likelihood of the whole list."""
    from library.training.losses import selection_nll
    from library.training.recipes import initialise
    from library.training.trainer import right_lists

    model_args, data_args, computer_args, _, spec, tokenizer, data = task(
        "--task", "sort", "--encoding", "binary", "--train_size", "8", "--validation_size", "2", "--test_size", "2",
        "--test_long_size", "24", "--hidden_size", "32", "--heads", "2",
    )  # fmt: skip
    assert spec.count_register == 1 and spec.memory_inputs == 16 and "format" in data["test_long"].column_names
    assert set(data["test_long"]["length"]) <= set(range(5, 17)) and set(data["train"]["length"]) <= {2, 3, 4}
    model = build_model(model_args, data_args, computer_args, spec, tokenizer)
    config = model.config
    assert config.library_list_programs == ["sort"] and config.library_count_register == 1
    assert tokenizer.decode(config.computer_list_separator_ids) == ", "
    collator = AnswerCollator(tokenizer.pad_token_id, True, True, list_answers=True)
    found = initialise(model, tokenizer, spec, data["train"], collator, computer_args, from_scratch=True)
    assert found["copying"] == {1 + k: k for k in range(16)}
    rows = list(data["test_long"])
    batch = collator(rows)
    assert batch["computer_mask"].sum(1).tolist() == [1] * len(rows)
    assert batch["computer_target_lengths"].tolist() == [row["length"] for row in rows]
    with record_computer_runs() as runs, torch.no_grad():
        model(**{key: batch[key] for key in ("input_ids", "attention_mask", "computer_mask")})
    answers, lengths = model.computer.program_answers(runs[-1])
    for row, answer, length in zip(rows, answers[:, 0].tolist(), lengths[:, 0].tolist()):
        assert answer[:length] == row["answer"]  # every length up to 16, read and sorted before any training
    targets, target_lengths = batch["computer_targets"], batch["computer_target_lengths"]
    probs = runs[-1].program_probs[:, 0]
    assert torch.allclose(
        selection_nll(runs[-1].program_probs, right_lists(runs[-1], targets, target_lengths, model)),
        -probs.log().mean(),
    )


def test_selection_nll_is_the_exact_likelihood_of_the_answer_over_the_programs():
    """p(answer) = Σ_k π_k [program k's output = answer]: every program runs on the parsed inputs."""
    from test_readout import calculator, last_token_mask

    from library.tokenizer import llama3_tokenizer
    from library.training.losses import selection_nll
    from library.training.trainer import right_programs, trigger_loss

    tokenizer = llama3_tokenizer()
    model = calculator(tokenizer, "add")
    from library.install import install_library

    install_library(model, ["add", "sub", "mul"])
    model.computer.copy_parse.init_ordinals({0: 0, 1: 1}, scale=30.0)
    tokenizer.padding_side = "left"  # the last column is each prompt's last token
    try:
        inputs = tokenizer(["Take 30000 and -4. ", "Take 7 and 8. "], return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = "right"
    with record_computer_runs() as runs:
        model(**inputs, computer_mask=last_token_mask(inputs.attention_mask))
    run = runs[-1]
    outputs = model.computer.program_outputs(run)
    assert outputs.tolist() == [[29996, 30004, -120000], [15, -1, 56]]
    targets = torch.tensor([30004, 56])  # sub, then mul
    expected = -(run.program_probs[0, 1].log() + run.program_probs[1, 2].log()) / 2
    right = right_programs(run, targets, model)
    assert right.tolist() == [[False, True, False], [False, False, True]]
    assert torch.allclose(selection_nll(run.program_probs, right), expected)
    logits = torch.tensor([[10.0, -10.0], [-10.0, 10.0]])
    assert float(trigger_loss(logits, torch.tensor([[1, 0], [0, 1]]), torch.ones(2, 2))) < 1e-3


def test_ordinary_text_rows_train_only_the_trigger(cache):
    """--text_fraction mixes in docstring paragraphs with no label and no computing position: the collator gives
    them an empty computer_mask row and no answer target, and the copy-parse prior ignores them."""
    from library.training.data import computing_positions

    *_, computer_args, _training_args, spec, tokenizer, data = task(
        "--encoding", "binary", "--text_fraction", "0.25", "--train_size", "60", "--validation_size", "4",
        "--test_size", "4",
    )  # fmt: skip
    train = data["train"]
    text_rows = [row for row in train if row["operation"] == "text"]
    assert len(train) == 80 and len(text_rows) == 20
    assert all(row["answer_position"] == -1 and set(row["labels"]) == {-100} for row in text_rows)
    assert all(computing_positions(row) == [] for row in text_rows)
    assert all(len(row["input_ids"]) <= 96 for row in text_rows) and "text" not in data["test"]["operation"]
    rows = [text_rows[0], next(row for row in train if row["operation"] != "text"), text_rows[1]]
    batch = AnswerCollator(tokenizer.pad_token_id, True, with_targets=True)(rows)
    assert batch["computer_mask"].sum(1).tolist() == [0, 1, 0]
    assert batch["computer_targets"].tolist() == [rows[1]["answer"]]
    assert (batch["logits_to_keep"][[0, 2]] == 0).all()
    model = build_model(*arguments("--encoding", "binary")[:3], spec, tokenizer)
    from library.training.recipes import initialise

    found = initialise(model, tokenizer, spec, train, None, computer_args, from_scratch=True)
    assert found["copying"] == {0: 0, 1: 1}  # not diluted by the numbers of the docstrings


def test_ordinary_text_rows_in_their_lines(cache):
    """--text_layout lines: the ordinary-text rows are docstring paragraphs laid out in their lines as written (a
    code example's lines, a numbered list's items), where the collapsed rows are one line each; the questions are
    the same."""
    arguments = ("--encoding", "binary", "--text_fraction", "0.25", "--train_size", "60", "--validation_size", "4")
    *_, tokenizer, collapsed = task(*arguments, "--test_size", "4")
    *_, lined = task(*arguments, "--test_size", "4", "--text_layout", "lines")
    texts = {name: [row["text"] for row in data["train"] if row["operation"] == "text"]
             for name, data in (("collapsed", collapsed), ("lines", lined))}  # fmt: skip
    assert len(texts["lines"]) == len(texts["collapsed"]) == 20
    assert not any("\n" in text for text in texts["collapsed"]) and all("\n" in text for text in texts["lines"])
    assert [row for row in lined["train"] if row["operation"] != "text"] == [
        row for row in collapsed["train"] if row["operation"] != "text"
    ]
    newline = tokenizer("a\nb", add_special_tokens=False)["input_ids"][1]
    assert any(newline in row["input_ids"] for row in lined["train"] if row["operation"] == "text")


def test_continued_text_rows_are_the_untrained_models_greedy_continuations(cache):
    """--text_continuation_fraction: that share of the ordinary-text rows is a prefix of the docstring and the
    untrained model's greedy continuation (the text generate() writes), still with no label and no computing
    position; the other rows are untouched."""
    from library.training.data import continue_ordinary_text

    model_args, data_args, computer_args, _, spec, tokenizer, data = task(
        "--encoding", "binary", "--text_fraction", "0.25", "--train_size", "60", "--validation_size", "4",
        "--test_size", "4",
    )  # fmt: skip
    model = build_model(model_args, data_args, computer_args, spec, tokenizer).train()
    train = data["train"]
    continued = continue_ordinary_text(train, model, tokenizer, 0.5, seed=0, new_tokens=6, batch_size=4)
    assert model.training  # its mode is given back
    changed = [i for i in range(len(train)) if continued[i]["input_ids"] != train[i]["input_ids"]]
    assert len(continued) == len(train) and len(changed) == 10  # half of the 20 text rows
    assert all(train[i]["operation"] == "text" for i in changed)
    for i in changed:
        row, original = continued[i], train[i]["input_ids"]
        prefix = next(k for k in range(len(row["input_ids"]) + 1) if row["input_ids"][:k] != original[:k]) - 1
        assert 16 <= prefix <= 48 and len(row["input_ids"]) <= prefix + 6
        assert set(row["labels"]) == {-100} and len(row["labels"]) == len(row["input_ids"])
        assert row["answer_position"] == -1
        assert row["text"] == tokenizer.decode(row["input_ids"], skip_special_tokens=True)
    row = continued[changed[0]]["input_ids"]
    for length in range(16, 49):  # the continuation of some prefix length is the model's own, row by row
        prompt = torch.tensor([row[:length]])
        with torch.no_grad():
            alone = model.generate(input_ids=prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)[0].tolist()
        if alone[: len(row)] == row:
            break
    else:
        pytest.fail("no prefix of the continued row continues greedily into it")
    with pytest.raises(SystemExit):
        arguments("--encoding", "binary", "--text_continuation_fraction", "0.5")


def test_other_prompt_endings_are_in_the_training_rows_alone(cache):
    """--ending_fraction: some plain training prompts end otherwise (the model then writes the space before the
    answer, a labelled token); every test split asks as train.py writes prompts, "text " or the chat template."""
    *_, tokenizer, data = task(
        "--encoding", "binary", "--ending_fraction", "0.5", "--train_size", "60", "--validation_size", "4",
        "--test_size", "8",
    )  # fmt: skip

    def ends_with_the_space(row: dict) -> bool:
        prompt = row["input_ids"][: row["answer_position"] + 1]
        return prompt == tokenizer(row["text"] + " ")["input_ids"] and row["labels"][len(prompt) - 1] == -100

    assert 10 <= sum(not ends_with_the_space(row) for row in data["train"]) <= 50
    assert all(ends_with_the_space(row) for name in ("validation", "test", "test_pairs") for row in data[name])
    *_, wide = task(
        "--encoding", "binary", "--ending_fraction", "0.5", "--endings", "wide", "--train_size", "60",
        "--validation_size", "4", "--test_size", "8",
    )  # fmt: skip
    frames = {ending.format(text=row["text"]) for row in wide["train"] for ending in WIDE_ENDINGS[len(PLAIN_ENDINGS) :]}
    prompts = {
        tokenizer.decode(row["input_ids"][: row["answer_position"]], skip_special_tokens=True) for row in wide["train"]
    }
    assert len(frames & prompts) >= 5  # the wide set's own frames, beside PLAIN_ENDINGS'
    assert wide["test"]["input_ids"] == data["test"]["input_ids"]


def test_the_lead_loss_trains_the_lead_head(cache, tmp_path):
    """--lead_token: the trainer adds the lead's binary cross-entropy (targets from `lead_positions`) to the loss,
    and its gradient reaches the lead head and, with --trigger_context, the lead's token-context logits."""
    model_args, data_args, computer_args, _, spec, tokenizer, data = task(
        "--encoding", "binary", "--lead_token", "--ending_fraction", "0.5", "--trigger_context", "2",
        "--train_size", "60",
        "--validation_size", "4", "--test_size", "4",
    )  # fmt: skip
    model = build_model(model_args, data_args, computer_args, spec, tokenizer).train()
    batch = AnswerCollator(tokenizer.pad_token_id, True, with_targets=True)(list(data["train"].select(range(16))))
    leads = lead_positions(batch["computer_mask"], batch["input_ids"], model.config.computer_lead_token_id)
    assert int(leads.sum()) > 0
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    DCompTrainer(model=model, args=args).compute_loss(model, dict(batch)).backward()
    assert model.computer.lead.weight.grad.abs().sum() > 0 and model.computer.lead.bias.grad.abs().sum() > 0
    assert model.computer.lead_tokens.grad.abs().sum() > 0


def test_lead_computes_adds_each_lead_to_where_the_computer_runs():
    """--lead_computes: the leads of `lead_positions` compute too, and each answer's targets serve its lead first,
    in the computer's row-major order; an answer without a lead (its prompt's last token no space) serves one."""
    space = 7
    answer_positions = torch.zeros(2, 6, dtype=torch.bool)
    answer_positions[0, 3] = answer_positions[1, 2] = answer_positions[1, 5] = True
    input_ids = torch.full((2, 6), 5)
    input_ids[0, 3] = input_ids[1, 5] = space
    computing, counts = lead_and_answer_positions(answer_positions, input_ids, space)
    assert computing.nonzero().tolist() == [[0, 2], [0, 3], [1, 2], [1, 4], [1, 5]]
    assert counts.tolist() == [2, 1, 2]


def test_lead_computes_trains_the_computer_at_the_lead_as_generate_runs_it(cache, tmp_path):
    """--lead_computes: the trainer runs the computer at every lead too, with its answer's selection and parse
    targets (one row each); at a lead it writes the lead token alone (training's rows write the space and the minus
    apart), and the answer position's answer takes over from the next position, as in `generate()`."""
    with pytest.raises(SystemExit):
        arguments("--encoding", "binary", "--lead_computes")
    model_args, data_args, computer_args, _, spec, tokenizer, data = task(
        "--encoding", "binary", "--lead_token", "--lead_computes", "--ending_fraction", "0.5", "--train_size", "60",
        "--validation_size", "4", "--test_size", "4",
    )  # fmt: skip
    model = build_model(model_args, data_args, computer_args, spec, tokenizer).train()
    batch = AnswerCollator(tokenizer.pad_token_id, True, with_targets=True)(list(data["train"].select(range(16))))
    lead = model.config.computer_lead_token_id
    computing, counts = lead_and_answer_positions(batch["computer_mask"], batch["input_ids"], lead)
    assert int((counts == 2).sum()) > 0
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer = DCompTrainer(model=model, args=args, parse_loss_weight=1.0, lead_computes=True)
    masks = []  # the computer_mask the trainer's forward gets
    hook = model.model.register_forward_pre_hook(lambda _, a, kw: masks.append(kw["computer_mask"]), with_kwargs=True)
    loss = trainer.compute_loss(model, dict(batch))  # the targets, repeated, match the positions (else it raises)
    hook.remove()
    assert torch.equal(masks[0], computing) and int(computing.sum()) == int(counts.sum())
    assert torch.isfinite(loss)
    model.eval()
    inputs = {name: batch[name] for name in ("input_ids", "attention_mask")}
    with torch.no_grad():
        alone = model(**inputs, computer_mask=batch["computer_mask"]).logits  # (batch, seq, vocab)
        led = model(**inputs, computer_mask=computing).logits
    leads = computing & ~batch["computer_mask"].bool()
    strength = float(model.computer.readout_strength)
    assert torch.allclose(led[leads][:, lead] - alone[leads][:, lead], torch.full((int(leads.sum()),), strength))
    unchanged = ~leads  # the answers write the same from their own positions on
    assert torch.allclose(led[unchanged], alone[unchanged], atol=1e-5)


def test_ordinary_text_is_for_the_token_read_out(capsys):
    with pytest.raises(SystemExit):
        parse_arguments(["--text_fraction", "0.2"])
    assert "--text_fraction: ordinary text trains the trigger of the token read-out" in capsys.readouterr().err
