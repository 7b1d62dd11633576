"""Exact match of a binary-arithmetic train.py run on phrasings no split of `library.tasks` uses: new frames,
new words, symbols without spaces after a new frame ("Compute 12*7"; since commit be5c452 the default phrasings
write them in their question frames, "What is 12*7?"), "= ?" and "equals" endings, through plain `generate()` as
`generate_eval` asks (left-padded batches, greedy, the answer's tokens then EOS). The run's `test` split holds out
one training combination of frame and expression per operation; these are out of every split, a proxy for the
phrasings users write. Operands as in training (1–5 digits each, a quarter negative); a division is exact unless
its phrasing asks for rounding down; half the questions go through the chat template. Reported per operation,
digit count, prompt kind and phrasing.

    python -m experiments.new_phrasings --model runs/smol_lora [--per-phrasing 12] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import datasets

import dcomp_isa
from experiments.common import markdown_table
from experiments.generate_eval import exact_match, run_settings
from library import tasks as task_library
from library.loading import load_model, load_tokenizer

# Per operation, phrasings whose frame or wording no split of library.tasks uses ({a} op {b}, canonical order).
NEW_PHRASINGS: dict[str, tuple[str, ...]] = {
    "add": (
        "What do {a} and {b} add up to?",
        "{a} + {b} = ?",
        "Tell me the sum of {a} and {b}.",
        "Compute {a}+{b}",
        "{a} plus {b} equals",
        "Quick question: what is {a} increased by {b}?",
    ),
    "sub": (
        "What is {a} less {b}?",
        "{a} - {b} = ?",
        "Tell me the result of subtracting {b} from {a}.",
        "Compute {a}-{b}",
        "{a} minus {b} equals",
        "Quick question: what is {a} decreased by {b}?",
    ),
    "mul": (
        "What is {a} multiplied with {b}?",
        "{a} * {b} = ?",
        "Tell me the product of {a} and {b}.",
        "Compute {a}*{b}",
        "{a} times {b} equals",
        "Quick question: what do you get if you multiply {a} by {b}?",
    ),
    "div": (
        "What is {a} over {b}?",
        "{a} / {b} = ?",
        "Tell me the quotient of {a} and {b}.",
        "Compute {a}//{b}",
        "{a} divided by {b} equals",
        "Quick question: what is {a} divided by {b}, rounded down to a whole number?",
    ),
}
# Division phrasings that ask for floor division; every other division phrasing gets a division that comes out even.
FLOOR_DIVISIONS = frozenset(("Compute {a}//{b}", NEW_PHRASINGS["div"][-1]))


def questions(per_phrasing: int, seed: int, max_digits: int = 5, negative_fraction: float = 0.25) -> datasets.Dataset:
    """`per_phrasing` questions for every phrasing of `NEW_PHRASINGS`, with the columns of `arithmetic_task`'s
    binary rows (text, answer_text, operation, operands, digits) and the phrasing."""
    rng = random.Random(seed)
    rows = []
    for operation, phrasings in NEW_PHRASINGS.items():
        for phrasing in phrasings:
            for _ in range(per_phrasing):
                a = task_library.signed_operand(rng, max_digits, negative_fraction)
                b = task_library.signed_operand(rng, max_digits, negative_fraction, nonzero=operation == "div")
                if operation == "div" and phrasing not in FLOOR_DIVISIONS:  # a multiple of b: comes out even
                    a = b * rng.randrange(10**max_digits // abs(b)) * (-1 if rng.random() < negative_fraction else 1)
                answer = dcomp_isa.alu_signed(operation, a, b, 64)
                rows.append(
                    {
                        "text": phrasing.format(a=a, b=b),
                        "answer_text": str(answer),
                        "operation": operation,
                        "operands": [a, b],
                        "digits": max(len(str(abs(a))), len(str(abs(b)))),
                        "phrasing": phrasing,
                    }
                )
    return datasets.Dataset.from_list(rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--per-phrasing", type=int, default=12, help="questions per phrasing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chat-fraction", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--report", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    data = run_settings(args.model)["data"]
    if data.get("task") != "arithmetic" or data.get("encoding") != "binary":
        raise ValueError(f"{args.model}: not a binary-arithmetic run (--task arithmetic --encoding binary)")
    model = load_model(args.model).eval()
    tokenizer = load_tokenizer(args.model)
    rows = task_library.tokenize_for_causal_lm(
        questions(args.per_phrasing, args.seed, data["max_digits"]), tokenizer, chat_fraction=args.chat_fraction
    )
    figures = exact_match(model, tokenizer, rows, args.batch_size, max_new_tokens=24)
    table = [[group, f"{share:.1%}", count] for group, (share, count) in figures.items()]
    print(markdown_table(["questions", "exact match", "n"], table))
    if args.report:
        args.report.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
