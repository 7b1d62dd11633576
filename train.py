"""The main job: teach a LlamaDComp model to use its compiled library from natural language (paper §4.2).

    python train.py                                   # the paper's calculator experiment, mod 128, CPU, minutes
    python train.py --task fibonacci --output-dir runs/fib
    python train.py --model path/to/llama --lora      # a pretrained Llama: LoRA adapters + the computer block
    python train.py --no-computer                     # the same Llama without the computer: the baseline
    torchrun --nproc_per_node 2 train.py ...          # data parallel, unchanged (gloo on CPU, NCCL + bf16 on CUDA)
    python train.py predict --model runs/default "Add 3 and 4"

Data come from `library.tasks`: `test` holds out phrasings AND operand pairs, `test_long` longer inputs; this
script adds `test_pairs`, the test split's held-out operand pairs written in training phrasings. Supervision is
on the answer only (labels -100 elsewhere, cross-entropy); the LM head runs only at labelled positions (boolean
`logits_to_keep`) and the computer only where a number of the answer is written next (`computer_mask`: the
answer position; for sort also the token after each comma). Accuracy is the exact match of
greedy decoding, computed in one teacher-forced pass: greedy decoding writes exactly the answer and EOS if and
only if the argmax at every labelled position is its label.

How the default run learns in minutes (measurements in docs/results_train.md):

* the computer follows the LAST decoder layer, so both attention layers parse for it;
* the answer loss: the cross-entropy of the computer's output register against the answer value, next to the LM
  loss (the same answer, read where the computer writes it). Through the LM head alone the signal reaching the
  machine is weak and the base learns the answer prior instead: the computer's parse collapses within ~50 steps.
  With `isolate_gradients` the LM loss trains the read-out (W_out, gate, LM head) and the answer loss trains the
  parse/selection heads and, through them, the base;
* the parse heads start as linear probes, fitted on the untrained model's hidden states, of the prompt's numbers
  in the order written (input text only, no answers): with near-uniform parsed inputs the gradient through e.g.
  `add` (a circular convolution) carries no information, with the prompt's numbers likely it does;
* the parse copies (`--parse auto`: "copy" wherever the tokenizer writes every value 0..n-1 as one token, as
  LLaMA-3 does): each register also has a pointer over the prompt's number tokens, whose keys carry the number's
  ordinal, mixed with the linear parse by a learned gate (`CopyParse` in the modeling file). It starts pointing
  each register at the number that register reads in the prompt text (`init_copy_parse`: input text only, the
  same information as the probe). A copied value needs no classifier trained on it, so Fibonacci depth 4-6,
  never seen in training, is read exactly; the linear parse alone must learn a 128-way classifier per register
  through the machine, and its Fibonacci depth 3 stalls near 60 % (docs/RESULTS.md §3);
* the arithmetic library also holds the non-commutative operations with swapped inputs (`rsub`, `rdiv`): a
  phrasing that names the operands in reverse ("Subtract 4 from 9") is then a matter of selecting a program, which
  the model learns in ~100 steps. Without them the registers, started in reading order, are confidently wrong
  for that phrasing and the answer's gradient has no component towards the swap (validation `sub` stays at 75 %);
* W_out starts at the LM-head rows of the number tokens (the computer writes what the LM head reads), rows given
  norm `--number-row-norm` so that a confident number is expressible from the first step;
* one learning rate per part: a fast selection head, slower parse heads (the probe's parse is right from the start;
  at the selection's rate the answer's gradient, noisy while the selection is still spread, unlearns it), slower
  embeddings, slowest decoder layers (whose drift would otherwise outrun the heads that read them);
* 1 epoch: with the copy parse, validation is 100 % by step 100 (with the linear parse alone it took 2.5 epochs to
  reach 99.9 %: the last errors were prompts whose two operands the parse had not yet told apart;
  docs/results_train.md).

Sort writes a list ("3, 5, 9"): before its j-th number the computer runs `sort_select` (r1 = length, r2 = j, the
list in memory; r0 = the j-th smallest), with that number as the answer loss's target. The copy parse reads the
list into memory exactly; r1 and r2 are no token of the prompt and stay with the linear parse.
`--parse-loss-weight` (opt-in, default 0: supervision stays on the answer only, as in the paper) adds the parse
heads' cross-entropy against the slot values read from the prompt text: with it sort reaches 100.0 ± 0.1 % on
lists of the training lengths (docs/RESULTS.md: sort; with the copy parse and the answer loss alone sort was not
measured, with the linear parse alone it got 0.7 %).
"""

from __future__ import annotations

import time

PROCESS_START = time.time()  # wall time is measured from here: imports, data and tokenizer included

import argparse
import dataclasses
import hashlib
import inspect
import json
import os
import random
import re
import shlex
import string
import sys
from pathlib import Path

import datasets
import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from library import tasks as task_library
from library.install import explain, from_llama, number_token_ids
from library.stdlib import STANDARD_PROGRAMS, standard_source
from library.tokenizer import fingerprint, llama3_tokenizer
from modeling_llama_dcomp import IGNORE_INDEX, record_computer_runs

