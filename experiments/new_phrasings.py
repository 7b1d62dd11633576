"""Exact match of a binary-arithmetic train.py run on questions no split of `library.tasks` asks, through plain
`generate()` as `generate_eval` asks (left-padded batches, greedy, the answer's tokens then EOS); half the
questions go through the chat template; operands as in training (1–5 digits each). Two kinds:

* phrasings (the default): new frames, new words, symbols without spaces after a new frame ("Compute 12*7";
  since commit be5c452 the default phrasings write them in their question frames, "What is 12*7?"), "= ?" and
  "equals" endings. The run's `test` split holds out one training combination of frame and expression per
  operation; these are out of every split, a proxy for the phrasings users write. A quarter of the operands are
  negative; a division is exact unless its phrasing asks for rounding down. Reported per operation, digit count,
  prompt kind and phrasing.
* `--wide-words`: the wide set's expressions (`library.tasks.WIDE_QUESTIONS`, synonyms and inflections of the
  default set's words: "combined", "multiplying", "split … ways") in the default set's question frames: words a run
  on the default phrasings never saw, with the frames it did. Divisions come out even. Reported per phrasing too.
* `--number-formats`: the default set's phrasings (`library.tasks.PHRASINGS["all"]`) with the operands written as
  people write numbers, not as training writes them: digit groups ("12,345"), the typographic minus ("−42"),
  negatives in brackets ("(-42)") and explicit plus signs ("+42"), and the plain form as a control. 40 % of the
  operands are negative; divisions come out even; answers are expected plain. Reported per format too.
* `--symbols`: every symbol people write an operation with ("+", "-", "*", "×", "x", "/", "÷"), joined to its
  operands and spaced ("12/4", "12 / 4"), in the frames of the new phrasings (`SYMBOL_FRAMES`), which no set asks a
  symbol in: a symbol whose token no training prompt writes votes nothing, whatever the frame.
  Divisions come out even. Reported per phrasing too.
* `--system-prompts`: the default set's phrasings through the chat template with a system message of the user's
  own (`SYSTEM_PROMPTS`) in place of the template's default, which every chat prompt of training has: its words
  stand in the selection window unless the window is bounded at the turn (`computer_selection_boundary_ids`).
  Divisions come out even. Reported per system message too.
* `--leading-numbers`: the default set's phrasings after a lead-in that writes numbers of its own before the
  operands (`LEADING_NUMBERS`: "Question 3: …", "In 2024, …", "Step 1 of 4: …", a date), as numbered exercises and
  chat templates with a date in their system prompt write them; no training prompt has them. Divisions come out
  even. Reported per lead-in too.

    python -m experiments.new_phrasings --model runs/smol_lora [--per-phrasing 12] [--seed 0]
        [--number-formats | --wide-words | --symbols | --system-prompts | --leading-numbers]
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import datasets

import dcomp_isa
from experiments.generate_eval import binary_arithmetic_run, exact_match, print_exact_match
from library import tasks as task_library

# Per operation, phrasings whose frame or wording no split of library.tasks uses ({a} op {b}, canonical order). Five
# changed in session 13, when their words went into the default set ("increased by", "decreased by", "less",
# "multiplied with", "over"); those with "altogether", "cut by", "remove", "multiply to" and "per" replace them.
NEW_PHRASINGS: dict[str, tuple[str, ...]] = {
    "add": (
        "What do {a} and {b} add up to?",
        "{a} + {b} = ?",
        "Tell me the sum of {a} and {b}.",
        "Compute {a}+{b}",
        "{a} plus {b} equals",
        "Quick question: what is {a} and {b} altogether?",
    ),
    "sub": (
        "What is {a} cut by {b}?",
        "{a} - {b} = ?",
        "Tell me the result of subtracting {b} from {a}.",
        "Compute {a}-{b}",
        "{a} minus {b} equals",
        "Quick question: what is left when you remove {b} from {a}?",
    ),
    "mul": (
        "What do {a} and {b} multiply to?",
        "{a} * {b} = ?",
        "Tell me the product of {a} and {b}.",
        "Compute {a}*{b}",
        "{a} times {b} equals",
        "Quick question: what do you get if you multiply {a} by {b}?",
    ),
    "div": (
        "What is {a} per {b}?",
        "{a} / {b} = ?",
        "Tell me the quotient of {a} and {b}.",
        "Compute {a}//{b}",
        "{a} divided by {b} equals",
        "Quick question: what is {a} divided by {b}, rounded down to a whole number?",
    ),
}
# Division phrasings that ask for floor division; every other division phrasing gets a division that comes out even.
FLOOR_DIVISIONS = frozenset(("Compute {a}//{b}", NEW_PHRASINGS["div"][-1]))


# Number format name -> how it writes an integer (`--number-formats`).
NUMBER_FORMATS: dict[str, Callable[[int], str]] = {
    "plain": str,
    "digit groups": "{:,}".format,
    "typographic minus": lambda value: str(value).replace("-", "\u2212"),
    "negatives in brackets": lambda value: f"({value})" if value < 0 else str(value),
    "plus signs": lambda value: f"+{value}" if value >= 0 else str(value),
}

# Per operation, the symbols people write it with, and the new phrasings' frames to ask them in.
SYMBOLS: dict[str, tuple[str, ...]] = {"add": ("+",), "sub": ("-",), "mul": ("*", "×", "x"), "div": ("/", "÷")}
SYMBOL_FRAMES: tuple[str, ...] = ("Compute {expr}", "{expr} = ?", "Tell me {expr}.", "Quick question: what is {expr}?")

# System message name -> its text (`--system-prompts`): what users put there, none of it in a training prompt.
SYSTEM_PROMPTS: dict[str, str] = {
    "assistant": "You are a helpful assistant.",
    "calculator": "You are a calculator. Reply with the number only.",
    "tutor": "You are a patient math tutor who explains things simply.",
    "brief": "Answer every question as briefly as you can, with no extra words.",
    "Italian": "Sei un assistente utile.",
}

T = TypeVar("T")

# Lead-in name -> what it writes before a question (`--leading-numbers`): numbers of its own ahead of the operands.
LEADING_NUMBERS: dict[str, Callable[[random.Random, str], str]] = {
    "question number": lambda rng, text: f"Question {rng.randint(1, 20)}: {text}",
    "numbered item": lambda rng, text: f"{rng.randint(1, 9)}. {text}",
    "a year": lambda rng, text: f"In {rng.randint(1990, 2030)}, {text[:1].lower()}{text[1:]}",
    "a count": lambda rng, text: f"I have {rng.randint(2, 5)} questions. {text}",
    "step n of m": lambda rng, text: f"Step {rng.randint(1, 3)} of {rng.randint(4, 9)}: {text}",
    "a date": lambda rng, text: f"Today is {rng.randint(1, 28)} March {rng.randint(2000, 2030)}. {text}",
}


def question(
    rng: random.Random, operation: str, template: str, max_digits: int, negative_fraction: float, exact: bool, **extra
) -> dict:
    """One question in `template` with fresh operands, a row with the columns of `arithmetic_task`'s binary rows
    (text, answer_text, operation, operands, digits) and `extra`; `exact`: a division comes out even; `extra`'s
    "write" (if given) writes the operands (else `str`) and is not a column."""
    write = extra.pop("write", str)
    a = task_library.signed_operand(rng, max_digits, negative_fraction)
    b = task_library.signed_operand(rng, max_digits, negative_fraction, nonzero=operation == "div")
    if operation == "div" and exact:  # a multiple of b that keeps within max_digits
        a = b * rng.randrange(10**max_digits // abs(b)) * (-1 if rng.random() < negative_fraction else 1)
    return {
        "text": template.format(a=write(a), b=write(b)),
        "answer_text": str(dcomp_isa.alu_signed(operation, a, b, 64)),
        "operation": operation,
        "operands": [a, b],
        "digits": max(len(str(abs(a))), len(str(abs(b)))),
        **extra,
    }


def questions(
    per_phrasing: int,
    seed: int,
    max_digits: int = 5,
    negative_fraction: float = 0.25,
    phrasings: dict[str, tuple[str, ...]] = NEW_PHRASINGS,
) -> datasets.Dataset:
    """`per_phrasing` questions for every phrasing of `phrasings` (`question` rows with the phrasing); a division
    comes out even unless its phrasing is one of `FLOOR_DIVISIONS`."""
    rng = random.Random(seed)
    rows = [
        question(
            rng, operation, phrasing, max_digits, negative_fraction, phrasing not in FLOOR_DIVISIONS, phrasing=phrasing
        )
        for operation, options in phrasings.items()
        for phrasing in options
        for _ in range(per_phrasing)
    ]
    return datasets.Dataset.from_list(rows)


def wide_words() -> dict[str, tuple[str, ...]]:
    """The wide set's own expressions (`library.tasks.WIDE_QUESTIONS`: "{a} and {b} combined", "the result of
    multiplying {a} by {b}", "{a} split {b} ways") in the default question frames, per operation: the synonyms
    and inflections of the default set's words that a run on the default phrasings never saw (`--wide-words`)."""
    expressions = {op: task_library.WIDE_QUESTIONS[op] for op in NEW_PHRASINGS}
    return task_library.compose(expressions, task_library.QUESTION_FRAMES)


