"""experiments.new_phrasings: questions in phrasings no training split uses, and with operands written in other
formats, with right answers."""

import re

import dcomp_isa
from experiments.new_phrasings import (
    FLOOR_DIVISIONS,
    LEADING_NUMBERS,
    NEW_PHRASINGS,
    NUMBER_FORMATS,
    SYMBOLS,
    SYSTEM_PROMPTS,
    format_questions,
    leading_questions,
    questions,
    symbol_phrasings,
    system_prompt_rows,
    wide_words,
)
from library.tasks import PHRASINGS, words
from library.training.data import written_numbers


def test_the_new_phrasings_are_in_no_split():
    known = {template for kind in PHRASINGS.values() for templates in kind.values() for template in templates}
    for operation, phrasings in NEW_PHRASINGS.items():
        assert not known & set(phrasings), operation
        assert all("{a}" in p and "{b}" in p for p in phrasings)


def test_questions_hold_their_answers_and_read_back_their_operands():
    rows = questions(per_phrasing=20, seed=3, max_digits=4)
    assert len(rows) == 20 * sum(map(len, NEW_PHRASINGS.values()))
    for row in rows:
        a, b = row["operands"]
        assert row["answer_text"] == str(dcomp_isa.alu_signed(row["operation"], a, b, 64))
        in_order = [a, b] if row["phrasing"].index("{a}") < row["phrasing"].index("{b}") else [b, a]
        assert written_numbers(row["text"], signed=True) == in_order, row["text"]  # "12*-7", "5--3" as written
        assert row["digits"] == max(len(str(abs(a))), len(str(abs(b)))) <= 4
        if row["operation"] == "div":
            assert b != 0
            if row["phrasing"] not in FLOOR_DIVISIONS:
                assert a % b == 0, row["text"]  # no rounding asked: the division comes out even
    assert any(value < 0 for row in rows for value in row["operands"])
    assert questions(per_phrasing=20, seed=3, max_digits=4)["text"] == rows["text"]  # seeded


def test_the_wide_words_are_new_to_the_default_set_in_its_own_frames():
    """--wide-words: phrasings of the wide set that the default set lacks, most with a word it lacks ("{a} more
    than {b}" has none: the default set asks "{b} more than {a}"); divisions come out even."""
    vocabulary = set().union(*(words(t) for ts in PHRASINGS["all"].values() for t in ts))
    asked = wide_words()
    assert set(asked) == set(NEW_PHRASINGS) and all(len(options) >= 40 for options in asked.values())
    for operation, phrasings in asked.items():
        assert all(p not in PHRASINGS["all"][operation] and p in PHRASINGS["wide"][operation] for p in phrasings)
        assert sum(bool(words(p) - vocabulary) for p in phrasings) >= 0.7 * len(phrasings), operation
    rows = questions(per_phrasing=1, seed=2, phrasings=asked)
    for row in rows:
        a, b = row["operands"]
        assert row["answer_text"] == str(dcomp_isa.alu_signed(row["operation"], a, b, 64))
        assert row["operation"] != "div" or a % b == 0, row["text"]


def test_symbols_are_asked_joined_and_spaced_in_frames_no_set_asks_them_in():
    """--symbols: every operation symbol, "12/4" and "12 / 4", in the new phrasings' frames; no set has any of these
    phrasings, so a symbol's token is read as it is, not a trained frame; divisions come out even."""
    asked = symbol_phrasings()
    assert set(asked) == set(SYMBOLS)
    trained = {op: {t for kind in PHRASINGS for t in PHRASINGS[kind][op]} for op in asked}
    for operation, phrasings in asked.items():
        assert not set(phrasings) & trained[operation], operation
        for symbol in SYMBOLS[operation]:
            assert any(f"{{a}}{symbol}{{b}}" in p for p in phrasings) and any(f" {symbol} " in p for p in phrasings)
    rows = questions(per_phrasing=2, seed=4, phrasings=asked)
    for row in rows:
        a, b = row["operands"]
        assert row["answer_text"] == str(dcomp_isa.alu_signed(row["operation"], a, b, 64))
        assert row["operation"] != "div" or a % b == 0, row["text"]
        assert sorted(written_numbers(row["text"], signed=True)) == sorted([a, b]), row["text"]


