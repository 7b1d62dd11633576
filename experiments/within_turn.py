"""The selection window bounded at the chat template's turn openers, on a trained folder: what `train.py
--selection_within_turn` builds, for a run trained without it (`computer_selection_boundary_ids`).

The folder is copied to `--output` (never written over; checkpoints left out). The model is rebuilt from its config
with the boundaries set to its tokenizer's special tokens (`library.install.turn_boundaries`), given the trained
weights and the library again (whose fingerprint records the boundaries), and saved there with this checkout's code,
so that the copy is evaluated like any run (`generate_eval`, `new_phrasings`, `pass_through` read its
run_settings.json as they read the original's). No weight changes: only which tokens vote.

    python -m experiments.within_turn --model runs/sl_s13 --output runs/sl_s13_wt
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from experiments.common import refuse_existing, save_run_copy
from library.install import turn_boundaries
from library.loading import load_tokenizer, model_folder
from modeling_llama_dcomp import LlamaDCompForCausalLM


def within_turn(model_dir: Path, output: Path) -> list[int]:
    """Writes `model_dir` with its selection window bounded at its tokenizer's turn openers to `output` (a new
    folder); returns the boundary token ids."""
    refuse_existing(output, "bounded")
    model = LlamaDCompForCausalLM.from_pretrained(model_folder(model_dir))
    if not model.config.computer_selection_context:
        raise ValueError(f"{model_dir}: its computer has no selection window to bound (computer_selection_context 0)")
    boundaries = turn_boundaries(load_tokenizer(model_dir))
    config = copy.deepcopy(model.config)
    config.computer_selection_boundary_ids = boundaries
    config.library_fingerprint = None  # reinstalled below: `set_library` fingerprints the library with the boundaries
    bounded = LlamaDCompForCausalLM(config).to(model.dtype)
    bounded.load_state_dict(model.state_dict())
    bounded.set_library(*model.get_library())
    bounded.generation_config = model.generation_config
    save_run_copy(bounded, model_dir, output)
    return boundaries


def main(argv: list[str] | None = None) -> list[int]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a trained LlamaDComp folder (train.py's)")
    parser.add_argument("--output", type=Path, required=True, help="the new folder for the bounded copy")
    args = parser.parse_args(argv)
    boundaries = within_turn(args.model, args.output)
    print(f"{args.output}: the selection window starts after the last of {len(boundaries)} special tokens")
    return boundaries


if __name__ == "__main__":
    main()
