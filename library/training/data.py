"""The task data of train.py: how a `--task` maps onto `library.tasks` and onto the computer block (`TaskSpec`), the
tokenized splits (with `test_pairs`, the parse targets and, for lists, where each number of the answer starts), and
the collator that turns rows into the model's inputs."""

import dataclasses
import hashlib
import inspect
import itertools
import json
import random
import re
from pathlib import Path

import datasets
import torch
from torch.nn.utils.rnn import pad_sequence

from library import tasks as task_library
from library import texts
from library.stdlib import STANDARD_PROGRAMS, WIDE_WRITTEN, standard_source
from library.tokenizer import fingerprint
from library.training.arguments import LIST_TASKS, ArgumentError
from modeling_llama_dcomp import IGNORE_INDEX, shift_labels

NUMBER = re.compile(r"\d+")
# A sign not directly after a digit ("-" nor after ")" or "]": both tokenizers write ")-" and "]-" as one token,
# which is no minus; "−" is a token of its own), then digits, "," groups joined as the copy parse joins them
# (dcomp_numbers: "12,345" is one number, "1234,567" and "1,2345" are two).
SIGNED_NUMBER = re.compile(r"(?:(?<![\d)\]])-|(?<!\d)\u2212|(?<!\d))(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)")
# Arithmetic operations whose inputs cannot be swapped: the default library also holds them reversed (`rsub`).
NOT_COMMUTATIVE = ("sub", "div", "mod")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """How a `--task` maps onto `library.tasks` and onto the computer block."""

    builder: str  # library.tasks.load_task name
    builder_kwargs: dict
    library: tuple[str, ...]  # standard programs installed by default
    input_registers: tuple[int, ...]  # registers the block parses (see the library/programs/*.asm headers)
    memory_inputs: int  # memory cells the block parses (list tasks)
    templates: dict[str, tuple[str, ...]]  # phrasings per operation
    group_column: str  # per-group accuracy: operation, depth or length
    answer_in_register: bool  # the answer is the final value of the output register (the answer loss applies)
    # The answer is a list: the computer runs before each of its numbers, with r2 = how many are already written.
    answer_per_number: bool = False
    extra_groups: tuple[str, ...] = ()  # further columns the test accuracy is broken down by
    # Lists of any length (issue 13): this input register receives the count of written numbers (-1: none), and
    # the computer runs once, at the answer position, for the whole answer list.
    count_register: int = -1


# Lists of any length on the binary machine (issue 13): memory cells (the longest list), the training and the
# test_long lengths, the programs whose answer is the sorted memory, and a step budget for the longest sequential
# sort (3 L (L - 1) / 2 + 2 L + 2 = 394 steps at L = 16; a run exits once every position has halted).
LIST_CELLS = 16
LIST_LENGTHS = (2, 3, 4)
LIST_LONG_LENGTHS = tuple(range(5, LIST_CELLS + 1))
LIST_ANSWER_PROGRAMS = ("sort", "sort_oddeven")
LIST_MAX_STEPS = 400
# The list task's trigger decides from the last 8 token ids alone (`computer_trigger_context`; its hidden-state
# weights stay 0, `recipes.init_list_copy_parse`): enough to see the last separator before the final space of a
# list of up to 5-digit numbers, and the same for a list of 16 as for one of 2 (a hidden-state trigger trained on
# lists of 2-4 stops firing from about 8 numbers on, docs/RESULTS.md §8).
LIST_TRIGGER_CONTEXT = 8


def binary_list_spec(args, sizes: dict) -> TaskSpec:
    """--task sort / max / min with --encoding binary: signed lists of 2-4 numbers in training and 5-16 in test_long,
    in every `LIST_FORMATS` format, with duplicates; r1 = the count of written numbers (exact), cell k = the k-th
    number (the copy parse's ordinal prior), and one run of the selected program at the answer position. The
    library holds the sequential sort and both folds: the selection is learned from answers alone."""
    kwargs = {
        **sizes,
        "kind": args.task,
        "max_digits": args.max_digits,
        "lengths": LIST_LENGTHS,
        "long_lengths": LIST_LONG_LENGTHS,
        "duplicate_fraction": 0.2,
        "formats": tuple(task_library.LIST_FORMATS),
    }
    return TaskSpec(
        "list",
        kwargs,
        ("sort", "list_maximum", "list_minimum"),
        (1,),
        LIST_CELLS,
        {args.task: task_library.LIST_TEMPLATES[args.task]},
        "length",
        True,
        extra_groups=("format",),
        count_register=1,
    )


