"""The main job: teach a LlamaDComp model to use its compiled library from natural language (paper §4.2).

    python train.py                                  # the paper's calculator, mod 128, from scratch: CPU, minutes
    python train.py --task fibonacci --output_dir runs/fib
    python train.py config.yaml                      # the same arguments from one YAML (or JSON) file
    python train.py --model path/to/llama --lora     # a pretrained Llama: LoRA adapters + the computer block
    python train.py --no_computer                    # the same Llama without the computer: the baseline
    torchrun --nproc_per_node 2 train.py ...         # data parallel (gloo on CPU, NCCL + bf16 on CUDA)
    python train.py predict --model runs/default "Add 3 and 4"

Every `TrainingArguments` flag works (`--bf16`, `--activation_checkpointing`, `--report_to`, `--push_to_hub`, ...),
spelled `--name` or `--name-with-dashes`. The output folder is Hub-ready (weights, code files, tokenizer, model
card) and holds `run_summary.json`. The recipe, why it learns in minutes, and the run's guarantees (locked output
folder, non-finite stop, checked resume): docs/TRAINING.md.
"""

import json
import shlex
import sys
import time
from pathlib import Path

import psutil
import torch
from transformers import set_seed

from library.training.arguments import ArgumentError, check_combinations, parse_arguments, settings
from library.training.calibration import calibrate_hidden_votes, calibration_rows, described
from library.training.data import (
    AnswerCollator,
    beyond_phrasings,
    build_datasets,
    changed_splits,
    continue_ordinary_text,
    split_fingerprints,
    task_spec,
)
from library.training.metrics import ExactMatch, answer_predictions, evaluate_split
from library.training.models import add_lora, build_model, build_tokenizer
from library.training.outputs import render_model_card, save_learning_curve, write_run_summary
from library.training.predict import predict
from library.training.recipes import fit_shares, fixed_by_the_recipe, initialise
from library.training.trainer import (
    SETTINGS_FILE,
    DCompTrainer,
    LearningCurve,
    TrainingError,
    TrainingGuard,
    output_lock,
    parameter_digest,
    resume_checkpoint,
    save_settings,
)
from modeling_llama_dcomp import LibraryMismatchError

PROCESS_START = psutil.Process().create_time()  # wall time counts from here: imports, data and tokenizer included


