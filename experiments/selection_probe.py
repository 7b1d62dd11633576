"""Which hidden states name the operation in a phrasing never trained on: the evidence behind
`computer_selection_hidden_votes` (docs/ARCHITECTURE.md).

For every question, three features from the residual stream entering the computer (plain prompts, "text "):
the last token's RMS-normed state (what W_sel reads), the mean of the normed states over the selection window's
tokens that are neither a number nor its sign (what the hidden votes read), and the sum of the same tokens' input
embeddings (what vote completion reads). A linear probe per feature (softmax regression on standardised features)
learns the operation from the default phrasings (`library.tasks.PHRASINGS["all"]`) and is scored on phrasings no
split has: the wide set's words in the default frames and `new_phrasings`.

With `--layers`, the window mean is also read at every decoder layer's output, each state normalised to unit RMS
(what `computer_selection_vote_layers` reads), and as the mean of those from the middle layer up to the computer's
(what `--selection_vote_from_layer` with the middle layer reads).

With `--parts` (a run trained with `--selection_hidden_votes`), it also scores the trained selection on the wide
set's words (one question per phrasing) and on `new_phrasings` (`--per-phrasing` each), part by part: how often
W_sel RMSNorm(h), the token-id votes, the hidden-state votes and their sum each pick the program the question asks
for (rsub / rdiv where the second operand is written first).

    python -m experiments.selection_probe --model runs/tw_s13 [--per-phrasing 2] [--window 32] [--layers] [--parts]
        [--report F]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from experiments.common import markdown_table
from experiments.generate_eval import binary_arithmetic_run
from experiments.new_phrasings import NEW_PHRASINGS, questions, wide_words
from library import tasks as task_library
from library.training.recipes import fit_selection_probe

OPERATIONS = tuple(NEW_PHRASINGS)  # add, sub, mul, div
FEATURES = ("last token", "window mean", "window embeddings")


def voting_window(computer, ids: torch.Tensor, window: int) -> torch.Tensor:
    """`(seq,)` bool: the tokens of `ids (1, seq)`'s last `window` that vote (neither a number nor its sign)."""
    read = computer.numbers.read(ids)
    voting = ~(read.is_number | read.is_sign)[0]
    voting[: max(ids.shape[1] - window, 0)] = False
    return voting


@torch.no_grad()
def layer_features(model, tokenizer, texts: list[str], window: int) -> dict[str, torch.Tensor]:
    """{"layer l": `(len(texts), hidden)`} for every decoder layer l: the window mean of its output, each token's state
    normalised to unit RMS, for the prompts `text + " "`; and "layers m–c", the mean of those from the middle layer
    m up to the computer's c."""
    computer, eps = model.computer, model.config.rms_norm_eps
    outputs: list[torch.Tensor] = []
    layers = model.model.layers
    hooks = [layer.register_forward_hook(lambda module, args, output: outputs.append(output[0])) for layer in layers]
    means: list[torch.Tensor] = []
    try:
        for text in texts:
            ids = tokenizer(text + " ", return_tensors="pt").input_ids
            model(ids, computer_mask=torch.zeros_like(ids, dtype=torch.bool))
            voting = voting_window(computer, ids, window)
            states = torch.stack(outputs)[:, voting].float()  # (layers, voting, hidden)
            outputs.clear()
            means.append(torch.nn.functional.rms_norm(states, states.shape[-1:], eps=eps).mean(1))  # as voted_states
    finally:
        for hook in hooks:
            hook.remove()
    stacked = torch.stack(means, 1)  # (layers, texts, hidden)
    middle, last = len(layers) // 2, model.config.computer_layer
    features = {f"layer {layer}": stacked[layer] for layer in range(len(layers))}
    features[f"layers {middle}–{last}"] = stacked[middle : last + 1].mean(0)
    return features


@torch.no_grad()
def window_features(model, tokenizer, texts: list[str], window: int) -> dict[str, torch.Tensor]:
    """`FEATURES` → `(len(texts), hidden)` for the prompts `text + " "`, read at the computer's input."""
    computer = model.computer
    entering: list[torch.Tensor] = []
    handle = computer.register_forward_pre_hook(lambda module, args: entering.append(args[0][0]))
    features: dict[str, list[torch.Tensor]] = {name: [] for name in FEATURES}
    try:
        for text in texts:
            ids = tokenizer(text + " ", return_tensors="pt").input_ids
            model(ids)
            normed = computer.norm(entering.pop())  # (seq, hidden)
            voting = voting_window(computer, ids, window)
            features["last token"].append(normed[-1])
            features["window mean"].append(normed[voting].mean(0))
            features["window embeddings"].append(model.get_input_embeddings()(ids[0])[voting].sum(0))
    finally:
        handle.remove()
    return {name: torch.stack(rows).float() for name, rows in features.items()}