def test_widening_the_training_phrasings_keeps_the_new_words_new():
    """A new phrasing with a word the default set lacks (" increased", " equals") still has one the wide and the
    wider set lack: otherwise the proxy would measure trained words."""
    vocabulary = {kind: set().union(*(words(t) for ts in PHRASINGS[kind].values() for t in ts)) for kind in PHRASINGS}
    for phrasings in NEW_PHRASINGS.values():
        for phrasing in phrasings:
            if words(phrasing) - vocabulary["all"]:
                for widened in ("wide", "wider"):
                    assert words(phrasing) - vocabulary[widened], (widened, phrasing)


def test_questions_write_their_operands_in_each_format_and_read_back_as_written():
    rows = format_questions(per_format=24, seed=5, max_digits=5)
    assert len(rows) == 24 * len(NUMBER_FORMATS) and set(rows["format"]) == set(NUMBER_FORMATS)
    for row in rows:
        a, b = row["operands"]
        assert row["answer_text"] == str(dcomp_isa.alu_signed(row["operation"], a, b, 64))
        assert sorted(written_numbers(row["text"], signed=True)) == sorted([a, b]), row["text"]
        if row["operation"] == "div":
            assert a % b == 0, row["text"]
    texts = {name: " ".join(row["text"] for row in rows if row["format"] == name) for name in NUMBER_FORMATS}
    assert (
        "," in texts["digit groups"]
        and "\u2212" in texts["typographic minus"]
        and not re.search(r"(?<!\d)-\d", texts["typographic minus"])
    )
    assert "(-" in texts["negatives in brackets"] and "+" in texts["plus signs"]
    assert format_questions(per_format=24, seed=5)["text"] == rows["text"]  # seeded


def test_leading_questions_write_numbers_of_their_own_before_the_operands():
    rows = leading_questions(per_lead=16, seed=2, max_digits=5)
    assert len(rows) == 16 * len(LEADING_NUMBERS) and set(rows["lead"]) == set(LEADING_NUMBERS)
    for row in rows:
        a, b = row["operands"]
        assert row["answer_text"] == str(dcomp_isa.alu_signed(row["operation"], a, b, 64))
        numbers = written_numbers(row["text"], signed=True)
        leading = 2 if row["lead"] in ("step n of m", "a date") else 1
        assert len(numbers) == leading + 2 and sorted(numbers[leading:]) == sorted([a, b]), row["text"]
        if row["operation"] == "div":
            assert a % b == 0, row["text"]
    assert leading_questions(per_lead=16, seed=2)["text"] == rows["text"]  # seeded


def test_system_prompt_questions_go_through_the_chat_template_with_each_system_message():
    from test_readout import smollm2_tokenizer

    tokenizer = smollm2_tokenizer()
    rows = system_prompt_rows(per_prompt=4, seed=1, tokenizer=tokenizer)
    assert len(rows) == 4 * len(SYSTEM_PROMPTS) and set(rows["system"]) == set(SYSTEM_PROMPTS)
    for row in rows:
        prompt = tokenizer.decode(row["input_ids"][: row["answer_position"] + 1])
        assert SYSTEM_PROMPTS[row["system"]] in prompt and "named SmolLM" not in prompt, prompt
        assert prompt.endswith("assistant\n") and row["text"] in prompt
        assert tokenizer.decode(row["input_ids"][row["answer_position"] + 1 :]).startswith(row["answer_text"])
        a, b = row["operands"]
        assert row["operation"] != "div" or a % b == 0, row["text"]