def symbol_phrasings() -> dict[str, tuple[str, ...]]:
    """Every symbol of `SYMBOLS` joined to its operands and spaced ("{a}/{b}", "{a} / {b}") in every frame of
    `SYMBOL_FRAMES`, per operation (`--symbols`)."""
    expressions = {
        op: tuple(expression for symbol in symbols for expression in (f"{{a}}{symbol}{{b}}", f"{{a}} {symbol} {{b}}"))
        for op, symbols in SYMBOLS.items()
    }
    return task_library.compose(expressions, SYMBOL_FRAMES)


def in_default_phrasings(
    rng: random.Random, per_variant: int, variants: dict[str, T]
) -> Iterator[tuple[str, T, str, str]]:
    """(name, variant, operation, phrasing): `per_variant` draws for every variant, the operations in turn, each in
    a random phrasing of the default set."""
    operations = ("add", "sub", "mul", "div")
    for name, variant in variants.items():
        for index in range(per_variant):
            operation = operations[index % len(operations)]
            yield name, variant, operation, rng.choice(task_library.PHRASINGS["all"][operation])


def format_questions(
    per_format: int, seed: int, max_digits: int = 5, negative_fraction: float = 0.4
) -> datasets.Dataset:
    """`per_format` questions for every format of `NUMBER_FORMATS`, the operations in turn, each in a random
    phrasing of the default set (`question` rows with the format); divisions come out even."""
    rng = random.Random(seed)
    rows = [
        question(rng, operation, phrasing, max_digits, negative_fraction, True, format=name, write=write)
        for name, write, operation, phrasing in in_default_phrasings(rng, per_format, NUMBER_FORMATS)
    ]
    return datasets.Dataset.from_list(rows)


