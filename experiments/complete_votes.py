"""Vote completion on a trained folder: what `train.py --vote_completion_margin` does after the last step
(`LlamaDCompComputer.complete_selection_votes`, docs/ARCHITECTURE.md), for a run trained without it.

The folder is copied to `--output` (never written over; checkpoints left out), loaded with this checkout's classes,
every computer's votes completed, and the weights, config and code saved there, so the copy is evaluated like any
run (`generate_eval`, `new_phrasings`, `pass_through` read its run_summary.json as they read the original's).

    python -m experiments.complete_votes --model runs/cont_s13 --output runs/cont_s13_vc [--margin 2] [--ridge 0.1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.common import refuse_existing, save_run_copy
from library.loading import model_folder
from modeling_llama_dcomp import LlamaDCompForCausalLM


def complete_votes(model_dir: Path, output: Path, margin: float, ridge: float) -> int:
    """Writes `model_dir` with completed votes to `output` (a new folder); returns how many rows were filled."""
    refuse_existing(output, "completed")
    model = LlamaDCompForCausalLM.from_pretrained(model_folder(model_dir))
    embeddings = model.get_input_embeddings().weight
    filled = sum(computer.complete_selection_votes(embeddings, ridge, margin) for computer in model.computers())
    save_run_copy(model, model_dir, output)
    return filled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a trained LlamaDComp folder")
    parser.add_argument("--output", type=Path, required=True, help="the new folder for the completed copy")
    parser.add_argument("--margin", type=float, default=2.0, help="logits the best program must lead by")
    parser.add_argument("--ridge", type=float, default=0.1, help="the regression's ridge penalty")
    args = parser.parse_args(argv)
    filled = complete_votes(args.model, args.output, args.margin, args.ridge)
    print(f"{args.output}: {filled} tokens vote as the trained words they resemble")
    return filled


if __name__ == "__main__":
    main()
