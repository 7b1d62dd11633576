"""Where should the trigger compute? A sweep of `computer_trigger_threshold` (or, with `--head lead`, of the lead
head's `computer_lead_threshold`) on data that neither trains the model nor reports on it, for a train.py run whose
computer writes tokens.

* Recall: the run's `validation` split, asked as in training (plain, and the chat share through the template): the
  share of questions whose trigger fires at the answer position, i.e. σ(logit) there exceeds the threshold. A run
  trained with `--ending_fraction` also asked its questions with other endings; those that end in white space
  ("{text}\n") are answered by the trigger too, so their recall is read and kept apart: all validation questions,
  plain, each with that ending (`ending_prompts`).
* False activations: docstring paragraphs of `library.texts.CALIBRATION_PACKAGES` (neither the packages whose
  docstrings train the trigger nor the standard library that `experiments.pass_through` reports on), the first
  `--max-tokens` tokens of each: the share of positions, and of texts, where it fires once a number is written
  (before one, neither head runs the computer).

One forward pass per prompt records the trigger's logits; each threshold is then a comparison. The threshold chosen
is the highest of the grid that computes every validation question the default 1/2 computes, or all but a share
`--recall-loss` of them, for each way of asking alike: a user's trade between answers missed and ordinary text
rewritten. Without the endings, seed 13's recipe kept every validation question at 0.9 and lost the line break's
(docs/RESULTS.md §7). The lead head goes the
other way: it fires where a question ends without the space ("…\nAnswer:"), a frame users write in ways no trained
prompt does, where its logit sits near 0 (docs/RESULTS.md §7). Its recall is read at the last token of the plain
validation prompts (before their space), and the threshold chosen is the lowest of `LEAD_THRESHOLDS` that fires on
no more calibration positions, and no more texts, than the trained 1/2. The validation split
asks in trained phrasings, so a threshold chosen on it can miss questions asked otherwise (docs/RESULTS.md §7,
seed 13: 0.95 kept every validation question and lost a quarter of the phrasings no split uses). `--write` records it
in the folder's config.json, which keeps the checkpoint loadable (the threshold is a policy, not part of
`library_fingerprint`).

    python -m experiments.trigger_threshold --model runs/smol_frozen [--head lead] [--texts 300] [--recall-loss 0.01]
        [--write]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import tempfile
from pathlib import Path

import torch

from experiments.common import markdown_table, runs_of
from experiments.generate_eval import raw_test_splits, run_settings, test_splits
from library.loading import load_model, load_tokenizer, model_folder
from library.tasks import ENDINGS, tokenize_for_causal_lm
from library.texts import CALIBRATION_PACKAGES, docstring_paragraphs
from modeling_llama_dcomp import logit

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999)
LEAD_THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
FIELDS = {"trigger": "computer_trigger_threshold", "lead": "computer_lead_threshold"}  # --head: its config field


@torch.no_grad()
def head_logits(model, sequences: list[list[int]], head: str = "trigger") -> list[torch.Tensor]:
    """The trigger's (or the lead head's) logit `(seq,)` at every position of each token list, one unpadded forward
    each; −inf before the first number token, where neither runs the computer (`number_written`)."""
    found = []
    for ids in sequences:
        batch = torch.tensor([ids])
        with runs_of(model)() as runs:
            model(batch, attention_mask=torch.ones_like(batch))
        (logits,) = [getattr(run, f"{head}_logits") for run in runs if run.trigger_logits is not None]
        written = model.computer.numbers.written(batch)[0]
        found.append(logits[0].float().masked_fill(~written, -math.inf))
    return found


def sweep(answer_logits: dict[str, torch.Tensor], text_logits: list[torch.Tensor], thresholds=THRESHOLDS) -> list[dict]:
    """Per threshold: the recall of each way of asking, `answer_logits` (way → the logits at its answer positions,
    `(questions,)`), as "recall" (the first way) and "recall: {way}" (the others), and the false activations on
    `text_logits` (positions and texts)."""
    positions = torch.cat(text_logits)
    names = ["recall"] + [f"recall: {way}" for way in list(answer_logits)[1:]]
    rows = []
    for threshold in thresholds:
        cut = logit(threshold)
        recalls = {
            name: int((logits > cut).sum()) / logits.numel() for name, logits in zip(names, answer_logits.values())
        }
        rows.append(
            {"threshold": threshold}
            | recalls
            | {
                "false_activation_positions": int((positions > cut).sum()) / positions.numel(),
                "texts_with_activation": sum(bool((text > cut).any()) for text in text_logits) / len(text_logits),
            }
        )
    return rows


def choose(rows: list[dict], recall_loss: float = 0.0) -> float:
    """The highest threshold whose recall, for every way of asking, is at most `recall_loss` below that of the
    lowest (the default 1/2 when the grid starts there)."""
    keys = [key for key in rows[0] if key.startswith("recall")]
    floors = {key: rows[0][key] - recall_loss for key in keys}
    return max(row["threshold"] for row in rows if all(row[key] >= floors[key] for key in keys))


def choose_lowest(rows: list[dict]) -> float:
    """The lowest threshold whose false activations (positions and texts) are no more than at the trained 1/2."""
    (trained,) = [row for row in rows if row["threshold"] == 0.5]
    keys = ("false_activation_positions", "texts_with_activation")
    return min(row["threshold"] for row in rows if all(row[key] <= trained[key] for key in keys))


def ending_prompts(settings: dict, tokenizer, limit: int | None = None) -> dict[str, list[list[int]]]:
    """The run's validation questions asked plainly with each ending it trained on (`--endings`, when
    `--ending_fraction` > 0) that ends in white space, up to and with its answer position: where the trigger, not
    the lead head, answers. Keyed by the ending, "{text}" shown as "…"."""
    data = settings["data"]
    if not data.get("ending_fraction", 0.0):
        return {}
    (validation,) = raw_test_splits(settings, ["validation"], limit).values()
    found = {}
    for ending in ENDINGS[data.get("endings", "default")]:
        if not ending[-1].isspace():  # as `tokenize_for_causal_lm` tells where the model writes the space itself
            continue
        rows = tokenize_for_causal_lm(validation, tokenizer, ending_fraction=1.0, endings=(ending,))
        found[repr(ending.format(text="…"))] = [row["input_ids"][: row["answer_position"] + 1] for row in rows]
    return found


def calibration_texts(count: int, seed: int = 0) -> list[str]:
    """`count` docstring paragraphs of `CALIBRATION_PACKAGES`, drawn with `seed`."""
    paragraphs = docstring_paragraphs(CALIBRATION_PACKAGES)
    return random.Random(seed).sample(paragraphs, min(count, len(paragraphs)))


def write_threshold(folder: Path, config, threshold: float, field: str = "computer_trigger_threshold") -> None:
    """Sets `field` (a threshold of `FIELDS`) in `folder`/config.json, checked by the config first and replaced
    atomically (a kill leaves the old file or the new one). A folder whose run-time code predates the field is
    refused: its model would load the value and ignore it."""
    if field not in getattr(type(config), "__dataclass_fields__", {}):
        raise ValueError(
            f"{folder}: its run-time code has no {field}, so the model would ignore it; copy this "
            "checkout's configuration_llama_dcomp.py and modeling_llama_dcomp.py into the folder first"
        )
    setattr(config, field, threshold)  # raises, naming the field, on an invalid value
    path = folder / "config.json"
    fields = json.loads(path.read_text())
    fields[field] = threshold
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".json", delete=False) as file:
        json.dump(fields, file, indent=2, sort_keys=True)
        file.write("\n")
    os.replace(file.name, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a train.py output folder (tokens read-out)")
    parser.add_argument("--head", choices=tuple(FIELDS), default="trigger", help="whose threshold to sweep")
    parser.add_argument("--texts", type=int, default=300, help="calibration paragraphs")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None, help="validation questions (default: all)")
    parser.add_argument(
        "--recall-loss", type=float, default=0.0, help="share of validation questions it may lose (the trigger's)"
    )
    parser.add_argument("--write", action="store_true", help="record the chosen threshold in config.json")
    parser.add_argument("--report", type=Path, default=None, help="write the JSON figures here")
    args = parser.parse_args(argv)
    model = load_model(args.model).eval()
    if getattr(model.config, "computer_output", None) != "tokens":
        parser.error(f"--model {args.model}: its computer has no trigger (computer_output is not 'tokens')")
    tokenizer = load_tokenizer(args.model)
    lead = model.config.computer_lead_token_id
    if args.head == "lead" and lead is None:
        parser.error(f"--model {args.model}: it has no lead head (computer_lead_token_id is None)")
    settings = run_settings(args.model)
    validation = test_splits(settings, tokenizer, ["validation"], args.limit)["validation"]
    if args.head == "lead":  # the plain prompts, up to their last token before the space
        plain = [row for row in validation if row["input_ids"][row["answer_position"]] == lead]
        prompts = [row["input_ids"][: row["answer_position"]] for row in plain]
    else:
        prompts = [row["input_ids"][: row["answer_position"] + 1] for row in validation]
    ways = {"as trained": prompts}
    if args.head == "trigger":
        ways |= ending_prompts(settings, tokenizer, args.limit)
    answers = {
        way: torch.stack([logits[-1] for logits in head_logits(model, asked, args.head)]) for way, asked in ways.items()
    }
    texts = [ids[: args.max_tokens] for ids in tokenizer(calibration_texts(args.texts))["input_ids"]]
    text_logits = head_logits(model, texts, args.head)
    if args.head == "lead":
        rows = sweep(answers, text_logits, LEAD_THRESHOLDS)
        chosen = choose_lowest(rows)
    else:
        rows = sweep(answers, text_logits)
        chosen = choose(rows, args.recall_loss)
    print(markdown_table(list(rows[0]), [[f"{value:.4g}" for value in row.values()] for row in rows]))
    counts = ", ".join(f"{way} {len(asked)}" for way, asked in ways.items())
    print(f"chosen {FIELDS[args.head]}: {chosen} (validation questions: {counts}; texts n = {len(texts)})")
    if args.write:
        write_threshold(model_folder(args.model), model.config, chosen, FIELDS[args.head])
        print(f"written to {model_folder(args.model) / 'config.json'}")
    figures = {
        "head": args.head,
        "chosen": chosen,
        "validation": {way: len(asked) for way, asked in ways.items()},
        "texts": len(texts),
        "sweep": rows,
    }
    if args.report:
        args.report.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
