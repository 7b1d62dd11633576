"""Exact match of a train.py run through plain `generate()`: the run's own test splits (rebuilt from its
`run_settings.json`: same task, sizes, seed and chat share), asked in left-padded batches with no extra argument,
greedy. An answer is right when the generated tokens are exactly the answer's tokens and then EOS. Reported overall,
per operation, per digit count of the longer operand (binary arithmetic), per list length and format (lists) and
per prompt kind (plain or chat). Separately, the parse: whether the computer ran at the end of the prompt (the
trigger) and read the numbers written in it, in order, into its input registers (`parse` groups: right when every
input register holds the written number; the end-to-end figure also needs the right program and read-out).

    python -m experiments.generate_eval --model runs/binary [--splits test test_pairs] [--limit 400] [--max-digits 8]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import torch

from experiments.common import markdown_table, runs_of
from library import tasks as task_library
from library.loading import load_model, load_tokenizer
from library.training.data import changed_splits, split_fingerprints, task_spec, test_pairs_split, written_numbers
from library.training.trainer import SETTINGS_FILE


def run_settings(folder: Path) -> dict:
    """The `run_settings.json` of a train.py output folder; ValueError naming the folder when it has none."""
    path = folder / SETTINGS_FILE
    if not path.is_file():
        raise ValueError(f"{folder}: no {SETTINGS_FILE}, so not a train.py output folder (train.py writes it first)")
    return json.loads(path.read_text())


def raw_test_splits(
    settings: dict, names: list[str], limit: int | None = None, where: str | Path = SETTINGS_FILE
) -> dict:
    """The run's test splits as text (`run_settings.json`'s task, sizes and seed), the first `limit` rows each.
    ValueError naming `where` (the settings' file) where the run saved its splits' fingerprints and
    `library.tasks` now draws others (the task code changed since: a rebuilt test question may be one the run
    trained on); a run saved before fingerprints is rebuilt unchecked."""
    data = SimpleNamespace(**settings["data"])
    seed = settings["training"]["seed"]
    spec = task_spec(data)
    raw = task_library.load_task(spec.builder, n=data.n, seed=seed, **spec.builder_kwargs)
    raw["test_pairs"] = test_pairs_split(spec, raw["train"], raw["test"], seed)
    if changed := changed_splits(settings.get("splits", {}), split_fingerprints(raw)):
        raise ValueError(
            f"{where}: the run held out other {', '.join(changed)} questions than library.tasks draws now "
            "(its `splits` fingerprints differ: the task code changed since it trained); evaluate it at the commit "
            "that trained it"
        )
    return {name: raw[name] if limit is None else raw[name].select(range(min(limit, len(raw[name])))) for name in names}


def with_max_digits(settings: dict, max_digits: int) -> dict:
    """The run's settings asking other number sizes than in training (`--max-digits`): the same phrasings and seed,
    so other questions than the run held out, and none of its split fingerprints applies."""
    data = settings["data"] | {"max_digits": max_digits}
    return {name: value for name, value in settings.items() if name != "splits"} | {"data": data}


def test_splits(settings: dict, tokenizer, names: list[str], limit: int | None, where: str | Path = SETTINGS_FILE):
    """The run's test splits, tokenized as in training (prompt, answer, EOS); `raw_test_splits`' check."""
    chat = settings["data"].get("chat_fraction", 0.0)
    return {
        name: task_library.tokenize_for_causal_lm(split, tokenizer, chat_fraction=chat)
        for name, split in raw_test_splits(settings, names, limit, where).items()
    }


def parsed_inputs(model, run, width: int) -> dict[int, list[int]]:
    """Batch row -> the most likely values of the input registers where the computer ran at the prompt's last
    position (`width - 1`); rows where it did not run there are absent."""
    rows, positions = run.positions.nonzero(as_tuple=True)
    values, _ = model.computer.machine.values.most_likely(run.input_probs)  # (P, input registers)
    return {
        int(row): values[i].tolist() for i, (row, position) in enumerate(zip(rows, positions)) if position == width - 1
    }


def left_padded(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists as one left-padded batch, as `generate()` wants it: input_ids and attention_mask `(batch, width)`."""
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


@torch.no_grad()
def exact_match(model, tokenizer, rows, batch_size: int, max_new_tokens: int) -> dict:
    right: dict[str, list[bool]] = defaultdict(list)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(rows), batch_size):
        batch = rows.select(range(start, min(start + batch_size, len(rows))))
        prompts = [row["input_ids"][: row["answer_position"] + 1] for row in batch]
        ids, mask = left_padded(prompts, pad)
        width = ids.shape[1]
        with runs_of(model)() as runs:
            output = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad
            )
        parsed = parsed_inputs(model, runs[0], width) if runs else {}  # runs[0]: the prompt's (prefill) call
        for index, (row, prompt, generated) in enumerate(zip(batch, prompts, output[:, width:].tolist())):
            expected = row["input_ids"][len(prompt) :]
            correct = generated[: len(expected)] == expected
            if "operands" in row:  # arithmetic: the parse on its own
                written = written_numbers(tokenizer.decode(prompt), signed=True)
                registers = parsed.get(index)
                right["parse: computed at the answer"].append(registers is not None)
                right["parse: operands read right"].append(  # the operands: the last numbers the prompt writes
                    registers is not None and registers == written[len(written) - len(registers) :]
                )
            kind = "plain" if prompt[-1] == tokenizer(" ", add_special_tokens=False)["input_ids"][-1] else "chat"
            groups = ["all", row["operation"], kind] + ([f"{row['digits']} digits"] if "digits" in row else [])
            groups += [f"length {row['length']}"] if "length" in row else []  # lists (issue 13)
            groups += [f"format {row['format']}"] if "format" in row else []
            groups += [f"lead-in {row['lead']}"] if "lead" in row else []
            groups += [f"system {row['system']}"] if "system" in row else []  # new_phrasings --system-prompts
            groups += [f"phrasing {row['phrasing']}"] if "phrasing" in row else []  # experiments.new_phrasings
            for group in groups:
                right[group].append(correct)
    return {group: (sum(values) / len(values), len(values)) for group, values in sorted(right.items())}


