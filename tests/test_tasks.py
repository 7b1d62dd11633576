"""Task datasets (library/tasks.py): determinism, held-out splits, answers, the causal-LM format."""

import collections
import hashlib

import datasets
import pytest

from dcomp_isa import alu_int
from library.tasks import (
    ARITHMETIC_EXPRESSIONS,
    ARITHMETIC_TEMPLATES,
    FIBONACCI_TEMPLATES,
    FRAMES,
    LIST_FORMATS,
    LIST_TEMPLATES,
    PHRASINGS,
    PLAIN_ENDINGS,
    WIDE_ENDINGS,
    WIDE_SHARED_ENDINGS,
    arithmetic_task,
    composable,
    compose,
    fibonacci,
    fibonacci_task,
    list_task,
    load_task,
    tokenize_for_causal_lm,
    words,
)

SMALL = {"train_size": 600, "validation_size": 50, "test_size": 50}
SMALL_LONG = {**SMALL, "test_long_size": 50}

# Every expression of the non-commutative ops, rendered with a = 9, b = 4, and its answer worked out by hand.
HAND_CHECKED = {
    "subtract 4 from 9": 5,
    "take 4 away from 9": 5,
    "compute the difference 9 - 4": 5,
    "calculate 9 - 4": 5,
    "work out 9 minus 4": 5,
    "divide 9 by 4": 2,
    "compute how many times 4 goes into 9": 2,
    "work out how many times 4 fits into 9": 2,
    "calculate 9 // 4": 2,
    "work out 9 divided by 4, rounded down": 2,
    "compute the remainder of 9 divided by 4": 1,
    "calculate 9 mod 4": 1,
    "work out 9 modulo 4": 1,
    "find what is left over when 9 is divided by 4": 1,
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tasks")


@pytest.fixture(scope="module")
def arithmetic(cache):
    return arithmetic_task(**SMALL, cache_dir=cache)


def held_out_by_hash(operands, seed):
    digest = hashlib.blake2b(f"{seed}:{operands}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def rows(dataset):
    return [dict(zip(dataset.column_names, values)) for values in zip(*dataset.to_dict().values())]


def test_operand_order_of_phrasings():
    for op in ("sub", "div", "mod"):
        for expression in ARITHMETIC_EXPRESSIONS[op]:
            assert HAND_CHECKED[expression.format(a=9, b=4)] == alu_int(op, 9, 4, 128)
    assert ARITHMETIC_TEMPLATES["add"][0] == "Add {a} and {b}"  # the paper's prompt


def test_phrasings_are_every_frame_around_every_expression():
    for op, expressions in ARITHMETIC_EXPRESSIONS.items():
        assert len(ARITHMETIC_TEMPLATES[op]) == len(expressions) * len(FRAMES) == len(set(ARITHMETIC_TEMPLATES[op]))
        for expression in expressions:
            assert f"Can you {expression}?" in ARITHMETIC_TEMPLATES[op]
    assert compose({"x": ("add {a}",)}, ("{Expr}", "Please {expr}")) == {"x": ("Add {a}", "Please add {a}")}


TASKS_AND_PHRASINGS = {
    "arithmetic": (
        lambda **kwargs: arithmetic_task(operations=tuple(ARITHMETIC_TEMPLATES), **kwargs),
        ARITHMETIC_TEMPLATES,
    ),
    "arithmetic, wide": (
        lambda **kwargs: arithmetic_task(max_digits=3, phrasings="wide", **kwargs),
        {op: PHRASINGS["wide"][op] for op in ("add", "sub", "mul", "div")},
    ),
    "fibonacci": (fibonacci_task, FIBONACCI_TEMPLATES),
    "sort": (lambda **kwargs: list_task("sort", **kwargs), {"sort": LIST_TEMPLATES["sort"]}),
    "max": (lambda **kwargs: list_task("max", **kwargs), {"max": LIST_TEMPLATES["max"]}),
}


@pytest.mark.parametrize("task", TASKS_AND_PHRASINGS)
@pytest.mark.parametrize("seed", range(4))
def test_held_out_phrasings_use_only_words_of_training_phrasings(task, seed, cache):
    """The test split's phrasing is new as a whole, never word by word (a model trained from scratch could not
    know a word it never saw). Checked on the datasets themselves."""
    builder, templates = TASKS_AND_PHRASINGS[task]
    phrasings = [phrasing for options in templates.values() for phrasing in options]  # `template` indexes this
    data = builder(train_size=1000, validation_size=10, test_size=50, seed=seed, cache_dir=cache)
    train_words: dict[str, set[str]] = {}
    for row in rows(data["train"]):
        train_words.setdefault(row["operation"], set()).update(words(phrasings[row["template"]]))
    for row in rows(data["test"]):
        assert words(phrasings[row["template"]]) <= train_words[row["operation"]], row["text"]


def test_words_and_an_operation_whose_phrasings_cannot_be_held_out():
    assert words("Add {a} and {b}?") == {"Add", " {a}", " and", " {b}", "?"}
    with pytest.raises(ValueError, match="no phrasing of 'x' can be held out"):
        composable([0, 1], [("x", "Add {a}"), ("x", "Sum {a}")])


def test_deterministic_and_cached(arithmetic, cache, tmp_path):
    again = arithmetic_task(**SMALL, cache_dir=cache)  # a cache hit
    rebuilt = arithmetic_task(**SMALL, cache_dir=tmp_path)  # regenerated from the seed
    other = arithmetic_task(**SMALL, seed=1, cache_dir=tmp_path)
    for split in arithmetic:
        assert again[split].to_dict() == rebuilt[split].to_dict() == arithmetic[split].to_dict()
        assert other[split]["text"] != arithmetic[split]["text"]
    assert len([path for path in tmp_path.iterdir() if not path.name.startswith(".")]) == 2


def test_arithmetic_answers_and_columns(arithmetic):
    assert {name: len(split) for name, split in arithmetic.items()} == {
        "train": SMALL["train_size"],
        "validation": 50,
        "test": 50,
    }
    assert list(arithmetic["train"].features) == [
        "text",
        "answer",
        "answer_text",
        "operation",
        "operands",
        "program",
        "template",
    ]
    for row in rows(arithmetic["train"]) + rows(arithmetic["test"]):
        a, b = row["operands"]
        assert row["answer"] == alu_int(row["operation"], a, b, 128) and row["answer_text"] == str(row["answer"])
        assert row["program"] == row["operation"] in ("add", "sub", "mul", "div")
        assert str(a) in row["text"] and str(b) in row["text"]
        assert b != 0 or row["operation"] not in ("div", "mod")


def test_arithmetic_test_split_holds_out_phrasings_and_pairs(arithmetic):
    seen = rows(arithmetic["train"]) + rows(arithmetic["validation"])
    test = rows(arithmetic["test"])
    assert {r["template"] for r in seen}.isdisjoint(r["template"] for r in test)
    assert {tuple(r["operands"]) for r in seen}.isdisjoint(tuple(r["operands"]) for r in test)
    assert {r["text"] for r in seen}.isdisjoint(r["text"] for r in test)
    held_out = {(r["operation"], r["template"]) for r in test}
    assert sorted(op for op, _ in held_out) == ["add", "div", "mul", "sub"]  # one phrasing per operation
    train_texts = arithmetic["train"]["text"]
    assert len(set(train_texts)) == len(train_texts)
    assert set(train_texts).isdisjoint(arithmetic["validation"]["text"])
    ops = ("add", "sub", "mul", "div")
    assert len({r["template"] for r in seen}) == sum(len(ARITHMETIC_TEMPLATES[op]) - 1 for op in ops)
    # the documented rule, with the default seed 0 and holdout_fraction 0.1
    assert all(held_out_by_hash(r["operands"], 0) < 0.1 for r in test)
    assert all(held_out_by_hash(r["operands"], 0) >= 0.1 for r in seen)


def test_fibonacci(cache):
    assert fibonacci(6, 2, 1, 128) == 8 and fibonacci(6, 2, 3, 128) == 18  # the paper's prompt, depth 3
    assert fibonacci(0, 1, 10, 1000) == 89 and fibonacci(100, 100, 1, 128) == 72 and fibonacci(5, 7, 0, 128) == 7
    task = fibonacci_task(**SMALL_LONG, cache_dir=cache)
    assert task["train"].features["depth"] == datasets.Value("int64")
    for name, split in task.items():
        for row in rows(split):
            assert row["answer"] == fibonacci(*row["operands"], row["depth"], 128) and row["program"] == "fib"
            assert row["depth"] in ((4, 5, 6) if name == "test_long" else (1, 2, 3))
    train = rows(task["train"])
    assert {r["template"] for r in train}.isdisjoint(task["test"]["template"])
    assert {tuple(r["operands"]) for r in train}.isdisjoint(map(tuple, task["test"]["operands"]))
    assert set(task["test_long"]["template"]) <= {r["template"] for r in train}
    paper = "Calculate the fibonacci function, starting from inputs 6 and 2, to a recursion depth of 3"
    assert paper in {t.format(a=6, b=2, depth=3) for t in FIBONACCI_TEMPLATES["fib"]}


@pytest.mark.parametrize("kind", ["sort", "max"])
def test_lists(kind, cache):
    task = list_task(kind, **SMALL_LONG, cache_dir=cache)
    for name, split in task.items():
        for row in rows(split):
            values = row["operands"]
            assert row["length"] == len(values) in ((5, 6) if name == "test_long" else (2, 3, 4))
            expected = sorted(values) if kind == "sort" else max(values)
            assert row["answer"] == expected
            assert row["answer_text"] == (", ".join(map(str, expected)) if kind == "sort" else str(expected))
            assert ", ".join(map(str, values)) in row["text"]
    assert set(task["train"]["template"]).isdisjoint(task["test"]["template"])
    assert set(map(tuple, task["train"]["operands"])).isdisjoint(map(tuple, task["test"]["operands"]))
    assert task["train"]["program"][0] == {"sort": "sort", "max": "list_max"}[kind]


def test_answers_are_what_the_standard_programs_compute(arithmetic, cache):
    """Each row's `program`, run by the reference interpreter on the row's operands, gives its answer."""
    from library.interpreter import run_reference
    from library.stdlib import load_program

    def run(row, registers, memory=None):
        return run_reference(load_program(row["program"]), registers=registers, memory=memory).state

    for row in rows(arithmetic["test"])[:20]:
        assert run(row, dict(enumerate(row["operands"], start=1))).registers[0] == row["answer"]
    fib = fibonacci_task(**SMALL_LONG, cache_dir=cache)
    for row in rows(fib["test"])[:5] + rows(fib["test_long"])[:5]:
        a, b = row["operands"]
        assert run(row, {1: a, 2: b, 3: row["depth"]}).registers[0] == row["answer"]
    for kind in ("sort", "max"):
        for row in rows(list_task(kind, **SMALL_LONG, cache_dir=cache)["test_long"])[:5]:
            state = run(row, {1: row["length"]}, memory=row["operands"])
            assert (list(state.memory[: row["length"]]) if kind == "sort" else state.registers[0]) == row["answer"]


def test_load_task_and_errors(cache):
    assert load_task("list", kind="max", **SMALL_LONG, cache_dir=cache)["test"].to_dict() == (
        list_task("max", **SMALL_LONG, cache_dir=cache)["test"].to_dict()
    )
    with pytest.raises(ValueError, match="unknown task"):
        load_task("chess")
    with pytest.raises(ValueError, match="no phrasings"):
        arithmetic_task(operations=("add", "pow"), cache_dir=cache)
    empty = arithmetic_task(train_size=5, validation_size=0, test_size=0, cache_dir=cache)
    assert len(empty["validation"]) == 0 and empty["test"].features == empty["train"].features
    with pytest.raises(ValueError, match="could only draw"):
        arithmetic_task(n=3, operations=("add",), train_size=2, validation_size=0, test_size=50, cache_dir=cache)


def test_causal_lm_format(arithmetic):
    from library.tokenizer import llama3_tokenizer

    tokenizer = llama3_tokenizer()
    one = datasets.Dataset.from_list([{"text": "Add 3 and 4", "answer_text": "7"}])
    row = tokenize_for_causal_lm(one, tokenizer)[0]
    assert row["input_ids"] == [128000, 2261, 220, 18, 323, 220, 19, 220, 22, 128001]
    assert row["input_ids"][:-1] == tokenizer("Add 3 and 4 7").input_ids
    assert row["labels"] == [-100] * 8 + [22, 128001] and row["attention_mask"] == [1] * 10
    assert row["answer_position"] == 7  # the space after the prompt: its logits predict the answer

    padded = tokenize_for_causal_lm(one, tokenizer, max_length=12)[0]
    assert padded["input_ids"] == row["input_ids"] + [128004] * 2 and padded["answer_position"] == 7
    assert padded["labels"] == row["labels"] + [-100] * 2 and padded["attention_mask"] == [1] * 10 + [0] * 2
    left = tokenize_for_causal_lm(one, llama3_tokenizer("left"), max_length=12)[0]
    assert left["input_ids"] == [128004] * 2 + row["input_ids"] and left["answer_position"] == 9
    assert left["labels"] == [-100] * 2 + row["labels"] and left["attention_mask"] == [0] * 2 + [1] * 10
    with pytest.raises(ValueError, match="exceed max_length"):
        tokenize_for_causal_lm(one, tokenizer, max_length=9)

    encoded = tokenize_for_causal_lm(arithmetic, tokenizer)
    for example in rows(encoded["test"]):
        answer = [token for token in example["labels"] if token != -100]
        assert tokenizer.decode(answer) == example["answer_text"] + tokenizer.eos_token
        position = example["answer_position"]
        assert example["labels"][position] == -100 and example["labels"][position + 1] == answer[0]
        assert example["input_ids"][position] == 220


# ------------------------------------------------------------------------- signed multi-digit (binary machine)
def test_signed_arithmetic_draws_every_digit_count_and_sign_with_python_answers(tmp_path):
    data = arithmetic_task(
        operations=("add", "sub", "mul", "div", "mod"),
        train_size=600,
        validation_size=10,
        test_size=10,
        max_digits=5,
        cache_dir=tmp_path,
    )
    rows = data["train"]
    python = {
        "add": lambda a, b: a + b,
        "sub": lambda a, b: a - b,
        "mul": lambda a, b: a * b,
        "div": lambda a, b: a // b,
        "mod": lambda a, b: a % b,
    }
    digits = set()
    for row in rows:
        a, b = row["operands"]
        assert row["answer"] == python[row["operation"]](a, b) and row["answer_text"] == str(row["answer"])
        assert b != 0 or row["operation"] not in ("div", "mod")
        digits |= {len(str(abs(a))), len(str(abs(b)))}
    assert digits == {1, 2, 3, 4, 5}
    assert any(a < 0 for a, _ in rows["operands"]) and any(answer < 0 for answer in rows["answer"])


def test_signed_arithmetic_asks_questions_too_and_divisions_come_out_even_in_their_share(tmp_path):
    data = arithmetic_task(
        train_size=800,
        validation_size=10,
        test_size=200,
        max_digits=5,
        phrasings="all",
        exact_division_fraction=0.5,
        cache_dir=tmp_path,
    )
    rows = data["train"]
    assert any(text.startswith("What is ") and text.endswith("?") for text in rows["text"])
    assert any(text.startswith("Add ") for text in rows["text"])  # the commands stay
    assert "What is {a} plus {b}?" in PHRASINGS["all"]["add"] and "{A} plus {b} =" not in PHRASINGS["all"]["add"]
    # the symbols also without spaces, as people type them ("12-7", "12*-7")
    assert {"What is {a}-{b}?", "What is {a} - {b}?"} <= set(PHRASINGS["all"]["sub"])
    symbols = [("add", "+"), ("sub", "-"), ("mul", "*"), ("div", "//"), ("div", "/")]
    assert all(f"{{a}}{symbol}{{b}} =" in PHRASINGS["all"][op] for op, symbol in symbols)
    # spaced too: "12/4" and "12 / 4" are different tokens ("/" had no vote when only "//" and " /, rounded down" were)
    assert all(f"{{a}} {symbol} {{b}} =" in PHRASINGS["all"][op] for op, symbol in symbols)
    divisions = [row["operands"] for row in rows if row["operation"] == "div"]
    even = [(a, b) for a, b in divisions if a % b == 0]
    assert 0.4 < len(even) / len(divisions) < 0.75  # half by construction, plus the few that are even anyway
    assert all(abs(a) >= abs(b) for a, b in even if a != 0)  # magnitudes swapped first: never 0 // b
    assert max(rows["digits"]) == 5  # rounding towards zero never adds a digit
    with pytest.raises(ValueError, match="phrasings must be one of"):
        arithmetic_task(max_digits=2, phrasings="poems", cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("kind", "narrower", "example"),
    [("wide", "all", "Calculate {a}*{b}."), ("wider", "wide", "So what's {a} shrunk by {b}?")],
)
def test_wide_phrasings_add_frames_and_unspaced_symbols_whose_numbers_read_back(tmp_path, kind, narrower, example):
    """phrasings="wide" ("wider"): every "all" ("wide") phrasing and more, numbers written as symbols without spaces
    included ("12*-7", "5--3"); the numbers read back from each prompt, signed, are the operands in the phrasing's
    order, and the answers are Python's."""
    from library.training.data import written_numbers

    for op, templates in PHRASINGS[kind].items():
        assert set(PHRASINGS[narrower][op]) < set(templates) and len(set(templates)) == len(templates)
    assert example in [t for ts in PHRASINGS[kind].values() for t in ts] and "{A}-{b} =" not in PHRASINGS[kind]["sub"]
    data = arithmetic_task(
        train_size=1200, validation_size=10, test_size=100, max_digits=4, phrasings=kind, cache_dir=tmp_path
    )
    phrasings = [phrasing for op in ("add", "sub", "mul", "div") for phrasing in PHRASINGS[kind][op]]
    python = {"add": int.__add__, "sub": int.__sub__, "mul": int.__mul__, "div": int.__floordiv__}
    unspaced = 0
    for split in ("train", "test"):
        for row in rows(data[split]):
            a, b = row["operands"]
            template = phrasings[row["template"]]
            assert row["answer"] == python[row["operation"]](a, b)
            in_order = [a, b] if template.index("{a}") < template.index("{b}") else [b, a]
            assert written_numbers(row["text"], signed=True) == in_order, row["text"]
            unspaced += any(f"}}{symbol}{{" in template for symbol in "+-*%") or "}//{" in template
    assert unspaced > 0


def test_the_answer_is_tokenized_as_generate_writes_it_after_the_prompt(tmp_path):
    """LLaMA-3 would merge the prompt's final space with a negative answer's minus (" -"): the answer's tokens are
    its own, after the prompt's."""
    from library.tokenizer import llama3_tokenizer

    tokenizer = llama3_tokenizer()
    data = datasets.Dataset.from_dict({"text": ["Work out 3 minus 45"], "answer_text": ["-42"]})
    row = tokenize_for_causal_lm(data, tokenizer)[0]
    prompt = tokenizer("Work out 3 minus 45 ")["input_ids"]
    answer = tokenizer("-42", add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == prompt + answer + [tokenizer.eos_token_id]
    assert row["labels"] == [-100] * len(prompt) + answer + [tokenizer.eos_token_id]


def test_a_chat_share_of_the_prompts_goes_through_the_chat_template():
    from test_readout import smollm2_tokenizer

    tokenizer = smollm2_tokenizer()
    texts = [f"What is {a} plus 4?" for a in range(40)]
    data = datasets.Dataset.from_dict({"text": texts, "answer_text": [str(a + 4) for a in range(40)]})
    rows = tokenize_for_causal_lm(data, tokenizer, chat_fraction=0.5)
    chats = 0
    for text, row in zip(texts, rows):
        answer = tokenizer(row_answer := str(int(text.split()[2]) + 4), add_special_tokens=False)["input_ids"]
        prompt = row["input_ids"][: row["answer_position"] + 1]
        templated = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        templated = list(templated["input_ids"] if hasattr(templated, "keys") else templated)
        assert prompt in (templated, tokenizer(text + " ")["input_ids"]), row_answer
        assert row["input_ids"][len(prompt) :] == answer + [tokenizer.eos_token_id]
        chats += prompt == templated
    assert 10 <= chats <= 30


@pytest.mark.parametrize("kind", ["sort", "max", "min"])
def test_signed_lists_in_every_format_with_duplicates(kind, cache):
    """Issue 13's lists: exact signed values of 1-4 digits, every format, duplicates, lengths 2-4 and 5-16, answers
    Python's; a spaces-separated list never ends the prompt and never holds a negative number after the first."""
    long = tuple(range(5, 17))
    task = list_task(
        kind,
        **{**SMALL_LONG, "test_long_size": 48},
        max_digits=4,
        long_lengths=long,
        duplicate_fraction=0.5,
        formats=tuple(LIST_FORMATS),
        cache_dir=cache,
    )
    every = [row for split in task.values() for row in rows(split)]
    assert {row["format"] for row in every} == set(LIST_FORMATS)
    assert any(v < 0 for row in every for v in row["operands"]) and any(
        len(set(r["operands"])) < r["length"] for r in every
    )
    assert all(abs(v) < 10**4 for row in every for v in row["operands"])
    for name, split in task.items():
        for row in rows(split):
            values = row["operands"]
            assert row["length"] == len(values) in (long if name == "test_long" else (2, 3, 4))
            expected = {"sort": sorted, "max": max, "min": min}[kind](values)
            assert row["answer"] == expected
            assert row["answer_text"] == (", ".join(map(str, expected)) if kind == "sort" else str(expected))
            assert LIST_FORMATS[row["format"]](list(map(str, values))) in row["text"]
            if row["format"] == "spaces":
                assert not row["text"].endswith(str(values[-1])) and all(v >= 0 for v in values[1:])
    assert task["train"]["program"][0] == {"sort": "sort", "max": "list_maximum", "min": "list_minimum"}[kind]
    assert set(task["train"]["template"]).isdisjoint(task["test"]["template"])
    with pytest.raises(ValueError, match="signed lists"):
        list_task("min", cache_dir=cache)
    with pytest.raises(ValueError, match="unknown list formats"):
        list_task("sort", formats=("csv",), max_digits=2, cache_dir=cache)


@pytest.mark.parametrize(
    ("name", "endings"), [("llama3", PLAIN_ENDINGS), ("smollm2", PLAIN_ENDINGS), ("smollm2", WIDE_ENDINGS)]
)
def test_an_ending_share_of_plain_prompts_ends_otherwise_and_the_model_writes_a_missing_space(name, endings):
    from test_readout import TOKENIZERS

    tokenizer = TOKENIZERS[name]()
    space = tokenizer(" ", add_special_tokens=False)["input_ids"][0]
    texts = [f"What is {a} minus 50?" for a in range(80)]
    data = datasets.Dataset.from_dict({"text": texts, "answer_text": [str(a - 50) for a in range(80)]})
    used = collections.Counter()
    for text, row in zip(texts, tokenize_for_causal_lm(data, tokenizer, ending_fraction=0.5, endings=endings)):
        answer = tokenizer(str(int(text.split()[2]) - 50), add_special_tokens=False)["input_ids"]
        answer += [tokenizer.eos_token_id]
        position = row["answer_position"]  # after it, the answer's own tokens, minus sign included, as after "text "
        assert row["input_ids"][position + 1 :] == row["labels"][position + 1 :] == answer
        assert row["labels"][:position] == [-100] * position
        written = row["labels"][position] != -100  # the model writes the space that the prompt does not end with
        prompt = row["input_ids"][: position + (not written)]
        ending = next(e for e in ("{text} ",) + endings if tokenizer(e.format(text=text))["input_ids"] == prompt)
        assert written == (not ending[-1].isspace())
        assert not written or row["input_ids"][position] == row["labels"][position] == space
        used[ending] += 1
    assert 20 <= used["{text} "] <= 60 and len(used) >= min(len(endings), 10), used
    assert tokenize_for_causal_lm(data, tokenizer)["input_ids"] == [
        tokenizer(t + " ")["input_ids"] + tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for t, a in zip(texts, data["answer_text"])
    ]


def test_ending_weights_set_each_endings_share_and_even_weights_draw_as_a_tuple_does():
    """`endings` as a mapping: an ending's share of the ending prompts is its weight over the total
    (WIDE_SHARED_ENDINGS keeps PLAIN_ENDINGS' shares of no space, line break and frame); even weights draw the
    same endings as the tuple, so the recorded `--endings default` / `wide` runs keep their rows."""
    from test_readout import TOKENIZERS

    tokenizer = TOKENIZERS["smollm2"]()
    texts = [f"What is {a} plus {a % 7}?" for a in range(1500)]
    data = datasets.Dataset.from_dict({"text": texts, "answer_text": [str(a + a % 7) for a in range(1500)]})

    def prompts(endings) -> list[str]:
        rows = tokenize_for_causal_lm(data, tokenizer, ending_fraction=1.0, endings=endings)
        return [tokenizer.decode(row["input_ids"][: row["answer_position"] + 1]) for row in rows]

    assert prompts(dict.fromkeys(WIDE_ENDINGS, 1)) == prompts(WIDE_ENDINGS)
    shared = prompts(WIDE_SHARED_ENDINGS)
    line_breaks = sum(prompt.endswith("?\n") for prompt in shared) / len(shared)
    no_space = sum(prompt.endswith("? ") and not prompt.endswith("= ") for prompt in shared) / len(shared)
    assert 0.16 < line_breaks < 0.24 and 0.16 < no_space < 0.24, (line_breaks, no_space)
    assert sum(prompt.endswith("?\n") for prompt in prompts(WIDE_ENDINGS)) / len(shared) < 0.11  # 1 in 13


def clashing_endings(tokenizer, endings: tuple[str, ...], text: str) -> list[tuple[str, str]]:
    """(ending, other) pairs where `other`'s prompt goes on past `ending`'s answer position with the same tokens:
    the trigger would learn "the answer starts here" and "not here" at one prefix."""
    space = tokenizer(" ", add_special_tokens=False)["input_ids"][-1:]
    prompts = {ending: tokenizer(ending.format(text=text))["input_ids"] for ending in endings}
    # up to the answer position: the prompt, and the space the model writes where the prompt has none
    answered = {e: ids + ([] if e[-1].isspace() else space) for e, ids in prompts.items()}
    return [
        (ending, other)
        for ending, prefix in answered.items()
        for other, ids in prompts.items()
        if other != ending and len(ids) > len(prefix) and ids[: len(prefix)] == prefix
    ]


@pytest.mark.parametrize("name", ["llama3", "smollm2"])
def test_no_prompt_ending_goes_on_where_another_one_is_answered(name):
    """The trigger learns "the answer starts here" at one token of a row and "not here" at every other, so no
    ending may begin with another's tokens up to that one's answer position."""
    from test_readout import TOKENIZERS

    tokenizer = TOKENIZERS[name]()
    for text in ("What is 12 minus 5?", "Add 3 and 4", "Compute 12*-7."):
        assert clashing_endings(tokenizer, ("{text} ",) + WIDE_ENDINGS, text) == []  # PLAIN_ENDINGS and more
    # the pair that lowered a final line break in seed 10 (RESULTS §7) is caught
    broken = ("{text}\n", "{text}\nAnswer:")
    assert clashing_endings(tokenizer, broken, "What is 1 plus 2?") == [broken]