def fit_probe(x: torch.Tensor, y: torch.Tensor, classes: int):
    """A softmax regression on the centred, standardised `x (N, d)` for labels `y (N,)` (train.py's
    `fit_selection_probe`, standardised, with one right class per row); returns the predictor."""
    mean = x.mean(0)
    weight = fit_selection_probe(x - mean, torch.nn.functional.one_hot(y, classes).to(x.dtype), standardised=True)
    return lambda features: ((features - mean) @ weight.T).argmax(-1)


def probe(
    model, tokenizer, per_phrasing: int, window: int, seed: int, layers: bool = False
) -> dict[str, dict[str, float]]:
    """{feature: {set: accuracy}} for the sets "trained" (the default phrasings), "wide words" and "new phrasings";
    the features of `window_features`, and with `layers` those of `layer_features`."""
    default = {op: task_library.PHRASINGS["all"][op] for op in OPERATIONS}
    sets = {"trained": default, "wide words": wide_words(), "new phrasings": NEW_PHRASINGS}
    data = {}
    for offset, (name, phrasings) in enumerate(sets.items()):
        rows = questions(per_phrasing, seed + offset, max_digits=5, phrasings=phrasings)
        labels = torch.tensor([OPERATIONS.index(op) for op in rows["operation"]])
        features = window_features(model, tokenizer, rows["text"], window)
        if layers:
            features |= layer_features(model, tokenizer, rows["text"], window)
        data[name] = (features, labels)
    train_features, train_labels = data["trained"]
    figures: dict[str, dict[str, float]] = {}
    for feature in train_features:
        predict = fit_probe(train_features[feature], train_labels, len(OPERATIONS))
        figures[feature] = {
            name: float((predict(features[feature]) == labels).float().mean())
            for name, (features, labels) in data.items()
        }
    return figures


@torch.no_grad()
def selection_parts(model, tokenizer, rows) -> dict[str, float]:
    """{part: share of `rows` (`questions` rows) whose program that part of the selection alone picks}, the parts
    "W_sel", "token votes", "hidden votes" and "sum", read at the prompt's last token ("text ")."""
    computer = model.computer
    if computer.selection_hidden_votes is None:
        raise ValueError("--parts: this run has no hidden-state votes (train it with --selection_hidden_votes)")
    names, votes = computer.program_names, computer.selection_votes
    seen: list = []
    entering: list[torch.Tensor] = []
    computer.selection_votes = lambda *args: seen.append(args) or votes(*args)  # the call's arguments, kept
    handle = computer.register_forward_pre_hook(lambda module, args: entering.append(args[0][0, -1]))
    right = dict.fromkeys(("W_sel", "token votes", "hidden votes", "sum"), 0)
    try:
        for text, operation, phrasing in zip(rows["text"], rows["operation"], rows["phrasing"]):
            reversed_name = f"r{operation}"
            swapped = phrasing.index("{b}") < phrasing.index("{a}") and reversed_name in names
            wanted = names.index(reversed_name if swapped else operation)
            ids = tokenizer(text + " ", return_tensors="pt").input_ids
            last = torch.zeros_like(ids, dtype=torch.bool)
            last[:, -1] = True
            model(ids, computer_mask=last)
            history, *rest = seen.pop()
            by_id, hidden = (part[0] for part in votes(history, *rest))
            own = computer.select(computer.norm(entering.pop()))
            parts = {"W_sel": own, "token votes": by_id, "hidden votes": hidden, "sum": own + by_id + hidden}
            for part, logits in parts.items():
                right[part] += int(int(logits.argmax()) == wanted)
    finally:
        del computer.selection_votes
        handle.remove()
    return {part: count / len(rows["text"]) for part, count in right.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a binary-arithmetic train.py run")
    parser.add_argument("--per-phrasing", type=int, default=2, help="questions per phrasing")
    parser.add_argument("--window", type=int, default=32, help="the selection window, in tokens")
    parser.add_argument("--layers", action="store_true", help="also probe every layer's window mean, and their mean")
    parser.add_argument("--parts", action="store_true", help="also score the trained selection part by part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    _, model, tokenizer = binary_arithmetic_run(args.model)
    figures = probe(model, tokenizer, args.per_phrasing, args.window, args.seed, args.layers)
    sets = list(next(iter(figures.values())))
    print(markdown_table(["feature", *sets], [[f, *(f"{v:.1%}" for v in row.values())] for f, row in figures.items()]))
    if args.parts:
        scored = {
            "wide words": questions(1, args.seed, max_digits=5, phrasings=wide_words()),
            "new phrasings": questions(args.per_phrasing, args.seed, max_digits=5),
        }
        parts = {name: selection_parts(model, tokenizer, rows) for name, rows in scored.items()}
        rows = [[part, *(f"{parts[name][part]:.1%}" for name in scored)] for part in parts["wide words"]]
        print(markdown_table(["selection part", *(f"{name} right" for name in scored)], rows))
        figures |= {f"trained selection, {name}": figures_of_set for name, figures_of_set in parts.items()}
    if args.report:
        args.report.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