def task_spec(args, reversed_programs: bool = True) -> TaskSpec:
    """The TaskSpec of `args.task` (`DataArguments`: arithmetic, fibonacci, sort or max); `reversed_programs`: the
    arithmetic library also holds the non-commutative operations with swapped inputs."""
    sizes = {"train_size": args.train_size, "validation_size": args.validation_size, "test_size": args.test_size}
    if args.task == "arithmetic":
        operations = tuple(args.operations.split(","))
        binary = args.encoding == "binary"  # numbers as people write them: questions too, even divisions
        chosen = getattr(args, "phrasings", "default")  # run_settings.json of older runs has no phrasings
        phrasings = chosen if chosen != "default" else "all" if binary else "commands"
        templates = {op: task_library.PHRASINGS[phrasings][op] for op in operations}
        reversed_ops = tuple(f"r{op}" for op in operations if op in NOT_COMMUTATIVE) if reversed_programs else ()
        return TaskSpec(
            "arithmetic",
            {
                **sizes,
                "operations": operations,
                **(
                    {"max_digits": args.max_digits, "phrasings": phrasings, "exact_division_fraction": 0.5}
                    if binary
                    else {}
                ),
            },
            operations + reversed_ops,
            (1, 2),
            0,
            templates,
            "operation",
            True,
            extra_groups=("digits",) if binary else (),
        )
    sizes["test_long_size"] = args.test_long_size
    if args.encoding == "binary" and args.task in LIST_TASKS:
        return binary_list_spec(args, sizes)
    if args.task == "fibonacci":
        return TaskSpec("fibonacci", sizes, ("fib",), (1, 2, 3), 0, task_library.FIBONACCI_TEMPLATES, "depth", True)
    # sort / max: the list in memory cells 0.., its length in r1. max: r0 is the answer. sort: the answer's j-th
    # number is `sort_select` with r2 = j (the whole sort in the memory could not be read out by the LM head)
    longest = max(inspect.signature(task_library.list_task).parameters["long_lengths"].default)
    templates = {args.task: task_library.LIST_TEMPLATES[args.task]}
    if args.task == "sort":
        return TaskSpec(
            "list",
            {**sizes, "kind": "sort"},
            ("sort_select",),
            (1, 2),
            longest,
            templates,
            "length",
            True,
            answer_per_number=True,
        )
    return TaskSpec(
        "list", {**sizes, "kind": "max"}, (task_library.LIST_PROGRAMS["max"],), (1,), longest, templates, "length", True
    )


def library_sources(names: list[str]) -> dict[str, str]:
    """Assembly source of each library program: a standard program (`stdlib.standard_source`), or `r<op>`, the
    calculator's `<op>` with its two inputs swapped (`rsub`: r0 = r2 - r1)."""
    sources = {}
    for name in names:
        if name in STANDARD_PROGRAMS or name in WIDE_WRITTEN:
            sources[name] = standard_source(name)[0]
        elif name.startswith("r") and name[1:] in NOT_COMMUTATIVE:
            op = name[1:]
            sources[name] = f"; {name}: r0 = {op}(r2, r1), {op} with its inputs swapped\n    {op} r2 r1 r0 | ret\n"
        else:
            raise ValueError(
                f"unknown program {name!r}: a standard program ({', '.join(STANDARD_PROGRAMS)}) or "
                f"r<op> for op in {NOT_COMMUTATIVE}"
            )
    return sources


def template_slots(task: str, row: dict) -> dict:
    """The values a phrasing of `task` is formatted with, from a dataset row."""
    a_b = dict(zip("ab", row["operands"]))
    if task == "arithmetic":
        return a_b
    if task == "fibonacci":
        return {**a_b, "depth": row["depth"]}
    return {"values": ", ".join(map(str, row["operands"]))}