REPO = Path(__file__).resolve().parent
MODEL_CARD = REPO / "model_card.md"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
NUMBER = re.compile(r"\d+")
# Arithmetic operations whose inputs cannot be swapped: the default library also holds them reversed (`rsub`).
NOT_COMMUTATIVE = ("sub", "div", "mod")


# ----------------------------------------------------------------------------------------------------- options
def build_parser() -> argparse.ArgumentParser:
    """The training command line (`python train.py predict ...` has its own, see `build_predict_parser`)."""
    parser = argparse.ArgumentParser(
        prog="train.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Prediction: python train.py predict --model DIR PROMPT [PROMPT ...] (see `train.py predict -h`).",
    )
    default = "(default: %(default)s)"

    def add(group, *names, help, **kwargs):
        group.add_argument(*names, help=f"{help} {default}", **kwargs)

    task = parser.add_argument_group("task")
    add(
        task,
        "--task",
        choices=("arithmetic", "fibonacci", "sort", "max"),
        default="arithmetic",
        help="library.tasks task",
    )
    add(task, "--n", type=int, default=128, help="values of the machine: arithmetic is mod n")
    add(task, "--operations", default="add,sub,mul,div", help="arithmetic operations, comma-separated")
    add(task, "--train-size", type=int, default=20000, help="training examples")
    add(task, "--validation-size", type=int, default=500, help="validation examples (learning curve)")
    add(task, "--test-size", type=int, default=1000, help="test examples (also the size of test_pairs)")
    add(task, "--test-long-size", type=int, default=1000, help="test_long examples (fibonacci, sort, max)")
    add(task, "--seed", type=int, default=0, help="seed of the data split, the model and the data order")

    model = parser.add_argument_group("model")
    add(model, "--model", type=Path, default=None, help="start from this Llama checkpoint folder")
    add(model, "--gguf", type=Path, default=None, help="start from this GGUF file of a Llama model")
    add(
        model,
        "--no-computer",
        action="store_true",
        default=False,
        help="train the same Llama without the computer block (the baseline)",
    )
    add(
        model,
        "--lora",
        action="store_true",
        default=False,
        help="PEFT LoRA adapters on the base attention/MLP weights; the computer block trains in full",
    )
    add(model, "--lora-rank", type=int, default=8, help="LoRA rank")
    add(
        model,
        "--library",
        default=None,
        help="programs to install, comma-separated: standard ones or rsub/rdiv/rmod (swapped inputs); None: the task's",
    )
    model.add_argument(
        "--reversed-programs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="arithmetic: the library also holds the non-commutative operations with swapped inputs "
        "(rsub, rdiv, rmod), so operand order is a selection (default: %(default)s)",
    )
    add(model, "--hidden-size", type=int, default=128, help="hidden size of a from-scratch model")
    add(model, "--layers", type=int, default=2, help="decoder layers of a from-scratch model")
    add(model, "--heads", type=int, default=4, help="attention heads of a from-scratch model")
    add(model, "--computer-layer", type=int, default=-1, help="decoder layer the computer follows (-1: the last)")
    add(model, "--gate-init", type=float, default=1.0, help="initial gate of the computer's residual write")
    add(model, "--selection-temperature", type=float, default=1.0, help="temperature of the program selection")
    add(
        model,
        "--parse",
        choices=("auto", "linear", "copy"),
        default="auto",
        help="the computer's parse (config computer_parse): a classifier over the n values, or that mixed with a "
        "pointer that copies a number of the prompt; auto: copy when the numbers 0..n-1 can be read back "
        "from their tokens (LLaMA-3: one token each; SmolLM2: one per digit), else linear",
    )

    recipe = parser.add_argument_group("training recipe")
    add(
        recipe,
        "--answer-loss-weight",
        type=float,
        default=1.0,
        help="weight of the answer loss on the computer's output register (0: LM loss only, end to end)",
    )
    add(
        recipe,
        "--parse-loss-weight",
        type=float,
        default=0.0,
        help="weight of the parse loss (0: answer-only supervision), the parse heads' cross-entropy against what "
        "`slot_values` reads from the prompt text alone (never the answer): the numbers in the order written; "
        "for lists the length, the index of the number being written and the list",
    )
    add(
        recipe,
        "--parse-init-scale",
        type=float,
        default=5.0,
        help="logit scale of the probe that initialises the parse heads (0: random parse heads)",
    )
    add(recipe, "--probe-examples", type=int, default=1024, help="training prompts the probe is fitted on")
    add(
        recipe,
        "--probe-targets",
        choices=("values", "digits"),
        default="values",
        help="what the probe regresses on: each value one-hot (columns rescaled to norm 1), or the decimal digits "
        "of the value and its length, a value's column the sum of its digits' (for tokenizers that write "
        "numbers digit by digit: SmolLM2)",
    )
    add(
        recipe,
        "--probe-ridge",
        type=float,
        default=1e-2,
        help="ridge penalty of the probe fit, per example (times the number of prompts)",
    )
    add(
        recipe,
        "--number-row-norm",
        type=float,
        default=1.5,
        help="norm of the number tokens' LM-head rows of a from-scratch model (0: leave)",
    )
    add(recipe, "--learning-rate", type=float, default=1e-4, help="peak learning rate of the decoder layers")
    add(
        recipe,
        "--embedding-learning-rate",
        type=float,
        default=3e-4,
        help="peak learning rate of the embeddings, LM head, final norm and W_out",
    )
    add(
        recipe,
        "--computer-learning-rate",
        type=float,
        default=3e-3,
        help="peak learning rate of the computer's selection head, norm and gate",
    )
    add(
        recipe,
        "--parse-learning-rate",
        type=float,
        default=1e-3,
        help="peak learning rate of the computer's parse heads",
    )
    add(recipe, "--warmup-steps", type=int, default=20, help="linear warm-up steps")
    add(recipe, "--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    add(recipe, "--epochs", type=float, default=1.0, help="training epochs")
    add(recipe, "--max-steps", type=int, default=-1, help="stop after this many steps (-1: --epochs decides)")
    add(recipe, "--batch-size", type=int, default=32, help="training batch size per process")
    add(recipe, "--eval-batch-size", type=int, default=128, help="evaluation batch size per process")

    run = parser.add_argument_group("run")
    add(run, "--output-dir", type=Path, default=Path("runs/default"), help="checkpoints and the final model")
    add(run, "--eval-steps", type=int, default=100, help="validation accuracy every this many steps")
    add(run, "--save-steps", type=int, default=200, help="checkpoint every this many steps")
    add(run, "--logging-steps", type=int, default=20, help="log the loss every this many steps")
    add(run, "--resume", action="store_true", default=False, help="resume from the last checkpoint in --output-dir")
    add(
        run,
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per process (more threads than free cores is much slower)",
    )
    add(run, "--push-to-hub", action="store_true", default=False, help="push the final model to the Hub (Trainer)")
    add(run, "--hub-model-id", default=None, help="Hub repository of --push-to-hub")
    return parser


def build_predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train.py predict", description=predict.__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a folder written by train.py")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="most answer tokens (default: %(default)s)")
    parser.add_argument("prompts", nargs="+", help='questions, e.g. "Add 3 and 4"')
    return parser


