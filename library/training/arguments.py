"""train.py's arguments, on the `run_clm.py` convention: dataclasses for the task data, the model and the computer
with its recipe, next to `TrainingArguments` (every Trainer flag: `--bf16`, `--activation_checkpointing`,
`--report_to`, `--push_to_hub`, `--torch_compile`, ...), parsed by `HfArgumentParser` from the command line
(`--name` or `--name-with-dashes`) or from one JSON/YAML file. Each dataclass checks its values in
`__post_init__` and names the argument at fault."""

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer_utils import IntervalStrategy

from library import tasks as task_library

TASKS = ("arithmetic", "fibonacci", "sort", "max", "min")
LIST_TASKS = ("sort", "max", "min")  # with --encoding binary: the answer is a list, written number by number
# The arguments a resumed run must share with the run it continues (the model, its data and their order);
# how long to train, how often to evaluate and save, and where to report may change.
RESUME_FIXED = ("model", "data", "computer", "seed", "data_seed", "per_device_train_batch_size")


class ArgumentError(ValueError):
    """A bad argument value; the message starts with the argument's name."""


def _check(condition: bool, argument: str, message: str) -> None:
    if not condition:
        raise ArgumentError(f"--{argument}: {message}")


def _check_finite(arguments: object, *names: str, positive: bool = False) -> None:
    for name in names:
        value = getattr(arguments, name)
        _check(math.isfinite(value), name, f"must be a finite number, got {value}")
        _check(value > 0 if positive else value >= 0, name, f"must be {'> 0' if positive else '>= 0'}, got {value}")