def test_pairs_split(spec: TaskSpec, train, test, seed: int):
    """The test split's examples (held-out operand pairs) rewritten in phrasings seen in training.

    `test` pairs held-out operands with held-out phrasings (new combinations of words seen in training); this
    split keeps the unseen operands and uses the training phrasings, so it separates generalisation to new
    numbers from generalisation to new phrasings. A phrasing counts as seen when a training prompt is it,
    formatted with that row's values."""
    seen: dict[str, list[str]] = {}
    for row in train.select(range(min(len(train), 2000))):
        slots = template_slots(spec.builder, row)
        for phrasing in spec.templates[row["operation"]]:
            if phrasing.format(**slots) == row["text"] and phrasing not in seen.setdefault(row["operation"], []):
                seen[row["operation"]].append(phrasing)
    rng = random.Random(seed)

    def rephrase(row: dict) -> dict:
        return {"text": rng.choice(seen[row["operation"]]).format(**template_slots(spec.builder, row))}

    return test.map(rephrase, desc="test_pairs")


def build_datasets(args, spec: TaskSpec, tokenizer, seed: int):
    """Tokenized splits of `args` (`DataArguments`) drawn with `seed`: train, validation, test, test_pairs (and
    test_long for fibonacci and lists)."""
    try:
        raw = task_library.load_task(spec.builder, n=args.n, seed=seed, **spec.builder_kwargs)
    except ValueError as error:  # too few distinct examples for the split sizes at this n
        raise ArgumentError(f"--n {args.n} with these split sizes: {error}") from error
    raw["test_pairs"] = test_pairs_split(spec, raw["train"], raw["test"], seed)
    data = task_library.tokenize_for_causal_lm(raw, tokenizer, chat_fraction=args.chat_fraction)
    if args.ending_fraction > 0:  # training only: the test splits ask as train.py writes prompts
        endings = task_library.ENDINGS[getattr(args, "endings", "default")]  # older run_settings.json: none
        shares = {"chat_fraction": args.chat_fraction, "ending_fraction": args.ending_fraction}
        data["train"] = task_library.tokenize_for_causal_lm(raw["train"], tokenizer, endings=endings, **shares)
    data = add_number_positions(data, tokenizer, spec) if spec.answer_per_number else data
    if args.text_fraction > 0:
        lines = getattr(args, "text_layout", "collapsed") == "lines"  # older run_settings.json: none
        data["train"] = with_ordinary_text(data["train"], tokenizer, args.text_fraction, seed, keep_lines=lines)
    if args.encoding == "binary":  # values in [-2^(bits-1), 2^(bits-1)), signs read as the copy parse reads them
        return add_slot_targets(data, spec, 2 ** (args.bits - 1), signed=True)
    return add_slot_targets(data, spec, args.n)


def beyond_phrasings(args, spec: TaskSpec, tokenizer, seed: int, phrasings: str):
    """The tokenized training prompts of the arithmetic phrasing set `phrasings`, drawn as `args` (`DataArguments`)
    draws the run's but without ordinary text, in the phrasings the run's set (`spec.templates`) lacks. Nothing of
    them is held out of the run: the run's held-out phrasings are in its own set, and the training operands are the
    run's (`library.tasks` holds operands out by the seed alone)."""
    no_text = {"text_fraction": 0.0, "text_continuation_fraction": 0.0, "text_layout": "collapsed"}
    other = dataclasses.replace(args, phrasings=phrasings, **no_text)
    other_spec = task_spec(other)
    rows = build_datasets(other, other_spec, tokenizer, seed)["train"]
    flat = [phrasing for options in other_spec.templates.values() for phrasing in options]  # `template` indexes it
    known = {phrasing for options in spec.templates.values() for phrasing in options}
    return rows.filter(lambda template: flat[template] not in known, input_columns="template", desc="new phrasings")


HELD_OUT_SPLITS = ("test", "test_pairs", "test_long")  # the splits a run reports, and experiments rebuild