# ------------------------------------------------------------------------------------------------------- tasks
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


def task_spec(args) -> TaskSpec:
    """The TaskSpec of `args.task` (arithmetic, fibonacci, sort or max)."""
    sizes = {"train_size": args.train_size, "validation_size": args.validation_size, "test_size": args.test_size}
    if args.task == "arithmetic":
        operations = tuple(args.operations.split(","))
        templates = {op: task_library.ARITHMETIC_TEMPLATES[op] for op in operations}
        reversed_ops = tuple(f"r{op}" for op in operations if op in NOT_COMMUTATIVE) if args.reversed_programs else ()
        return TaskSpec(
            "arithmetic",
            {**sizes, "operations": operations},
            operations + reversed_ops,
            (1, 2),
            0,
            templates,
            "operation",
            True,
        )
    sizes["test_long_size"] = args.test_long_size
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
        if name in STANDARD_PROGRAMS:
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


def build_datasets(args, spec: TaskSpec, tokenizer):
    """Tokenized splits: train, validation, test, test_pairs (and test_long for fibonacci and lists)."""
    raw = task_library.load_task(spec.builder, n=args.n, seed=args.seed, **spec.builder_kwargs)
    raw["test_pairs"] = test_pairs_split(spec, raw["train"], raw["test"], args.seed)
    data = task_library.tokenize_for_causal_lm(raw, tokenizer)
    data = add_number_positions(data, tokenizer, spec) if spec.answer_per_number else data
    return add_slot_targets(data, spec, args.n)


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


def add_slot_targets(data, spec: TaskSpec, n: int):
    """Adds `slot_targets` (the parse loss's targets) to every split: per position the computer runs at,
    `slot_values` padded with -100 to every parse slot."""
    slots = len(spec.input_registers) + spec.memory_inputs

    def targets(row: dict) -> dict:
        return {
            "slot_targets": [
                values + [IGNORE_INDEX] * (slots - len(values)) for values in slot_values(spec, row["text"], n)
            ]
        }

    return _mapped(data, targets, "Slot targets")


@dataclasses.dataclass
class AnswerCollator:
    """Pads a batch on the right and adds what the forward needs: `logits_to_keep` (the positions whose next
    token is labelled) with `shift_labels` (those labels), the computer's `computer_mask` (the answer position,
    or every `number_positions` of a list answer) and, for the answer loss, `computer_targets` (the answer value
    at each of them, in `computer_mask.nonzero()` order). Other columns are dropped."""

    pad_token_id: int
    with_computer: bool
    with_targets: bool
    with_slot_targets: bool = False  # the parse loss: `slot_targets` (computer positions, slots)

    def __call__(self, rows: list[dict]) -> dict:
        def pad(key: str, value: int) -> torch.Tensor:
            return pad_sequence([torch.tensor(row[key]) for row in rows], batch_first=True, padding_value=value)

        batch = {
            "input_ids": pad("input_ids", self.pad_token_id),
            "attention_mask": pad("attention_mask", 0),
            "labels": pad("labels", IGNORE_INDEX),
        }
        shifted = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
        batch["logits_to_keep"] = shifted != IGNORE_INDEX
        batch["shift_labels"] = shifted[batch["logits_to_keep"]]
        if self.with_computer:
            positions = [row.get("number_positions", [row["answer_position"]]) for row in rows]
            mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
            rows_index = [i for i, row in enumerate(positions) for _ in row]
            mask[torch.tensor(rows_index), torch.tensor(sum(positions, []))] = True
            batch["computer_mask"] = mask
        if self.with_targets:
            answers = [row["answer"] if isinstance(row["answer"], list) else [row["answer"]] for row in rows]
            batch["computer_targets"] = torch.tensor(sum(answers, []))
        if self.with_slot_targets:
            batch["slot_targets"] = torch.tensor(sum((row["slot_targets"] for row in rows), []))
        return batch


