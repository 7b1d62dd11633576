"""LlamaDComp: LLaMA with a differentiable computer Δ and a neurally compiled program library Λ.

Paper: Saldyt & Kambhampati, "Algorithmic Language Models with Neurally Compiled Libraries", §3 and Figure 1.
After decoder layer `config.computer_layer`, every position that needs it *selects* a library program (a softmax
over the library's entry points), *parses* the program's inputs (a softmax over the n values per input register /
memory cell), runs the differentiable register machine (eq. 1–7, 17) on the compiled library, and adds a gated
projection of the output register's value distribution to the residual stream:

    h ← h + g · W_out p_out,        g initialised to `config.computer_gate_init` (0 → exactly the base Llama).

Run-time code: it travels with a checkpoint (`save_pretrained` copies it and its siblings) and imports only torch,
transformers and the sibling run-time files. Compiling and installing a library is compile-time work
(`library/install.py`), which writes the compiled tensors through `LlamaDCompPreTrainedModel.set_library`.

The computer lives inside decoder layer `computer_layer` (`model.layers[k].computer`), so the state-dict keys of
every base weight are exactly those of `LlamaForCausalLM` and `LlamaModel.forward` runs unchanged (its output
capturing decorators included): `hidden_states[k + 1]` is the residual stream after the computer.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import itertools
import json
import math
import re
import reprlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)
from transformers.utils import can_return_tuple

try:
    from .configuration_llama_dcomp import LlamaDCompConfig
    from .dcomp_alu import TableALU
    from .dcomp_circuits import BinaryALU, CircuitALU
    from .dcomp_isa import OP_INDEX, OP_NAMES
    from .dcomp_machine import MachineRun, MachineState, ProgramTensors, RegisterMachine, one_hot_values
    from .dcomp_numbers import NumberTokens, ReadNumbers, ReadoutPlan
except ImportError:  # a checkout, where the run-time files are top-level modules
    from configuration_llama_dcomp import LlamaDCompConfig
    from dcomp_alu import TableALU
    from dcomp_circuits import BinaryALU, CircuitALU
    from dcomp_isa import OP_INDEX, OP_NAMES
    from dcomp_machine import MachineRun, MachineState, ProgramTensors, RegisterMachine, one_hot_values
    from dcomp_numbers import NumberTokens, ReadNumbers, ReadoutPlan


# Labels that the loss ignores (transformers' convention).
IGNORE_INDEX = -100


def shift_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """`labels (batch, seq)` moved one position left, `ignore_index` last: position t holds the label that
    position t's logits predict (the next token)."""
    return nn.functional.pad(labels, (0, 1), value=ignore_index)[:, 1:]


# Program tensors are stored and run in float32 whatever the model's dtype: the machine multiplies
# distributions for up to `computer_max_steps` steps, and one-hot programs must stay exact.
PROGRAM_DTYPE = torch.float32
PROGRAM_FIELDS = ProgramTensors.FIELDS
# Length (hex digits) of each half of `config.library_fingerprint`.
FINGERPRINT_HEX = 32

# When set (by `record_computer_runs`), every computer run appends a `ComputerRun` here.
_TRACE_RECORDS: contextvars.ContextVar[list | None] = contextvars.ContextVar("llama_dcomp_trace", default=None)


class LibraryMismatchError(ValueError):
    """The library in a model's buffers does not match its config (a corrupted or mixed-up checkpoint)."""


def library_fingerprint(program: ProgramTensors, programs: Sequence[str], entry_points: Sequence[int]) -> str:
    """`tensors=<hash of the program tensors>;index=<hash of the program names, entry points and op names>`
    (sha256).

    The two halves let a mismatch name its cause: the weights (program tensors) or the config's index."""
    tensors = hashlib.sha256()
    for name in PROGRAM_FIELDS:
        tensor = getattr(program, name).detach().to(device="cpu", dtype=PROGRAM_DTYPE).contiguous()
        tensors.update(f"{name}{tuple(tensor.shape)}".encode())
        tensors.update(tensor.numpy().tobytes())
    # The op names too: the same one-hot tensors mean another program under another instruction set.
    names = {"programs": list(programs), "entry_points": list(entry_points), "ops": list(OP_NAMES)}
    index = hashlib.sha256(json.dumps(names).encode())
    return f"tensors={tensors.hexdigest()[:FINGERPRINT_HEX]};index={index.hexdigest()[:FINGERPRINT_HEX]}"


# Config fields that change what the computer answers besides the program tensors and their index: where it runs,
# the machine's sizes and run limits, how inputs are selected and parsed and which register is read out. The
# installer records a hash of each in `config.library_fingerprint` (`convention_fingerprint`), so a config.json
# edited after the install, or a `from_pretrained` keyword override, fails to load naming the field.
ANSWER_FIELDS = (
    # first: a valid edit of these changes fields listed later too (the count needs the copy parse), and a
    # mismatch names the first field that differs
    "library_list_programs",
    "library_count_register",
    "computer_layer",
    "computer_encoding",
    "computer_values",
    "computer_bits",
    "computer_registers",
    "computer_memory_size",
    "computer_call_depth",
    "computer_max_steps",
    "computer_halt_threshold",
    "computer_alu",
    "computer_output",
    "computer_selection_temperature",
    "computer_parse",
    "computer_number_token_ids",
    "computer_digit_tokens",
    "computer_joined_minus_symbol_ids",  # before the joined minus tokens: an edit of it needs one of them
    "computer_joined_minus_token_ids",  # before the minus tokens: an edit of it adds its tokens there too
    "computer_minus_token_ids",
    "computer_group_separator_ids",
    "computer_plus_token_ids",
    "computer_copy_ordinals",
    "computer_copy_from_end",
    "computer_copy_dim",
    "library_input_registers",
    "library_memory_inputs",
    "library_output_register",
    "computer_list_separator_ids",
    "computer_list_negative_separator_ids",
    "computer_trigger_context",
    "computer_trigger_numbers",
    "computer_selection_context",
    "computer_selection_boundary_ids",
    "computer_selection_hidden_votes",
    "computer_selection_vote_layers",
    "computer_lead_token_id",
    "computer_lead_minus_token_id",
)
# The token-context logits of the trigger and the selection are `TOKEN_LOGIT_SCALE · trigger_tokens` (·
# selection_tokens): an Adam step moves an entry by about the learning rate (3e-3 for the computer), so in these
# units a few hundred steps reach a logit of ±10.
TOKEN_LOGIT_SCALE = 32.0
# The number counts of `computer_trigger_numbers` that get a logit each: 0, 1, and 2 or more. A binary operation's
# operands are two numbers; more tell nothing more (a question may follow a number of its own: "Question 3: …"),
# and an exact count of 2, measured (docs/RESULTS.md §7), learns to stay silent after a third number.
NUMBER_COUNTS = 3
# Length (hex digits) of each field's hash in `convention_fingerprint`.
FIELD_HEX = 8


def convention_fingerprint(config) -> str:
    """`<field>=<sha256 of its JSON value>` for every field of `ANSWER_FIELDS`, `;`-joined: one hash per field, so a
    mismatch names the field."""
    return ";".join(
        f"{name}={hashlib.sha256(json.dumps(getattr(config, name), sort_keys=True).encode()).hexdigest()[:FIELD_HEX]}"
        for name in ANSWER_FIELDS
    )


def fingerprint_parts(fingerprint: str) -> dict[str, str]:
    """`{part: hash}` of a `config.library_fingerprint`; raises `LibraryMismatchError` on anything the installer
    does not write."""
    parts = [part.partition("=") for part in fingerprint.split(";")]
    if not all(key and separator and value for key, separator, value in parts):
        raise LibraryMismatchError(
            f"config.library_fingerprint={fingerprint!r} is not a fingerprint written by the installer "
            "('tensors=<hex>;index=<hex>;<field>=<hex>;…'): reinstall the library (library.install.install_library)"
        )
    return {key: value for key, _, value in parts}


def check_answer_fields(config) -> None:
    """Raises `LibraryMismatchError` naming the first field of `ANSWER_FIELDS` whose value is not the one the
    library was installed with (per `config.library_fingerprint`; a field it records no hash of is left to
    `verify_library`, which accepts its default)."""
    if config.library_fingerprint is None:
        return
    recorded = fingerprint_parts(config.library_fingerprint)
    for name, digest in fingerprint_parts(convention_fingerprint(config)).items():
        if recorded.get(name, digest) != digest:
            raise LibraryMismatchError(
                f"config.{name}={reprlib.repr(getattr(config, name))} is not the value the library was installed with "
                f"(config.library_fingerprint records another): config.json was edited or {name} was passed to "
                "from_pretrained. The computer's answers depend on it: restore it, or reinstall the library "
                "(library.install.install_library) to change it"
            )


def value_width(config) -> int:
    """The width of a value row: n one-hot entries (unit encoding) or B bits (binary encoding)."""
    return config.computer_bits if config.computer_encoding == "binary" else config.computer_values


def halt_program(config) -> ProgramTensors:
    """The placeholder library before one is installed: `halt` on every line (other lanes `nop`), operands on
    register 0 and immediates 0 (the compiler's convention for unused operands: one-hot value 0, or all bits 0)."""
    lines, lanes, width = config.computer_program_lines, config.computer_lanes, value_width(config)
    op = torch.full((lines, lanes), OP_INDEX["nop"], dtype=torch.long)
    op[:, 0] = OP_INDEX["halt"]
    zeros = torch.zeros(lines, lanes, dtype=torch.long)
    widths = ProgramTensors.widths(width, config.computer_registers)
    program = ProgramTensors(
        *(one_hot_values(index, width, PROGRAM_DTYPE) for index, width in zip((op,) + (zeros,) * 4, widths))
    )
    if config.computer_encoding == "binary":
        program.imm.zero_()
    return program


def run_selected(
    machine: RegisterMachine,
    program: ProgramTensors,
    entry_points: torch.Tensor,
    selection: torch.Tensor,
    *,
    inputs: dict[int, torch.Tensor],
    memory: torch.Tensor | None = None,
    max_steps: int,
) -> MachineRun:
    """Select, then run: the library `program` started at the mixture of its programs' entry lines,
    c_0 = π · onehot(entry_points) `(P, lines)` for the selection π `(P, programs)`, with register `inputs`
    `{register: (P, n)}` and the first memory cells `memory (P, cells, n)`, for up to `max_steps` steps."""
    dtype = program.op.dtype
    entry = selection.to(dtype) @ one_hot_values(entry_points, program.lines, dtype)  # (P, lines)
    state = machine.initial_state(
        selection.shape[0],
        program.lines,
        inputs=inputs,
        memory=memory,
        entry=entry,
        dtype=dtype,
        device=selection.device,
    )
    return machine.run(program, state, max_steps)


def logit(probability: float) -> float:
    """The logit whose σ is `probability` in (0, 1): a threshold on σ(x) as one on x."""
    return math.log(probability) - math.log1p(-probability)