def split_fingerprints(splits) -> dict[str, str]:
    """`{split: SHA-256 of its questions and answers}` for the held-out splits of `splits` (raw or tokenized; the
    `text` and `answer_text` columns, in order). train.py saves them in run_settings.json, so that what rebuilds a
    run's splits from `library.tasks` later (`--resume`, the experiments) can tell whether the task code still
    draws the same questions: otherwise a test question may be one the run trained on."""
    fingerprints = {}
    for name in HELD_OUT_SPLITS:
        if name in splits:
            digest = hashlib.sha256()
            for text, answer in zip(splits[name]["text"], splits[name]["answer_text"]):
                digest.update(json.dumps([text, answer]).encode())
            fingerprints[name] = digest.hexdigest()
    return fingerprints


def changed_splits(saved: dict[str, str], now: dict[str, str]) -> list[str]:
    """The splits whose fingerprint (`split_fingerprints`) `saved` has and `now` differs from."""
    return [name for name, fingerprint in saved.items() if name in now and now[name] != fingerprint]


def with_ordinary_text(train, tokenizer, fraction: float, seed: int, max_tokens: int = 96, keep_lines: bool = False):
    """`train` with ordinary text mixed in as a share `fraction` of its rows: docstring paragraphs of
    `library.texts.TRAINING_PACKAGES` (never the standard library's, which measure pass-through; with `keep_lines`
    laid out in their lines as written), `max_tokens` tokens each, with no label and no computing position
    (`answer_position` -1), so they teach the trigger where not to fire and nothing else. Their other columns are
    empty; the rows are shuffled with `seed`."""
    count = round(len(train) * fraction / (1 - fraction))
    paragraphs = texts.docstring_paragraphs(texts.TRAINING_PACKAGES, keep_lines=keep_lines)
    if len(paragraphs) < count:
        raise ArgumentError(f"--text_fraction {fraction}: {count} ordinary texts needed, {len(paragraphs)} found")
    chosen = random.Random(seed).sample(paragraphs, count)
    ids = [row[:max_tokens] for row in tokenizer(chosen)["input_ids"]]
    empty = {datasets.Value: lambda feature: "" if feature.dtype == "string" else 0, datasets.List: lambda _: []}
    columns = {name: [empty[type(feature)](feature)] * count for name, feature in train.features.items()}
    columns |= {
        "text": chosen,
        "operation": ["text"] * count,
        "input_ids": ids,
        "attention_mask": [[1] * len(row) for row in ids],
        "labels": [[IGNORE_INDEX] * len(row) for row in ids],
        "answer_position": [-1] * count,
    }
    ordinary = datasets.Dataset.from_dict(columns, features=train.features)
    return datasets.concatenate_datasets([train, ordinary]).shuffle(seed=seed)


def continue_ordinary_text(
    train,
    model,
    tokenizer,
    fraction: float,
    seed: int,
    new_tokens: int = 32,
    prefix_tokens: tuple[int, int] = (16, 48),
    batch_size: int = 64,
):
    """`train` with a share `fraction` of its ordinary-text rows (`with_ordinary_text`'s) cut to a prefix and
    continued by `model`'s greedy `generate()` for up to `new_tokens` tokens (to its EOS, which is left out).

    This is the text the trigger meets when `generate()` writes after an ordinary prompt (the greedy agreement of
    `experiments.pass_through`), and docstrings alone are not it: their whitespace is collapsed, while a
    continuation runs across lines into code comments and numbered lists ("# 1. "), where a trigger taught on
    docstrings alone fired. Call it with the untrained model: its trigger starts silent, so the continuation is
    the base model's. A batch's prefixes share one length, drawn from `prefix_tokens` and no longer than the
    batch's shortest row, so they need no padding; greedy decoding makes the rows the same on every run."""
    text_rows = [index for index, operation in enumerate(train["operation"]) if operation == "text"]
    rng = random.Random(seed)
    chosen = sorted(rng.sample(text_rows, round(len(text_rows) * fraction)))
    eos = set(tokenizer.convert_tokens_to_ids(tokenizer.all_special_tokens))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    continued: dict[int, list[int]] = {}
    was_training = model.training
    model.eval()
    for start in range(0, len(chosen), batch_size):
        rows = chosen[start : start + batch_size]
        ids = train.select(rows)["input_ids"]
        length = min(rng.randint(*prefix_tokens), *map(len, ids))
        prompt = torch.tensor([row[:length] for row in ids], device=model.device)
        with torch.no_grad():
            output = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        for index, row in zip(rows, output.tolist()):
            written = list(itertools.takewhile(lambda token: token not in eos, row[length:]))
            continued[index] = row[:length] + written
    model.train(was_training)

    def replace(row: dict, index: int) -> dict:
        if index not in continued:
            return {}
        ids = continued[index]
        return {
            "text": tokenizer.decode(ids, skip_special_tokens=True),
            "input_ids": ids,
            "attention_mask": [1] * len(ids),
            "labels": [IGNORE_INDEX] * len(ids),
        }

    return train.map(replace, with_indices=True, desc="continuing ordinary text")