# ------------------------------------------------------------------------------------------------------- model
def build_tokenizer(args):
    """The model's own tokenizer (`--model` folder or `--gguf` file), else the LLaMA-3 tokenizer."""
    if args.gguf is not None:
        tokenizer = AutoTokenizer.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name)
    elif args.model is not None and (args.model / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    else:
        return llama3_tokenizer()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_llama(args, tokenizer) -> LlamaForCausalLM:
    """The given Llama (`--model` / `--gguf`), or a from-scratch one in the paper's shape (§4.2: hidden 128-256,
    two layers, the 128,256-token LLaMA-3 vocabulary; untied embeddings, ~33 M parameters at hidden 128)."""
    if args.gguf is not None:
        llama = AutoModelForCausalLM.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name)
        llama.config.quantization_config = None  # save_pretrained refuses a "gguf-quantized" config
        # The weights are dequantized to float32; without this the Trainer refuses to train the Llama itself
        # ("quantized with GGUF", as in the --no-computer baseline; `from_llama` builds a new model anyway).
        llama.hf_quantizer, llama.is_quantized = None, False
        return llama
    if args.model is not None:
        return LlamaForCausalLM.from_pretrained(args.model)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        intermediate_size=4 * args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def build_model(args, spec: TaskSpec, tokenizer):
    """`build_llama`, converted with `from_llama` and the task's library installed after `--computer-layer`."""
    llama = build_llama(args, tokenizer)
    if args.no_computer:
        return llama
    layers = llama.config.num_hidden_layers
    tokens = number_token_ids(tokenizer, args.n)
    number_ids = [ids[0] if len(ids) == 1 else -1 for ids in tokens]
    return from_llama(
        llama,
        computer_layer=args.computer_layer % layers,
        library=library_sources(args.library.split(",") if args.library else list(spec.library)),
        computer_values=args.n,
        computer_gate_init=args.gate_init,
        computer_selection_temperature=args.selection_temperature,
        library_input_registers=list(spec.input_registers),
        library_memory_inputs=spec.memory_inputs,
        computer_parse=parse_kind(args.parse, tokens),
        computer_number_token_ids=number_ids,
    )


def parse_kind(choice: str, tokens: list[list[int]]) -> str:
    """`--parse`: "auto" is "copy" when the copy parse reads every value 0..n-1 back from its tokens (`tokens`,
    from `number_token_ids`: each token of a value is some value's single token, and their digits concatenate to
    the value: LLaMA-3's "127", SmolLM2's "1", "2", "7"), else "linear"."""
    if choice != "auto":
        return choice
    single = {ids[0]: str(value) for value, ids in enumerate(tokens) if len(ids) == 1}
    readable = all(
        all(token in single for token in ids) and "".join(single[token] for token in ids) == str(value)
        for value, ids in enumerate(tokens)
    )
    return "copy" if readable else "linear"


def init_read_out(model, tokenizer, row_norm: float) -> None:
    """W_out column v := the LM-head row of the token of value v (the computer writes what the LM head reads);
    with `row_norm` > 0 those rows are first rescaled to that norm (a from-scratch head starts too small to
    express a confident number: max logit ~2.5 against 128k tokens)."""
    ids = number_token_ids(tokenizer, model.config.computer_values)
    head = model.get_output_embeddings().weight  # (vocab, hidden)
    with torch.no_grad():
        if row_norm > 0:
            single = torch.tensor([token[0] for token in ids if len(token) == 1])
            head[single] = row_norm * head[single] / head[single].norm(dim=-1, keepdim=True)
        columns = torch.stack([head[torch.tensor(token)].mean(0) for token in ids], dim=1)  # (hidden, n)
        for computer in model._computers():
            computer.output_proj.weight.copy_(columns.to(computer.output_proj.weight.dtype))


def written_numbers(text: str) -> list[int]:
    """The numbers written in a prompt, in order (the copy parse's ordinals count the same numbers)."""
    return [int(value) for value in NUMBER.findall(text)]


def slot_values(spec: TaskSpec, text: str, n: int) -> list[list[int]]:
    """What each parse slot (input registers, then memory cells) should read for a prompt, from the prompt text
    alone, at each position the computer runs: the numbers in the order written (`Subtract 4 from 9` -> [4, 9],
    which `rsub` turns into 9 - 4: the order is the selection's job), or for list tasks the list's length (r1),
    for sort the index of the answer's number (r2: 0, 1, ...), then the list's elements (the cells)."""
    numbers = [value for value in written_numbers(text) if value < n]
    if spec.answer_per_number:
        return [[len(numbers), j, *numbers] for j in range(len(numbers))]
    return [[len(numbers), *numbers] if spec.memory_inputs else numbers]


