"""After training: how loud the hidden votes speak, chosen on prompts the run never trained on.

The hidden votes' head W_vote is fitted before training and then kept fixed (`init_hidden_votes_from_probe`), while
the token votes train beside it. On the training phrasings the token votes alone answer, so they grow until they
outvote the hidden votes, also where a word no training prompt had votes wrong or not at all and only the hidden
votes know the operation (docs/RESULTS.md §7). `calibrate_hidden_votes` multiplies W_vote by the factor of a grid
that selects a right program for the most calibration prompts, the smallest such factor on a tie: the run's
validation split, and prompts in phrasings that `--fit_phrasings` adds and that the fit did not read. The votes are
linear in W_vote (it has no bias), so this scales them exactly; like vote completion it is a weight edit, and the
saved model needs no new code or field.
"""

from __future__ import annotations

import dataclasses
import itertools

import torch

from library.training.trainer import right_programs
from modeling_llama_dcomp import record_computer_runs

SCALES = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


@torch.no_grad()
def selections(model, batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The computer run where each batch's `computer_mask` says (its answer position), once: the selection logits
    `(N, programs)`, the hidden votes' share of them `(N, programs)`, and which programs answer `(N, programs)`
    (their output on the operands the model read is the answer), over every prompt of `batches`."""
    logits, votes, right = [], [], []
    for batch in batches:
        with record_computer_runs() as runs:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            model.model(input_ids=ids, attention_mask=mask, computer_mask=batch["computer_mask"])
        run = runs[-1]
        logits.append(run.selection_logits.float())
        votes.append(run.hidden_votes.float())
        right.append(right_programs(run, batch["computer_targets"], model))
    return torch.cat(logits), torch.cat(votes), torch.cat(right)


def calibration_rows(validation, beyond, skip: int, count: int) -> list[dict]:
    """What `calibrate_hidden_votes` reads: the rows of the `validation` split, then up to `count` rows of `beyond`
    (prompts in the phrasings the run lacks, `beyond_phrasings`; None: none) after its first `skip`, the ones the
    hidden votes' fit read (`fit_shares`), in phrasings none of those has: a phrasing the fit read its votes are sure
    of, so it would ask for louder votes than a phrasing nobody read."""
    if skip < 0 or count < 0:
        raise ValueError(f"calibration_rows: the prompts skipped and asked must be >= 0, got {skip} and {count}")
    rows = list(validation)
    if beyond is not None:
        fitted = set(beyond.select(range(min(skip, len(beyond))))["template"])
        after = beyond.select(range(min(skip, len(beyond)), len(beyond)))
        rows += itertools.islice((row for row in after if row["template"] not in fitted), count)
    return rows


def described(shares: dict[float, float]) -> str:
    """The share selected right at each factor, as train.py and `experiments.calibrate_votes` print it."""
    return ", ".join(f"×{factor:g} {share:.1%}" for factor, share in shares.items())


def calibrate_hidden_votes(
    model, rows: list[dict], collator, scales: tuple[float, ...] = SCALES, batch_size: int = 64
) -> tuple[float, dict[float, float]]:
    """Multiplies every computer's W_vote by the factor of `scales` whose selection is right on the most of `rows`
    (tokenized prompts with their answers; ordinary text is skipped), the smallest on a tie; returns it and the
    share right at each factor. The model's mode is left as it was found, and its weights as they were on an
    error."""
    if any(computer.selection_hidden_votes is None for computer in model.computers()):
        raise ValueError("calibrating the hidden votes needs a computer with computer_selection_hidden_votes")
    if not scales or min(scales) <= 0:
        raise ValueError(f"calibrate_hidden_votes: the factors must be positive, got {scales}")
    rows = [row for row in rows if row["answer_position"] >= 0]
    if not rows:
        raise ValueError("calibrate_hidden_votes: no prompt with an answer to calibrate on")
    collate = dataclasses.replace(collator, with_targets=True, with_slot_targets=False, text_logits=False)
    batches = [collate(rows[start : start + batch_size]) for start in range(0, len(rows), batch_size)]
    was_training = model.training
    model.eval()
    try:
        logits, votes, right = selections(model, batches)
    finally:
        model.train(was_training)
    shares: dict[float, float] = {}
    for scale in scales:  # the votes are linear in W_vote: scaled by s, they add (s - 1) times themselves
        picked = (logits + (scale - 1.0) * votes).argmax(-1, keepdim=True)
        shares[scale] = float(right.gather(1, picked).float().mean())
    best = max(shares.values())
    chosen = min(scale for scale, share in shares.items() if share == best)
    with torch.no_grad():
        for computer in model.computers():
            computer.selection_hidden_votes.weight.mul_(chosen)
    return chosen, shares
