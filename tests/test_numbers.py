"""dcomp_numbers: reading numbers from token ids and spelling values as tokens, for a one-digit tokenizer
(SmolLM2-like) and a chunk tokenizer (LLaMA-3-like: every string of 1–3 digits is a token)."""

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dcomp_numbers import MAX_READABLE, MAX_SYMBOLS, NumberTokens, ReadoutPlan

VOCAB = 1300
MINUS, SPACE_MINUS, SPACE, PLUS, WORD, TIMES_MINUS, CLOSE_MINUS, COMMA = 1, 2, 3, 4, 5, 6, 7, 8
SYMBOLS = {"-": MINUS, " -": SPACE_MINUS, " ": SPACE, "+": PLUS, "*-": TIMES_MINUS, ")-": CLOSE_MINUS, ",": COMMA}
ONE_DIGIT = {str(digit): 100 + digit for digit in range(10)}
CHUNKS = {
    f"{value:0{length}d}": 150 + i
    for i, (length, value) in enumerate((length, value) for length in (1, 2, 3) for value in range(10**length))
}


def tokenizer(chunks: bool, cap: int = 2**63) -> NumberTokens:
    table = CHUNKS if chunks else ONE_DIGIT
    return NumberTokens(table, [MINUS, SPACE_MINUS, TIMES_MINUS], VOCAB, cap, [TIMES_MINUS], [COMMA], [PLUS])


def encode(text: str, table: dict[str, int]) -> list[int]:
    """A toy pre-tokenizer: digit runs in chunks of the table's longest length from the left, "-", " -", " ", "+",
    ",", "*-" and ")-" (a symbol joined to the minus, as LLaMA-3 and SmolLM2 write them; ")-" is no minus token),
    words."""
    longest = max(map(len, table))
    ids = []
    for piece in re.findall(r"\d+|\*-|\)-| -|-| |\+|,|[a-z]+", text):
        if piece.isdigit():
            ids += [table[piece[i : i + longest]] for i in range(0, len(piece), longest)]
        else:
            ids.append(SYMBOLS.get(piece, WORD))
    return ids


def decode(ids: list[int], table: dict[str, int]) -> str:
    text = {token: digits for digits, token in table.items()}
    return "".join("-" if token == MINUS else text[token] for token in ids)