def binary_arithmetic_run(folder: Path) -> tuple[dict, object, object]:
    """The settings, model (in eval mode) and tokenizer of a binary-arithmetic train.py run; ValueError naming the
    folder when it is another run."""
    settings = run_settings(folder)
    if settings["data"].get("task") != "arithmetic" or settings["data"].get("encoding") != "binary":
        raise ValueError(f"{folder}: not a binary-arithmetic run (--task arithmetic --encoding binary)")
    return settings, load_model(folder).eval(), load_tokenizer(folder)


def print_exact_match(figures: dict, report: Path | None) -> dict:
    """Prints `{group: (share right, n)}` as a table and writes it as JSON to `report` when given."""
    table = [[group, f"{share:.1%}", count] for group, (share, count) in figures.items()]
    print(markdown_table(["questions", "exact match", "n"], table))
    if report:
        report.write_text(json.dumps(figures, indent=2))
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--splits", nargs="+", default=["test", "test_pairs"])
    parser.add_argument("--limit", type=int, default=None, help="first rows of each split")
    parser.add_argument(
        "--max-digits", type=int, default=None, help="binary arithmetic: ask with operands up to this many digits"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--report", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    model = load_model(args.model).eval()
    tokenizer = load_tokenizer(args.model)
    settings = run_settings(args.model)
    if args.max_digits is not None:
        settings = with_max_digits(settings, args.max_digits)
    figures = {}
    for name, rows in test_splits(settings, tokenizer, args.splits, args.limit, args.model / SETTINGS_FILE).items():
        figures[name] = exact_match(model, tokenizer, rows, args.batch_size, args.max_new_tokens)
        table = [[group, f"{share:.1%}", count] for group, (share, count) in figures[name].items()]
        print(f"{name}:\n" + markdown_table(["questions", "exact match", "n"], table))
    if args.report:
        args.report.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