def train(model_args, data_args, computer_args, training_args) -> dict:
    """Build data and model, train (resuming with `--resume`), evaluate every test split, write the Hub-ready
    output folder and run_summary.json; returns the summary."""
    check_combinations(model_args, data_args, computer_args)
    output_dir = Path(training_args.output_dir)
    run_settings = settings(model_args, data_args, computer_args, training_args)
    command = shlex.join(["python", "train.py", *sys.argv[1:]])
    torch.set_num_threads(training_args.threads)
    set_seed(training_args.seed)
    resume = resume_checkpoint(output_dir, run_settings) if training_args.resume else None
    held_out = json.loads((output_dir / SETTINGS_FILE).read_text()).get("splits", {}) if resume else {}

    # ---- data and model
    spec = task_spec(data_args, computer_args.reversed_programs)
    tokenizer = build_tokenizer(model_args)
    data = build_datasets(data_args, spec, tokenizer, training_args.seed)
    run_settings["splits"] = split_fingerprints(data)  # what evaluations check they rebuild
    if changed := changed_splits(held_out, run_settings["splits"]):
        raise TrainingError(
            f"--resume: library.tasks now draws other {', '.join(changed)} questions than {output_dir} was trained "
            "with (the task code changed): resume at the commit that started the run, or choose another --output_dir"
        )
    if training_args.process_index == 0:
        save_settings(output_dir, run_settings)
    model = build_model(model_args, data_args, computer_args, spec, tokenizer)
    if data_args.text_continuation_fraction > 0:  # the base's own text, generated before any training
        fraction = data_args.text_continuation_fraction
        data["train"] = continue_ordinary_text(data["train"], model, tokenizer, fraction, training_args.seed)
    with_computer = not model_args.no_computer
    answer_loss = with_computer and spec.answer_in_register and computer_args.answer_loss_weight > 0
    parse_loss = computer_args.parse_loss_weight > 0
    collator = AnswerCollator(
        tokenizer.pad_token_id,
        with_computer,
        with_targets=answer_loss,
        with_slot_targets=parse_loss,
        list_answers=spec.count_register >= 0,
        text_logits=computer_args.text_distillation_weight > 0,
    )
    found = {}
    beyond = None  # prompts in the phrasings --fit_phrasings adds: the hidden votes' fit, then their calibration
    read_beyond = resume is None or computer_args.calibrate_hidden_votes  # a resumed run skips the fit
    if with_computer and computer_args.fit_phrasings != "same" and read_beyond:
        beyond = beyond_phrasings(data_args, spec, tokenizer, training_args.seed, computer_args.fit_phrasings)
    if with_computer and resume is None:  # a resumed run loads all of this from its checkpoint
        from_scratch = model_args.model is None and model_args.gguf is None
        found = initialise(model, tokenizer, spec, data["train"], collator, computer_args, from_scratch, beyond)
        if "probe_accuracy" in found:
            print(
                f"parse heads: probes of the prompt's numbers, {found['probe_accuracy']:.2f} of slots right at step 0"
            )
        if "copying" in found:
            print(f"copy parse: slot -> ordinal of the number it starts copying {found['copying']}", flush=True)
        if "hidden_vote_accuracy" in found:
            prompts, beyond_count = found["hidden_vote_prompts"]
            print(
                f"hidden votes: a probe fitted on {prompts} prompts ({beyond_count} in phrasings the run lacks), right "
                f"on {found['hidden_vote_accuracy']:.2%} of them",
                flush=True,
            )
    if answer_loss:  # the LM loss trains the read-out, the answer loss the heads (docs/TRAINING.md)
        for computer in model.computers():
            computer.isolate_gradients = True
    if with_computer:  # what the recipe fixed stays fixed: a resumed run's too, and LoRA's copies (`add_lora`)
        for parameter in fixed_by_the_recipe(model, spec, computer_args):
            parameter.requires_grad_(False)
    if model_args.freeze_base and with_computer:
        model.freeze_base()
    if model_args.lora:
        model = add_lora(model, model_args.lora_rank)
    print(f"initial parameter digest: {parameter_digest(model)}", flush=True)

    # ---- training
    from library.tasks import exact_match_metric  # imports `evaluate` (seconds): only once data and model exist

    metric = exact_match_metric()
    curve = LearningCurve(PROCESS_START)
    trainer = DCompTrainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[TrainingGuard(), curve],
        compute_metrics=ExactMatch(metric, data["validation"][spec.group_column]),
        preprocess_logits_for_metrics=answer_predictions,
        answer_loss_weight=computer_args.answer_loss_weight if answer_loss else 0.0,
        parse_loss_weight=computer_args.parse_loss_weight if parse_loss else 0.0,
        text_distillation_weight=computer_args.text_distillation_weight,
        trigger_positive_weight=computer_args.trigger_positive_weight,
        trigger_text_weight=computer_args.trigger_text_weight,
        hidden_vote_loss_weight=computer_args.hidden_vote_loss_weight,
        lead_computes=computer_args.lead_computes,
    )
    if resume:
        print(f"resuming from {resume}", flush=True)
    trained = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if model_args.lora:  # from here on one model, with one computer: the one evaluated, completed and saved
        trainer.model = trainer.model.merge_and_unload()
    completed = None
    if computer_args.vote_completion_margin > 0:  # words no prompt voted with vote as the trained words they resemble
        embeddings = trainer.model.get_input_embeddings().weight
        ridge, margin = computer_args.vote_completion_ridge, computer_args.vote_completion_margin
        completed = sum(
            computer.complete_selection_votes(embeddings, ridge, margin) for computer in trainer.model.computers()
        )
        print(f"vote completion: {completed} tokens vote as the trained words they resemble", flush=True)
    vote_scale = None
    if computer_args.calibrate_hidden_votes:  # the token votes outvote the hidden votes on words no prompt had
        _, fitted = fit_shares(computer_args.fit_hidden_votes)
        rows = calibration_rows(data["validation"], beyond, fitted, computer_args.calibration_prompts)
        scale, shares = calibrate_hidden_votes(trainer.model, rows, collator)
        vote_scale = {"scale": scale, "prompts": len(rows), "right": {str(k): v for k, v in shares.items()}}
        print(
            f"hidden votes: scaled ×{scale:g}, selection right on {len(rows)} prompts: {described(shares)}", flush=True
        )

    # ---- evaluation and the output folder
    splits = [name for name in ("test", "test_pairs", "test_long") if name in data and len(data[name])]
    results = {name: evaluate_split(trainer, metric, data[name], name, spec.group_column) for name in splits}
    for column in spec.extra_groups:  # the same splits, broken down another way (e.g. by operand digits)
        results |= {f"{name}_by_{column}": evaluate_split(trainer, metric, data[name], name, column) for name in splits}
    # Every process prints the digest of its weights: after data-parallel training they must all agree.
    digest = parameter_digest(trainer.model)
    print(f"rank {training_args.process_index} parameter digest: {digest}", flush=True)
    if with_computer:  # the model warns on longer inputs (docs/RELIABILITY.md)
        trainer.model.config.trained_sequence_length = max(map(len, data["train"]["input_ids"]))
    trainer.save_model(str(output_dir))  # model.safetensors, config (auto_map), code files, tokenizer
    seconds = time.time() - PROCESS_START
    steps = trainer.state.global_step
    trainer.model_card = render_model_card(run_settings, command, trainer.model, results, seconds, steps)
    trainer.create_model_card()
    summary = {
        "command": command,
        "settings": run_settings,
        "resumed_from": str(resume) if resume else None,
        "initialisation": found,
        "completed_votes": completed,
        "hidden_vote_scale": vote_scale,
        "steps": steps,
        "wall_seconds": seconds,
        "train_seconds": trained.metrics["train_runtime"],
        "metrics": results,
        "learning_curve": curve.points,
        "parameter_digest": digest,
    }
    if trainer.is_world_process_zero():
        write_run_summary(output_dir, **summary)
        save_learning_curve(curve.points, output_dir)
        for name, values in results.items():
            groups = ", ".join(
                f"{key.removeprefix('exact_match_')} {value:.1%}"
                for key, value in values.items()
                if key != "exact_match"
            )
            print(f"{name} exact match: {values['exact_match']:.2%} ({groups})")
        print(f"wall time {seconds:.0f} s, {steps} steps; model in {output_dir}")
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return summary


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["predict"]:
        return predict(argv[1:])
    arguments = parse_arguments(argv)
    try:
        with output_lock(Path(arguments[-1].output_dir)):
            train(*arguments)
    except (ArgumentError, TrainingError, LibraryMismatchError) as error:  # a message for the user, no traceback
        sys.exit(f"train.py: error: {error}")


if __name__ == "__main__":
    main()