signed_64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@pytest.mark.parametrize("chunks", [False, True])
@given(values=st.lists(signed_64, min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_spell_writes_the_decimal_text_with_the_tokenizers_own_chunks(chunks, values):
    numbers = tokenizer(chunks)
    tokens, lengths = numbers.spell(torch.tensor(values))
    table = CHUNKS if chunks else ONE_DIGIT
    for value, row, length in zip(values, tokens.tolist(), lengths.tolist()):
        assert row[length:] == [-1] * (MAX_SYMBOLS - length)
        assert decode(row[:length], table) == str(value)
        assert row[:length] == encode(str(value), table)  # what the tokenizer itself would write


@pytest.mark.parametrize("chunks", [False, True])
@given(
    a=st.integers(-(10**12), 10**12),
    b=st.integers(0, 10**12),
    between=st.sampled_from(["-", " - ", " -", "+", " y -", " y  -", " y-", "*-", " *-", ")-"]),
)
@settings(max_examples=80, deadline=None)
def test_read_gives_each_number_its_sign_only_where_the_minus_is_a_sign(chunks, a, b, between):
    """A bare minus directly after a number is an operator ("a-b", "a -b", "a - b" are a then b); after a word or
    a space it is a sign ("y -b", "y-b"), as at the start of a text ("x -a"); joined to an operator it is a sign
    even right after a number ("a*-b"), but not after a closing bracket ("a)-b")."""
    table = CHUNKS if chunks else ONE_DIGIT
    text = f"x {a}{between}{b}"
    read = tokenizer(chunks).read(torch.tensor([encode(text, table)]))
    second = -b if between.startswith(" y") or "*-" in between else b
    assert read.value[read.is_last].tolist() == [a, second]
    assert bool(read.readable[read.is_last].all())


@pytest.mark.parametrize("chunks", [False, True])
@given(a=st.integers(-(10**15) + 1, 10**15 - 1), b=st.integers(0, 10**12))
@settings(max_examples=80, deadline=None)
def test_read_joins_digit_groups_into_one_number(chunks, a, b):
    """A "," between a run of 1–3 digits and a run of exactly 3 joins them ("12,345"; every group of a number
    written with thousands separators), while a list's ", " and groups of other lengths keep the numbers apart."""
    table = CHUNKS if chunks else ONE_DIGIT
    read = tokenizer(chunks).read(torch.tensor([encode(f"x {a:,} y -{b:,}, {b}, {a}", table)]))
    assert read.value[read.is_last].tolist() == [a, -b, b, a]
    assert read.is_first.sum() == 4 and bool(read.readable[read.is_last].all())
    apart = tokenizer(chunks).read(torch.tensor([encode("1234,567 y 1,2345 y 12,34 y 5,", table)]))
    assert apart.value[apart.is_last].tolist() == [1234, 567, 1, 2345, 12, 34, 5]
    ungrouped = NumberTokens(table, [MINUS], VOCAB, 2**63).read(torch.tensor([encode("12,345", table)]))
    assert ungrouped.value[ungrouped.is_last].tolist() == [12, 345]  # no group separator given: no grouping


@pytest.mark.parametrize("chunks", [False, True])
@given(a=st.integers(0, 10**12), b=st.integers(0, 10**12))
@settings(max_examples=40, deadline=None)
def test_a_plus_before_a_number_is_its_sign_and_after_one_an_operator(chunks, a, b):
    """ "+a" is a with a sign that casts no vote; "a+b" keeps its operator; in "+-b" the minus is the sign."""
    table = CHUNKS if chunks else ONE_DIGIT
    ids = torch.tensor([encode(f"x +{a} y {a}+{b} y +-{b}", table)])
    read = tokenizer(chunks).read(ids)
    assert read.value[read.is_last].tolist() == [a, a, b, -b]
    assert ids[read.is_sign].tolist() == [PLUS, MINUS] and bool(read.is_sign[0, 2])  # the first "+" and the minus


def test_read_caps_what_it_cannot_hold_and_marks_it_unreadable():
    table = ONE_DIGIT
    numbers = tokenizer(False, cap=1000)
    read = numbers.read(torch.tensor([encode("a 999 b 1000 c -999 d -12345", table)]))
    assert read.value[read.is_last].tolist() == [999, 1000, -999, -1000]
    assert read.readable[read.is_last].tolist() == [True, False, True, False]
    assert tokenizer(False).cap == MAX_READABLE  # int64-safe however wide the encoding


def test_read_ignores_ids_outside_the_table_and_the_vocabulary():
    read = tokenizer(True).read(torch.tensor([[VOCAB + 5, 150 + 7, -3]]))
    assert read.is_number.tolist() == [[False, True, False]] and read.value.tolist() == [[0, 7, 0]]


def test_a_number_is_written_from_its_first_valid_digit_on():
    numbers = tokenizer(False)
    ids = torch.tensor([encode("a b 12 c", ONE_DIGIT), encode("a 7 b c d", ONE_DIGIT)[:8]])
    first = [False] * 4 + [True] * 4  # from the "1" of 12 on
    second = [False] * 2 + [True] * 6  # from the 7 on
    assert numbers.written(ids).tolist() == [first, second]
    valid = torch.ones_like(ids).index_fill_(1, torch.tensor([2]), 0)  # the 7 is padding: no number in row 2
    assert numbers.written(ids, valid).tolist() == [first, [False] * 8]


def test_a_plan_covers_its_answer_and_its_end_mark():
    plan = ReadoutPlan.empty(2, "cpu").assign(0, 3, torch.tensor([5, 6]), 2)
    positions = torch.arange(8).expand(2, -1)
    assert plan.covers(positions).tolist() == [[False] * 3 + [True] * 3 + [False] * 2, [False] * 8]
    assert plan.select(torch.tensor([1, 0])).start.tolist() == [-1, 3]


def test_a_plan_stops_where_the_text_leaves_its_answer():
    """Position start + k + 1 must hold the answer's token k: the first that does not ends the plan there (and
    that position may start another computation); a text that follows the answer keeps the whole plan."""
    plan = ReadoutPlan.empty(2, "cpu").assign(0, 3, torch.tensor([5, 6, 7]), 3).assign(1, 1, torch.tensor([5, 6]), 2)
    ids = torch.tensor([[0, 0, 0, 9, 5, 6, 1, 0, 0], [0, 9, 5, 6, 0, 0, 0, 0, 0]])  # row 0 leaves at 6 (1, not 7)
    followed = plan.followed(ids, torch.arange(9))
    assert followed.stop.tolist() == [6, 4]  # row 1 followed its answer: start + length + 1
    assert followed.covers(torch.arange(9).expand(2, -1)).tolist() == [
        [False] * 3 + [True] * 3 + [False] * 3,
        [False] + [True] * 3 + [False] * 5,
    ]
    later = plan.followed(ids[:, :5], torch.arange(5)).followed(ids[:, 5:], torch.arange(5, 9))  # across calls
    assert later.stop.tolist() == [6, 4]


def test_a_plan_widens_for_a_longer_answer_and_keeps_the_other_rows():
    """A list answer is longer than one number's MAX_SYMBOLS tokens: `assign` widens the table with -1."""
    plan = ReadoutPlan.empty(2, "cpu").assign(1, 4, torch.tensor([7, 8, 9]), 3)
    long = torch.arange(MAX_SYMBOLS + 5)
    wide = plan.assign(0, 2, long, MAX_SYMBOLS + 5)
    assert wide.tokens.shape == (2, MAX_SYMBOLS + 5) and wide.tokens[0].tolist() == long.tolist()
    assert wide.tokens[1].tolist() == [7, 8, 9] + [-1] * (MAX_SYMBOLS + 2)
    assert wide.start.tolist() == [2, 4] and wide.length.tolist() == [MAX_SYMBOLS + 5, 3]
    assert wide.covers(torch.tensor([[2 + MAX_SYMBOLS + 5], [8]])).tolist() == [[True], [False]]