@dataclass
class DataArguments:
    """The task (`library.tasks`) and the sizes of its splits."""

    _argument_group_name = "data"

    task: Literal["arithmetic", "fibonacci", "sort", "max", "min"] = field(
        default="arithmetic", metadata={"help": "library.tasks task"}
    )
    n: int = field(default=128, metadata={"help": "values of the machine: arithmetic is mod n"})
    encoding: Literal["unit", "binary"] = field(
        default="unit",
        metadata={"help": "unit: n one-hot values, answers mod n; binary: signed --bits-bit values, exact answers "
                  "written as number tokens (arithmetic operands then have 1 to --max_digits digits)"},
    )  # fmt: skip
    bits: int = field(default=64, metadata={"help": "bits of a value of the binary machine"})
    max_digits: int = field(default=5, metadata={"help": "binary arithmetic: most digits of an operand"})
    chat_fraction: float = field(
        default=0.0, metadata={"help": "share of prompts asked through the tokenizer's chat template (0: none)"}
    )
    text_fraction: float = field(
        default=0.0,
        metadata={"help": "binary: share of training rows that are ordinary text (docstrings of installed packages, "
                  "library.texts) where the computer must stay silent: the trigger's negatives"},
    )  # fmt: skip
    text_continuation_fraction: float = field(
        default=0.0,
        metadata={"help": "binary: share of the ordinary-text rows (--text_fraction) cut to a prefix and continued by "
                  "the untrained model's greedy generate() (its computer is silent: the base's text), so the trigger "
                  "also learns silence on the text it meets in generation (code comments, numbered lists)"},
    )  # fmt: skip
    text_layout: Literal["collapsed", "lines"] = field(
        default="collapsed",
        metadata={"help": "binary: the ordinary-text rows' docstring paragraphs with their whitespace collapsed into "
                  "one line, or with their lines as written (code examples, doctest comments, numbered lists on "
                  "lines of their own: library.texts.docstring_paragraphs)"},
    )  # fmt: skip
    ending_fraction: float = field(
        default=0.0,
        metadata={"help": "binary arithmetic: share of the plain training prompts that end otherwise than with a "
                  "space (no space, a line break, \"Answer:\" frames: library.tasks.PLAIN_ENDINGS); test splits "
                  "keep train.py's own ending"},
    )  # fmt: skip
    endings: Literal["default", "wide", "wide_shares"] = field(
        default="default",
        metadata={"help": "--ending_fraction's endings: default = library.tasks.PLAIN_ENDINGS; wide = also more "
                  "frames and cue words (\"=\", \"Input: … Output:\", …: library.tasks.WIDE_ENDINGS), drawn evenly; "
                  "wide_shares = those frames with the default's shares of no space, line break and frame "
                  "(library.tasks.WIDE_SHARED_ENDINGS)"},
    )  # fmt: skip
    operations: str = field(default="add,sub,mul,div", metadata={"help": "arithmetic operations, comma-separated"})
    phrasings: Literal["default", "wide", "wider"] = field(
        default="default",
        metadata={"help": "arithmetic: default = the paper's commands (unit) or commands and questions (binary); "
                  "wide (binary) = also more frames and symbols written without spaces (library.tasks); wider "
                  "(binary) = the wide set with more words per operation and more question frames"},
    )  # fmt: skip
    train_size: int = field(default=20000, metadata={"help": "training examples"})
    validation_size: int = field(default=500, metadata={"help": "validation examples (learning curve)"})
    test_size: int = field(default=1000, metadata={"help": "test examples (also the size of test_pairs)"})
    test_long_size: int = field(default=1000, metadata={"help": "test_long examples (fibonacci, sort, max)"})

    def __post_init__(self):
        _check(self.task in TASKS, "task", f"must be one of {', '.join(TASKS)}, got {self.task!r}")
        _check(self.n >= 2, "n", f"the machine needs at least 2 values, got {self.n}")
        _check(8 <= self.bits <= 64, "bits", f"must be in [8, 64], got {self.bits}")
        _check(
            1 <= self.max_digits <= 9, "max_digits", f"must be in [1, 9] (products fit 64 bits), got {self.max_digits}"
        )
        _check(
            self.encoding == "unit" or self.task != "fibonacci",
            "encoding",
            "the binary machine is wired into train.py for --task arithmetic, sort, max and min",
        )
        _check(self.task != "min" or self.encoding == "binary", "task", "min of a list needs --encoding binary")
        _check(
            self.phrasings == "default" or (self.task == "arithmetic" and self.encoding == "binary"),
            "phrasings",
            "wide phrasings are for --task arithmetic --encoding binary",
        )
        _check(0 <= self.ending_fraction <= 1, "ending_fraction", f"must be in [0, 1], got {self.ending_fraction}")
        _check(
            self.ending_fraction == 0 or (self.task == "arithmetic" and self.encoding == "binary"),
            "ending_fraction",
            "other prompt endings are for --task arithmetic --encoding binary",
        )
        _check(
            self.endings == "default" or self.ending_fraction > 0,
            "endings",
            "wide endings end a share --ending_fraction of the prompts: set it above 0",
        )
        unknown = [op for op in self.operations.split(",") if op not in task_library.ARITHMETIC_TEMPLATES]
        _check(
            not unknown,
            "operations",
            f"unknown operation(s) {unknown}; choose from {', '.join(task_library.ARITHMETIC_TEMPLATES)}",
        )
        for name in ("train_size", "validation_size", "test_size"):
            _check(getattr(self, name) >= 1, name, f"needs at least 1 example, got {getattr(self, name)}")
        _check(self.test_long_size >= 0, "test_long_size", f"must be >= 0, got {self.test_long_size}")
        _check(0 <= self.chat_fraction <= 1, "chat_fraction", f"must be in [0, 1], got {self.chat_fraction}")
        _check(0 <= self.text_fraction < 1, "text_fraction", f"must be in [0, 1), got {self.text_fraction}")
        _check(
            self.text_fraction == 0 or self.encoding == "binary",
            "text_fraction",
            "ordinary text trains the trigger of the token read-out: use it with --encoding binary",
        )
        _check(
            0 <= self.text_continuation_fraction <= 1,
            "text_continuation_fraction",
            f"must be in [0, 1], got {self.text_continuation_fraction}",
        )
        _check(
            self.text_continuation_fraction == 0 or self.text_fraction > 0,
            "text_continuation_fraction",
            "continues ordinary-text rows: set --text_fraction too",
        )
        _check(
            self.text_layout == "collapsed" or self.text_fraction > 0,
            "text_layout",
            "lays out the ordinary-text rows: set --text_fraction too",
        )


