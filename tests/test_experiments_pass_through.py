"""experiments.pass_through: the no-computation controls measure what they say."""

import re

import torch
from test_readout import calculator, tiny_llama_for

from experiments.pass_through import compare, ordinary_texts
from library.tokenizer import llama3_tokenizer


def test_ordinary_texts_are_long_distinct_docstring_paragraphs():
    texts = ordinary_texts(20, 200)
    assert len(texts) == 20 == len(set(texts)) and min(map(len, texts)) >= 200


def numbered_texts(count: int) -> list[str]:
    """Ordinary texts that write a number early (within their prompt): the computer never runs before one."""
    texts = [text for text in ordinary_texts(400, 200) if re.search(r"\d", text[:20])][:count]
    assert len(texts) == count
    return texts


def test_a_silent_computer_passes_ordinary_text_through_and_a_firing_one_is_counted():
    tokenizer = llama3_tokenizer()
    model = calculator(tokenizer, "add")
    base = tiny_llama_for(tokenizer)
    texts = numbered_texts(3)
    silent = compare(model, base, tokenizer, texts, prompt_tokens=8, new_tokens=6)
    assert silent == {
        "texts": 3,
        "greedy_token_agreement": 1.0,
        "next_token_agreement": 1.0,
        "perplexity_ratio": 1.0,
        "false_activation_positions": 0.0,
        "lead_activation_positions": 0.0,
        "texts_with_activation": 0.0,
    }
    with torch.no_grad():
        model.computer.trigger.bias.fill_(10.0)
    firing = compare(model, base, tokenizer, texts, prompt_tokens=8, new_tokens=6)
    assert firing["texts_with_activation"] == 1.0 and firing["false_activation_positions"] > 0
    assert firing["greedy_token_agreement"] < 1.0 and firing["next_token_agreement"] < 1.0


def test_a_firing_lead_head_is_a_false_activation_too():
    tokenizer = llama3_tokenizer()
    space = tokenizer.encode(" ", add_special_tokens=False)[-1]
    model = calculator(tokenizer, "add", computer_lead_token_id=space)
    texts = numbered_texts(2)
    with torch.no_grad():
        model.computer.lead.bias.fill_(10.0)
    firing = compare(model, tiny_llama_for(tokenizer), tokenizer, texts, prompt_tokens=8, new_tokens=6)
    assert firing["lead_activation_positions"] > 0 and firing["false_activation_positions"] > 0  # it computes there
    assert firing["texts_with_activation"] == 1.0 and firing["greedy_token_agreement"] < 1.0
    # Before a number is written neither head can run the computer, so the lead's logit there counts for nothing.
    numberless = [text for text in ordinary_texts(100, 200) if not re.search(r"\d", text)][:2]
    quiet = compare(model, tiny_llama_for(tokenizer), tokenizer, numberless, prompt_tokens=8, new_tokens=6)
    assert quiet["lead_activation_positions"] == 0.0 == quiet["texts_with_activation"]


def test_zero_shot_reads_the_last_integer_as_written():
    from experiments.zero_shot import last_integer

    assert last_integer("The answer is -1,234 apples") == -1234
    assert last_integer("80 + 29 = 149") == 149
    assert last_integer("12,3456") == 3456 and last_integer("none") is None


def test_zero_shot_names_what_is_wrong_with_its_questions(tmp_path, capsys):
    import json

    import pytest

    from experiments.zero_shot import main

    def error(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    assert "drop --test-size, --seed" in error(["--run", str(tmp_path), "--seed", "3", "--test-size", "10"])
    assert "give --run DIR" in error(["--limit", "5"])
    with pytest.raises(ValueError, match="no run_settings.json, so not a train.py output folder"):
        main(["--run", str(tmp_path)])
    settings = {"data": {"task": "sort", "encoding": "binary"}, "training": {"seed": 0}}
    (tmp_path / "run_settings.json").write_text(json.dumps(settings))
    assert "a run of task 'sort'" in error(["--run", str(tmp_path)])