def digit_classes(values: torch.Tensor, n: int) -> torch.Tensor:
    """(len(values), digits + 1) class indices into `digits * 10 + digits` columns: each decimal digit of the
    value (units, tens, ...; 10 columns each), then its length in digits (`digits` = the digits of n - 1)."""
    digits = len(str(n - 1))
    columns = [10 * k + (values // 10**k) % 10 for k in range(digits)]
    length = sum((values >= 10**k).long() for k in range(1, digits))
    return torch.stack([*columns, 10 * digits + length], dim=1)


@torch.no_grad()
def init_parse_from_probe(
    model,
    spec: TaskSpec,
    dataset,
    collator,
    examples: int,
    scale: float,
    batch_size: int = 128,
    targets_kind: str = "values",
    ridge_penalty: float = 1e-2,
) -> float:
    """Parse heads := ridge-regression probes, fitted on the untrained model, from the computer's normalised input
    at the answer position to what each slot should read according to `slot_values` (prompt text only, no
    answers). The random network already encodes the order of the prompt's numbers (~0.8 of registers right at
    step 0 for arithmetic), so the machine's output holds the answer with large probability from the first step
    and its gradient is informative. With `targets_kind="digits"` the probe regresses on the value's decimal
    digits and length (`digit_classes`) and a value's logit is the sum of its digits' (scaled by `scale`, not
    normalised): far fewer classes to fit, which on SmolLM2 (numbers written digit by digit) turns 0.3 of
    held-out slots right into 0.9 (docs/results_pretrained_base.md). Returns the probes' mean top-1 accuracy on
    the prompts they were fitted on."""
    computer, n = model.computer, model.config.computer_values
    features: list[torch.Tensor] = []
    hook = computer.register_forward_pre_hook(lambda module, inputs: features.append(inputs[0][inputs[1]]))
    rows = dataset.select(range(min(examples, len(dataset))))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            model.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                computer_mask=batch["computer_mask"],
            )
    finally:
        hook.remove()
        model.train(was_training)
    x = computer.norm(torch.cat(features)).double()  # (N, hidden)
    ridge = torch.linalg.solve(x.T @ x + ridge_penalty * len(x) * torch.eye(x.shape[1], dtype=x.dtype), x.T)
    wanted = [values for text in rows["text"] for values in slot_values(spec, text, n)]  # one per feature row
    slots = computer.parse.weight.shape[0] // n
    accuracies = []
    for slot in range(slots):
        targets = torch.zeros(len(x), n, dtype=x.dtype)
        for i, values in enumerate(wanted):
            if slot < len(values) and values[slot] < n:
                targets[i, values[slot]] = 1.0
        if targets_kind == "digits":
            classes = digit_classes(torch.arange(n), n)  # (n, digits + 1)
            factors = torch.zeros(n, int(classes.max()) + 1, dtype=x.dtype)
            factors.scatter_(1, classes, 1.0)  # (n, digit columns): value -> its digits and length
            probe = ridge @ (targets @ factors) @ factors.T  # (hidden, n): a value's column = sum of its digits'
        else:
            probe = ridge @ targets  # (hidden, n)
            probe = probe / probe.norm(dim=0, keepdim=True).clamp_min(1e-12)
        for module in model._computers():
            module.parse.weight[slot * n : (slot + 1) * n] = (scale * probe.T).to(module.parse.weight.dtype)
        labelled = targets.sum(1) > 0
        if labelled.any():  # cells past the training lists are never labelled (their probe is zero: uniform)
            accuracies.append(float((targets[labelled].argmax(1) == (x[labelled] @ probe).argmax(1)).double().mean()))
    return sum(accuracies) / len(accuracies)


@torch.no_grad()
def init_copy_parse(model, spec: TaskSpec, texts: list[str], scale: float, min_agreement: float = 0.9) -> dict:
    """Copy parse prior, from the prompt text alone (like the probe): a slot whose `slot_values` target is the
    k-th number of the prompt in at least `min_agreement` of `texts` starts attending to ordinal k (query bias
    `scale * sqrt(d)` times ordinal k's embedding, the ordinal embeddings orthonormal) and copying (mix logit
    +scale); any other slot (a list's length, say) starts on the linear parse (mix logit -scale). Returns
    {slot: ordinal} of the copying slots."""
    n = model.config.computer_values
    copy = model.computer.copy_parse
    agreement = torch.zeros(copy.slots, copy.ordinal.num_embeddings)
    labelled = torch.zeros(copy.slots)
    for text in texts:
        numbers = written_numbers(text)  # ordinal k: the k-th of them, as in `CopyParse`
        for values in slot_values(spec, text, n):
            for slot, value in enumerate(values[: copy.slots]):
                labelled[slot] += 1
                for k, number in enumerate(numbers[: copy.ordinal.num_embeddings]):
                    agreement[slot, k] += number == value
    share, ordinal = (agreement / labelled.clamp_min(1)[:, None]).max(1)  # (slots,)
    copying = {slot: int(ordinal[slot]) for slot in range(copy.slots) if share[slot] >= min_agreement}
    for module in model._computers():
        module = module.copy_parse
        torch.nn.init.orthogonal_(module.ordinal.weight)  # orthonormal rows (ordinals <= dim)
        bias = module.query.bias.view(module.slots, module.dim)
        bias.zero_()
        module.mix.bias.fill_(-scale)
        for slot, k in copying.items():
            bias[slot] = scale * module.dim**0.5 * module.ordinal.weight[k]
            module.mix.bias[slot] = scale
    return copying


def add_lora(model, rank: int):
    """LoRA adapters on the base attention/MLP weights; the computer block is trained and saved in full."""
    from peft import LoraConfig, get_peft_model

    modules_to_save = ["computer"] if hasattr(model, "_computers") else None
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS, modules_to_save=modules_to_save, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)


