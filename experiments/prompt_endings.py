"""Exact match of a binary-arithmetic train.py run when a plain question ends otherwise than train.py writes it
(the question, then a space): with no space, with a line break, and in the format of the GPT-3 arithmetic
benchmark (lm-eval's `arithmetic` tasks: "Question: What is 98 plus 45?\\nAnswer:"), through plain `generate()` in
left-padded batches, greedy. The questions are the run's `test_pairs` split (training phrasings, held-out
operands), all asked without the chat template. An answer is right when the generated text starts with it, after
spaces at most, and no digit follows it: after an ending without a space the model has to write the space itself
(or not), and the benchmark scores how a continuation starts, not what comes after the number. A run trained with
`--ending_fraction` saw the no-space and line-break endings and the frames of `library.tasks.PLAIN_ENDINGS`; the
benchmark's format is a combination of those frames that none of them is, and two more frames (`HELD_OUT_ENDINGS`)
are in no training set, `--endings wide` included. The GPT-3 format is also scored as
lm-eval scores those tasks ("lm-eval acc"): " {answer}" after "…\nAnswer:" must be the greedy continuation,
teacher-forced in one forward call, the space before the number included (our own questions, not the benchmark's).

    python -m experiments.prompt_endings --model runs/smol_lora [--limit 200] [--report endings.json]
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

import torch

from experiments.generate_eval import binary_arithmetic_run, left_padded, print_exact_match, raw_test_splits
from library.training.trainer import SETTINGS_FILE

# Ending name -> the plain prompt around a question's text; the first is train.py's own.
ENDINGS: dict[str, str] = {
    "space (as trained)": "{text} ",
    "no space": "{text}",
    "line break": "{text}\n",
    "GPT-3 arithmetic format": "Question: {text}\nAnswer:",
    "held-out frame A": "Exercise: {text}\nFinal answer:",
    "held-out frame B": "Prompt: {text}\nCompletion:",
}
# Frames no training ending uses (neither PLAIN_ENDINGS nor WIDE_ENDINGS; tests check): the GPT-3 format's and two
# more, so a run trained on more frames (--endings wide) is measured on frames it has not seen either.
HELD_OUT_ENDINGS = ("GPT-3 arithmetic format", "held-out frame A", "held-out frame B")
LM_EVAL_ENDING = "GPT-3 arithmetic format"  # also scored teacher-forced, as lm-eval's `acc`
LEADING_NUMBER = re.compile(r"[ \t]*(-?\d+)(?!\d)")


@torch.no_grad()
def leading_numbers(model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int) -> list[str | None]:
    """The number each prompt's greedy continuation starts with (special tokens dropped, spaces before it
    allowed), or None where it starts otherwise."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    numbers: list[str | None] = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_padded([tokenizer(p)["input_ids"] for p in prompts[start : start + batch_size]], pad)
        output = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad
        )
        texts = tokenizer.batch_decode(output[:, ids.shape[1] :], skip_special_tokens=True)
        numbers += [match[1] if (match := LEADING_NUMBER.match(text)) else None for text in texts]
    return numbers


@torch.no_grad()
def greedy_continuations(
    model, tokenizer, contexts: list[str], continuations: list[str], batch_size: int
) -> list[bool]:
    """Whether each continuation is the model's greedy continuation of its context, teacher-forced in one forward
    call: how lm-eval scores a loglikelihood task's `acc` (its `is_greedy`; the GPT-3 arithmetic tasks ask for
    " 143" after "…\nAnswer:"). The continuation's tokens are those of context + continuation after the context's,
    as lm-eval splits them."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    greedy: list[bool] = []
    for start in range(0, len(contexts), batch_size):
        pairs = list(zip(contexts[start : start + batch_size], continuations[start : start + batch_size]))
        wholes = [tokenizer(context + continuation)["input_ids"] for context, continuation in pairs]
        lengths = [len(whole) - len(tokenizer(context)["input_ids"]) for whole, (context, _) in zip(wholes, pairs)]
        ids, mask = left_padded(wholes, pad)
        choices = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)  # (batch, width)
        for row, length in enumerate(lengths):
            greedy.append(bool(length > 0 and torch.equal(choices[row, -length - 1 : -1], ids[row, -length:])))
    return greedy


def exact_match_by_ending(model, tokenizer, rows, batch_size: int = 32, max_new_tokens: int = 24) -> dict:
    """`{group: (share right, n)}` for every ending of `ENDINGS`, overall and per operation and digit count, and
    for the GPT-3 format scored as lm-eval scores it (`greedy_continuations`, " {answer}" after "Answer:")."""
    right: dict[str, list[bool]] = defaultdict(list)
    for ending, form in ENDINGS.items():
        prompts = [form.format(text=text) for text in rows["text"]]
        for row, number in zip(rows, leading_numbers(model, tokenizer, prompts, batch_size, max_new_tokens)):
            for group in ("all", row["operation"], f"{row['digits']} digits"):
                right[f"{ending}: {group}"].append(number == row["answer_text"])
    contexts = [ENDINGS[LM_EVAL_ENDING].format(text=text) for text in rows["text"]]
    answers = [f" {answer}" for answer in rows["answer_text"]]
    for row, greedy in zip(rows, greedy_continuations(model, tokenizer, contexts, answers, batch_size)):
        for group in ("all", row["operation"], f"{row['digits']} digits"):
            right[f"{LM_EVAL_ENDING}, lm-eval acc: {group}"].append(greedy)
    return {group: (sum(values) / len(values), len(values)) for group, values in right.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="first rows of test_pairs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--report", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    settings, model, tokenizer = binary_arithmetic_run(args.model)
    rows = raw_test_splits(settings, ["test_pairs"], args.limit, args.model / SETTINGS_FILE)["test_pairs"]
    return print_exact_match(exact_match_by_ending(model, tokenizer, rows, args.batch_size), args.report)


if __name__ == "__main__":
    main()