def straight_through(soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """`hard` in the forward pass, the gradient of `soft` in the backward pass (the straight-through estimator).

    The binary machine runs on it: its circuits are exact on 0/1 bits, but on nearly sharp ones the long division
    amplifies a deviation of 1e-7 in its inputs into a wrong quotient (each stage's soft borrow mixes in a wrapped
    difference whose high bits are all 1), and bit marginals of a mixture of programs are no program's answer."""
    return hard.to(soft.dtype) + (FiniteGradient.apply(soft) - soft.detach())  # + exactly 0: hard, bit for bit


class FiniteGradient(torch.autograd.Function):
    """The identity, whose backward zeroes non-finite gradient entries: the gradient of a 64-bit long division on
    sharp bits multiplies along a path of thousands of gates and can overflow; such an entry carries no direction."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


def end_mark_prior(config) -> torch.Tensor:
    """The end mark's initial `end_logits` `(vocab,)`, in units of the read-out strength: 1 on the EOS token(s), as
    strong as a written answer token, 0 elsewhere. A frozen base's own next token after an answer can beat a weaker
    EOS ("= 0" goes on as "0.", "0x0" or "0s"), and a prior that Adam moves by a few thousandths per step would not
    get there in a short run; training still moves it where the data write something else after an answer."""
    prior = torch.zeros(config.vocab_size)
    prior[config.eos_token_ids] = 1.0
    return prior


def build_alu(config) -> nn.Module:
    """The ALU of eq. 7: the circuit ALU on bits for the binary encoding, else the one `config.computer_alu` names."""
    if config.computer_encoding == "binary":
        return BinaryALU(config.computer_bits)
    if config.computer_alu == "table":
        return TableALU(config.computer_values, mode="auto")
    return CircuitALU(config.computer_values)


def selection_head(hidden_size: int, programs: int, **factory_kwargs) -> nn.Linear:
    """W_sel: hidden → one logit per library program. An empty library gives zero rows, whose initialisation
    torch reports as a no-op (it is): that warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(hidden_size, programs, bias=False, **factory_kwargs)


def dropped_at_random(mask: torch.Tensor, p: float) -> torch.Tensor:
    """`mask` with each True entry turned False alone with probability `p`: the token votes' and the trigger's
    token-context dropout (`computer_selection_dropout`, `computer_trigger_dropout`)."""
    return mask & (torch.rand(mask.shape, device=mask.device) >= p)


def window_mean(values: torch.Tensor, voting: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`(P, d)`: per position, the mean of `values (batch, L, d)` over its voting tokens `voting (P, L)` of row
    `rows (P,)` (0 where none votes): the hidden votes' share of v in the selection (§3.1), and their probe's input."""
    counted = voting.to(values.dtype)[..., None]  # (P, L, 1)
    return (values[rows] * counted).sum(1) / counted.sum(1).clamp_min(1.0)


@dataclass
class ComputerRun:
    """What one computer block run computed for its P selected positions (`trace_computer` collects these)."""

    positions: torch.Tensor  # (batch, seq) bool: where the P rows come from, in `positions.nonzero()` order
    program_probs: torch.Tensor  # (P, programs): program selection
    input_probs: torch.Tensor  # (P, input registers, width): parsed register inputs
    memory_probs: torch.Tensor  # (P, memory inputs, width): parsed memory cells
    state: MachineState  # final machine state, batch P
    steps: int  # interpreter steps the run took (shared by the P rows: early exit waits for all)
    # (batch, seq) the "tokens" read-out's trigger logits at every position of the call (None for residual_add)
    trigger_logits: torch.Tensor | None = None
    # (batch, seq) the lead head's logits (`computer_lead_token_id`; None without one)
    lead_logits: torch.Tensor | None = None
    # (P, programs) the hidden-state votes' share of the selection logits (None without them)
    hidden_votes: torch.Tensor | None = None
    # (P, programs) the selection logits before the temperature (program_probs = softmax(selection_logits / T))
    selection_logits: torch.Tensor | None = None


@contextlib.contextmanager
def record_computer_runs() -> Iterator[list[ComputerRun]]:
    """Collects what every computer block run inside the `with` block computed, in call order: a list of
    `ComputerRun`s whose tensors keep their autograd graph (so a loss may be put on the computer's output, e.g. the
    final value distribution `run.state.registers[:, output_register]`). `trace_computer` is built on it.

        with record_computer_runs() as runs:
            outputs = model(**batch)
        p_out = runs[0].state.registers[:, model.config.library_output_register]  # (P, n), P = positions run
    """
    records: list[ComputerRun] = []
    token = _TRACE_RECORDS.set(records)
    try:
        yield records
    finally:
        _TRACE_RECORDS.reset(token)


@dataclass
class ComputerTrace:
    """The computer's work at one position, decoded for humans (plain data; `library.install.explain` renders
    it with the decompiled program). Probabilities are floats, `(value, probability)` lists are best first."""

    batch_index: int
    position: int  # index in the sequence given to `trace_computer`
    programs: list[tuple[str, float]]  # top-k selected programs
    program_lines: tuple[int, int]  # [start, end) lines of the most likely program in the linked library
    inputs: dict[int, list[tuple[int, float]]]  # input register → top-k parsed values
    memory_inputs: list[list[tuple[int, float]]]  # per parsed memory cell, top-k values
    registers: list[tuple[int, float]]  # final most likely value of every register, with its probability
    memory: list[tuple[int, float]]  # final most likely value of every memory cell, with its probability
    output: list[tuple[int, float]]  # top-k values of the output register
    halted: float  # halting probability h at the end of the run
    steps: int  # interpreter steps of the batched run
    output_register: int  # the register `output` reads
    # numbers written up to the position that are no value 0..n-1 (`unrepresentable_numbers`): the computer
    # cannot read them, so its answer is not about them; None when not checked (no tokenizer given)
    unrepresentable: list[str] | None = None


# A number as written in a prompt: digits, with a minus sign if one is attached.
WRITTEN_NUMBER = re.compile(r"-?\d+")


def unrepresentable_numbers(text: str, n: int, low: int = 0) -> list[str]:
    """The numbers written in `text` that are no value in [low, n) in canonical decimal: too small or too large,
    or written with leading zeros or non-ASCII digits. The unit computer holds values mod n and its parse reads the
    number tokens "0" … "n-1", so it silently answers something else for these ("Add 200 and 300" with n = 128);
    the binary computer reads magnitudes below its cap (`low` = 1 − cap, n = cap)."""

    def representable(written: str) -> bool:  # the length test first: int() of 5000 digits raises
        digits = written.removeprefix("-") if low < 0 else written
        canonical = digits.isascii() and digits.isdigit() and len(digits) <= len(str(max(n - 1, -low)))
        return canonical and str(int(written)) == written and low <= int(written) < n

    return [written for written in WRITTEN_NUMBER.findall(text) if not representable(written)]


def _top_k(probs: torch.Tensor, k: int) -> list[tuple[int, float]]:
    values, indices = probs.float().topk(min(k, probs.shape[-1]))
    return [(int(i), float(p)) for p, i in zip(values, indices)]


def number_tokens(config) -> NumberTokens | None:
    """The number tokens the copy parse reads and the "tokens" read-out writes: the binary encoding's
    `computer_digit_tokens`, minus and plus tokens and group separators (magnitudes below 2^(B−1)), or the unit
    encoding's one token per value "0" … "n-1" (`computer_number_token_ids`, values below n, no sign). None when
    neither needs them."""
    binary = config.computer_encoding == "binary"
    if binary or config.computer_output == "tokens":
        return NumberTokens(
            config.computer_digit_tokens,
            config.computer_minus_token_ids if binary else [],
            config.vocab_size,
            cap=2 ** (config.computer_bits - 1) if binary else config.computer_values,
            joined_minus_token_ids=config.computer_joined_minus_token_ids if binary else [],
            group_separator_ids=config.computer_group_separator_ids if binary else [],
            plus_token_ids=config.computer_plus_token_ids if binary else [],
        )
    if config.computer_parse == "copy":
        ids = config.computer_number_token_ids
        digits = {str(value): token for value, token in enumerate(ids) if token != -1}
        return NumberTokens(digits, [], config.vocab_size, cap=config.computer_values)
    return None


@dataclass
class CopyParseInputs:
    """What the copy parse reads at one position besides its own hidden state: the sequence so far, cached tokens
    included (`ComputerCall.history`)."""

    input_ids: torch.Tensor  # (batch, L) long: every token so far
    keys: torch.Tensor  # (batch, L, d) W_k h_t of every token so far


class CopyParse(nn.Module):
    """The copy parse (`config.computer_parse = "copy"`): a pointer from each parse slot to a written number.

    For a position i with normalised hidden state h_i, the sequence's normalised hidden states h_t and the numbers
    written in it (`NumberTokens.read`: the number ending at token t has value v_t and ordinal o_t, 0 for the first
    number, 1 for the second, …; with `computer_copy_from_end` counted back from i, 0 for the last number read at or
    before i), per slot s:

        α_{s,t} = softmax_t  q_s(h_i) · (W_k h_t + E_ord[o_t]) / √d     over numbers ending at t < i (or read so
                                                                       far at t = i: never a later token)
        copy_s  = Σ_t α_{s,t} encode(v_t)                                  (width,) one-hot, or exact bits
        p_s     = γ_s copy_s + (1 − γ_s) linear_s,   γ_s = σ(W_γ h_i)_s        (0 where no number precedes i)

    where `linear_s` is the linear parse of §3.1. A copied value is the token's own, so it needs no classifier
    trained on it: a depth, a list element or a 5-digit operand unseen in training is read as well as a seen one.
    In the binary encoding a sharp pointer copies the number's exact bits, sign included ("-42"); a soft one gives
    the exact per-bit marginals of the mixture."""

    def __init__(self, config: LlamaDCompConfig, slots: int):
        super().__init__()
        self.slots, self.dim = slots, config.computer_copy_dim
        self.query = nn.Linear(config.hidden_size, slots * self.dim)  # the bias is each slot's prior over ordinals
        self.key = nn.Linear(config.hidden_size, self.dim, bias=False)
        self.ordinal = nn.Embedding(config.computer_copy_ordinals, self.dim)
        self.from_end = config.computer_copy_from_end
        self.mix = nn.Linear(config.hidden_size, slots)  # γ: copy vs linear, per slot

    def forward(
        self,
        here: torch.Tensor,
        rows: torch.Tensor,
        columns: torch.Tensor,
        sequence: CopyParseInputs,
        read: ReadNumbers,
        values,
        linear: torch.Tensor,
    ) -> torch.Tensor:
        """`here (P, hidden)` normalised hidden states at the P positions `(rows, columns)` (absolute columns of
        `sequence`), the numbers `read` in it (`NumberTokens.read`, `(batch, L)` each), the value encoding `values`
        (`RegisterMachine.values`), `linear (P, slots, width)` → the slots' values `(P, slots, width)`."""
        started = read.is_first.long().cumsum(-1)[rows]  # (P, L): numbers started up to each token
        if self.from_end:  # 0 for the number the position reads or last read, 1 for the one before, …
            ordinals = started.gather(1, columns[:, None]) - started
        else:  # 0 for the sequence's first number, 1 for its second, …
            ordinals = started - 1
        keys = sequence.keys[rows] + self.ordinal(ordinals.clamp(0, self.ordinal.num_embeddings - 1))  # (P, L, d)
        queries = self.query(here).view(len(rows), self.slots, self.dim)  # (P, slots, d)
        scores = torch.einsum("psd,ptd->pst", queries, keys) / self.dim**0.5  # (P, slots, L)
        steps = torch.arange(sequence.input_ids.shape[1], device=here.device)
        # A number that ends before the position, or the digits read so far at the position itself: nothing
        # after the position is looked at (a causal LM), and a number the encoding cannot hold is never copied.
        ended = (read.is_last[rows] & (steps < columns[:, None])) | (steps == columns[:, None])  # (P, L)
        allowed = ended & read.readable[rows]
        weights = scores.masked_fill(~allowed[:, None], float("-inf")).softmax(-1).nan_to_num(0.0)  # (P, slots, L)
        copied = values.mixture(weights.to(linear.dtype), torch.where(allowed, read.value[rows], 0))
        mix = torch.sigmoid(self.mix(here)) * allowed.any(-1, keepdim=True)  # (P, slots)
        mix = mix[..., None].to(linear.dtype)  # (P, slots, 1)
        return mix * copied + (1 - mix) * linear

    # -------------------------------------------------------------------------------------------- initialisation
    @torch.no_grad()
    def init_ordinals(self, copying: Mapping[int, int], scale: float) -> None:
        """The copy prior: orthonormal ordinal embeddings (ordinals <= d); each slot s in `copying` starts
        attending to ordinal `copying[s]` (query bias `scale · √d · E_ord[k]`) and copying (mix logit +scale),
        every other slot starts on the linear parse (mix logit −scale)."""
        nn.init.orthogonal_(self.ordinal.weight)
        bias = self.query.bias.view(self.slots, self.dim)
        bias.zero_()
        self.mix.bias.fill_(-scale)
        for slot, k in copying.items():
            bias[slot] = scale * self.dim**0.5 * self.ordinal.weight[k]
            self.mix.bias[slot] = scale


@dataclass
class ComputerCall:
    """What one forward call tells the computer's layer (`LlamaDCompModel.forward` builds it)."""

    valid: torch.Tensor  # (batch, seq) bool: the call's non-padding tokens
    positions: torch.Tensor  # (batch, seq) bool: where the computer runs (within `valid`; computer_mask's if given)
    explicit: bool  # `positions` came from `computer_mask`: run exactly there (the "tokens" trigger is not asked)
    input_ids: torch.LongTensor | None  # (batch, seq)
    past_length: int  # tokens in the KV cache before this call
    writes: torch.Tensor | None = None  # (batch, seq, 2) filled by the "tokens" read-out: (token or -1, end mark)
    writer: LlamaDCompComputer | None = None  # the computer that filled `writes` (it adds them to the logits)
    # layer index -> its output (batch, seq, hidden), kept for the hidden votes (computer_selection_vote_layers)
    vote_states: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class ComputerCache:
    """What the computer keeps in the generation cache (as `cache.llama_dcomp`), so a cached decode equals an
    uncached forward: the tokens so far and their copy-parse keys, and the answer being written."""

    input_ids: torch.Tensor  # (batch, L) long
    keys: torch.Tensor | None  # (batch, L, d) copy-parse keys; None without the copy parse
    plan: ReadoutPlan
    valid: torch.Tensor | None = None  # (batch, L) bool: not padding (the trigger's token context skips padding)
    votes: torch.Tensor | None = None  # (batch, L, programs) W_vote RMSNorm(h_t); None without hidden votes
    given: int = 0  # positions before this were given to the model (`computer_own_text_window`); the rest it wrote


class LlamaDCompComputer(nn.Module):
    """The computer block Δ with its library Λ (paper §3, Figure 1), run on the residual stream.

    For P selected positions with hidden states `h (P, hidden)`:

    1. *select* (§3.1): `π = softmax((W_sel RMSNorm(h) + v) / τ)` over the library programs, v the votes of the
       last token ids and, with `computer_selection_hidden_votes`, their hidden states (here, or at the layers of
       `computer_selection_vote_layers`: `voted_states`; `selection_votes`, with `computer_selection_context`; else
       0); the machine's initial program counter is the mixture of their entry lines,
       `c_0 = π · onehot(entry_points)` `(P, lines)`;
    2. *parse* (§3.1): a value for every input register and parsed memory cell from `W_parse RMSNorm(h)` — a
       softmax over the n values (unit encoding) or a sigmoid per bit (binary encoding) — mixed with a copy of a
       written number by `CopyParse` when `computer_parse` is "copy", written into the initial state
       S_0 = (M, R, c_0, h=0) (eq. 1);
    3. *run*: `RegisterMachine.run` on the compiled library ϱ (eq. 1–7, 17) for at most `computer_max_steps` steps,
       exiting early once every position has halted with probability ≥ `computer_halt_threshold`;
    4. *write back* (`computer_output`): "residual_add" adds `gate · W_out p_out` at the position, p_out =
       R[output_register]; "tokens" writes p_out's most likely value as number tokens, one per position from the
       position on (`write_tokens`).

    The compiled library is stored in persistent, non-trainable float32 buffers `program_op (lines, lanes, ops)`,
    `program_a`, `program_b`, `program_out (lines, lanes, registers)`, `program_imm (lines, lanes, width)` and
    the long buffer `entry_points (programs,)`; the ALU's tables (if any) are buffers of `machine.alu`.
    """

    isolate_gradients: bool = False
    """A training switch (a plain attribute: not part of the config, not saved). When True, the block's write into
    the residual stream passes no gradient into the computer (p_out is detached there) and the residual stream at
    the computer's positions passes none back into the base; forward values are unchanged. A language-model loss
    then trains only the read-out (W_out, the gate and what follows), while a loss on the computer's own output
    (see `record_computer_runs`) trains the selection/parse heads and, through them, the base: train.py's answer
    loss."""

    entry_points: torch.Tensor  # (programs,) start line of each program: a persistent buffer

    def __init__(self, config: LlamaDCompConfig):
        super().__init__()
        hidden_size, width = config.hidden_size, value_width(config)
        self.binary = config.computer_encoding == "binary"
        self.n, self.width = config.computer_values, width
        self.program_names = list(config.library_programs)
        self.input_registers = list(config.library_input_registers)
        self.memory_inputs = config.library_memory_inputs
        self.output_register = config.library_output_register
        self.max_steps = config.computer_max_steps
        self.temperature = config.computer_selection_temperature
        self.writes_tokens = config.computer_output == "tokens"
        # The slot that receives the exact count of written numbers (None: none), and the programs whose answer is
        # the list M[0 .. count) rather than the output register.
        count = config.library_count_register
        self.count_slot = self.input_registers.index(count) if count >= 0 else None
        self.list_programs = list(config.library_list_programs)
        self.separator = list(config.computer_list_separator_ids)
        self.negative_separator = list(config.computer_list_negative_separator_ids)

        self.norm = LlamaRMSNorm(hidden_size, eps=config.rms_norm_eps)
        self.select = selection_head(hidden_size, len(self.program_names))
        self.selection_context = config.computer_selection_context
        self.selection_dropout = config.computer_selection_dropout
        # learned selection votes of the last `selection_context` token ids (None: the hidden state alone selects)
        self.selection_tokens = (
            nn.Parameter(torch.empty(config.vocab_size, len(self.program_names))) if self.selection_context else None
        )
        # a joined minus votes with its symbol's row ("*-" as "*"): joined token id → symbol token id
        pairs = zip(config.computer_joined_minus_token_ids, config.computer_joined_minus_symbol_ids)
        self.joined_symbols = {joined: symbol for joined, symbol in pairs if symbol >= 0}
        self.selection_boundaries = list(config.computer_selection_boundary_ids)  # turn openers: the window's start
        # the window's hidden states vote too (None: the token ids alone)
        self.selection_hidden_votes = (
            selection_head(hidden_size, len(self.program_names)) if config.computer_selection_hidden_votes else None
        )
        self.vote_layers = list(config.computer_selection_vote_layers)  # empty: the votes read the computer's input
        self.vote_eps = config.rms_norm_eps
        slots = len(self.input_registers) + self.memory_inputs
        self.parse = nn.Linear(hidden_size, slots * width, bias=False)
        self.copy_parse = CopyParse(config, slots) if config.computer_parse == "copy" else None
        self.numbers = number_tokens(config)
        self.machine = RegisterMachine(
            None if self.binary else config.computer_values,
            num_registers=config.computer_registers,
            memory_size=config.computer_memory_size,
            call_depth=config.computer_call_depth,
            alu=build_alu(config),
            halt_threshold=config.computer_halt_threshold,
            bits=config.computer_bits if self.binary else None,
        )
        self.output_proj = nn.Linear(width, hidden_size, bias=False)  # W_out
        # One-element vectors, not 0-dim scalars: FSDP (1 and 2) refuses 0-dim parameters.
        self.gate = nn.Parameter(torch.empty(1))
        if self.writes_tokens:
            self.trigger = nn.Linear(hidden_size, 1)  # "compute here": the answer that follows is the computer's
            threshold = config.computer_trigger_threshold
            self.trigger_threshold = logit(threshold)
            self.readout_strength = nn.Parameter(torch.empty(1))
            # What the end mark writes besides "no more number tokens": learned logits (the data's end of an answer,
            # EOS say), so a frozen base need not learn where a computed answer ends.
            self.end_logits = nn.Parameter(torch.empty(config.vocab_size))
            context = config.computer_trigger_context
            # learned trigger logits of the last `context` token ids (None: the hidden state alone decides)
            self.trigger_tokens = nn.Parameter(torch.empty(context, config.vocab_size)) if context else None
            self.trigger_dropout = config.computer_trigger_dropout
            self.lead_token_id = config.computer_lead_token_id
            # "the answer starts after one more token": where the prompt has not written the lead token itself
            self.lead_minus_token_id = config.computer_lead_minus_token_id
            self.lead = nn.Linear(hidden_size, 1) if self.lead_token_id is not None else None
            lead_threshold = config.computer_lead_threshold
            self.lead_threshold = self.trigger_threshold if lead_threshold is None else logit(lead_threshold)
            self.own_text_window = config.computer_own_text_window
            # the lead's own logits of the last `context` token ids, as the trigger's
            self.lead_tokens = (
                nn.Parameter(torch.empty(context, config.vocab_size)) if context and self.lead is not None else None
            )
            # learned logits of how many numbers start within the last `window` tokens (0, 1, 2 or more:
            # NUMBER_COUNTS), the trigger's and the lead's; None: not counted
            self.number_window = config.computer_trigger_numbers
            counted = self.number_window > 0
            self.trigger_numbers = nn.Parameter(torch.empty(NUMBER_COUNTS)) if counted else None
            self.lead_numbers = nn.Parameter(torch.empty(NUMBER_COUNTS)) if counted and self.lead is not None else None
        placeholder = halt_program(config)
        self._register_library(placeholder, torch.as_tensor(config.library_entry_points, dtype=torch.long))

    # ------------------------------------------------------------------------------------------------ library
    def _register_library(self, program: ProgramTensors, entry_points: torch.Tensor) -> None:
        for name in PROGRAM_FIELDS:
            tensor = getattr(program, name).detach().to(PROGRAM_DTYPE).clone()
            self.register_buffer(f"program_{name}", tensor, persistent=True)
        self.register_buffer("entry_points", entry_points.detach().to(torch.long).clone(), persistent=True)

    @property
    def program(self) -> ProgramTensors:
        """The linked library ϱ as `ProgramTensors` (views of the buffers)."""
        return ProgramTensors(*(getattr(self, f"program_{name}") for name in PROGRAM_FIELDS))

    def program_line_range(self, program_index: int) -> tuple[int, int]:
        """[start, end) lines of a library program: from its entry point to the next one (or the library's end)."""
        starts = sorted(int(line) for line in self.entry_points)
        start = int(self.entry_points[program_index])
        return start, next((line for line in starts if line > start), self.program.lines)

    def set_library(
        self, program: ProgramTensors, programs: Sequence[str], entry_points: Sequence[int], init_std: float
    ) -> None:
        """Replaces the library buffers (shapes may change) and resizes the selection head: rows of programs kept
        (by name) are kept, rows of new programs are drawn from N(0, init_std²) (their token and hidden-state votes
        start at 0)."""
        names = self.program_names
        kept = [(new, names.index(name)) for new, name in enumerate(programs) if name in names]

        def resized(head: nn.Linear, fill: Callable[[torch.Tensor], object]) -> nn.Linear:
            """`head` with a row per program of `programs`: a kept program's row, else `fill`'s."""
            weight = head.weight
            rows = selection_head(head.in_features, len(programs), device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                fill(rows.weight)
                for new, old in kept:
                    rows.weight[new] = weight[old]
            return rows

        self.select = resized(self.select, lambda weight: nn.init.normal_(weight, std=init_std))
        if self.selection_hidden_votes is not None:  # new programs' votes start at 0, as their token votes
            self.selection_hidden_votes = resized(self.selection_hidden_votes, nn.init.zeros_)
        if self.selection_tokens is not None:  # the votes' columns follow the programs, new ones at 0
            votes = self.selection_tokens.new_zeros(self.selection_tokens.shape[0], len(programs))
            for new, old in kept:
                votes[:, new] = self.selection_tokens[:, old].detach()
            self.selection_tokens = nn.Parameter(votes)
        self.program_names = list(programs)
        device = self.entry_points.device
        entry = torch.as_tensor(list(entry_points), dtype=torch.long, device=device)
        self._register_library(program.to(device), entry)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(
        self, hidden_states: torch.Tensor, call: ComputerCall | None = None, cache: Cache | None = None
    ) -> torch.Tensor:
        """Runs the computer where `call` says (every position when None) and writes its output back (class
        docstring, step 4); every other position is returned untouched (bit for bit). With "tokens" output the
        residual stream is not changed: `call.writes` receives the tokens to write. `cache` is the generation
        cache, where the computer keeps what later calls need (`ComputerCache`)."""
        if call is None:
            everywhere = torch.ones(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
            call = ComputerCall(everywhere, everywhere, False, None, 0)
        # normalised once for the copy parse's keys and the trigger: (batch, seq, hidden)
        normed = self.norm(hidden_states) if self.copy_parse is not None or self.writes_tokens else None
        history = self.remember(hidden_states, normed, call, cache)
        if self.writes_tokens:
            assert normed is not None
            return self.write_tokens(hidden_states, normed, call, history)
        positions = call.positions
        if not bool(positions.any()):
            return hidden_states
        run = self.run(hidden_states, positions, history, call.past_length)
        p_out = run.state.registers[:, self.output_register]  # (P, width)
        if self.isolate_gradients:  # same values, gradients routed as described in `isolate_gradients`
            p_out = p_out.detach()
            hidden_states = torch.where(positions[..., None], hidden_states.detach(), hidden_states)
        update = self.gate * self.output_proj(p_out.to(self.output_proj.weight.dtype))  # (P, hidden)
        return torch.index_put(hidden_states, (positions,), update.to(hidden_states.dtype), accumulate=True)

    def remember(
        self, hidden_states: torch.Tensor, normed: torch.Tensor | None, call: ComputerCall, cache: Cache | None
    ) -> ComputerCache | None:
        """The sequence so far for the copy parse and the answer being written, cached tokens included: this
        call's tokens appended to what the generation cache holds (and stored back there)."""
        if call.input_ids is None:
            return None
        batch = hidden_states.shape[0]
        keys = None if self.copy_parse is None or normed is None else self.copy_parse.key(normed)  # (batch, seq, d)
        votes = None
        if self.selection_hidden_votes is not None and normed is not None:
            votes = self.selection_hidden_votes(self.voted_states(normed, call))  # (batch, seq, programs)
        held = getattr(cache, "llama_dcomp", None) if call.past_length else None
        if held is not None and held.input_ids.shape[1] == call.past_length:
            ids = torch.cat([held.input_ids, call.input_ids], 1)
            keys = None if keys is None or held.keys is None else torch.cat([held.keys, keys], 1)
            votes = None if votes is None or held.votes is None else torch.cat([held.votes, votes], 1)
            plan = held.plan
            valid = None if held.valid is None else torch.cat([held.valid, call.valid], 1)
            # one token after the cache is a decoding step: the model's own token; more are a prompt or a turn
            given = held.given if call.input_ids.shape[1] == 1 else ids.shape[1]
        else:  # a fresh sequence (or a cache the computer did not see: only this call's tokens are known)
            ids, plan, valid = call.input_ids, ReadoutPlan.empty(batch, hidden_states.device), call.valid
            given = call.past_length + ids.shape[1]
        history = ComputerCache(ids, keys, plan, valid, votes, given)
        if cache is not None:
            cache.llama_dcomp = history  # type: ignore[attr-defined]
        return history

    def voted_states(self, normed: torch.Tensor, call: ComputerCall) -> torch.Tensor:
        """What the hidden votes read, `(batch, seq, hidden)`: the computer's normalised input `normed`, or with
        `computer_selection_vote_layers` the mean of those layers' outputs (`call.vote_states`), each normalised to
        unit RMS."""
        if not self.vote_layers:
            return normed
        missing = [layer for layer in self.vote_layers if layer not in call.vote_states]
        if missing:
            raise ValueError(
                f"the hidden votes read layers {missing} (config.computer_selection_vote_layers), which this call "
                "did not record: run the computer through LlamaDCompModel.forward"
            )
        states = torch.stack([call.vote_states[layer].float() for layer in self.vote_layers])  # (layers, b, s, h)
        unit = nn.functional.rms_norm(states, states.shape[-1:], eps=self.vote_eps)  # h / sqrt(mean(h²) + ε)
        return unit.mean(0).to(normed.dtype)

    def write_tokens(
        self, hidden_states: torch.Tensor, normed: torch.Tensor, call: ComputerCall, history: ComputerCache | None
    ):
        """The "tokens" read-out. The computer runs where `call.positions` says (`computer_mask`), else where the
        trigger fires (σ(w · RMSNorm(h)) > `computer_trigger_threshold`), but never inside an answer being written;
        its output's most likely value is spelled as tokens (`NumberTokens.spell`: sign, digit chunks, exact for a
        sharp value) and written one per position from the computing position on (`ReadoutPlan`), then the end
        mark. Neither runs it before the text has written a number (`number_written`). A position inside an
        earlier answer does not start another, unless the text has left that answer (`ReadoutPlan.followed`: a
        prompt that goes on after a number the trigger answered) or the trigger fires right after a lead
        (`takes_over`). Where the lead head fires outside every answer
        and the trigger does not (`computer_lead_token_id`, `computer_lead_threshold`), the computer runs there too
        and its answer starts with the lead token (`with_lead`): the space a prompt ending in "Answer:" leaves
        out, or the space and minus in one token before a negative answer. In an explicit call a computing position
        followed by a computing lead token is a lead (`explicit_leads`). With `computer_own_text_window` k, neither
        starts an answer past the first k tokens the model wrote after its given text (`ComputerCache.given`), but
        for a takeover after a lead. Fills `call.writes`; the residual stream is returned unchanged."""
        assert self.numbers is not None and history is not None  # the config requires digit tokens; the model ids
        batch, seq = call.valid.shape
        absolute = call.past_length + torch.arange(seq, device=hidden_states.device)  # (seq,)
        trigger_logits = self.trigger(normed).squeeze(-1)  # (batch, seq)
        if self.trigger_tokens is not None:
            trigger_logits = trigger_logits + self.token_context_logits(self.trigger_tokens, history, seq)
        read = None  # the numbers written so far: read once for the counts and the run
        if self.trigger_numbers is not None:
            read = self.numbers.read(history.input_ids)
            counts = self.number_counts(read, history, seq)  # (batch, seq)
            trigger_logits = trigger_logits + TOKEN_LOGIT_SCALE * self.trigger_numbers[counts]
        plan = history.plan.followed(call.input_ids, absolute)  # an earlier answer, up to where the text left it
        taking_over = self.takes_over(plan, absolute)  # (batch, seq)
        fire = call.positions if call.explicit else call.positions & (trigger_logits > self.trigger_threshold)
        if not call.explicit:
            fire = fire & (~plan.covers(absolute.expand(batch, -1)) | taking_over)
        lead_logits = None if self.lead is None else self.lead(normed).squeeze(-1)  # (batch, seq)
        if lead_logits is not None and self.lead_tokens is not None:
            lead_logits = lead_logits + self.token_context_logits(self.lead_tokens, history, seq)
        if lead_logits is not None and self.lead_numbers is not None:  # counted with the trigger's (same window)
            lead_logits = lead_logits + TOKEN_LOGIT_SCALE * self.lead_numbers[counts]
        leading = torch.zeros_like(fire)  # where the lead fires: the answer starts one token early, with the lead
        if lead_logits is not None and not call.explicit:
            leading = call.positions & ~fire & ~plan.covers(absolute.expand(batch, -1))
            leading = leading & (lead_logits > self.lead_threshold)
        elif call.explicit and self.lead_token_id is not None:
            leading = self.explicit_leads(call)
            fire = fire & ~leading
        if not call.explicit:  # nothing to compute from before a number is written (a code comment, prose)
            written = self.number_written(history, seq)
            fire, leading = fire & written, leading & written
            if self.own_text_window is not None:  # deep in its own text the model starts none
                beyond = (absolute >= history.given + self.own_text_window).expand(batch, -1)
                fire, leading = fire & (~beyond | taking_over), leading & ~beyond
        computing = fire | leading
        run = self.run(hidden_states, computing, history, call.past_length, trigger_logits, lead_logits, read)
        tokens, lengths = self.spell_answers(run)  # (P, symbols), (P,)
        if bool(leading.any()):
            tokens, lengths = self.with_lead(tokens, lengths, leading[computing], join_minus=not call.explicit)
        writes = torch.full((batch, seq, 2), -1, dtype=torch.long, device=hidden_states.device)
        writes[..., 1] = 0
        self._write_plan(writes, plan, absolute)  # an answer carried over from earlier calls
        for row, (b, column) in enumerate(computing.nonzero().tolist()):  # in order: a later start follows its answer
            start = int(absolute[column])
            at = torch.full((batch, 1), start, device=absolute.device)
            if bool(plan.covers(at)[b, 0]):
                if not (bool(fire[b, column]) and bool(self.takes_over(plan, at)[b, 0])):
                    continue
                writes[b, column:] = torch.tensor([-1, 0], device=writes.device)  # the lead's answer, after its lead
            plan = plan.assign(b, start, tokens[row], int(lengths[row])).followed(call.input_ids, absolute)
            self._write_plan(writes, plan.select(torch.tensor([b], device=absolute.device)), absolute, row=b)
        history.plan = plan
        call.writes, call.writer = writes, self
        return hidden_states

    def takes_over(self, plan: ReadoutPlan, positions: torch.Tensor) -> torch.Tensor:
        """`positions (batch, seq)` or `(seq,)` absolute → bool `(batch, seq)`: the position right after a lead the
        text wrote itself ("What is 3-4? " where the lead fired at "?"). The answer the lead computed has written
        nothing but that lead, and the trigger, firing here, has read one token more, the ending train.py's prompts
        have: its answer replaces the lead's. In one call or across a cache, so both decode alike. Not after a lead
        joined with a minus (" -"): that answer has written its sign already."""
        if self.lead_token_id is None:
            return torch.zeros(plan.start.shape[0], positions.shape[-1], dtype=torch.bool, device=plan.start.device)
        positions = positions.expand(plan.start.shape[0], -1)
        after_lead = (positions == plan.start[:, None] + 1) & (plan.tokens[:, :1] == self.lead_token_id)
        return after_lead & plan.covers(positions)

    def explicit_leads(self, call: ComputerCall) -> torch.Tensor:
        """`(batch, seq)` bool: the positions of an explicit call (`computer_mask`) that run the computer as a lead:
        the next position computes too and holds the lead token. Training computes at both (`--lead_computes`),
        as `generate()` does after a prompt that ends in "Answer:": the lead's answer writes the lead, and the
        answer position's takes over (`takes_over`)."""
        assert self.lead_token_id is not None
        if call.input_ids is None:
            return torch.zeros_like(call.positions)
        next_leads = call.positions[:, 1:] & (call.input_ids[:, 1:] == self.lead_token_id)
        return call.positions & nn.functional.pad(next_leads, (0, 1), value=False)

    def with_lead(
        self, tokens: torch.Tensor, lengths: torch.Tensor, leading: torch.Tensor, join_minus: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The answers `(P, width)`, `(P,)` with the rows `leading (P,)` written after the lead token `(P, width +
        1)`: a negative answer's minus and the lead become `computer_lead_minus_token_id` where there is one and
        `join_minus` (SmolLM2 writes " -304" as " -", "3", "0", "4"), else the lead token goes first. Explicit
        calls do not join: training's rows write the lead and the minus apart (`tokenize_for_causal_lm`)."""
        assert self.numbers is not None and self.lead_token_id is not None
        tokens = nn.functional.pad(tokens, (0, 1), value=-1)
        joined = leading & (tokens[:, 0] == self.numbers.minus_token)
        if self.lead_minus_token_id is None or not join_minus:
            joined = torch.zeros_like(joined)
        tokens[:, 0] = torch.where(joined, self.lead_minus_token_id or 0, tokens[:, 0])
        prefixed = leading & ~joined
        shifted = torch.cat([torch.full_like(tokens[:, :1], self.lead_token_id), tokens[:, :-1]], 1)
        return torch.where(prefixed[:, None], shifted, tokens), lengths + prefixed.long()

    def number_written(self, history: ComputerCache, seq: int) -> torch.Tensor:
        """`(batch, seq)`: whether a number token stands at or before each of the call's `seq` positions (the last
        of `history`), padding skipped. The library's programs compute from the numbers a prompt writes, so where
        none is written yet the trigger and the lead do not run the computer."""
        assert self.numbers is not None
        return self.numbers.written(history.input_ids, history.valid)[:, history.input_ids.shape[1] - seq :]

    def token_context_logits(self, table: torch.Tensor, history: ComputerCache, seq: int) -> torch.Tensor:
        """s · Σ_j table[j, x_{t−j}] (s = `TOKEN_LOGIT_SCALE`, j < k, `table` `(k, vocab)`: `trigger_tokens` or
        `lead_tokens`) for the call's `seq` positions t (the last of `history`): a head's logit from the ids of the
        last k tokens, padding and the sequence's start skipped. Every number token reads the row of the token "0":
        which digits a list ends with must not decide where to answer, and a rare chunk would otherwise keep the
        untrained row it started with. Under `computer_trigger_dropout` p each term is dropped with probability p
        in training and weighs 1 − p in evaluation."""
        assert self.numbers is not None
        number_row = self.numbers.chunk_tokens[0]  # the token that writes "0"
        ids = history.input_ids
        valid = torch.ones_like(ids, dtype=torch.bool) if history.valid is None else history.valid.bool()
        total = ids.shape[1]
        logits = torch.zeros(ids.shape[0], seq, dtype=table.dtype, device=ids.device)
        for j in range(table.shape[0]):
            columns = torch.arange(total - seq, total, device=ids.device) - j  # (seq,) the token j back
            inside = columns >= 0
            token = ids[:, columns.clamp_min(0)].clamp(0, table.shape[1] - 1)  # (batch, seq)
            token = torch.where(self.numbers.token_value[token] >= 0, number_row, token)
            keep = valid[:, columns.clamp_min(0)] & inside
            if self.training and self.trigger_dropout:
                keep = dropped_at_random(keep, self.trigger_dropout)
            logits = logits + torch.where(keep, table[j][token], 0.0)
        weight = 1.0 - self.trigger_dropout if not self.training else 1.0  # the kept share, on average
        return TOKEN_LOGIT_SCALE * weight * logits

    def number_counts(self, read: ReadNumbers, history: ComputerCache, seq: int) -> torch.Tensor:
        """`(batch, seq)` long: min(c_t, NUMBER_COUNTS − 1) for the call's `seq` positions t (the last of `history`,
        its numbers `read`), c_t the numbers whose first token stands within the last `computer_trigger_numbers`
        tokens up to t ("12,345" is one number, as the copy parse reads it), padding skipped: the row of
        `trigger_numbers` and `lead_numbers` each position reads. A function of the token ids alone, so a cached
        decode counts as an uncached forward."""
        first = read.is_first  # (batch, L)
        if history.valid is not None:
            first = first & history.valid.bool()
        started = first.long().cumsum(1)  # numbers started up to each position
        before = nn.functional.pad(started, (self.number_window, 0))[:, : started.shape[1]]  # … up to t − window
        return (started - before)[:, started.shape[1] - seq :].clamp_max(NUMBER_COUNTS - 1)

    @staticmethod
    def _write_plan(writes: torch.Tensor, plan: ReadoutPlan, absolute: torch.Tensor, row: int | None = None) -> None:
        """Writes the plan's tokens and end mark at this call's positions `absolute (seq,)` into `writes (batch,
        seq, 2)` (every row, or only `row` for a one-row plan)."""
        offset = absolute[None] - plan.start[:, None]  # (rows, seq): k at position start + k
        active = plan.covers(absolute.expand(plan.start.shape[0], -1))
        token = plan.tokens.gather(1, offset.clamp(0, plan.tokens.shape[1] - 1))
        is_token = active & (offset < plan.length[:, None])
        target = writes if row is None else writes[row : row + 1]
        target[..., 0] = torch.where(is_token, token, target[..., 0])
        target[..., 1] = torch.where(active & ~is_token, 1, target[..., 1])

    def readout_logits(self, logits: torch.Tensor, writes: torch.Tensor) -> torch.Tensor:
        """Adds the "tokens" read-out to `logits (..., vocab)` at the positions of `writes (..., 2)` (sliced as the
        logits are): the strength s on the token written; at the end mark s · (`end_logits` − 1 on every number
        token), `end_logits` learned in units of s (so they move as fast as a logit needs)."""
        assert self.numbers is not None
        token, end = writes[..., 0], writes[..., 1].bool()
        strength = self.readout_strength.to(logits.dtype)
        where = (token >= 0).nonzero(as_tuple=True)
        bias = torch.zeros_like(logits)
        bias = bias.index_put((*where, token[where]), strength.expand(len(where[0])))
        number_tokens = ((self.numbers.token_value >= 0) | self.numbers.is_minus).to(logits.dtype)  # (vocab,)
        at_end = strength * (self.end_logits.to(logits.dtype) - number_tokens)  # (vocab,)
        bias = bias + end[..., None].to(logits.dtype) * at_end
        return logits + bias

    def run(
        self,
        hidden_states: torch.Tensor,
        positions: torch.Tensor,
        history: ComputerCache | None = None,
        past_length: int = 0,
        trigger_logits: torch.Tensor | None = None,
        lead_logits: torch.Tensor | None = None,
        read: ReadNumbers | None = None,
    ) -> ComputerRun:
        """Select, parse and run (steps 1–3 of the class docstring) at the P positions where `positions`
        `(batch, seq)` is True, from `hidden_states (batch, seq, hidden)` (the sequence's tokens, `past_length` of
        them cached before, in `history`; `read`: its numbers, where the caller has read them); recorded for
        `record_computer_runs`."""
        if not self.program_names:
            raise RuntimeError(
                "no library is installed in this LlamaDComp model: install one with "
                "library.install.install_library(model, programs) or build the model with library.install.from_llama"
            )
        if self.numbers is not None and history is None:
            raise ValueError(
                "this computer reads or writes number tokens: call the model with input_ids, not inputs_embeds"
            )
        num_positions, width = int(positions.sum()), self.width
        program = self.program
        dtype = program.op.dtype
        normed = self.norm(hidden_states[positions])  # (P, hidden)
        rows, columns = positions.nonzero(as_tuple=True)
        columns = columns + past_length  # (P,) absolute: the columns of the history's tokens
        # the numbers written so far, read once for the votes, the copy parse and the count
        if read is None and history is not None and self.numbers is not None:
            if self.selection_tokens is not None or self.copy_parse is not None or self.count_slot is not None:
                read = self.numbers.read(history.input_ids)  # (batch, L) each
        selection_logits = self.select(normed).to(dtype)  # (P, programs)
        hidden_votes = None
        if self.selection_tokens is not None:
            assert history is not None and read is not None  # the config requires the "tokens" read-out
            by_id, hidden_votes = self.selection_votes(history, read, rows, columns)
            selection_logits = selection_logits + by_id.to(dtype)
            if hidden_votes is not None:
                selection_logits = selection_logits + hidden_votes.to(dtype)
        program_probs = (selection_logits / self.temperature).softmax(-1)
        logits = self.parse(normed).to(dtype).view(num_positions, self.num_slots, width)  # (P, slots, width)
        parsed = logits.sigmoid() if self.binary else logits.softmax(-1)  # bits, or a distribution over n values
        if self.copy_parse is not None:
            assert history is not None and history.keys is not None and read is not None
            sequence = CopyParseInputs(history.input_ids, history.keys)
            parsed = self.copy_parse(normed, rows, columns, sequence, read, self.machine.values, parsed)
        if self.count_slot is not None:  # the count of written numbers: exact, whatever the length
            assert read is not None
            counted = self.written_count(read, rows, columns)  # (P,)
            exact = self.machine.values.mixture(parsed.new_ones(num_positions, 1, 1), counted[:, None])
            slot = self.count_slot
            parsed = torch.cat([parsed[:, :slot], exact, parsed[:, slot + 1 :]], 1)
        input_probs = parsed[:, : len(self.input_registers)]
        memory_probs = parsed[:, len(self.input_registers) :]
        selection, inputs = program_probs, parsed
        if self.binary:  # the machine runs the most likely program on the most likely bits (straight through)
            selection = straight_through(
                program_probs, one_hot_values(program_probs.argmax(-1), program_probs.shape[-1])
            )
            inputs = straight_through(parsed, (parsed > 0.5).to(parsed.dtype))
        result = run_selected(
            self.machine,
            program,
            self.entry_points,
            selection,
            inputs={register: inputs[:, i] for i, register in enumerate(self.input_registers)},
            memory=inputs[:, len(self.input_registers) :] if self.memory_inputs else None,
            max_steps=self.max_steps,
        )
        run = ComputerRun(
            positions,
            program_probs,
            input_probs,
            memory_probs,
            result.state,
            result.steps,
            trigger_logits,
            lead_logits,
            hidden_votes,
            selection_logits,
        )
        records = _TRACE_RECORDS.get()
        if records is not None:
            records.append(run)
        return run

    def selection_votes(
        self, history: ComputerCache, read: ReadNumbers, rows: torch.Tensor, columns: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """s · Σ_{j<k} selection_tokens[x_{t−j}] `(P, programs)` (s = `TOKEN_LOGIT_SCALE`, k = `selection_context`)
        at absolute position t = `columns (P,)` of row `rows (P,)` of the history (its numbers `read`, `(batch, L)`
        each): each token id of the window votes for programs wherever it stands in it (a joined minus with its
        symbol's row, `voting_rows`); padding, number tokens and a number's sign vote nothing; in training each vote
        is dropped with probability `selection_dropout`.
        Returned with, under `computer_selection_hidden_votes`, the mean of the voting tokens' `W_vote RMSNorm(h)`
        `(P, programs)` (never dropped: the vote a word no training prompt had still casts; else None)."""
        assert self.selection_tokens is not None
        voting = self.voting_tokens(history.input_ids, history.valid, read, rows, columns)  # (P, L)
        hidden = None if history.votes is None else window_mean(history.votes, voting, rows)  # (P, programs)
        if self.training and self.selection_dropout:
            voting = dropped_at_random(voting, self.selection_dropout)
        ids = history.input_ids[rows]  # (P, L)
        voters = self.voting_rows(ids.clamp(0, self.selection_tokens.shape[0] - 1))  # (P, L)
        votes = self.selection_tokens[voters]  # (P, L, programs)
        by_id = TOKEN_LOGIT_SCALE * (votes * voting[..., None].to(votes.dtype)).sum(1)
        return by_id, hidden

    def voting_tokens(
        self,
        input_ids: torch.Tensor,
        valid: torch.Tensor | None,
        read: ReadNumbers,
        rows: torch.Tensor,
        columns: torch.Tensor,
    ) -> torch.Tensor:
        """`(P, L)` bool: the tokens that vote for the selection at absolute position `columns (P,)` of row `rows
        (P,)` of `input_ids (batch, L)` (`valid (batch, L)`, None: all real; its numbers `read`): the last
        `selection_context` tokens up to it, neither padding, nor a number token, nor a number's sign; with
        `selection_boundaries`, only those after the last boundary token before the last number written (the
        question's own turn of a chat template)."""
        steps = torch.arange(input_ids.shape[1], device=input_ids.device)
        valid_rows = steps[None, :] >= 0 if valid is None else valid[rows].bool()  # (1 or P, L)
        window = (steps <= columns[:, None]) & (steps > columns[:, None] - self.selection_context)  # (P, L)
        numbers = read.is_number[rows]  # (P, L)
        if self.selection_boundaries:
            before = steps[None, :] <= columns[:, None]  # (P, L)
            last_number = torch.where(numbers & before, steps, -1).max(-1, keepdim=True).values  # (P, 1); -1: none
            boundaries = torch.tensor(self.selection_boundaries, device=input_ids.device)
            opens = torch.isin(input_ids[rows], boundaries) & (steps < last_number)  # (P, L)
            window = window & (steps > torch.where(opens, steps, -1).max(-1, keepdim=True).values)
        return window & valid_rows & ~numbers & ~read.is_sign[rows]

    def voting_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The row of `selection_tokens` each token id of `ids (P, L)` votes with: its own, but a joined minus's
        symbol's (`computer_joined_minus_symbol_ids`: "12*-7" is chosen as "12*7" is)."""
        if not self.joined_symbols:
            return ids
        joined = torch.tensor(list(self.joined_symbols), device=ids.device)  # (J,)
        symbols = torch.tensor(list(self.joined_symbols.values()), device=ids.device)  # (J,)
        match = ids[..., None] == joined  # (P, L, J)
        return torch.where(match.any(-1), symbols[match.int().argmax(-1)], ids)

    @staticmethod
    def written_count(read: ReadNumbers, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """How many numbers are written up to (and at) absolute position `columns (P,)` of row `rows (P,)`, in a
        sequence whose numbers are `read` (`NumberTokens.read`, `(batch, L)` each): the runs of number tokens, the
        numbers the copy parse's ordinals 0, 1, … count. A list's length read this way needs no classifier
        (`library_count_register`)."""
        steps = torch.arange(read.is_first.shape[1], device=read.is_first.device)
        return (read.is_first[rows] & (steps <= columns[:, None])).sum(-1)

    @torch.no_grad()
    def spell_answers(self, run: ComputerRun) -> tuple[torch.Tensor, torch.Tensor]:
        """The answer of every run position as tokens `(P, width)` (-1 after the last) and their counts `(P,)`:
        the output register's most likely value (`NumberTokens.spell`), or, where the selected program is one of
        `library_list_programs`, the memory cells 0 … c − 1 (c the count the run was given), spelled one by one
        with the separator tokens between them."""
        assert self.numbers is not None
        value, _ = self.machine.values.most_likely(run.state.registers[:, self.output_register])  # (P,)
        tokens, lengths = self.numbers.spell(value)  # (P, MAX_SYMBOLS), (P,)
        if not self.list_programs or not len(value):
            return tokens, lengths
        listing = torch.tensor([name in self.list_programs for name in self.program_names], device=value.device)
        lists = listing[run.program_probs.argmax(-1)]  # (P,)
        if not bool(lists.any()):
            return tokens, lengths
        assert self.count_slot is not None  # the config requires it with list programs
        count, _ = self.machine.values.most_likely(run.input_probs[:, self.count_slot])
        cells, _ = self.machine.values.most_likely(run.state.memory)  # (P, M)
        size = cells.shape[1]
        cell_tokens, cell_lengths = self.numbers.spell(cells.reshape(-1))
        cell_tokens, cell_lengths = cell_tokens.view(*cells.shape, -1).tolist(), cell_lengths.view(cells.shape).tolist()
        answers = []
        for p, is_list in enumerate(lists.tolist()):
            if not is_list:
                answers.append(tokens[p, : int(lengths[p])].tolist())
                continue
            answer: list[int] = []
            for k in range(min(max(int(count[p]), 0), size)):
                spelled = cell_tokens[p][k][: cell_lengths[p][k]]
                if k and self.negative_separator and int(cells[p, k]) < 0:  # ", -" as the tokenizer merges it
                    answer += self.negative_separator + spelled[1:]
                else:
                    answer += (self.separator if k else []) + spelled
            answers.append(answer)
        width = max(map(len, answers), default=0)
        out = torch.full((len(answers), max(width, tokens.shape[1])), -1, dtype=torch.long, device=value.device)
        for p, answer in enumerate(answers):
            out[p, : len(answer)] = torch.tensor(answer, dtype=torch.long)
        return out, torch.tensor(list(map(len, answers)), dtype=torch.long, device=value.device)

    @torch.no_grad()
    def run_every_program(self, run: ComputerRun) -> MachineState:
        """Every library program run on the run's most likely inputs (rounded bits): the final states, batch
        `P · programs`, program k of position p at row p · programs + k."""
        programs = len(self.program_names)
        inputs = (torch.cat([run.input_probs, run.memory_probs], 1) > 0.5).to(run.input_probs.dtype)
        inputs = inputs.repeat_interleave(programs, 0)  # (P · programs, slots, bits)
        selection = torch.eye(programs, device=inputs.device).repeat(run.input_probs.shape[0], 1)
        return run_selected(
            self.machine,
            self.program,
            self.entry_points,
            selection,
            inputs={register: inputs[:, i] for i, register in enumerate(self.input_registers)},
            memory=inputs[:, len(self.input_registers) :] if self.memory_inputs else None,
            max_steps=self.max_steps,
        ).state

    @torch.no_grad()
    def program_answers(self, run: ComputerRun) -> tuple[torch.Tensor, torch.Tensor]:
        """What every library program answers on the run's most likely inputs (binary encoding): integers
        `(P, programs, K)` and answer lengths `(P, programs)`; K = the memory size. A list program's answer is the
        memory cells 0 … c − 1 (`library_list_programs`), any other program's the output register (length 1).
        The list task's answer loss compares whole lists: `p(answer) = Σ_k π_k [answer_k = answer]`."""
        programs = len(self.program_names)
        state = self.run_every_program(run)
        output, _ = self.machine.values.most_likely(state.registers[:, self.output_register])  # (P · programs,)
        cells, _ = self.machine.values.most_likely(state.memory)  # (P · programs, M)
        cells = cells.view(-1, programs, cells.shape[1])
        answers = torch.cat([output.view(-1, programs, 1), cells[..., 1:]], -1)  # the output, then anything
        lengths = torch.ones(answers.shape[:2], dtype=torch.long, device=answers.device)
        if self.list_programs:
            assert self.count_slot is not None
            count, _ = self.machine.values.most_likely(run.input_probs[:, self.count_slot])  # (P,)
            for k, name in enumerate(self.program_names):
                if name in self.list_programs:
                    answers[:, k], lengths[:, k] = cells[:, k], count.clamp(0, cells.shape[-1])
        return answers, lengths

    @torch.no_grad()
    def program_outputs(self, run: ComputerRun) -> torch.Tensor:
        """What every library program returns on the run's most likely inputs: integers `(P, programs)` (binary
        encoding). The answer likelihood of the selection is then exact, `p(answer) = Σ_k π_k [output_k = answer]`
        (train.py's answer loss): a sharp 64-bit machine gives no useful gradient of its own."""
        state = self.run_every_program(run)
        value, _ = self.machine.values.most_likely(state.registers[:, self.output_register])
        return value.view(-1, len(self.program_names))

    def extra_repr(self) -> str:
        return f"programs={self.program_names}, inputs={self.input_registers}, output=r{self.output_register}"

    # -------------------------------------------------------------------------------------------- initialisation
    @property
    def num_slots(self) -> int:
        """Parse slots: the input registers, then the parsed memory cells."""
        return self.parse.out_features // self.width

    @torch.no_grad()
    def init_read_out(self, columns: torch.Tensor) -> None:
        """W_out := `columns (hidden, n)`: column v is what the block writes into the residual stream for value v
        (train.py: the LM-head row of v's token, so the computer writes what the LM head reads)."""
        self.output_proj.weight.copy_(columns.to(self.output_proj.weight.dtype))

    @torch.no_grad()
    def complete_selection_votes(self, embeddings: torch.Tensor, ridge: float, min_margin: float) -> int:
        """Lets a token whose selection votes training never moved (its `selection_tokens` row still all 0: no
        training prompt had it in a selection window) vote as the trained tokens it resembles ("adding" as "add",
        "dividing" as "divide"). A ridge regression (penalty `ridge`) from the input embeddings (rows of
        `embeddings (vocab, hidden)`, centred, unit length) of the tokens that vote to their votes predicts the
        votes of the others; a token takes its prediction only where the best program leads the next by at least
        `min_margin` (in logits): a word the regression cannot place (a frame word, "per") keeps voting nothing.
        Returns how many rows it filled."""
        if self.selection_tokens is None:
            raise ValueError("this computer has no token votes (computer_selection_context is 0)")
        if ridge <= 0 or min_margin < 0:
            raise ValueError(f"complete_selection_votes: need ridge > 0 and min_margin >= 0, got {ridge}, {min_margin}")
        if embeddings.shape[0] != self.selection_tokens.shape[0]:
            raise ValueError(
                f"complete_selection_votes: embeddings have {embeddings.shape[0]} rows, the votes "
                f"{self.selection_tokens.shape[0]} (one per token id)"
            )
        scale = TOKEN_LOGIT_SCALE
        votes = self.selection_tokens  # (vocab, programs), in units of 1/scale
        features = embeddings.float() - embeddings.float().mean(0)
        features = features / features.norm(dim=1, keepdim=True).clamp_min(1e-6)  # (vocab, hidden)
        trained = votes.abs().sum(1) > 0  # (vocab,)
        if not bool(trained.any()):
            raise ValueError("no token votes yet: complete the votes after training")
        x, y = features[trained], scale * votes[trained].float()
        gram = x.T @ x + ridge * torch.eye(x.shape[1], device=x.device)  # (hidden, hidden)
        predicted = features @ torch.linalg.solve(gram, x.T @ y)  # (vocab, programs) logits
        best = predicted.topk(2, dim=1).values  # (vocab, 2)
        fill = ~trained & (best[:, 0] - best[:, 1] >= min_margin)
        votes[fill] = (predicted[fill] / scale).to(votes.dtype)
        return int(fill.sum())

    @torch.no_grad()
    def init_parse_from_probe(self, slot: int, probe: torch.Tensor) -> None:
        """The linear parse of `slot` := `probe (hidden, n)`: the logit of value v is `RMSNorm(h) · probe[:, v]`
        (a linear probe fitted on the untrained model's hidden states, `library.training.recipes`)."""
        width = self.width
        self.parse.weight[slot * width : (slot + 1) * width] = probe.T.to(self.parse.weight.dtype)


class LlamaDCompDecoderLayer(LlamaDecoderLayer):
    """A `LlamaDecoderLayer`; layer `config.computer_layer` also holds the computer and runs it on its output."""

    def __init__(self, config: LlamaDCompConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.computer = LlamaDCompComputer(config) if layer_idx == config.computer_layer else None
        self.votes_layer = layer_idx if layer_idx in config.computer_selection_vote_layers else None

    def forward(
        self, hidden_states: torch.Tensor, *args, computer_call: ComputerCall | None = None, **kwargs
    ) -> torch.Tensor:
        hidden_states = super().forward(hidden_states, *args, **kwargs)  # (batch, seq, hidden)
        if self.votes_layer is not None and computer_call is not None:  # a recomputed forward overwrites its own
            computer_call.vote_states[self.votes_layer] = hidden_states
        if self.computer is not None:
            hidden_states = self.computer(hidden_states, computer_call, kwargs.get("past_key_values"))
        return hidden_states


class LlamaDCompPreTrainedModel(LlamaPreTrainedModel):
    config: LlamaDCompConfig
    config_class = LlamaDCompConfig
    _no_split_modules = ["LlamaDCompDecoderLayer"]

    def post_init(self):
        """`PreTrainedModel.post_init`, after `check_answer_fields`: a config whose answer-changing fields differ
        from the installed library's builds no model (so `from_pretrained` names the field before it loads any
        weight, whose shapes may follow the changed field)."""
        check_answer_fields(self.config)
        super().post_init()

    def _init_weights(self, module):
        """Base Llama init, plus the computer: the gate from `computer_gate_init`, the placeholder library and the
        config's entry points in the library buffers, fresh ALU tables. Guarded (`transformers.initialization`):
        values loaded from a checkpoint are never overwritten."""
        super()._init_weights(module)
        if isinstance(module, LlamaDCompComputer):
            config = self.config
            init.constant_(module.gate, config.computer_gate_init)
            if module.writes_tokens:  # the trigger starts silent: the base model's text is left alone
                init.zeros_(module.trigger.weight)
                init.constant_(module.trigger.bias, -4.0)
                init.constant_(module.readout_strength, config.computer_readout_strength)
                init.copy_(module.end_logits, end_mark_prior(config))
                if module.trigger_tokens is not None:
                    init.zeros_(module.trigger_tokens)
                if module.lead is not None:  # silent at first, as the trigger
                    init.zeros_(module.lead.weight)
                    init.constant_(module.lead.bias, -4.0)
                if module.lead_tokens is not None:
                    init.zeros_(module.lead_tokens)
                for counts in (module.trigger_numbers, module.lead_numbers):
                    if counts is not None:
                        init.zeros_(counts)
            if module.selection_tokens is not None:
                init.zeros_(module.selection_tokens)
            if module.selection_hidden_votes is not None:
                init.zeros_(module.selection_hidden_votes.weight)
            placeholder = halt_program(config)
            for name in PROGRAM_FIELDS:
                init.copy_(getattr(module, f"program_{name}"), getattr(placeholder, name))
            init.copy_(module.entry_points, torch.as_tensor(config.library_entry_points, dtype=torch.long))
            with torch.device("cpu"):  # real tables even under from_pretrained's meta-device context
                fresh_alu = build_alu(config)
            for name, buffer in module.machine.alu.named_buffers():
                init.copy_(buffer, fresh_alu.get_buffer(name))
        if isinstance(module, NumberTokens):  # tables built from the config (non-persistent: never in the weights)
            with torch.device("cpu"):
                fresh = number_tokens(self.config)
            assert fresh is not None
            for name, buffer in module.named_buffers():
                init.copy_(buffer, fresh.get_buffer(name))

    # ------------------------------------------------------------------------------------------------ library
    @property
    def computer(self) -> LlamaDCompComputer:
        """The computer block (inside decoder layer `config.computer_layer`)."""
        computer = self.base_model.layers[self.config.computer_layer].computer  # type: ignore[index,union-attr]
        return cast(LlamaDCompComputer, computer)

    def computers(self) -> list[LlamaDCompComputer]:
        """Every computer module (one, or more where an adapter keeps a trainable copy)."""
        return [module for module in self.modules() if isinstance(module, LlamaDCompComputer)]

    def parameter_groups(self, learning_rates: Mapping[str, float]) -> list[dict]:
        """The optimizer's parameter groups, one learning rate each (as nanoGPT's `configure_optimizers`):
        "parse" (the computer's parse heads, linear and copy), "computer" (its selection head and votes, norm and gate),
        "embeddings" (embeddings, LM head, final norm, and W_out, which writes into the LM head's space) and
        "layers" (everything else: decoder layers, LoRA adapters); trainable parameters only, groups in name
        order. Parameters are grouped by name, so this also applies to a PEFT wrapper and, called as
        `LlamaDCompPreTrainedModel.parameter_groups(llama, ...)`, to a plain Llama (embeddings and layers)."""

        def group(name: str) -> str:
            if ".computer.parse." in name or ".computer.copy_parse." in name:
                return "parse"
            if ".computer." in name and ".output_proj." not in name:
                return "computer"
            if any(part in name for part in ("embed_tokens", "lm_head", ".output_proj.")) or name.endswith(
                "model.norm.weight"
            ):
                return "embeddings"
            return "layers"

        groups: dict[str, list[nn.Parameter]] = {}
        for name, parameter in self.named_parameters():
            if parameter.requires_grad:
                groups.setdefault(group(name), []).append(parameter)
        return [{"name": name, "params": params, "lr": learning_rates[name]} for name, params in sorted(groups.items())]

    def freeze_base(self) -> None:
        """Only the computer blocks train: every other parameter (the base Llama's) stops requiring gradients."""
        for name, parameter in self.named_parameters():
            if ".computer." not in f".{name}":
                parameter.requires_grad_(False)

    def get_library(self) -> tuple[ProgramTensors, list[str], list[int]]:
        """The installed library: program tensors (buffer views), program names and entry points."""
        computer = self.computers()[0]
        return computer.program, list(computer.program_names), [int(line) for line in computer.entry_points]

    def set_library(self, program: ProgramTensors, programs: Sequence[str], entry_points: Sequence[int]) -> None:
        """Writes a compiled, linked library `(lines, lanes, ·)` into the buffers and the config's library fields
        (`computer_program_lines`, `computer_lanes`, `library_programs`, `library_entry_points`,
        `library_fingerprint`). Compile-time callers: `library.install.install_library` / `from_llama`."""
        config = self.config
        if program.op.dim() != 3:
            raise ValueError("set_library takes one linked program of shape (lines, lanes, ·), not a batch")
        program.check(value_width(config), config.computer_registers, where="set_library")
        entry_points = [int(line) for line in entry_points]
        fields = {
            "computer_program_lines": program.lines,
            "computer_lanes": program.lanes,
            "library_programs": list(programs),
            "library_entry_points": entry_points,
            "library_fingerprint": f"{library_fingerprint(program, programs, entry_points)};"
            f"{convention_fingerprint(config)}",
        }
        config.update(fields)  # checked as a whole; on failure the config (and so the model) stays as it was
        for computer in self.computers():
            computer.set_library(
                program, config.library_programs, config.library_entry_points, config.initializer_range
            )
        self.verify_library()

    def verify_library(self) -> None:
        """Raises `LibraryMismatchError` naming the mismatch when the library buffers, or a field of
        `ANSWER_FIELDS`, do not match the config's fingerprint (a field it has no hash of must hold its default:
        a checkpoint saved before the field existed), or when no decoder layer holds the computer (run by
        `from_pretrained` after loading)."""
        config = self.config
        check_answer_fields(config)
        expected_parts = {} if config.library_fingerprint is None else fingerprint_parts(config.library_fingerprint)
        convention = fingerprint_parts(convention_fingerprint(config))
        if not self.computers():
            raise LibraryMismatchError(
                f"no decoder layer holds the computer (config.computer_layer={config.computer_layer}, "
                f"num_hidden_layers={config.num_hidden_layers}): there is no library to run"
            )
        if config.library_fingerprint is None:
            if config.library_programs:
                raise LibraryMismatchError(
                    f"config.library_programs lists {config.library_programs} but config.library_fingerprint is "
                    "missing: install libraries with library.install.install_library"
                )
            return
        for computer in self.computers():
            entry_points = [int(line) for line in computer.entry_points]
            if entry_points != list(config.library_entry_points):
                raise LibraryMismatchError(
                    f"config.library_entry_points={list(config.library_entry_points)} but the checkpoint's "
                    f"entry_points buffer holds {entry_points}"
                )
            if computer.program.lines != config.computer_program_lines:
                raise LibraryMismatchError(
                    f"config.computer_program_lines={config.computer_program_lines} but the checkpoint's program "
                    f"tensors have {computer.program.lines} lines"
                )
            actual = library_fingerprint(computer.program, config.library_programs, config.library_entry_points)
            actual_parts = fingerprint_parts(actual)
            if actual_parts["tensors"] != expected_parts.get("tensors"):
                raise LibraryMismatchError(
                    "the program tensors in the weights (buffers program_op/a/b/out/imm) do not match "
                    f"config.library_fingerprint ({config.library_fingerprint}); they hash to {actual}"
                )
            if actual_parts["index"] != expected_parts.get("index"):
                raise LibraryMismatchError(
                    f"config.library_programs={list(config.library_programs)} / library_entry_points="
                    f"{list(config.library_entry_points)} do not match config.library_fingerprint "
                    f"({config.library_fingerprint}); they hash to {actual}"
                )
            with torch.device("cpu"):
                fresh_alu = build_alu(config)
            for name, buffer in computer.machine.alu.named_buffers():
                if not torch.equal(buffer.cpu(), fresh_alu.get_buffer(name)):
                    raise LibraryMismatchError(
                        f"the ALU table buffer machine.alu.{name} does not match its definition in dcomp_alu"
                    )
        # A field the fingerprint has no hash of came after the install: its default is the behaviour the library
        # was installed with, so an older checkpoint loads as long as nobody changed it.
        unrecorded = [
            name
            for name in convention
            if name not in expected_parts and getattr(config, name) != config.field_default(name)
        ]
        if unrecorded:
            raise LibraryMismatchError(
                f"config.library_fingerprint records no hash of {unrecorded}, and they differ from their defaults "
                "(the fingerprint was written by an older installer, or edited): reinstall the library "
                "(library.install.install_library) and save again"
            )

    def verify_finite_weights(self) -> None:
        """Raises `ValueError` naming the first parameter or floating-point buffer that holds NaN or inf (a
        corrupted or diverged checkpoint would otherwise load and generate nonsense). One read of each tensor: its
        min and max, which are NaN or ±inf exactly when some entry is."""
        for name, tensor in itertools.chain(self.named_parameters(), self.named_buffers()):
            if tensor.is_floating_point() and tensor.numel() and tensor.device.type != "meta":
                low, high = (float(bound) for bound in tensor.detach().aminmax())
                if not (math.isfinite(low) and math.isfinite(high)):
                    raise ValueError(f"the weights are not finite: {name} holds NaN or inf (min {low}, max {high})")

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, then `verify_library` and `verify_finite_weights` (a mismatched or
        corrupted checkpoint fails loudly)."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.verify_library()
        model.verify_finite_weights()
        return loaded

    def init_output_from_embeddings(self, token_ids: Sequence[int | Sequence[int]]) -> None:
        """Initialises W_out (n → hidden) from the input embeddings of the number tokens "0" … "n-1":
        column v is the embedding of `token_ids[v]`, or the mean embedding when `token_ids[v]` lists several
        tokens (a number the tokenizer splits). The output then writes "the answer token" into the residual."""
        n = self.config.computer_values
        if len(token_ids) != n:
            raise ValueError(f"need the token ids of the n={n} values 0..{n - 1}, got {len(token_ids)}")
        embeddings = cast(torch.Tensor, self.get_input_embeddings().weight)  # (vocab, hidden)
        with torch.no_grad():
            columns = [
                embeddings[torch.as_tensor(ids, device=embeddings.device)].reshape(-1, embeddings.shape[1]).mean(0)
                for ids in token_ids
            ]
            for computer in self.computers():
                weight = computer.output_proj.weight  # (hidden, n)
                weight.copy_(torch.stack(columns, dim=1).to(weight.dtype))

    # -------------------------------------------------------------------------------------------------- trace
    @torch.no_grad()
    def trace_computer(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        computer_mask: torch.Tensor | None = None,
        top_k: int = 3,
        tokenizer=None,
    ) -> list[ComputerTrace]:
        """Runs the model (up to its last layer, no LM head) and returns, for every position where the computer
        ran (the same positions as in `forward`), what it selected, parsed and computed. Render with
        `library.install.explain` (which decompiles the selected program). With the model's `tokenizer`, each
        trace also lists the numbers written up to its position that the computer cannot represent
        (`ComputerTrace.unrepresentable`, `unrepresentable_numbers`), and a warning names them."""
        with record_computer_runs() as records:
            self.base_model(
                input_ids=input_ids, attention_mask=attention_mask, computer_mask=computer_mask, use_cache=False
            )
        computer = self.computer
        values = computer.machine.values
        low, high = (
            (0, computer.n)
            if computer.numbers is None or not computer.binary
            else (
                1 - computer.numbers.cap,
                computer.numbers.cap,
            )
        )

        def top(probs: torch.Tensor) -> list[tuple[int, float]]:  # the k most likely values, or the bits' value
            if computer.binary:
                value, probability = values.most_likely(probs)
                return [(int(value), float(probability))]
            return _top_k(probs, top_k)

        traces = []
        for run in records:
            decoded = run.state.decode(values)
            for row, (batch_index, position) in enumerate(run.positions.nonzero().tolist()):
                best = int(run.program_probs[row].argmax())
                traces.append(
                    ComputerTrace(
                        batch_index=batch_index,
                        position=position,
                        programs=[(computer.program_names[i], p) for i, p in _top_k(run.program_probs[row], top_k)],
                        program_lines=computer.program_line_range(best),
                        inputs={
                            register: top(run.input_probs[row, i])
                            for i, register in enumerate(computer.input_registers)
                        },
                        memory_inputs=[top(cell) for cell in run.memory_probs[row]],
                        registers=list(
                            zip(decoded["registers"][row].tolist(), decoded["register_probs"][row].tolist())
                        ),
                        memory=list(zip(decoded["memory"][row].tolist(), decoded["memory_probs"][row].tolist())),
                        output=top(run.state.registers[row, computer.output_register]),
                        halted=float(run.state.halted[row]),
                        steps=run.steps,
                        output_register=computer.output_register,
                        unrepresentable=None
                        if tokenizer is None
                        else unrepresentable_numbers(
                            tokenizer.decode(input_ids[batch_index, : position + 1], skip_special_tokens=True),
                            high,
                            low,
                        ),
                    )
                )
        for trace in traces:
            if trace.unrepresentable:
                warnings.warn(
                    f"batch {trace.batch_index}, position {trace.position}: the numbers {trace.unrepresentable} are "
                    f"no values {low}..{high - 1}, which is all the computer holds: its answer is not about them",
                    UserWarning,
                    stacklevel=3,
                )
        return traces


class LlamaDCompModel(LlamaDCompPreTrainedModel, LlamaModel):
    """`LlamaModel` whose decoder layer `config.computer_layer` ends with the computer block.

    The forward is `LlamaModel.forward` (reused through `super()`, so its decorators keep working) with one
    extra input, `computer_mask`; it decides where the computer runs — cost only where it must be:

    * by default on every non-padding position of this call's tokens (`attention_mask`, 2D); without a 2D mask
      (none, or a prepared 4D one) on every position;
    * with `computer_mask` `(batch, L)` (bool), only where it is True — e.g. the last prompt token, or the
      answer position. Its columns are *absolute* positions (aligned with a full 2D `attention_mask`, cached
      tokens included): a call that continues a KV cache of length c reads columns [c, c + seq), and positions
      at or beyond L do not run the computer. So in `generate(..., computer_mask=prompt_mask)` the computer runs
      at the marked prompt positions during prefill and never on generated tokens;
    * with a KV cache, only the new tokens are computed at all, so the computer never reruns cached positions.
    """

    def __init__(self, config: LlamaDCompConfig):
        # LlamaModel.__init__ would build plain LlamaDecoderLayers: this mirrors it with the computer's layer class.
        LlamaPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [LlamaDCompDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    @staticmethod
    def computer_positions(
        batch_size: int,
        seq_length: int,
        attention_mask: torch.Tensor | None,
        computer_mask: torch.Tensor | None,
        past_length: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean `(batch, seq)` twice: the call's non-padding tokens, and where the computer runs in this call
        (see the class docstring)."""
        if computer_mask is not None and (computer_mask.dim() != 2 or computer_mask.shape[0] != batch_size):
            raise ValueError(
                f"computer_mask has shape {tuple(computer_mask.shape)}, expected (batch={batch_size}, L): one row per "
                "sequence, one column per absolute position (cached tokens included)"
            )
        valid = torch.ones(batch_size, seq_length, dtype=torch.bool, device=device)
        if attention_mask is not None and attention_mask.dim() == 2:
            valid = valid & attention_mask[:, -seq_length:].to(device=device, dtype=torch.bool)
        positions = valid
        if computer_mask is not None:
            window = computer_mask[:, past_length : past_length + seq_length].to(device=device, dtype=torch.bool)
            window = nn.functional.pad(window, (0, seq_length - window.shape[1]), value=False)  # beyond L: False
            positions = positions & window
        return valid, positions

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        computer_mask: torch.Tensor | None = None,
        computer_calls: list | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        reference = input_ids if input_ids is not None else inputs_embeds  # (batch, seq[, hidden])
        if reference is not None:
            if reference.dim() < 2 or reference.shape[1] == 0:
                raise ValueError(
                    f"the input has shape {tuple(reference.shape)}: give at least one token per sequence "
                    "(batch, seq >= 1)"
                )
            past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
            trained = self.config.trained_sequence_length or self.config.max_position_embeddings
            if past_length + reference.shape[1] > trained:
                warnings.warn(
                    f"the input is longer than {trained} tokens, the longest the model was trained on "
                    "(config.trained_sequence_length, else max_position_embeddings): answers past it are unreliable",
                    UserWarning,
                    stacklevel=2,
                )
            valid, positions = self.computer_positions(
                reference.shape[0], reference.shape[1], attention_mask, computer_mask, past_length, reference.device
            )
            call = ComputerCall(valid, positions, computer_mask is not None, input_ids, past_length)
            kwargs["computer_call"] = call
            if computer_calls is not None:
                computer_calls.append(call)
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )


class LlamaDCompForCausalLM(LlamaDCompPreTrainedModel, LlamaForCausalLM):
    """`LlamaForCausalLM` over `LlamaDCompModel`. Its forward is `LlamaForCausalLM.forward` plus `computer_mask`
    (see `LlamaDCompModel`) and, with `computer_output="tokens"`, the read-out's logits (the computer's answer
    written token by token, `LlamaDCompComputer.write_tokens`). `logits_to_keep` may be a boolean `(batch, seq)`
    mask: the LM head then runs only there, and with `labels` (and no `shift_labels`) the loss is taken on the
    same positions — pass `logits_to_keep=LlamaDCompForCausalLM.labelled_positions(labels)` to compute logits only
    where a label is predicted, with the same loss as full logits."""

    def __init__(self, config: LlamaDCompConfig):
        LlamaPreTrainedModel.__init__(self, config)
        self.model = LlamaDCompModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @staticmethod
    def labelled_positions(labels: torch.LongTensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
        """Boolean `(batch, seq)`: the positions whose logits predict a label (the next token is labelled)."""
        return shift_labels(labels, ignore_index) != ignore_index

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        computer_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        boolean_keep = isinstance(logits_to_keep, torch.Tensor) and logits_to_keep.dtype == torch.bool
        if labels is not None and boolean_keep and kwargs.get("shift_labels") is None:
            shifted = shift_labels(labels)  # (batch, seq)
            kwargs["shift_labels"] = shifted[logits_to_keep.to(shifted.device)]  # type: ignore[union-attr]  # (kept,)
        calls: list[ComputerCall] = []
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            computer_mask=computer_mask,
            computer_calls=calls,
            **kwargs,
        )
        last_hidden_state = cast(torch.Tensor, outputs.last_hidden_state)  # (batch, seq, hidden)
        hidden_states = slice_logits_to_keep(last_hidden_state, logits_to_keep)  # (batch, kept, hidden)
        logits = self.lm_head(hidden_states)  # (batch, kept, vocab), or (kept, vocab) for a boolean mask
        call = calls[0] if calls else None
        if call is not None and call.writes is not None and call.writer is not None:  # the "tokens" read-out
            logits = call.writer.readout_logits(logits, slice_logits_to_keep(call.writes, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


LlamaDCompModel.register_for_auto_class("AutoModel")
LlamaDCompForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "ANSWER_FIELDS",
    "ComputerTrace",
    "LibraryMismatchError",
    "LlamaDCompComputer",
    "LlamaDCompForCausalLM",
    "LlamaDCompModel",
    "LlamaDCompPreTrainedModel",
    "check_answer_fields",
    "convention_fingerprint",
    "library_fingerprint",
    "record_computer_runs",
    "unrepresentable_numbers",
]