def parameter_group(name: str) -> str:
    """ "parse" (the computer's parse heads), "computer" (its selection head, norm, gate), "embeddings"
    (embeddings, LM head, final norm, W_out) or "layers" (everything else: the decoder layers, LoRA adapters)."""
    if ".computer.parse." in name or ".computer.copy_parse." in name:
        return "parse"
    if ".computer." in name and ".output_proj." not in name:
        return "computer"
    if any(part in name for part in ("embed_tokens", "lm_head", ".output_proj.")) or name.endswith("model.norm.weight"):
        return "embeddings"
    return "layers"


def parameter_digest(model) -> str:
    """sha256 over every parameter in name order: equal digests, equal models."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(parameter.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


# -------------------------------------------------------------------------------------------------- training
def distribution_cross_entropy(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of value distributions `probs (..., n)` (the machine's, already normalised) against
    `targets (...)`; targets equal to -100 are ignored."""
    log_probs = probs.clamp_min(1e-12).log().flatten(0, -2)  # (items, n)
    return torch.nn.functional.nll_loss(log_probs, targets.flatten().to(probs.device))


class DCompTrainer(Trainer):
    """The Trainer with one learning rate per parameter group, the answer loss on the computer's output register,
    and our model card for `push_to_hub`."""

    def __init__(
        self,
        *args,
        learning_rates: dict[str, float],
        answer_loss_weight: float,
        parse_loss_weight: float = 0.0,
        model_card: str = "",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.learning_rates = learning_rates
        self.answer_loss_weight = answer_loss_weight
        self.parse_loss_weight = parse_loss_weight
        self.model_card = model_card

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            groups: dict[str, list] = {}
            for name, parameter in (model or self.model).named_parameters():
                if parameter.requires_grad:
                    groups.setdefault(parameter_group(name), []).append(parameter)
            self.optimizer = torch.optim.AdamW(
                [{"params": params, "lr": self.learning_rates[group]} for group, params in sorted(groups.items())],
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
                weight_decay=self.args.weight_decay,
            )
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        targets = inputs.pop("computer_targets", None)
        slot_targets = inputs.pop("slot_targets", None)
        with record_computer_runs() as runs:
            loss, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
        if targets is not None and self.answer_loss_weight:
            register = runs[-1].state.registers[:, self.model.config.library_output_register]  # (batch, n)
            loss = loss + self.answer_loss_weight * distribution_cross_entropy(register, targets)
        if slot_targets is not None and self.parse_loss_weight:
            parsed = torch.cat([runs[-1].input_probs, runs[-1].memory_probs], dim=1)  # (positions, slots, n)
            loss = loss + self.parse_loss_weight * distribution_cross_entropy(parsed, slot_targets)
        return (loss, outputs) if return_outputs else loss

    def create_model_card(self, **kwargs):
        if self.is_world_process_zero() and self.model_card:
            Path(self.args.output_dir, "README.md").write_text(self.model_card)


def answer_predictions(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`preprocess_logits_for_metrics`: the argmax token at every labelled position `(batch, seq)` (-100 elsewhere),
    from the logits of the labelled positions only `(kept, vocab)`."""
    keep = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX) != IGNORE_INDEX
    predictions = torch.full_like(labels, IGNORE_INDEX)
    predictions[keep] = logits.reshape(-1, logits.shape[-1]).argmax(-1)
    return predictions


@dataclasses.dataclass
class ExactMatch:
    """`compute_metrics` for one split: exact match of the whole answer (every answer token and EOS), overall and
    per group (operation, depth or length), with the local `evaluate` metric module."""

    metric: object  # library.tasks.exact_match_metric()
    groups: list

    def __call__(self, prediction) -> dict:
        predictions, labels = prediction.predictions, prediction.label_ids
        targets = [row[1:][row[1:] != IGNORE_INDEX].tolist() for row in labels]
        guesses = [guess[:-1][label[1:] != IGNORE_INDEX].tolist() for guess, label in zip(predictions, labels)]
        result = self.metric.compute(predictions=guesses, references=targets, groups=self.groups)
        return {
            "exact_match": result["exact_match"],
            **{f"exact_match_{group}": value for group, value in result["per_group"].items()},
        }


class LearningCurve(TrainerCallback):
    """Records (step, seconds since the process started, validation exact match) at every evaluation."""

    def __init__(self, started: float):
        self.started, self.points = started, []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_exact_match" in metrics:
            self.points.append((state.global_step, time.time() - self.started, metrics["eval_exact_match"]))

    def save(self, output_dir: Path) -> None:
        """learning_curve.json and, where matplotlib is installed, learning_curve.png."""
        (output_dir / "learning_curve.json").write_text(
            json.dumps([{"step": s, "seconds": t, "validation_exact_match": a} for s, t, a in self.points], indent=1)
        )
        try:
            import matplotlib

            matplotlib.use("Agg")
            from matplotlib import pyplot
        except ImportError:
            return
        figure, axis = pyplot.subplots(figsize=(6, 3.5))
        axis.plot([t / 60 for _, t, _ in self.points], [100 * a for _, _, a in self.points], marker="o")
        axis.set(xlabel="wall time (minutes, from process start)", ylabel="validation exact match (%)", ylim=(0, 100))
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(output_dir / "learning_curve.png", dpi=120)
        pyplot.close(figure)


def training_arguments(args) -> TrainingArguments:
    """TrainingArguments for this machine and launcher: CPU (gloo when distributed) or CUDA (bf16/fp16)."""
    cuda = torch.cuda.is_available()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return TrainingArguments(
        output_dir=str(args.output_dir),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=1.0,
        seed=args.seed,
        data_seed=args.seed,
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=2,
        logging_steps=args.logging_steps,
        report_to=["tensorboard"],
        disable_tqdm=False,
        remove_unused_columns=False,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        fp16=cuda and not torch.cuda.is_bf16_supported(),
        ddp_backend="gloo" if distributed and not cuda else None,
        # Every trainable parameter gets a gradient each step; searching the graph for unused ones would also
        # misjudge the computer's heads, which the answer loss reaches from outside the forward's outputs.
        ddp_find_unused_parameters=False,
        push_to_hub=args.push_to_hub,
        hub_model_id=args.hub_model_id,
    )


def evaluate_split(trainer: Trainer, metric, dataset, name: str, group_column: str) -> dict:
    """Exact match on one split (greedy decoding, see the module docstring), logged with prefix `name`."""
    trainer.compute_metrics = ExactMatch(metric, dataset[group_column])
    metrics = trainer.evaluate(eval_dataset=dataset, metric_key_prefix=name)
    return {key.removeprefix(f"{name}_"): value for key, value in metrics.items() if "exact_match" in key}


# ------------------------------------------------------------------------------------------------- model card
def render_model_card(args, model, results: dict, seconds: float, steps: int) -> str:
    """README.md of the output folder, from the `model_card.md` template (string.Template)."""
    config = model.config
    programs = getattr(config, "library_programs", [])
    library = (
        "\n".join(f"| `{name}` | {line} |" for name, line in zip(programs, config.library_entry_points))
        if programs
        else "| (none: `--no-computer` baseline) | |"
    )
    results_rows = "\n".join(
        f"| {split} | {values['exact_match']:.2%} | "
        + ", ".join(
            f"{key.removeprefix('exact_match_')} {value:.1%}" for key, value in values.items() if key != "exact_match"
        )
        + " |"
        for split, values in results.items()
    )
    settings = "\n".join(f"| `--{key.replace('_', '-')}` | `{value}` |" for key, value in sorted(vars(args).items()))
    base = args.gguf or args.model or "none (from scratch)"
    return string.Template(MODEL_CARD.read_text()).substitute(
        task=args.task,
        n=args.n,
        base=base,
        model_class=type(model).__name__,
        hidden=config.hidden_size,
        layers=config.num_hidden_layers,
        vocab=f"{config.vocab_size:,}",
        parameters=f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}",
        computer_layer=getattr(config, "computer_layer", "none"),
        library=library,
        results=results_rows,
        parse=f'the "{getattr(config, "computer_parse", "none")}"',
        settings=settings,
        seconds=f"{seconds:.0f}",
        steps=steps,
        command=shlex.join(["python", "train.py", *sys.argv[1:]]),
        repo=args.hub_model_id or args.output_dir.name,
    )


# -------------------------------------------------------------------------------------------------------- main
def train(args) -> dict:
    """Build data and model, train (resuming with `--resume`), evaluate every test split, write the Hub-ready
    output folder; returns {split: metrics}."""
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    spec = task_spec(args)
    tokenizer = build_tokenizer(args)
    data = build_datasets(args, spec, tokenizer)
    model = build_model(args, spec, tokenizer)
    with_computer = not args.no_computer
    answer_loss = with_computer and spec.answer_in_register and args.answer_loss_weight > 0
    parse_loss = with_computer and args.parse_loss_weight > 0
    collator = AnswerCollator(
        tokenizer.pad_token_id, with_computer, with_targets=answer_loss, with_slot_targets=parse_loss
    )
    resume = get_last_checkpoint(str(args.output_dir)) if args.resume and args.output_dir.is_dir() else None
    if with_computer and resume is None:  # a resumed run loads all of this from its checkpoint
        from_scratch = args.model is None and args.gguf is None
        init_read_out(model, tokenizer, args.number_row_norm if from_scratch else 0.0)
        if args.parse_init_scale > 0:
            accuracy = init_parse_from_probe(
                model,
                spec,
                data["train"],
                collator,
                args.probe_examples,
                args.parse_init_scale,
                targets_kind=args.probe_targets,
                ridge_penalty=args.probe_ridge,
            )
            print(f"parse heads: probes of the prompt's numbers, {accuracy:.2f} of slots right at step 0", flush=True)
            if model.config.computer_parse == "copy":
                copying = init_copy_parse(
                    model, spec, data["train"][: args.probe_examples]["text"], args.parse_init_scale
                )
                print(f"copy parse: slot -> ordinal of the number it starts copying {copying}", flush=True)
    if answer_loss:
        for computer in model._computers():
            computer.isolate_gradients = True
    if args.lora:
        model = add_lora(model, args.lora_rank)
    print(f"initial parameter digest: {parameter_digest(model)}", flush=True)

    from library.tasks import exact_match_metric  # imports `evaluate` (seconds): only once data and model exist

    metric = exact_match_metric()
    curve = LearningCurve(PROCESS_START)
    trainer = DCompTrainer(
        model=model,
        args=training_arguments(args),
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[curve],
        compute_metrics=ExactMatch(metric, data["validation"][spec.group_column]),
        preprocess_logits_for_metrics=answer_predictions,
        learning_rates={
            "computer": args.computer_learning_rate,
            "parse": args.parse_learning_rate,
            "embeddings": args.embedding_learning_rate,
            "layers": args.learning_rate,
        },
        answer_loss_weight=args.answer_loss_weight if answer_loss else 0.0,
        parse_loss_weight=args.parse_loss_weight if parse_loss else 0.0,
    )
    if resume:
        print(f"resuming from {resume}", flush=True)
    trainer.train(resume_from_checkpoint=resume)
    splits = [name for name in ("test", "test_pairs", "test_long") if name in data and len(data[name])]
    results = {name: evaluate_split(trainer, metric, data[name], name, spec.group_column) for name in splits}
    # Every process prints the digest of its weights: after data-parallel training they must all agree.
    print(f"rank {trainer.args.process_index} parameter digest: {parameter_digest(trainer.model)}", flush=True)

    if args.lora:
        trainer.model = trainer.model.merge_and_unload()
    trainer.save_model(str(args.output_dir))  # model.safetensors, config (auto_map), code files, tokenizer
    seconds = time.time() - PROCESS_START
    trainer.model_card = render_model_card(args, trainer.model, results, seconds, trainer.state.global_step)
    trainer.create_model_card()
    if trainer.is_world_process_zero():
        (args.output_dir / "test_results.json").write_text(json.dumps(results, indent=2))
        curve.save(args.output_dir)
        for name, values in results.items():
            groups = ", ".join(
                f"{key.removeprefix('exact_match_')} {value:.1%}"
                for key, value in values.items()
                if key != "exact_match"
            )
            print(f"{name} exact match: {values['exact_match']:.2%} ({groups})")
        print(f"wall time {seconds:.0f} s, {trainer.state.global_step} steps; model in {args.output_dir}")
    if args.push_to_hub:
        trainer.push_to_hub()
    return results


# ----------------------------------------------------------------------------------------------------- predict
def number_starts(tokenizer, input_ids: list[int], answer_start: int) -> list[int]:
    """Where the computer runs while an answer is written (as in training, `add_number_positions`): the answer
    position (`answer_start - 1`, the prompt's last token) and every later position after which the answer
    written so far ends with ", " (a list's next number follows)."""
    return [answer_start - 1] + [
        position
        for position in range(answer_start, len(input_ids))
        if tokenizer.decode(input_ids[answer_start : position + 1]).endswith(", ")
    ]


@torch.no_grad()
def greedy_answer(model, tokenizer, prompt: str, max_new_tokens: int) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """Greedy decoding of the answer to `prompt`: `(ids (1, seq) of prompt + answer, where the answer starts,
    computer_mask or None)`.
    A LlamaDComp model decodes without a KV cache, re-running the computer at every `number_starts` position
    over the whole sequence (its copy parse reads the prompt's number tokens, which a cached step does not
    see); a plain Llama uses `generate`."""
    ids = tokenizer(prompt.rstrip() + " ", return_tensors="pt")["input_ids"]  # the answer follows a space
    start = ids.shape[1]
    if not hasattr(model, "trace_computer"):
        return (
            model.generate(
                input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            ),
            start,
            None,
        )

    def computer_mask(ids: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(ids, dtype=torch.bool)  # (1, seq)
        mask[0, number_starts(tokenizer, ids[0].tolist(), start)] = True
        return mask

    for _ in range(max_new_tokens):
        token = model(input_ids=ids, computer_mask=computer_mask(ids), use_cache=False).logits[0, -1].argmax()
        if int(token) == tokenizer.eos_token_id:
            break
        ids = torch.cat([ids, token.view(1, 1)], dim=1)
    return ids, start, computer_mask(ids)


def predict(argv: list[str]) -> None:
    """Answer questions with a model written by train.py and show the computer's work at every number of the
    answer: the selected program, the parsed inputs with their probabilities, the result and the decompiled
    program."""
    args = build_predict_parser().parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=True).eval()
    for prompt in args.prompts:
        ids, start, mask = greedy_answer(model, tokenizer, prompt, args.max_new_tokens)
        answer = tokenizer.decode(ids[0, start:], skip_special_tokens=True).strip()
        print(f"{prompt}\nanswer: {answer}")
        if mask is not None:
            print(explain(model.trace_computer(input_ids=ids, computer_mask=mask), model))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["predict"]:
        predict(argv[1:])
    else:
        train(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