def _mapped(data, function, description: str, batched: bool = False):
    """`data.map(function)` per split, cached under the split's fingerprint (which covers the tokenizer, slow to
    hash) and this script's source."""
    source = Path(__file__).read_bytes()
    return datasets.DatasetDict(
        {
            name: split.map(
                function, batched=batched, desc=description, new_fingerprint=fingerprint(split._fingerprint, source)
            )
            for name, split in data.items()
        }
    )


def add_number_positions(data, tokenizer, spec: TaskSpec):
    """Adds `number_positions` to every split of a list task: for each number of the answer, the position whose
    next token starts it (the answer position, then the token after each comma), found by tokenizing the
    answer's prefixes `text + " " + "3, 5, "`; raises ValueError where a prefix does not tokenize as the start
    of the example."""

    def positions(batch: dict) -> dict:
        prefixes = [
            f"{text} " + "".join(f"{value}, " for value in answer[:j])
            for text, answer in zip(batch["text"], batch["answer"])
            for j in range(len(answer))
        ]
        encoded = iter(tokenizer(prefixes)["input_ids"])
        out = []
        for ids, answer in zip(batch["input_ids"], batch["answer"]):
            prefix_ids = [next(encoded) for _ in answer]
            if any(ids[: len(prefix)] != prefix for prefix in prefix_ids):
                raise ValueError(
                    f"the tokenizer merges an answer prefix with its next number: {tokenizer.decode(ids)!r}"
                )
            out.append([len(prefix) - 1 for prefix in prefix_ids])
        return {"number_positions": out}

    return _mapped(data, positions, "Number positions", batched=True)


def add_slot_targets(data, spec: TaskSpec, n: int, signed: bool = False):
    """Adds the parse loss's targets to every split: per position the computer runs at, `slot_targets` (the
    `slot_values`, padded with -100 to every parse slot) and `slot_known` (1 where a slot has a target: in the
    binary encoding -100 is also a value). `signed`: the binary encoding's numbers, in [-n, n)."""
    slots = len(spec.input_registers) + spec.memory_inputs

    def targets(row: dict) -> dict:
        values = slot_values(spec, row["text"], n, signed) if computing_positions(row) else []  # text: none
        return {
            "slot_targets": [found + [IGNORE_INDEX] * (slots - len(found)) for found in values],
            "slot_known": [[1] * len(found) + [0] * (slots - len(found)) for found in values],
        }

    return _mapped(data, targets, "Slot targets")


def written_numbers(text: str, signed: bool = False) -> list[int]:
    """The numbers written in a prompt, in order (the copy parse's ordinals count the same numbers); `signed`: a
    minus directly before the digits and not directly after a digit is their sign, and digit groups join, as the
    binary copy parse reads them ("5-3" is 5 and 3, "minus -3" is −3, "−1,234" is −1234)."""
    if not signed:
        return [int(value) for value in NUMBER.findall(text)]
    return [int(value.replace(",", "").replace("\u2212", "-")) for value in SIGNED_NUMBER.findall(text)]


