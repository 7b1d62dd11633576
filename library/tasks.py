"""Natural-language algorithmic tasks (paper §4.2) as deterministic `datasets.DatasetDict`s.

Builders: `arithmetic_task` ("Add 3 and 4"), `fibonacci_task` ("Calculate the fibonacci function, starting
from inputs 6 and 2, to a recursion depth of 3"), `list_task` ("Sort the list 5, 3, 9", "What is the maximum
of 5, 3, 9?"); `load_task(name, **kwargs)` dispatches by name ("arithmetic", "fibonacci", "list").

Columns of every split:
    text         the prompt (str)
    answer       the answer (int; list[int] for sorting)
    answer_text  the answer as the model writes it (str: "7", "3, 5, 9")
    operation    the task's operation (str: "add", "sub", ..., "fib", "sort", "max")
    operands     the inputs in the operation's canonical order (list[int]): "Subtract 4 from 9" has operands
                 [9, 4] and answer sub(9, 4) = 5; a list task's operands are the list as written
    program      the library program the model should select (str: the ALU op name, "fib", "sort", "list_max")
    template     id of the phrasing (int, unique within a task)
plus `depth` (fibonacci) and `length` (lists). Answers are computed with `dcomp_isa.alu_int` (values mod n).

Splits and what the test splits hold out. Each operation has several phrasings, every frame ("Can you …?")
around every expression ("add {a} and {b}", `compose`); one per operation, chosen by the seed among those whose
words all occur in the operation's other phrasings (`composable`), is held out. An example's operands (a Python
list) are held out when a seeded hash of them falls
below `holdout_fraction`: `int.from_bytes(blake2b(f"{seed}:{operands}".encode(), digest_size=8).digest(),
"little") / 2**64 < holdout_fraction` (for fibonacci the operands are the pair [a, b], whatever the depth;
arithmetic holds out the pair for every operation). Then
    train        non-held-out phrasings and operands, training depths/lengths
    validation   the same distribution as train; no prompt occurs in both
    test         ONLY held-out phrasings AND held-out operands (training depths/lengths): every test prompt
                 pairs a phrasing and operands that never occur in train or validation
    test_long    (fibonacci, lists) training phrasings and operands with deeper recursion / longer lists than
                 in training: only the length changes
Splits are sampled with `random.Random(seed)` (operation, phrasing, operands, depth or length uniformly);
prompts are distinct within and across splits.

Disk cache: every builder takes `cache_dir` (default `cache_root() / "tasks"`, see `library.tokenizer`) and
stores its result under `<cache_dir>/<key>`, where the key fingerprints the builder's name, all its arguments
(defaults included), this module's source and `dcomp_isa`'s. A hit is loaded with `load_from_disk`; a miss
regenerates the same data from the seed.

Model input format (`tokenize_for_causal_lm`): the prompt is `text + " "` and the target `answer_text` then
EOS, so the model reads `BOS text ␣ answer_text EOS` (LLaMA-3: "Add 3 and 4" + " " + "7" is
[128000, 2261, 220, 18, 323, 220, 19, 220, 22, 128001]; the space before a number is a token of its own).
Labels are -100 on the prompt (BOS and the space included) and padding, and the token ids on the answer and
its EOS. `answer_position` is the index of the last prompt token (the space): the position whose next-token
logits must give the first answer token, where the differentiable computer's result is needed. Training may also
end plain prompts otherwise (`PLAIN_ENDINGS`: "Q: … A:", no final space, …); where no space ends the prompt, the
model writes it, and the answer follows as after "text ".
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import inspect
import itertools
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import datasets

import dcomp_isa
from library.tokenizer import cache_root, fingerprint

# Phrasings are composed: a frame (how the question is asked) around an expression (what is asked). Every frame
# goes with every expression, so a held-out combination is made of words the training phrasings use (the test
# split measures systematic generalisation to a new combination, not guessing the meaning of unseen words).
FRAMES: tuple[str, ...] = ("{Expr}", "Please {expr}", "Can you {expr}?", "What do you get when you {expr}?")

# Expressions per operation; `{a}` and `{b}` are the operands in the op's canonical order (sub(a, b) = a - b).
ARITHMETIC_EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "add": (
        "add {a} and {b}",
        "add {b} to {a}",
        "compute the sum of {a} and {b}",
        "calculate {a} + {b}",
        "work out {a} plus {b}",
    ),
    "sub": (
        "subtract {b} from {a}",
        "take {b} away from {a}",
        "compute the difference {a} - {b}",
        "calculate {a} - {b}",
        "work out {a} minus {b}",
    ),
    "mul": (
        "multiply {a} by {b}",
        "multiply {a} and {b}",
        "compute the product of {a} and {b}",
        "calculate {a} * {b}",
        "work out {a} times {b}",
    ),
    "div": (
        "divide {a} by {b}",
        "compute how many times {b} goes into {a}",
        "calculate {a} // {b}",
        "work out {a} divided by {b}, rounded down",
        "work out how many times {b} fits into {a}",
    ),
    "mod": (
        "compute the remainder of {a} divided by {b}",
        "calculate {a} mod {b}",
        "work out {a} modulo {b}",
        "find what is left over when {a} is divided by {b}",
    ),
    "max": (
        "compute the maximum of {a} and {b}",
        "calculate max({a}, {b})",
        "work out the larger of {a} and {b}",
        "find the bigger of {a} and {b}",
    ),
    "min": (
        "compute the minimum of {a} and {b}",
        "calculate min({a}, {b})",
        "work out the smaller of {a} and {b}",
        "find the smaller of {a} and {b}",
    ),
}
# Questions about a value ("What is 3 plus 4?"): question frames around noun phrases, per operation, the symbols
# written with and without spaces ("3 + 4", "3+4", "3+-4"). The signed (multi-digit) task asks both kinds
# (`phrasings="all"`): people write numbers in questions more than in commands. A token's selection vote is learned
# per token id, so an operation word no phrasing has votes nothing: the common ones ("increased by", "less", "over")
# are here, and experiments/new_phrasings measures words no set has.
QUESTION_FRAMES: tuple[str, ...] = (
    "What is {expr}?",
    "What's {expr}?",
    "How much is {expr}?",
    "{Expr} =",
    "Find {expr}.",
)
ARITHMETIC_QUESTIONS: dict[str, tuple[str, ...]] = {
    "add": (
        "{a} plus {b}",
        "{a} + {b}",
        "{a}+{b}",
        "the sum of {a} and {b}",
        "the total of {a} and {b}",
        "{a} added to {b}",
        "{a} increased by {b}",
        "{a} and {b} added together",
        "{b} more than {a}",
    ),
    "sub": (
        "{a} minus {b}",
        "{a} - {b}",
        "{a}-{b}",
        "the difference between {a} and {b}",
        "{b} subtracted from {a}",
        "{a} take away {b}",
        "{a} decreased by {b}",
        "{a} less {b}",
        "{b} less than {a}",
    ),
    "mul": (
        "{a} times {b}",
        "{a} * {b}",
        "{a}*{b}",
        "the product of {a} and {b}",
        "{a} multiplied by {b}",
        "{a} x {b}",
        "{a} multiplied with {b}",
        "{a} and {b} multiplied together",
    ),
    "div": (
        "{a} divided by {b}",
        "{a} // {b}",
        "{a}//{b}",
        "{a} / {b}",
        "{a}/{b}",
        "{a} / {b}, rounded down",
        "the quotient of {a} divided by {b}",
        "{a} divided by {b}, rounded down",
        "{a} over {b}",
        "{a} shared equally among {b}",
    ),
    "mod": ("{a} mod {b}", "{a} modulo {b}", "the remainder of {a} divided by {b}", "{a} % {b}"),
    "max": ("the maximum of {a} and {b}", "max({a}, {b})", "the larger of {a} and {b}", "the bigger of {a} and {b}"),
    "min": ("the minimum of {a} and {b}", "min({a}, {b})", "the smaller of {a} and {b}", "the lesser of {a} and {b}"),
}
# Ops whose second operand is drawn from 1..n-1 ("Divide 5 by 0" is not a sensible question).
NONZERO_SECOND_OPERAND = frozenset({"div", "mod"})

FIBONACCI_EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "fib": (
        "calculate the fibonacci function, starting from inputs {a} and {b}, to a recursion depth of {depth}",
        "compute the fibonacci recurrence from {a} and {b} with a recursion depth of {depth}",
        "run the fibonacci function on the inputs {a} and {b} to depth {depth}",
        "apply the fibonacci step to {a} and {b}, {depth} times",
    ),
}

LIST_EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "sort": (
        "sort the list {values}",
        "sort {values} in ascending order",
        "put the numbers {values} in increasing order",
        "arrange the list {values} from smallest to largest",
    ),
    "max": (
        "find the maximum of {values}",
        "find the largest number in {values}",
        "return the maximum of the list {values}",
        "pick the largest of the numbers {values}",
    ),
    "min": (
        "find the minimum of {values}",
        "find the smallest number in {values}",
        "return the minimum of the list {values}",
        "pick the smallest of the numbers {values}",
    ),
}
# Other ways a plain prompt ends than train.py's "{text} " (`tokenize_for_causal_lm(ending_fraction=...)`): with no
# space, on its own line, and question-and-answer frames. experiments/prompt_endings measures the GPT-3 arithmetic
# benchmark's "Question: {text}\nAnswer:", a combination of these frames that none of them is. No ending may go on
# where another one is answered: the trigger's target at that token would be 1 in one row and 0 in the other
# ("{text}\n" is answered after the line break, so "{text}\nAnswer:" is not an ending; tests/test_tasks.py checks).
PLAIN_ENDINGS: tuple[str, ...] = (
    "{text}",
    "{text}\n",
    "{text} Answer:",
    "Q: {text}\nA:",
    "Question: {text}\nResult:",
)
# More frames for `--endings wide`: other cue words and roles, so the lead head learns "an answer is due here" rather
# than a handful of frames. The GPT-3 format (its "\nAnswer:" cue) stays out, as do the frames experiments/
# prompt_endings holds out to measure frames no training prompt uses.
WIDE_ENDINGS: tuple[str, ...] = PLAIN_ENDINGS + (
    "{text} =",
    "{text} The answer is",
    "Q: {text} A:",
    "Input: {text}\nOutput:",
    "Problem: {text}\nSolution:",
    "User: {text}\nAssistant:",
    "Task: {text}\nResponse:",
    "Query: {text} Reply:",
)
# `--endings wide_shares`: WIDE_ENDINGS drawn with PLAIN_ENDINGS' shares of the three kinds of ending (no space 1/5,
# line break 1/5, a frame 3/5; the frames share theirs evenly). Drawn evenly, WIDE_ENDINGS gives the line break 1/13
# against 7/13 for frames that go on after a line break, and the trigger learns to wait at every line break.
BARE_ENDINGS = ("{text}", "{text}\n")  # no space, a line break: the endings that are no frame
WIDE_ENDING_FRAMES = tuple(ending for ending in WIDE_ENDINGS if ending not in BARE_ENDINGS)
# Each bare ending weighs as all wide frames together, each frame as the plain frames together: bare 1/5 each.
WIDE_SHARED_ENDINGS: dict[str, int] = dict.fromkeys(BARE_ENDINGS, len(WIDE_ENDING_FRAMES)) | dict.fromkeys(
    WIDE_ENDING_FRAMES, len(PLAIN_ENDINGS) - len(BARE_ENDINGS)
)
# train.py --endings: each ending with its weight (its share of the ending prompts is weight / total)
ENDINGS: dict[str, Mapping[str, int]] = {
    "default": dict.fromkeys(PLAIN_ENDINGS, 1),
    "wide": dict.fromkeys(WIDE_ENDINGS, 1),
    "wide_shares": WIDE_SHARED_ENDINGS,
}
ENDING_SEED = 1  # `_held_out`'s seed for the ending share (the chat share uses 0): the two are drawn apart

# How a list is written in a prompt ({values} of a list phrasing), issue 13.
LIST_FORMATS: dict[str, Callable[[list[str]], str]] = {
    "comma": lambda values: ", ".join(values),  # 3, 1, 2
    "brackets": lambda values: "[" + ", ".join(values) + "]",  # [3, 1, 2]
    "spaces": lambda values: " ".join(values),  # 3 1 2
    "and": lambda values: ", ".join(values[:-1]) + " and " + values[-1] if len(values) > 1 else values[0],
}


def compose(expressions: dict[str, tuple[str, ...]], frames: tuple[str, ...] = FRAMES) -> dict[str, tuple[str, ...]]:
    """Every frame around every expression, per operation; `{Expr}` is the expression capitalised."""

    def frame(template: str, expression: str) -> str:
        capitalised = expression[:1].upper() + expression[1:]
        return template.replace("{Expr}", capitalised).replace("{expr}", expression)

    return {op: tuple(frame(f, e) for e in options for f in frames) for op, options in expressions.items()}


# The wide set (`phrasings="wide"`): more ways of asking and of writing numbers, around both kinds of expression.
# experiments/new_phrasings measures phrasings outside every set here, so these avoid its frames and words.
WIDE_FRAMES: tuple[str, ...] = (
    "Calculate {expr}.",
    "Give me {expr}.",
    "Work out {expr}:",
    "{Expr} is",
    "Do you know {expr}?",
    "Answer this: {expr} =",
    "{Expr}?",
    "Help me find {expr}.",
    "Evaluate {expr}.",
    "Solve {expr}.",
    "Determine {expr}.",
    "What would {expr} be?",
    "I need to know {expr}.",
    "Result of {expr}:",
)
WIDE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "add": (
        "{a} and {b} combined",
        "{a} more than {b}",
        "the result of adding {b} to {a}",
        "{a} raised by {b}",
        "{a} incremented by {b}",
        "{a} augmented by {b}",
        "{a} and {b} put together",
        "the sum total of {a} and {b}",
        "{a} and {b} summed",
        "the addition of {a} and {b}",
        "{b} added onto {a}",
    ),
    "sub": (
        "{a} reduced by {b}",
        "{b} fewer than {a}",
        "the result of taking {b} from {a}",
        "{a} lowered by {b}",
        "{a} decremented by {b}",
        "{a} diminished by {b}",
        "{a} without {b}",
        "{b} deducted from {a}",
        "{b} taken from {a}",
        "the subtraction of {b} from {a}",
        "{a} subtract {b}",
    ),
    "mul": (
        "{a} × {b}",
        "{a} groups of {b}",
        "the result of multiplying {a} by {b}",
        "{a}×{b}",
        "{a}x{b}",
        "{a} X {b}",
        "{a} scaled by {b}",
        "{a} lots of {b}",
        "{a} copies of {b}",
        "the multiplication of {a} and {b}",
        "{a} multiplied times {b}",
    ),
    "div": (
        "{a} ÷ {b}, rounded down",
        "{a} split into groups of {b}",
        "the whole quotient of {a} by {b}",
        "{a} ÷ {b}",
        "{a}÷{b}",
        "the ratio of {a} to {b}",
        "{a} split {b} ways",
        "{a} divided into {b} equal parts",
        "the result of dividing {a} by {b}",
        "{a} divided evenly by {b}",
    ),
    "mod": ("{a}%{b}",),
}

# The wider set (`phrasings="wider"`): the wide set, more words per operation and more question frames, each
# expression in every question frame. A selection that has seen many ways of naming each operation leans less on
# any one word. Still nothing from experiments/new_phrasings' frames and words (tests/test_experiments_new_phrasings).
WIDER_FRAMES: tuple[str, ...] = (
    "Please figure out {expr}.",
    "So what's {expr}?",
    "Hey, what is {expr}?",
    "I wonder what {expr} is.",
    "Could you find {expr}?",
    "What number is {expr}?",
    "Show me {expr}.",
    "Math: {expr} =",
)
WIDER_QUESTIONS: dict[str, tuple[str, ...]] = {
    "add": (
        "{a} with {b} added",
        "the total when {b} is added to {a}",
        "{a} plus another {b}",
        "{a} enlarged by {b}",
        "{a} boosted by {b}",
        "the combined total of {a} and {b}",
        "{a} grown by {b}",
        "{b} on top of {a}",
        "{a} and {b} in total",
        "{a} gaining {b}",
        "{a} and {b} together",
        "{a} pluses {b}",
    ),
    "sub": (
        "{a} with {b} taken away",
        "{a} dropped by {b}",
        "{a} shrunk by {b}",
        "{a} after losing {b}",
        "{a} fallen by {b}",
        "{a} after taking away {b}",
        "{a} once {b} is deducted",
        "{a} lessened by {b}",
        "{a} knocked down by {b}",
        "{a} with {b} subtracted",
        "{a} short of {b}",
        "{a} declined by {b}",
    ),
    "mul": (
        "{a} rows of {b}",
        "{a} sets of {b}",
        "{a} batches of {b}",
        "{a} packs of {b}",
        "{a} boxes of {b}",
        "the area of a {a} by {b} rectangle",
        "{a} repeated {b} times",
        "{a} taken {b} times",
        "the product when {a} is multiplied by {b}",
        "{a} multiplies {b}",
        "{a} bags of {b} each",
        "{a} times as much as {b}",
    ),
    "div": (
        "{a} dealt out among {b}",
        "{a} split evenly into {b}",
        "{a} in groups of {b}",
        "{a} distributed over {b}",
        "{a} shared between {b}",
        "{a} broken into {b} equal groups",
        "{a} parted into {b} shares",
        "{a} portioned {b} ways",
        "how many {b}s fit in {a}",
        "{a} divided among {b} people",
        "the share of each of {b} from {a}",
        "{a} spread over {b}",
    ),
}

ARITHMETIC_TEMPLATES = compose(ARITHMETIC_EXPRESSIONS)
QUESTION_TEMPLATES = compose(ARITHMETIC_QUESTIONS, QUESTION_FRAMES)
PHRASINGS = {
    "commands": ARITHMETIC_TEMPLATES,
    "all": {op: ARITHMETIC_TEMPLATES[op] + QUESTION_TEMPLATES[op] for op in ARITHMETIC_TEMPLATES},
}
PHRASINGS["wide"] = {
    op: templates
    + compose(ARITHMETIC_QUESTIONS, WIDE_FRAMES)[op]
    + compose(WIDE_QUESTIONS, QUESTION_FRAMES + WIDE_FRAMES).get(op, ())
    for op, templates in PHRASINGS["all"].items()
}
PHRASINGS["wider"] = {
    op: templates
    + compose(ARITHMETIC_QUESTIONS, WIDER_FRAMES).get(op, ())
    + compose(WIDE_QUESTIONS, WIDER_FRAMES).get(op, ())
    + compose(WIDER_QUESTIONS, QUESTION_FRAMES + WIDE_FRAMES + WIDER_FRAMES).get(op, ())
    for op, templates in PHRASINGS["wide"].items()
}
FIBONACCI_TEMPLATES = compose(FIBONACCI_EXPRESSIONS)
LIST_TEMPLATES = compose(LIST_EXPRESSIONS)
LIST_PROGRAMS = {"sort": "sort", "max": "list_max"}
# Signed lists (`list_task(max_digits=...)`): programs that start from the first element, not from 0.
SIGNED_LIST_PROGRAMS = {"sort": "sort", "max": "list_maximum", "min": "list_minimum"}

_SOURCE_KEY = fingerprint(Path(__file__).read_bytes(), Path(dcomp_isa.__file__).read_bytes())
_METRIC_PATH = Path(__file__).parent / "metrics" / "exact_match"


def _disk_cached(builder: Callable[..., datasets.DatasetDict]) -> Callable[..., datasets.DatasetDict]:
    """Adds the `cache_dir` keyword and the disk cache described in the module docstring to `builder`."""
    signature = inspect.signature(builder)

    @functools.wraps(builder)
    def cached(*args, cache_dir: str | os.PathLike | None = None, **kwargs) -> datasets.DatasetDict:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = json.dumps(bound.arguments, sort_keys=True)
        folder = Path(cache_dir if cache_dir is not None else cache_root() / "tasks")
        path = folder / fingerprint(builder.__name__, arguments, _SOURCE_KEY)
        if not path.is_dir():
            dataset = builder(*bound.args, **bound.kwargs)
            folder.mkdir(parents=True, exist_ok=True)
            # Save to a scratch folder, then rename, so concurrent builders never see a partial dataset.
            scratch = tempfile.mkdtemp(dir=folder, prefix=".partial-")
            dataset.save_to_disk(scratch, num_shards={split: 1 for split in dataset})  # 0 shards would not load
            try:
                os.rename(scratch, path)
            except OSError:  # another process finished first; its copy is identical
                shutil.rmtree(scratch)
        return datasets.load_from_disk(str(path))

    return cached


def words(phrasing: str) -> set[str]:
    """The pieces a phrasing is made of as a BPE tokenizer sees them: words, placeholders and punctuation, each
    with its leading space ("Add" at the start and " add" inside are different tokens)."""
    return set(re.findall(r"\s?(?:\{\w+\}|\w+|[^\s\w])", phrasing))


def composable(ids: list[int], phrasings: list[tuple[str, str]]) -> list[int]:
    """The phrasings among `ids` (one operation's) that can be held out: every word of one also occurs in the
    operation's other phrasings. Raises if there is none."""
    found = [i for i in ids if words(phrasings[i][1]) <= set().union(*(words(phrasings[j][1]) for j in ids if j != i))]
    if not found:
        operation = phrasings[ids[0]][0]
        raise ValueError(f"no phrasing of {operation!r} can be held out: each one has a word no other one uses")
    return found


def _held_out(operands: list[int], seed: int, fraction: float) -> bool:
    digest = hashlib.blake2b(f"{seed}:{operands}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


@dataclass(frozen=True)
class _Split:
    """How to sample one split: its size, which phrasings and operands it uses, and its depths/lengths."""

    size: int
    held_out: bool  # True: held-out phrasings and operands only; False: neither
    variants: tuple[int, ...] = ()  # recursion depths or list lengths (uniform); empty for arithmetic


def _splits(
    train_size: int,
    validation_size: int,
    test_size: int,
    variants: tuple[int, ...] = (),
    test_long_size: int = 0,
    long_variants: tuple[int, ...] = (),
) -> dict[str, _Split]:
    """train / validation / test (and test_long when `long_variants` are given), as in the module docstring."""
    splits = {
        "train": _Split(train_size, held_out=False, variants=tuple(variants)),
        "validation": _Split(validation_size, held_out=False, variants=tuple(variants)),
        "test": _Split(test_size, held_out=True, variants=tuple(variants)),
    }
    if long_variants:
        splits["test_long"] = _Split(test_long_size, held_out=False, variants=tuple(long_variants))
    return splits


# draw(rng, operation, variant) -> (template slots, row with answer, answer_text, operands and extra columns)
_Draw = Callable[[random.Random, str, int | None], tuple[dict, dict]]


def _generate(
    templates: dict[str, tuple[str, ...]],
    splits: dict[str, _Split],
    draw: _Draw,
    features: datasets.Features,
    seed: int,
    holdout_fraction: float,
    accept: Callable[[str, dict], bool] | None = None,
) -> datasets.DatasetDict:
    """Sample `splits` as described in the module docstring; `draw` makes one example of an operation; an example
    whose text and row `accept` rejects is drawn again."""
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), not {holdout_fraction}")
    rng = random.Random(seed)
    phrasings = [(operation, phrasing) for operation, options in templates.items() for phrasing in options]
    ids = {operation: [i for i, (op, _) in enumerate(phrasings) if op == operation] for operation in templates}
    if any(len(options) < 2 for options in ids.values()):
        raise ValueError("every operation needs at least two phrasings (one is held out)")
    held_out_template = {operation: rng.choice(composable(options, phrasings)) for operation, options in ids.items()}
    training_templates = {op: [i for i in options if i != held_out_template[op]] for op, options in ids.items()}
    operations = list(templates)
    seen: set[str] = set()
    result = {}
    for name, split in splits.items():
        rows, attempts = [], 0
        while len(rows) < split.size:
            attempts += 1
            if attempts > 100 * split.size + 1000:
                raise ValueError(
                    f"could only draw {len(rows)} distinct {name!r} examples of {split.size}: lower the split "
                    "sizes or raise n or holdout_fraction"
                )
            operation = rng.choice(operations)
            template = held_out_template[operation] if split.held_out else rng.choice(training_templates[operation])
            slots, row = draw(rng, operation, rng.choice(split.variants) if split.variants else None)
            text = phrasings[template][1].format(**slots)
            if _held_out(row["operands"], seed, holdout_fraction) != split.held_out or text in seen:
                continue
            if accept is not None and not accept(text, row):
                continue
            seen.add(text)
            rows.append({"text": text, "operation": operation, "template": template, **row})
        columns = {column: [row[column] for row in rows] for column in features}  # also right for 0 rows
        result[name] = datasets.Dataset.from_dict(columns, features=features)
    return datasets.DatasetDict(result)


def _features(answer: datasets.features.features.FeatureType, *extra: str) -> datasets.Features:
    """The common columns (module docstring) plus int64 columns `extra`."""
    integer = datasets.Value("int64")
    return datasets.Features(
        {
            "text": datasets.Value("string"),
            "answer": answer,
            "answer_text": datasets.Value("string"),
            "operation": datasets.Value("string"),
            "operands": datasets.List(integer),
            "program": datasets.Value("string"),
            "template": integer,
            **{column: integer for column in extra},
        }
    )


def signed_operand(rng: random.Random, max_digits: int, negative_fraction: float, nonzero: bool = False) -> int:
    """An operand as people write them: a digit count uniform in 1..max_digits, a magnitude uniform among the
    numbers of that many digits (1.. when `nonzero`), negative with probability `negative_fraction`."""
    digits = rng.randint(1, max_digits)
    magnitude = rng.randrange(max(10 ** (digits - 1), int(nonzero)), 10**digits)
    return -magnitude if rng.random() < negative_fraction else magnitude


@_disk_cached
def arithmetic_task(
    n: int = 128,
    operations: tuple[str, ...] = ("add", "sub", "mul", "div"),
    train_size: int = 20000,
    validation_size: int = 1000,
    test_size: int = 1000,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    max_digits: int | None = None,
    negative_fraction: float = 0.25,
    phrasings: str = "commands",
    exact_division_fraction: float = 0.0,
) -> datasets.DatasetDict:
    """One-step arithmetic mod n in natural language ("Add 3 and 4" -> 7, "Subtract 9 from 4" -> 123 for n = 128).

    operations: any of ARITHMETIC_TEMPLATES (add, sub, mul, div, mod, max, min); operands a, b are uniform in
    [0, n), b in [1, n) for div and mod; answer = dcomp_isa.alu_int(op, a, b, n); program = op.
    With `max_digits` (the binary machine) operands are exact signed integers instead: a digit count uniform in
    1..max_digits, then a magnitude uniform among the numbers of that many digits, negative with probability
    `negative_fraction` (b ≠ 0 for div and mod); answer = Python's a op b (`dcomp_isa.alu_signed` at 64 bits:
    floor division and modulo), never reduced mod n; the column `digits` holds the longer operand's digit count;
    a share `exact_division_fraction` of the divisions come out even (a is rounded towards zero to a multiple of
    b, after swapping magnitudes so that |a| ≥ |b|).
    phrasings: "commands" ("Add 3 and 4", the paper's), "all" (also the questions "What is 3 plus 4?", "What is
    12*-7?"), "wide" (also more frames and words, "Calculate 12 reduced by 7.") or "wider" (the wide set with more
    words and frames, "So what's 12 shrunk by 7?").
    Splits train / validation / test (module docstring); `cache_dir=` sets the disk cache folder.
    """
    unknown = set(operations) - set(ARITHMETIC_TEMPLATES)
    if unknown:
        raise ValueError(f"no phrasings for {sorted(unknown)}; choose from {sorted(ARITHMETIC_TEMPLATES)}")
    if phrasings not in PHRASINGS:
        raise ValueError(f"phrasings must be one of {sorted(PHRASINGS)}, not {phrasings!r}")

    def draw(rng: random.Random, operation: str, variant: None) -> tuple[dict, dict]:
        nonzero = operation in NONZERO_SECOND_OPERAND
        if max_digits is None:
            a, b = rng.randrange(n), rng.randrange(int(nonzero), n)
            answer = dcomp_isa.alu_int(operation, a, b, n)
        else:
            a = signed_operand(rng, max_digits, negative_fraction)
            b = signed_operand(rng, max_digits, negative_fraction, nonzero)
            if operation == "div" and rng.random() < exact_division_fraction:
                if abs(b) > abs(a) and a != 0:
                    a, b = (1 if a > 0 else -1) * abs(b), (1 if b > 0 else -1) * abs(a)
                a = (1 if a * b >= 0 else -1) * (abs(a) // abs(b)) * b  # towards zero: no extra digit
            answer = dcomp_isa.alu_signed(operation, a, b, 64)
            row = {"answer": answer, "answer_text": str(answer), "operands": [a, b], "program": operation}
            return {"a": a, "b": b}, {**row, "digits": max(len(str(abs(a))), len(str(abs(b))))}
        row = {"answer": answer, "answer_text": str(answer), "operands": [a, b], "program": operation}
        return {"a": a, "b": b}, row

    templates = {operation: PHRASINGS[phrasings][operation] for operation in operations}
    splits = _splits(train_size, validation_size, test_size)
    features = _features(datasets.Value("int64"), *(() if max_digits is None else ("digits",)))
    return _generate(templates, splits, draw, features, seed, holdout_fraction)


def fibonacci(a: int, b: int, depth: int, n: int) -> int:
    """The fibonacci task's answer: b after `depth` steps of (a, b) -> (b, a + b mod n), i.e. F(depth + 1) for
    F(0) = a, F(1) = b, F(k + 1) = F(k) + F(k - 1) mod n.

    This is the result r0 of the standard library's fib program given r1 = a, r2 = b, r3 = depth >= 1:
    fibonacci(6, 2, 1) = 8, (6, 2, 2) -> 10, (6, 2, 3) -> 18; depth 0 gives b."""
    for _ in range(depth):
        a, b = b, dcomp_isa.alu_int("add", a, b, n)
    return b


@_disk_cached
def fibonacci_task(
    n: int = 128,
    depths: tuple[int, ...] = (1, 2, 3),
    long_depths: tuple[int, ...] = (4, 5, 6),
    train_size: int = 10000,
    validation_size: int = 1000,
    test_size: int = 1000,
    test_long_size: int = 1000,
    holdout_fraction: float = 0.1,
    seed: int = 0,
) -> datasets.DatasetDict:
    """Recursive fibonacci from natural language ("Calculate the fibonacci function, starting from inputs 6 and
    2, to a recursion depth of 3" -> fibonacci(6, 2, 3, n) = 18).

    a, b uniform in [0, n); depth uniform in `depths` (train, validation, test) or `long_depths` (test_long).
    operands = [a, b], column `depth`, program "fib". `cache_dir=` sets the disk cache folder.
    """

    def draw(rng: random.Random, operation: str, depth: int) -> tuple[dict, dict]:
        a, b = rng.randrange(n), rng.randrange(n)
        answer = fibonacci(a, b, depth, n)
        row = {"answer": answer, "answer_text": str(answer), "operands": [a, b], "program": "fib", "depth": depth}
        return {"a": a, "b": b, "depth": depth}, row

    splits = _splits(train_size, validation_size, test_size, depths, test_long_size, long_depths)
    features = _features(datasets.Value("int64"), "depth")
    return _generate(FIBONACCI_TEMPLATES, splits, draw, features, seed, holdout_fraction)


@_disk_cached
def list_task(
    kind: str = "sort",
    n: int = 128,
    lengths: tuple[int, ...] = (2, 3, 4),
    long_lengths: tuple[int, ...] = (5, 6),
    train_size: int = 10000,
    validation_size: int = 1000,
    test_size: int = 1000,
    test_long_size: int = 1000,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    max_digits: int | None = None,
    negative_fraction: float = 0.25,
    duplicate_fraction: float = 0.0,
    formats: tuple[str, ...] = ("comma",),
) -> datasets.DatasetDict:
    """List questions: kind "sort" ("Sort the list 5, 3, 9" -> [3, 5, 9], answer_text "3, 5, 9", program
    "sort"), "max" ("What is the maximum of 5, 3, 9?" -> 9, program "list_max") or "min" (signed lists only).

    Values uniform in [0, n) (repeats allowed); length uniform in `lengths` (train, validation, test) or
    `long_lengths` (test_long); column `length`. `cache_dir=` sets the disk cache folder.
    With `max_digits` (the binary machine, issue 13) values are exact signed integers instead, drawn as
    `arithmetic_task`'s operands (1..max_digits digits uniformly, negative with probability `negative_fraction`),
    answers are exact (programs `SIGNED_LIST_PROGRAMS`: list_maximum / list_minimum start from the first element);
    with probability `duplicate_fraction` one element repeats another. Each list is written in a format drawn
    from `formats` (`LIST_FORMATS`: "3, 1, 2", "[3, 1, 2]", "3 1 2", "3, 1 and 2"); "spaces" only for lists
    without a negative number after the first (the number reader takes "5 -3" as 5 minus 3, as in arithmetic,
    so those lists are written with commas); column `format`.
    """
    if kind not in LIST_TEMPLATES or (kind == "min" and max_digits is None):
        raise ValueError(f"kind must be one of {sorted(LIST_TEMPLATES)} ('min' for signed lists), not {kind!r}")
    unknown = sorted(set(formats) - set(LIST_FORMATS))
    if unknown or not formats:
        raise ValueError(f"unknown list formats {unknown}; choose from {sorted(LIST_FORMATS)}")
    programs = LIST_PROGRAMS if max_digits is None else SIGNED_LIST_PROGRAMS

    def value(rng: random.Random) -> int:
        if max_digits is None:
            return rng.randrange(n)
        digits = rng.randint(1, max_digits)
        magnitude = rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits)
        return -magnitude if rng.random() < negative_fraction else magnitude

    def draw(rng: random.Random, operation: str, length: int) -> tuple[dict, dict]:
        values = [value(rng) for _ in range(length)]
        if duplicate_fraction and length > 1 and rng.random() < duplicate_fraction:
            values[rng.randrange(length)] = values[rng.randrange(length)]
        if kind == "sort":
            answer, answer_text = sorted(values), ", ".join(map(str, sorted(values)))
        elif max_digits is not None:
            answer = max(values) if kind == "max" else min(values)
            answer_text = str(answer)
        else:
            answer = functools.reduce(functools.partial(dcomp_isa.alu_int, "max", n=n), values)
            answer_text = str(answer)
        written = rng.choice(formats) if len(formats) > 1 else formats[0]  # the unit task's draws are unchanged
        if written == "spaces" and any(v < 0 for v in values[1:]):
            written = "comma"
        row = {"answer": answer, "answer_text": answer_text, "operands": values, "program": programs[kind]}
        extra = {"format": written} if max_digits is not None else {}
        return {"values": LIST_FORMATS[written](list(map(str, values)))}, {**row, "length": length, **extra}

    splits = _splits(train_size, validation_size, test_size, lengths, test_long_size, long_lengths)
    answer = datasets.List(datasets.Value("int64")) if kind == "sort" else datasets.Value("int64")
    templates = {kind: LIST_TEMPLATES[kind]}
    features = _features(answer, "length")
    if max_digits is not None:
        features["format"] = datasets.Value("string")

    def accept(text: str, row: dict) -> bool:
        # "Sort 3 1 2" + " ": the space after the last number is the one between numbers, so whether the prompt
        # has ended is not in the text (a causal model cannot tell where to answer): spaces lists are followed by
        # words ("sort 3 1 2 in ascending order", "Can you sort 3 1 2?").
        return row.get("format") != "spaces" or not text.endswith(str(row["operands"][-1]))

    return _generate(templates, splits, draw, features, seed, holdout_fraction, accept)


TASKS: dict[str, Callable[..., datasets.DatasetDict]] = {
    "arithmetic": arithmetic_task,
    "fibonacci": fibonacci_task,
    "list": list_task,
}


def load_task(name: str, **kwargs) -> datasets.DatasetDict:
    """The task `name` ("arithmetic", "fibonacci" or "list") built with `kwargs` (see each builder)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name](**kwargs)


def _pad(values: list[int], value: int, count: int, left: bool) -> list[int]:
    return [value] * count + values if left else values + [value] * count


def space_token(tokenizer) -> int:
    """The token a model writes between a prompt that ends without a space and the answer (`PLAIN_ENDINGS`)."""
    return tokenizer(" ", add_special_tokens=False)["input_ids"][-1]


def space_minus_token(tokenizer) -> int | None:
    """The token that writes the space and a minus together where the tokenizer writes " -5" with one (LLaMA-3,
    SmolLM2: " -"), else None."""
    first = tokenizer(" -5", add_special_tokens=False)["input_ids"][:1]
    return first[0] if first and tokenizer.decode(first) == " -" else None


def tokenize_for_causal_lm(
    dataset: datasets.Dataset | datasets.DatasetDict,
    tokenizer,
    max_length: int | None = None,
    chat_fraction: float = 0.0,
    ending_fraction: float = 0.0,
    endings: Mapping[str, int] | tuple[str, ...] = PLAIN_ENDINGS,
    system: str | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """Adds `input_ids`, `attention_mask`, `labels` and `answer_position` to a task Dataset or DatasetDict.

    Format (module docstring): prompt `text + " "` with BOS, then `answer_text` and EOS; labels -100 except on
    the answer tokens and EOS. A share `chat_fraction` of the prompts (chosen by a hash of the text) is instead
    the tokenizer's chat template around `text` as the user's message, up to the assistant's turn. A share
    `ending_fraction` of the other (plain) prompts ends in one of `endings` instead (by another hash of the
    text; a mapping gives each ending its integer weight, a tuple weighs them evenly); after an ending without a
    final space or line break, the space is the answer's first token, written by the model (labelled), and
    `answer_position` is at that space, as in a prompt that ends with it. max_length None leaves rows unpadded (pad
    batches with a collator that pads labels with -100 on the right, e.g. `DataCollatorForSeq2Seq`); an int pads
    every row to max_length with `tokenizer.pad_token_id` on `tokenizer.padding_side` (answer_position counts the
    padding) and raises ValueError for a longer row, since truncation would cut off the answer. `system`: the chat
    prompts' system message (None: the template's own, SmolLM2's "You are a helpful AI assistant named SmolLM…").
    """

    def chat(text: str) -> bool:
        return _held_out([text], 0, chat_fraction) if 0 < chat_fraction < 1 else chat_fraction == 1

    space = [space_token(tokenizer)]
    weights = endings if isinstance(endings, Mapping) else dict.fromkeys(endings, 1)
    names, total = list(weights), sum(weights.values())
    bounds = list(itertools.accumulate(weights.values()))

    def ending_at(draw: int) -> str:
        """The ending whose share of [0, total) holds `draw` (evenly weighted: `endings[draw]`)."""
        return names[bisect.bisect_right(bounds, draw)]

    def prompt_tokens(text: str) -> tuple[list[int], list[int]]:
        """The prompt's tokens, and the tokens the model writes before the answer's own (a space, or none)."""
        if chat(text):
            messages = [{"role": "user", "content": text}]
            if system is not None:
                messages.insert(0, {"role": "system", "content": system})
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            return list(ids["input_ids"] if isinstance(ids, Mapping) else ids), []
        if not _held_out([text], ENDING_SEED, ending_fraction):
            return tokenizer(text + " ")["input_ids"], []
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        prompt = ending_at(int.from_bytes(digest, "little") % total).format(text=text)
        return tokenizer(prompt)["input_ids"], [] if prompt[-1].isspace() else space

    def encode(batch: dict) -> dict:
        prompts = [prompt_tokens(text) for text in batch["text"]]
        # The answer as generate() writes it: its own tokens after the prompt's (a tokenizer could otherwise
        # merge the prompt's final space with the answer's minus sign: LLaMA-3's " -").
        answer_ids = tokenizer(list(batch["answer_text"]), add_special_tokens=False)["input_ids"]
        out = {"input_ids": [], "attention_mask": [], "labels": [], "answer_position": []}
        for (prompt, spoken), answer in zip(prompts, answer_ids):
            ids = prompt + spoken + answer + [tokenizer.eos_token_id]
            labels = [-100] * len(prompt) + ids[len(prompt) :]
            padding = 0 if max_length is None else max_length - len(ids)
            if padding < 0:
                raise ValueError(f"{len(ids)} tokens exceed max_length = {max_length}: {tokenizer.decode(ids)!r}")
            left = tokenizer.padding_side == "left"
            out["input_ids"].append(_pad(ids, tokenizer.pad_token_id, padding, left))
            out["attention_mask"].append(_pad([1] * len(ids), 0, padding, left))
            out["labels"].append(_pad(labels, -100, padding, left))
            out["answer_position"].append(left * padding + len(prompt) + len(spoken) - 1)
        return out

    # `map` would fingerprint its closure, tokenizer included, twice per split (~0.3 s each): hash it once.
    settings = f"{max_length}:{chat_fraction}:{ending_fraction}:{weights}:{system}"
    key = fingerprint(datasets.fingerprint.Hasher.hash(tokenizer), settings, _SOURCE_KEY)

    def apply(split: datasets.Dataset) -> datasets.Dataset:
        new_fingerprint = fingerprint(split._fingerprint, key)
        return split.map(encode, batched=True, new_fingerprint=new_fingerprint, desc="Tokenizing")

    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict({name: apply(split) for name, split in dataset.items()})
    return apply(dataset)


def exact_match_metric():
    """The exact-match metric (library/metrics/exact_match), loaded offline with `evaluate.load` from its
    local path. Usage: `exact_match_metric().compute(predictions=..., references=..., groups=...)`."""
    import evaluate  # slow to import (several seconds): only when a metric is needed

    return evaluate.load(str(_METRIC_PATH))
