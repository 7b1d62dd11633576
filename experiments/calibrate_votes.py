"""Hidden-vote calibration on a trained folder: what `train.py --calibrate_hidden_votes` does after the last step
(`library.training.calibration`), for a run trained without it.

The run's validation split and the prompts in the phrasings its `--fit_phrasings` adds are rebuilt from its
run_settings.json (its seed, sizes and tokenizer). The folder is copied to `--output` (never written over;
checkpoints left out), loaded with this checkout's classes, every computer's W_vote scaled by the chosen factor,
and the weights, config and code saved there, so that the copy is evaluated like any run (`generate_eval`,
`new_phrasings` and `pass_through` read its run_settings.json as they read the original's).

    python -m experiments.calibrate_votes --model runs/to_s13 --output runs/to_s13_cv [--prompts 512]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.common import refuse_existing, save_run_copy
from experiments.generate_eval import run_settings
from library.loading import load_tokenizer, model_folder
from library.training.arguments import LIST_TASKS, DataArguments
from library.training.calibration import calibrate_hidden_votes, calibration_rows, described
from library.training.data import AnswerCollator, beyond_phrasings, build_datasets, task_spec
from library.training.recipes import fit_shares
from modeling_llama_dcomp import LlamaDCompForCausalLM


def calibration_data(settings: dict, tokenizer, prompts: int) -> list[dict]:
    """The rows train.py calibrates on for the run of `settings` (its run_settings.json): its validation split,
    then `prompts` prompts in the phrasings its fit added, after those the fit read."""
    data = DataArguments(**settings["data"])
    computer, seed = settings["computer"], settings["training"]["seed"]
    spec = task_spec(data, computer.get("reversed_programs", True))
    validation = build_datasets(data, spec, tokenizer, seed)["validation"]
    fit_phrasings = computer.get("fit_phrasings", "same")
    beyond = None if fit_phrasings == "same" else beyond_phrasings(data, spec, tokenizer, seed, fit_phrasings)
    _, fitted = fit_shares(computer.get("fit_hidden_votes", 0))
    return calibration_rows(validation, beyond, fitted, prompts)


def calibrate_votes(model_dir: Path, output: Path, prompts: int) -> tuple[float, dict[float, float]]:
    """Writes `model_dir` with its hidden votes calibrated to `output` (a new folder); returns the factor and the
    share of calibration prompts selected right at each factor of the grid."""
    refuse_existing(output, "calibrated")
    settings = run_settings(model_dir)
    if settings["data"].get("task", "arithmetic") in LIST_TASKS:
        raise ValueError(
            f"{model_dir}: a {settings['data']['task']} run answers with whole lists, and the calibration scores a "
            "program by its one output (train.py refuses --calibrate_hidden_votes for list tasks too)"
        )
    model = LlamaDCompForCausalLM.from_pretrained(model_folder(model_dir))
    tokenizer = load_tokenizer(model_dir)
    rows = calibration_data(settings, tokenizer, prompts)
    collator = AnswerCollator(tokenizer.pad_token_id, with_computer=True, with_targets=True)
    scale, shares = calibrate_hidden_votes(model, rows, collator)
    save_run_copy(model, model_dir, output)
    return scale, shares


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a trained LlamaDComp folder (train.py's)")
    parser.add_argument("--output", type=Path, required=True, help="the new folder for the calibrated copy")
    parser.add_argument("--prompts", type=int, default=512, help="prompts in the phrasings the fit added")
    args = parser.parse_args(argv)
    scale, shares = calibrate_votes(args.model, args.output, args.prompts)
    print(f"{args.output}: hidden votes scaled ×{scale:g} (selection right: {described(shares)})")
    return scale


if __name__ == "__main__":
    main()