def system_prompt_rows(per_prompt: int, seed: int, tokenizer, max_digits: int = 5) -> datasets.Dataset:
    """`per_prompt` questions for every system message of `SYSTEM_PROMPTS`, the operations in turn, each in a
    random phrasing of the default set, tokenized through the chat template with that system message (`question`
    rows with the message's name as "system"); divisions come out even."""
    rng = random.Random(seed)
    asked = [
        datasets.Dataset.from_list(
            [
                question(rng, operation, phrasing, max_digits, 0.25, True, system=name)
                for _, _, operation, phrasing in in_default_phrasings(rng, per_prompt, {name: None})
            ]
        )
        for name in SYSTEM_PROMPTS
    ]
    return datasets.concatenate_datasets(
        [
            task_library.tokenize_for_causal_lm(rows, tokenizer, chat_fraction=1.0, system=SYSTEM_PROMPTS[name])
            for name, rows in zip(SYSTEM_PROMPTS, asked)
        ]
    )


def leading_questions(
    per_lead: int, seed: int, max_digits: int = 5, negative_fraction: float = 0.25
) -> datasets.Dataset:
    """`per_lead` questions for every lead-in of `LEADING_NUMBERS`, the operations in turn, each in a random
    phrasing of the default set after the lead-in's own numbers ("Question 3: What is 12 plus 7?"); `question` rows
    with the lead-in; divisions come out even."""
    rng = random.Random(seed)
    rows = []
    for name, lead, operation, phrasing in in_default_phrasings(rng, per_lead, LEADING_NUMBERS):
        row = question(rng, operation, phrasing, max_digits, negative_fraction, True, lead=name)
        rows.append(row | {"text": lead(rng, row["text"])})
    return datasets.Dataset.from_list(rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--per-phrasing", type=int, default=12, help="questions per phrasing (per format: 4×)")
    kinds = parser.add_mutually_exclusive_group()  # one set of questions per call; none: the new phrasings
    kinds.add_argument("--number-formats", action="store_true", help="ask with the operands in other formats")
    kinds.add_argument(
        "--wide-words", action="store_true", help="ask in the wide set's expressions, in the default frames"
    )
    kinds.add_argument("--symbols", action="store_true", help="ask with every operation symbol, joined and spaced")
    kinds.add_argument("--system-prompts", action="store_true", help="ask through the chat template, own system")
    kinds.add_argument(
        "--leading-numbers", action="store_true", help='ask after numbers of the prompt\'s own ("Question 3: …")'
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chat-fraction", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--report", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    settings, model, tokenizer = binary_arithmetic_run(args.model)
    max_digits = settings["data"]["max_digits"]
    if args.system_prompts:  # every question through the template, with each system message
        rows = system_prompt_rows(4 * args.per_phrasing, args.seed, tokenizer, max_digits)
    else:
        if args.number_formats:
            asked = format_questions(4 * args.per_phrasing, args.seed, max_digits)
        elif args.leading_numbers:
            asked = leading_questions(4 * args.per_phrasing, args.seed, max_digits)
        elif args.symbols:
            asked = questions(args.per_phrasing, args.seed, max_digits, phrasings=symbol_phrasings())
        elif args.wide_words:
            asked = questions(args.per_phrasing, args.seed, max_digits, phrasings=wide_words())
        else:
            asked = questions(args.per_phrasing, args.seed, max_digits)
        rows = task_library.tokenize_for_causal_lm(asked, tokenizer, chat_fraction=args.chat_fraction)
    return print_exact_match(exact_match(model, tokenizer, rows, args.batch_size, max_new_tokens=24), args.report)


if __name__ == "__main__":
    main()