def slot_values(spec: TaskSpec, text: str, n: int, signed: bool = False) -> list[list[int]]:
    """What each parse slot (input registers, then memory cells) should read for a prompt, from the prompt text
    alone, at each position the computer runs: the numbers in the order written (`Subtract 4 from 9` -> [4, 9],
    which `rsub` turns into 9 - 4: the order is the selection's job), or for list tasks the list's length (r1),
    for sort the index of the answer's number (r2: 0, 1, ...), then the list's elements (the cells)."""
    numbers = [value for value in written_numbers(text, signed) if (-n if signed else 0) <= value < n]
    if spec.answer_per_number:
        return [[len(numbers), j, *numbers] for j in range(len(numbers))]
    return [[len(numbers), *numbers] if spec.memory_inputs else numbers]


def computing_positions(row: dict) -> list[int]:
    """Where the computer runs in a training row: the answer position, each `number_positions` of a list answer,
    or nowhere in ordinary text (`answer_position` -1)."""
    return row.get("number_positions", [row["answer_position"]] if row["answer_position"] >= 0 else [])


@dataclasses.dataclass
class AnswerCollator:
    """Pads a batch on the right and adds what the forward needs: `logits_to_keep` (the positions whose next
    token is labelled) with `shift_labels` (those labels), the computer's `computer_mask` (`computing_positions`)
    and, for the answer loss, `computer_targets` (the answer value at each of them, in `computer_mask.nonzero()`
    order). With `text_logits`, rows with no label (ordinary text) also keep the logits of every real position,
    with label -100 (no LM loss), and `text_rows (batch,)` marks them: the distillation loss's positions. Other
    columns are dropped."""

    pad_token_id: int
    with_computer: bool
    with_targets: bool
    with_slot_targets: bool = False  # the parse loss: `slot_targets`, `slot_known` (computer positions, slots)
    # A list answer computed at once (issue 13): `computer_targets` (rows, longest) padded with 0 and
    # `computer_target_lengths` (rows,), one target list per answer position.
    list_answers: bool = False
    text_logits: bool = False

    def __call__(self, rows: list[dict]) -> dict:
        def pad(key: str, value: int) -> torch.Tensor:
            return pad_sequence([torch.tensor(row[key]) for row in rows], batch_first=True, padding_value=value)

        batch = {
            "input_ids": pad("input_ids", self.pad_token_id),
            "attention_mask": pad("attention_mask", 0),
            "labels": pad("labels", IGNORE_INDEX),
        }
        shifted = shift_labels(batch["labels"])
        batch["logits_to_keep"] = shifted != IGNORE_INDEX
        if self.text_logits:
            batch["text_rows"] = (batch["labels"] == IGNORE_INDEX).all(1)
            batch["logits_to_keep"] |= batch["text_rows"][:, None] & batch["attention_mask"].bool()
        batch["shift_labels"] = shifted[batch["logits_to_keep"]]
        if self.with_computer:
            positions = [computing_positions(row) for row in rows]
            mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
            rows_index = [i for i, row in enumerate(positions) for _ in row]
            columns = list(itertools.chain(*positions))  # empty in a batch of ordinary text alone
            mask[torch.tensor(rows_index, dtype=torch.long), torch.tensor(columns, dtype=torch.long)] = True
            batch["computer_mask"] = mask
        if self.with_targets:
            answers = [
                row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
                for row in rows
                if computing_positions(row)
            ]
            if self.list_answers:  # one row of targets per list, padded; the lengths say where each ends
                longest = max(map(len, answers), default=0)
                batch["computer_targets"] = torch.tensor([answer + [0] * (longest - len(answer)) for answer in answers])
                batch["computer_target_lengths"] = torch.tensor(list(map(len, answers)))
            else:
                batch["computer_targets"] = torch.tensor(list(itertools.chain(*answers)))
        if self.with_slot_targets:
            batch["slot_targets"] = torch.tensor(list(itertools.chain(*(row["slot_targets"] for row in rows))))
            batch["slot_known"] = torch.tensor(list(itertools.chain(*(row["slot_known"] for row in rows)))).bool()
        return batch