@dataclass
class ModelArguments:
    """The Llama the computer is added to: a checkpoint folder, a GGUF file, or a from-scratch model."""

    _argument_group_name = "model"

    model: str | None = field(default=None, metadata={"help": "start from this Llama checkpoint folder"})
    gguf: str | None = field(default=None, metadata={"help": "start from this GGUF file of a Llama model"})
    no_computer: bool = field(default=False, metadata={"help": "train the same Llama without the computer block"})
    lora: bool = field(
        default=False, metadata={"help": "PEFT LoRA adapters on the base weights; the computer block trains in full"}
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank"})
    freeze_base: bool = field(
        default=False, metadata={"help": "train only the computer block: the base Llama's weights stay as they are"}
    )
    hidden_size: int = field(default=128, metadata={"help": "hidden size of a from-scratch model"})
    layers: int = field(default=2, metadata={"help": "decoder layers of a from-scratch model"})
    heads: int = field(default=4, metadata={"help": "attention heads of a from-scratch model"})

    def __post_init__(self):
        _check(self.model is None or self.gguf is None, "gguf", "give --model or --gguf, not both")
        for name in ("model", "gguf"):
            path = getattr(self, name)
            _check(path is None or Path(path).exists(), name, f"{path} does not exist")
        for name in ("lora_rank", "hidden_size", "layers", "heads"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _check(
            self.hidden_size % self.heads == 0 and (self.hidden_size // self.heads) % 2 == 0,
            "hidden_size",
            f"{self.hidden_size} must be an even multiple of --heads {self.heads} (rotary embeddings rotate pairs)",
        )


@dataclass
class ComputerArguments:
    """The computer block, its library and the recipe that initialises and supervises it (docs/TRAINING.md)."""

    _argument_group_name = "computer"

    library: str | None = field(
        default=None,
        metadata={"help": "programs, comma-separated: standard ones or rsub/rdiv/rmod (swapped inputs); "
                  "default: the task's"},
    )  # fmt: skip
    reversed_programs: bool = field(
        default=True,
        metadata={"help": "arithmetic: also install the non-commutative operations with swapped inputs (rsub, ...)"},
    )
    computer_layer: int = field(default=-1, metadata={"help": "decoder layer the computer follows (-1: the last)"})
    gate_init: float = field(default=1.0, metadata={"help": "initial gate of the computer's residual write"})
    selection_temperature: float = field(default=1.0, metadata={"help": "temperature of the program selection"})
    parse: Literal["auto", "linear", "copy"] = field(
        default="auto",
        metadata={"help": "the parse: a classifier over the n values, or that mixed with a pointer that copies a "
                  "number of the prompt; auto: copy when every value 0..n-1 reads back from its tokens"},
    )  # fmt: skip
    answer_loss_weight: float = field(
        default=1.0, metadata={"help": "weight of the answer loss on the output register (0: LM loss only)"}
    )
    parse_loss_weight: float = field(
        default=0.0, metadata={"help": "weight of the parse heads' loss against the prompt's numbers (0: none)"}
    )
    text_distillation_weight: float = field(
        default=0.0,
        metadata={"help": "--lora: weight of KL(base || model) on the ordinary-text rows (--text_fraction), the base "
                  "being the same model with its adapters off and no computing position: text passes through"},
    )  # fmt: skip
    trigger_positive_weight: float = field(
        default=1.0,
        metadata={"help": "the token read-out's trigger loss: weight of its positives (an answer starts here) against "
                  "its negatives (every other position); > 1 trades a few false activations for fewer misses"},
    )  # fmt: skip
    trigger_text_weight: float = field(
        default=1.0,
        metadata={"help": "the token read-out's trigger and lead losses: weight of the ordinary-text rows (no answer: "
                  "every position a negative), where a false activation rewrites the base's text"},
    )  # fmt: skip
    trigger_context: int | None = field(
        default=None,
        metadata={"help": "--encoding binary: the trigger also adds learned logits of the last k token ids "
                  "(computer_trigger_context; default: the task's, 8 for lists, 0 for arithmetic)"},
    )  # fmt: skip
    trigger_dropout: float = field(
        default=0.0,
        metadata={"help": "--trigger_context: in training, drop each token logit of the trigger and the lead with "
                  "this probability, so that their hidden-state part learns to fire where an answer is due after a "
                  "word never trained on (computer_trigger_dropout)"},
    )  # fmt: skip
    trigger_numbers: int = field(
        default=0,
        metadata={"help": "--encoding binary: the trigger and the lead also add a learned logit for how many numbers "
                  "start within the last k tokens (0, 1, 2 or more), so that they fire once the operands are "
                  "written, whatever word ends the prompt (computer_trigger_numbers; 0: none)"},
    )  # fmt: skip
    copy_from_end: bool = field(
        default=False,
        metadata={"help": "the copy parse counts its ordinals back from the answer (computer_copy_from_end): the "
                  "operands are the question's last numbers, so a number written before them (\"Question 3: …\", "
                  "a date in a system prompt) is not read"},
    )  # fmt: skip
    lead_token: bool = field(
        default=False,
        metadata={"help": "--encoding binary: a lead head writes the space before an answer where the prompt ends "
                  "without one (\"Answer:\"), which a frozen base may not (computer_lead_token_id); trained before "
                  "every answer that follows a space, the prompt's own or, with --ending_fraction, the model's"},
    )  # fmt: skip
    lead_computes: bool = field(
        default=False,
        metadata={"help": "--lead_token: in training the computer also runs at each lead position (the token before "
                  "an answer's space), with that answer's selection and parse losses, as generate() runs it where "
                  "the lead fires: the lead's answer is computed where it was trained (\"Answer:\" + \" -\" for "
                  "a negative answer)"},
    )  # fmt: skip
    own_text_window: int | None = field(
        default=None,
        metadata={"help": "--encoding binary: the saved model starts an answer in text generate() writes itself only "
                  "within its first k tokens after the prompt (computer_own_text_window, a policy: training is the "
                  "same), so a base that repeats itself is left alone where a line of its own ends on a number; "
                  "default: anywhere"},
    )  # fmt: skip
    selection_context: int = field(
        default=0,
        metadata={"help": "--encoding binary: the program selection also adds learned votes of the last k token ids, "
                  "wherever they stand in that window (computer_selection_context; 0: the hidden state alone)"},
    )  # fmt: skip
    selection_dropout: float = field(
        default=0.0,
        metadata={"help": "--selection_context: in training, drop each token vote with this probability, so a word "
                  "never trained on (its vote missing) still selects (computer_selection_dropout)"},
    )  # fmt: skip
    selection_within_turn: bool = field(
        default=False,
        metadata={"help": "--selection_context: the window starts after the last special token (a chat template's "
                  "turn opener) before the question's numbers, so a system prompt's words do not vote "
                  "(computer_selection_boundary_ids)"},
    )  # fmt: skip
    selection_hidden_votes: bool = field(
        default=False,
        metadata={"help": "--selection_context: the window's tokens also vote through their hidden states at the "
                  "computer's layer (mean of W_vote RMSNorm(h), never dropped), so a synonym no phrasing had votes "
                  "as the words it resembles in context (computer_selection_hidden_votes)"},
    )  # fmt: skip
    selection_vote_from_layer: int | None = field(
        default=None,
        metadata={"help": "--selection_hidden_votes: the votes read the mean of the outputs of the decoder layers "
                  "from this one up to the computer's, each normalised to unit RMS (negative counts from the end, as "
                  "--computer_layer; none: the computer's input alone; computer_selection_vote_layers)"},
    )  # fmt: skip
    hidden_vote_loss_weight: float = field(
        default=0.0,
        metadata={"help": "--selection_hidden_votes: weight of the answer loss on the hidden-state votes' own "
                  "selection (softmax of their mean alone), so that they can choose a program where no token id "
                  "votes; its target comes from the answer, as the selection's (0: off)"},
    )  # fmt: skip
    fit_hidden_votes: int = field(
        default=0,
        metadata={"help": "--selection_hidden_votes: before training, fit their head W_vote as a probe (softmax "
                  "regression) on this many training prompts, from the window's hidden states to the programs whose "
                  "output on the prompt's operands is the answer, and keep it fixed while the rest trains (arithmetic "
                  "only; 0: the head trains from zero with the rest)"},
    )  # fmt: skip
    fit_phrasings: Literal["same", "wide", "wider"] = field(
        default="same",
        metadata={"help": "--fit_hidden_votes: half of the fit's prompts are this arithmetic phrasing set's, in the "
                  "phrasings that --phrasings lacks (its training operands; the run still trains on --phrasings), so "
                  "that the fixed head has seen more ways of naming each operation than the run (same: all of them "
                  "the run's training prompts)"},
    )  # fmt: skip
    fit_standardised: bool = field(
        default=False,
        metadata={"help": "--fit_hidden_votes: fit the head on the hidden states scaled to unit standard deviation "
                  "per feature and fold the scale back into W_vote, so that its penalty weighs every feature alike "
                  "(its votes then read new words better and outvote the token votes more often)"},
    )  # fmt: skip
    fit_steps: int = field(
        default=500,
        metadata={"help": "--fit_hidden_votes: full-batch Adam steps of the head's fit (the standardised fit needs "
                  "about 2000 to be right on a rare program such as rdiv)"},
    )  # fmt: skip
    vote_completion_margin: float = field(
        default=0.0,
        metadata={"help": "--selection_context: after training, a token no training prompt voted with takes the votes "
                  "a ridge regression on the input embeddings predicts from the trained tokens', where its best "
                  "program leads by at least this many logits (\"adding\" votes as \"add\"; 0: off)"},
    )  # fmt: skip
    vote_completion_ridge: float = field(
        default=0.1, metadata={"help": "--vote_completion_margin: the regression's ridge penalty"}
    )
    calibrate_hidden_votes: bool = field(
        default=False,
        metadata={"help": "--selection_hidden_votes: after training, multiply W_vote by the factor of 1 ... 8 whose "
                  "selection is right on the most of the validation split and --calibration_prompts prompts in the "
                  "phrasings --fit_phrasings adds that the fit did not read (the smallest on a tie): the token votes, "
                  "trained on the run's phrasings alone, otherwise outvote them on words no training prompt had"},
    )  # fmt: skip
    calibration_prompts: int = field(
        default=512, metadata={"help": "--calibrate_hidden_votes: prompts in the added phrasings (beside validation)"}
    )
    parse_init_scale: float = field(
        default=5.0, metadata={"help": "logit scale of the probe that initialises the parse heads (0: random)"}
    )
    probe_examples: int = field(default=1024, metadata={"help": "training prompts the probe is fitted on"})
    probe_targets: Literal["values", "digits"] = field(
        default="values", metadata={"help": "probe targets: each value one-hot, or its decimal digits and length"}
    )
    probe_ridge: float = field(default=1e-2, metadata={"help": "ridge penalty of the probe fit, per example"})
    number_row_norm: float = field(
        default=1.5, metadata={"help": "norm of the number tokens' LM-head rows of a from-scratch model (0: leave)"}
    )

    def __post_init__(self):
        _check_finite(self, "gate_init", "answer_loss_weight", "parse_loss_weight", "parse_init_scale")
        _check_finite(self, "text_distillation_weight", "hidden_vote_loss_weight")
        _check_finite(self, "probe_ridge", "number_row_norm", "vote_completion_margin", "vote_completion_ridge")
        _check_finite(self, "selection_temperature", "trigger_positive_weight", "trigger_text_weight", positive=True)
        _check(self.probe_examples >= 1, "probe_examples", f"must be >= 1, got {self.probe_examples}")
        _check(self.calibration_prompts >= 0, "calibration_prompts", f"must be >= 0, got {self.calibration_prompts}")
        _check(self.selection_context >= 0, "selection_context", f"must be >= 0, got {self.selection_context}")
        if self.trigger_context is not None:
            _check(self.trigger_context >= 0, "trigger_context", f"must be >= 0, got {self.trigger_context}")
        _check(0 <= self.trigger_dropout < 1, "trigger_dropout", f"must be in [0, 1), got {self.trigger_dropout}")
        if self.own_text_window is not None:
            _check(self.own_text_window >= 0, "own_text_window", f"must be >= 0, got {self.own_text_window}")
        _check(self.trigger_numbers >= 0, "trigger_numbers", f"must be >= 0, got {self.trigger_numbers}")
        _check(0 <= self.selection_dropout < 1, "selection_dropout", f"must be in [0, 1), got {self.selection_dropout}")
        _check(
            self.selection_dropout == 0 or self.selection_context > 0,
            "selection_dropout",
            "drops the token votes of --selection_context: give --selection_context > 0",
        )
        _check(self.vote_completion_margin >= 0, "vote_completion_margin", "must be >= 0")
        _check(self.vote_completion_ridge > 0, "vote_completion_ridge", "must be > 0")
        _check(
            not self.selection_within_turn or self.selection_context > 0,
            "selection_within_turn",
            "bounds the window of --selection_context: give --selection_context > 0",
        )
        _check(
            not self.selection_hidden_votes or self.selection_context > 0,
            "selection_hidden_votes",
            "votes over the window of --selection_context: give --selection_context > 0",
        )
        _check(
            self.selection_vote_from_layer is None or self.selection_hidden_votes,
            "selection_vote_from_layer",
            "chooses the layers the hidden-state votes read: give --selection_hidden_votes",
        )
        _check(not self.lead_computes or self.lead_token, "lead_computes", "computes at the lead: give --lead_token")
        _check(
            self.hidden_vote_loss_weight == 0 or self.selection_hidden_votes,
            "hidden_vote_loss_weight",
            "trains the hidden-state votes: give --selection_hidden_votes",
        )
        _check(self.fit_hidden_votes >= 0, "fit_hidden_votes", f"must be >= 0, got {self.fit_hidden_votes}")
        _check(
            self.fit_hidden_votes == 0 or self.selection_hidden_votes,
            "fit_hidden_votes",
            "fits the hidden-state votes: give --selection_hidden_votes",
        )
        _check(
            self.fit_hidden_votes == 0 or self.hidden_vote_loss_weight == 0,
            "fit_hidden_votes",
            "keeps the hidden-state votes fixed, so --hidden_vote_loss_weight would train nothing: give one of them",
        )
        _check(
            self.fit_phrasings == "same" or self.fit_hidden_votes > 0,
            "fit_phrasings",
            "chooses the prompts of the hidden votes' fit: give --fit_hidden_votes",
        )
        _check(self.fit_steps > 0, "fit_steps", f"must be > 0, got {self.fit_steps}")
        _check(
            not self.fit_standardised or self.fit_hidden_votes > 0,
            "fit_standardised",
            "changes how the hidden votes' head is fitted: give --fit_hidden_votes",
        )
        _check(
            self.vote_completion_margin == 0 or self.selection_context > 0,
            "vote_completion_margin",
            "completes the token votes of --selection_context: give --selection_context > 0",
        )


@dataclass
class DCompTrainingArguments(TrainingArguments):
    """`TrainingArguments` with this project's defaults (the paper's calculator run on CPU in minutes), one
    learning rate per parameter group (`LlamaDCompPreTrainedModel.parameter_groups`) and `--resume`."""

    output_dir: str | None = field(default="runs/default", metadata={"help": "checkpoints and the final model"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate of the decoder layers"})
    embedding_learning_rate: float = field(
        default=3e-4, metadata={"help": "peak learning rate of the embeddings, LM head, final norm and W_out"}
    )
    computer_learning_rate: float = field(
        default=3e-3, metadata={"help": "peak learning rate of the computer's selection head, norm and gate"}
    )
    parse_learning_rate: float = field(
        default=1e-3, metadata={"help": "peak learning rate of the computer's parse heads"}
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "training epochs"})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "training batch size per device"})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "evaluation batch size per device"})
    warmup_steps: float = field(default=20, metadata={"help": "linear warm-up steps"})
    seed: int = field(default=0, metadata={"help": "seed of the data split, the model and the data order"})
    eval_strategy: IntervalStrategy | str = field(default="steps", metadata={"help": "when to evaluate"})
    eval_steps: float | None = field(default=100, metadata={"help": "validation exact match every this many steps"})
    save_steps: float = field(default=200, metadata={"help": "checkpoint every this many steps"})
    save_total_limit: int | None = field(default=2, metadata={"help": "checkpoints kept"})
    logging_steps: float = field(default=20, metadata={"help": "log the loss every this many steps"})
    # TrainingArguments' own order: HfArgumentParser types the flag by the member after None (a string)
    report_to: None | str | list[str] = field(default="tensorboard", metadata={"help": "loggers"})  # noqa: RUF036
    remove_unused_columns: bool = field(default=False, metadata={"help": "the collator needs every column"})
    use_cpu: bool = field(default=not torch.cuda.is_available(), metadata={"help": "train on the CPU"})
    bf16: bool = field(
        default=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), metadata={"help": "bf16 (CUDA)"}
    )
    # Every trainable parameter gets a gradient each step; searching the graph for unused ones would also misjudge
    # the computer's heads, which the answer loss reaches from outside the forward's outputs.
    ddp_find_unused_parameters: bool | None = field(default=False, metadata={"help": "see TrainingArguments"})
    resume: bool = field(
        default=False, metadata={"help": "resume from the last complete checkpoint in --output_dir (it must exist)"}
    )
    threads: int = field(
        default=1, metadata={"help": "torch CPU threads per process (more threads than free cores is much slower)"}
    )

    def __post_init__(self):
        _check(self.max_steps == -1 or self.max_steps >= 1, "max_steps", f"must be >= 1 or -1, got {self.max_steps}")
        _check_finite(self, "num_train_epochs", positive=True)
        names = ("learning_rate", "embedding_learning_rate", "computer_learning_rate", "parse_learning_rate")
        _check_finite(self, *names, positive=True)
        _check(self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")
        if self.data_seed is None:
            self.data_seed = self.seed
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if distributed and self.use_cpu and self.ddp_backend is None:
            self.ddp_backend = "gloo"
        super().__post_init__()

    @property
    def learning_rates(self) -> dict[str, float]:
        """The peak learning rate of each parameter group."""
        return {
            "layers": self.learning_rate,
            "embeddings": self.embedding_learning_rate,
            "computer": self.computer_learning_rate,
            "parse": self.parse_learning_rate,
        }


ARGUMENTS = (ModelArguments, DataArguments, ComputerArguments, DCompTrainingArguments)


def parse_arguments(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, ComputerArguments, DCompTrainingArguments]:
    """The command line, or one JSON/YAML file as the only argument; a bad value exits with status 2 and a
    message naming the argument (argparse's convention)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(
        ARGUMENTS,
        prog="train.py",
        description="Train a LlamaDComp model on a library.tasks task (docs/TRAINING.md). The arguments may also "
        "come from one JSON or YAML file: train.py config.yaml. Prediction: train.py predict --model DIR PROMPT.",
    )
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            return parser.parse_json_file(argv[0])
        if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
            return parser.parse_yaml_file(argv[0])
        return parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
    except ValueError as error:
        parser.error(str(error))


def check_combinations(model_args, data_args, computer_args) -> None:
    """Arguments that are valid alone but not together: a computer setting without that part of the computer."""
    distill = computer_args.text_distillation_weight > 0
    if distill and not (model_args.lora and data_args.text_fraction > 0):
        raise ArgumentError("--text_distillation_weight: distils the base (adapters off) on ordinary text: it needs "
                            "--lora and --text_fraction > 0")  # fmt: skip
    for argument, unset, needs in (
        ("parse_loss_weight", 0.0, "supervises the computer's parse"),
        ("trigger_positive_weight", 1.0, "weighs the token read-out's trigger"),
        ("trigger_text_weight", 1.0, "weighs the token read-out's trigger"),
        ("selection_context", 0, "adds token votes to the selection of the token read-out's computer"),
        ("trigger_context", None, "adds token logits to the trigger of the token read-out's computer"),
        ("trigger_dropout", 0.0, "drops the trigger's token logits"),
        ("trigger_numbers", 0, "counts numbers for the trigger of the token read-out's computer"),
        ("lead_token", False, "adds a lead head to the token read-out's computer"),
        ("own_text_window", None, "is where the token read-out's trigger answers"),
        ("copy_from_end", False, "orders the copy parse's ordinals"),
    ):
        if getattr(computer_args, argument) == unset:
            continue
        if model_args.no_computer:
            raise ArgumentError(f"--{argument}: {needs}, and --no_computer has none")
        if argument not in ("parse_loss_weight", "copy_from_end") and data_args.encoding != "binary":
            raise ArgumentError(f"--{argument}: {needs}, and --encoding {data_args.encoding} has none (use binary)")
    if computer_args.calibrate_hidden_votes and not computer_args.selection_hidden_votes:
        raise ArgumentError("--calibrate_hidden_votes: scales the hidden votes, and there are none without "
                            "--selection_hidden_votes")  # fmt: skip
    if computer_args.fit_hidden_votes and data_args.task != "arithmetic":
        raise ArgumentError(f"--fit_hidden_votes: fits the votes on arithmetic answers, and --task is {data_args.task}")
    sets = ("default", "wide", "wider")  # each holds the one before it
    fit, run = computer_args.fit_phrasings, data_args.phrasings
    if fit != "same" and sets.index(fit) <= sets.index(run):
        raise ArgumentError(f"--fit_phrasings {fit}: holds no phrasing that --phrasings {run} lacks (give a wider set)")
    lists = data_args.encoding == "binary" and data_args.task in LIST_TASKS
    if lists and computer_args.calibrate_hidden_votes:
        raise ArgumentError("--calibrate_hidden_votes: scores a program by its one output, and a list task answers "
                            "with a whole list")  # fmt: skip
    if lists and computer_args.trigger_dropout:
        raise ArgumentError("--trigger_dropout: a list task's trigger reads the token ids alone (its hidden-state "
                            "weights stay 0), so dropping them would silence it: give 0")  # fmt: skip
    if computer_args.trigger_dropout and not lists and not computer_args.trigger_context:  # arithmetic's default: 0
        raise ArgumentError("--trigger_dropout: drops the token logits of --trigger_context: give --trigger_context "
                            "> 0")  # fmt: skip
    if computer_args.copy_from_end and computer_args.parse == "linear":
        raise ArgumentError("--copy_from_end: orders the copy parse's ordinals, and --parse linear has no copy parse")
    if lists and computer_args.copy_from_end:
        raise ArgumentError("--copy_from_end: a list's k-th element is the k-th number from the start (its copy "
                            "prior, `init_list_copy_parse`): give it for arithmetic and Fibonacci")  # fmt: skip
    if lists and computer_args.trigger_context == 0:  # `init_list_copy_parse` keeps its hidden-state weights 0
        raise ArgumentError("--trigger_context 0: a list task's trigger reads the token ids alone, so it could "
                            "never fire: give k >= 1")  # fmt: skip


def settings(model_args, data_args, computer_args, training_args) -> dict:
    """Every argument, JSON-ready: {"model": ..., "data": ..., "computer": ..., "training": ...}."""
    return {
        "model": dataclasses.asdict(model_args),
        "data": dataclasses.asdict(data_args),
        "computer": dataclasses.asdict(computer_args),
        "training": training_args.to_dict(),
    }


def resume_mismatches(saved: dict, current: dict) -> list[str]:
    """The `RESUME_FIXED` settings that differ between a saved run's `settings` and this one's, as
    "name: saved -> now". An argument the saved run did not have yet counts as its default there."""
    defaults = {f.name: f.default for group in ARGUMENTS[:3] for f in dataclasses.fields(group)}
    differences = []
    for key in RESUME_FIXED:
        before = saved.get(key) if key in ("model", "data", "computer") else saved["training"].get(key)
        now = current[key] if key in ("model", "data", "computer") else current["training"][key]
        if isinstance(now, dict):
            differences += [
                f"--{name}: {before.get(name, defaults.get(name))!r} -> {value!r}"
                for name, value in now.items()
                if before.get(name, defaults.get(name)) != value
            ]
        elif before != now:
            differences.append(f"--{key}: {before!r} -> {now!r}")
    return differences
