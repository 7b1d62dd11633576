"""Configuration of LlamaDComp: LLaMA with a differentiable computer and a neurally compiled library.

Run-time code: it travels with a checkpoint (`save_pretrained` copies it) and imports only transformers and its
siblings. Paper: Saldyt & Kambhampati, "Algorithmic Language Models with Neurally Compiled Libraries" (§3,
Figure 1): an intermediate decoder layer of LLaMA *selects* a library program and *parses* its inputs, the
differentiable computer Δ runs it, and its output is written back into the residual stream.
"""

# No `from __future__ import annotations`: @strict checks field types from the evaluated annotations.
import difflib
import math
import warnings
from dataclasses import MISSING, field, fields

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers import LlamaConfig

try:
    from .dcomp_isa import DEFAULT_CALL_DEPTH, MAX_BITS, MIN_BITS, OP_NAMES
except ImportError:  # a checkout, where the run-time files are top-level modules
    from dcomp_isa import DEFAULT_CALL_DEPTH, MAX_BITS, MIN_BITS, OP_NAMES


COMPUTER_ALUS = ("table", "circuit")
COMPUTER_ENCODINGS = ("unit", "binary")
COMPUTER_OUTPUTS = ("residual_add", "tokens")
COMPUTER_PARSES = ("linear", "copy")
REAL_FIELDS = (
    "computer_halt_threshold",
    "computer_gate_init",
    "computer_selection_temperature",
    "computer_readout_strength",
    "computer_trigger_threshold",
)
# The fields `check_computer` checks (and re-checks when one is assigned).
COMPUTER_PREFIXES = ("computer_", "library_")
# Upper bounds that keep a model buildable and a forward finite in time. n: the table ALU's index tables
# (mul/div/mod, 3·n² entries) stay near 100 MiB at n = 4096. Steps: a run costs up to computer_max_steps machine
# steps, each a pass over the program's lines (about 10 ms for one position at n = 128 on a loaded 2-core CPU,
# docs/RELIABILITY.md), so a run that never halts still ends within minutes.
MAX_VALUES = 4096
MAX_STEPS = 10_000
# The classes `trust_remote_code` loads from a checkpoint's own files; every LlamaDComp config carries all three
# (`save_pretrained` alone would record only the saved model's class).
AUTO_MAP = {
    "AutoConfig": "configuration_llama_dcomp.LlamaDCompConfig",
    "AutoModel": "modeling_llama_dcomp.LlamaDCompModel",
    "AutoModelForCausalLM": "modeling_llama_dcomp.LlamaDCompForCausalLM",
}


def _field_type_errors_as_value_errors(cls):
    """Class decorator (outside `@strict`): a wrongly typed field raises `ValueError` naming the field, like every
    other invalid field, instead of huggingface_hub's `StrictDataclassFieldValidationError`."""
    strict_setattr = cls.__setattr__

    def __setattr__(self, name, value):
        try:
            strict_setattr(self, name, value)
        except StrictDataclassFieldValidationError as error:
            raise ValueError(f"{name}={value!r}: {error.__cause__}") from error

    cls.__setattr__ = __setattr__
    return cls


@_field_type_errors_as_value_errors
@strict
class LlamaDCompConfig(LlamaConfig):
    r"""
    A [`LlamaConfig`] plus the differentiable computer Δ and its program library Λ (paper §3, Figure 1).

    The library fields (`computer_program_lines`, `computer_lanes`, `library_programs`, `library_entry_points`,
    `library_fingerprint`) describe the compiled library stored in the model's buffers; they are written by
    `library.install.install_library` / `library.install.from_llama`, not by hand. A default config holds no
    library (no programs): such a model builds, saves and loads, but its forward raises until a library is
    installed.

    Every field is checked when the config is built, when it is loaded (keyword overrides of `from_pretrained`
    included) and when a `computer_*` / `library_*` field is assigned; a config that cannot work raises
    `ValueError` naming the field and leaves an assigned field as it was. Change fields that only make sense
    together (such as `library_programs` and `library_entry_points`) at once with `config.update({...})`. An
    unknown keyword that looks like a misspelt field warns.

    ```python
    >>> from configuration_llama_dcomp import LlamaDCompConfig
    >>> config = LlamaDCompConfig(num_hidden_layers=2, computer_layer=1, computer_values=16, computer_memory_size=8)
    ```"""

    model_type = "llama_dcomp"

    computer_layer: int = 0
    """Index (0-based) of the decoder layer after which the computer block runs; `< num_hidden_layers`."""

    computer_encoding: str = "unit"
    """How the machine holds a value (Appendix C–D). "unit": a distribution over the n = `computer_values` values,
    arithmetic mod n. "binary": `computer_bits` bit probabilities of a signed two's complement integer, the circuit
    ALU on bits (`dcomp_machine.BinaryValues`); addresses and jump targets are decoded to one-hot from the bits."""

    computer_values: int = 128
    """n: the number of values (one-hot width, arithmetic mod n; the paper's mod-128 calculator uses 128).
    Line addresses are values, so `n > computer_program_lines`; at most `MAX_VALUES`. Unused by the binary
    encoding."""

    computer_bits: int = 64
    """B: bits of a value in the binary encoding, signed two's complement in [−2^(B−1), 2^(B−1)); in
    [`MIN_BITS`, `MAX_BITS`]. Unused by the unit encoding."""

    computer_registers: int = 16
    """Registers R of the machine; the top `computer_call_depth` of them form the return stack."""

    computer_memory_size: int = 32
    """Memory cells M (addresses are values, so at most n)."""

    computer_call_depth: int = DEFAULT_CALL_DEPTH
    """Depth of the return stack, i.e. how deep `call`s may nest; `< computer_registers`."""

    computer_max_steps: int = 64
    """Most interpreter steps per run (adaptive recurrence, eq. 17; the run exits early once halted); at most
    `MAX_STEPS`."""

    computer_halt_threshold: float | int = 0.99
    """The run stops once every position has halted with at least this probability; in (0, 1]. At 1.0 a run
    whose halting probability never rounds to exactly 1 takes all `computer_max_steps` steps."""

    computer_alu: str = "table"
    """ALU of eq. 7: "table" (`dcomp_alu.TableALU`, index tables) or "circuit" (`dcomp_circuits.CircuitALU`,
    needs n a power of two)."""

    computer_lanes: int = 1
    """Parallel instruction slots per program line (the widest line of the linked library)."""

    computer_program_lines: int = 1
    """Total lines of the linked library (all programs concatenated)."""

    library_programs: list[str] = field(default_factory=list)
    """Names of the library programs, in selection order."""

    library_entry_points: list[int] = field(default_factory=list)
    """Start line of each program in the linked library (same length as `library_programs`)."""

    library_input_registers: list[int] = field(default_factory=lambda: [1, 2])
    """Registers that receive parsed inputs (a softmax over the n values each, from the hidden state)."""

    library_memory_inputs: int = 0
    """How many memory cells (from address 0) receive parsed inputs, for list tasks."""

    library_output_register: int = 0
    """Register whose final value distribution is the computer's output (r0 in the standard library's calling
    convention: inputs r1, r2, r3, …, result r0)."""

    library_fingerprint: str | None = None
    """Hash of the compiled library (program tensors, program names, entry points) and of every config field that
    changes the computer's answers (`modeling_llama_dcomp.ANSWER_FIELDS`, one hash each), checked at load time so
    a checkpoint whose buffers or answer-changing fields do not match fails loudly, naming the cause. Written by
    the installer."""

    library_count_register: int = -1
    """A register (one of `library_input_registers`) that receives, exactly, how many numbers are written in the
    sequence up to the computing position (`NumberTokens.read`; the copy parse's ordinals count the same numbers):
    a list's length is then read, not classified, so a length never seen in training is as exact as a seen one.
    -1: none. Needs the copy parse."""

    library_list_programs: list[str] = field(default_factory=list)
    """Programs (of `library_programs`) whose answer is the list in memory cells 0 … c − 1, c the count of
    `library_count_register` (sort: the list sorted in place), not the output register: the "tokens" read-out
    writes those c numbers, `computer_list_separator_ids` between them, as one answer."""

    computer_list_separator_ids: list[int] = field(default_factory=list)
    """The tokens the read-out writes between two numbers of a list answer (", " as the tokenizer writes it between
    numbers: LLaMA-3's and SmolLM2's ",", " ")."""

    computer_list_negative_separator_ids: list[int] = field(default_factory=list)
    """The tokens written between two numbers of a list answer when the second is negative, its minus included
    (", -": the tokenizers merge the space and the minus into " -"); empty: the separator, then the minus token."""

    computer_output: str = "residual_add"
    """How the output reaches the language model. "residual_add" adds `gate * W_out(p_out)` to the residual
    stream after `computer_layer`, at the position where the computer ran. "tokens" writes the output value as the
    tokenizer's own number tokens (sign, digit chunks, then an end mark), one per generated token
    (`dcomp_readout`): where a learned trigger fires (or `computer_mask` says), the computer runs once and the
    k-th answer token's logit gets `computer_readout_strength`; needs `computer_digit_tokens`."""

    computer_trigger_context: int = 0
    """The "tokens" read-out's trigger also adds a learned logit per token id for each of the last k tokens (the
    position's own and the k − 1 before it; `trigger_tokens`, zero at first): an exact function of the nearby
    tokens, the same however long the sequence is, where a hidden state drifts with the length (lists longer than
    in training, docs/RESULTS.md §8). 0: none."""

    computer_trigger_dropout: float = 0.0
    """In training, each of those token logits (the trigger's and the lead's, per position and token) is dropped
    with this probability p, so that the hidden state learns to fire where an answer is due without the words
    around it (a prompt that ends on a word no training prompt ended on, "… equals"); in evaluation each counts
    (1 − p) times, its average weight in training. 0: keep every logit."""

    computer_trigger_numbers: int = 0
    """The "tokens" read-out's trigger and lead (if any) also add a learned logit for how many numbers start within
    the last k tokens (0, 1, or 2 and more: `trigger_numbers`, `lead_numbers`, zero at first), k this window. An
    answer is due once its operands are written, whatever word ends the prompt ("… equals"), and a frozen base's
    hidden state there does not tell "the answer is due" from "an operand is due" (docs/RESULTS.md §7). 0: none.
    Needs computer_output="tokens"."""

    computer_lead_token_id: int | None = None
    """The "tokens" read-out's lead: the token written before an answer where the prompt ends without it (SmolLM2's
    " " after "Answer:"), which a frozen base does not write reliably (it may end the text instead). A second
    learned head (`lead`, σ(w · RMSNorm(h)) > `computer_lead_threshold`, plus its own token-context logits,
    `lead_tokens`, with `computer_trigger_context`; silent at first) runs the computer where it fires and the
    trigger does not, and its answer starts with this token (one more position, with the read-out's strength).
    None: no lead head, the base writes whatever comes before the answer."""

    computer_lead_minus_token_id: int | None = None
    """The token that writes the lead and a minus together, where the tokenizer has one (SmolLM2 and LLaMA-3
    write " -304" as " -", "3", "0", "4"): before a negative answer the lead writes it instead of the lead token
    and the minus, so the answer is the text's own tokens ("…\nAnswer: -304" as lm-eval scores it). One of
    `computer_minus_token_ids`; needs `computer_lead_token_id`."""

    computer_trigger_threshold: float | int = 0.5
    """The "tokens" read-out's trigger computes where σ(trigger logit) exceeds this probability; in (0, 1). Training
    fits the trigger at 1/2 (its loss is a likelihood); a higher threshold at inference trades recall on questions
    for fewer false activations on ordinary text, and `experiments.trigger_threshold` measures both on data that
    neither trains nor reports. A policy, not part of the library's convention: changing it keeps the checkpoint
    loadable (it is not in `library_fingerprint`)."""

    computer_lead_threshold: float | int | None = None
    """The lead head's own threshold (`computer_lead_token_id`): it runs the computer where σ(lead logit) exceeds this
    probability; in (0, 1). None: `computer_trigger_threshold`. The lead fires only at the end of a question that
    leaves out the space ("…\nAnswer:"), a frame a user may write in ways no training prompt did, where its logit
    can sit near 0; a lower threshold answers more of those and fires on more ordinary text (docs/RESULTS.md §7).
    `experiments.trigger_threshold --head lead` picks the lowest that fires on no more ordinary text than 1/2. A
    policy, as the trigger's: not in `library_fingerprint`."""

    computer_own_text_window: int | None = None
    """How far into text the model writes itself the "tokens" read-out's trigger and lead may start an answer: the
    tokens fed one at a time after the generation cache, as `generate()`'s decoding steps feed them. None: anywhere,
    so a cached decode equals an uncached re-decode of the whole text. k: only within the first k tokens written
    after the text the model is given (a prompt, or a later turn fed in one call with the cache): where a base writes
    a space or "\n" before the answer to a frame no training prompt had ("…\nFinal answer:"), but not a line deep in
    its own continuation that ends on a number as a question ends ("# 5 " in a code comment, docs/RESULTS.md §7). An
    answer a lead started is still taken over by the trigger one token later; an uncached forward is all given text.
    A policy, as the thresholds: not in `library_fingerprint`."""

    computer_selection_context: int = 0
    """The program selection (§3.1) also adds a learned vote per token id for each of the last k tokens (the
    position's own and the k − 1 before it; `selection_tokens (vocab, programs)`, zero at first), summed wherever
    in the window a token stands: the word or symbol that names the operation ("minus", "//") then chooses the
    program in a frame it was never trained in, where a hidden state mixes the frame in. Number tokens and a
    number's sign vote nothing (the operands do not choose the operation). 0: none; needs
    computer_output="tokens" (the read-out keeps the token ids under the cache)."""

    computer_selection_boundary_ids: list[int] = field(default_factory=list)
    """Tokens that open a turn of a chat template ("<|im_start|>", LLaMA-3's "<|start_header_id|>"): the selection
    window of `computer_selection_context` starts after the last of them that stands before the last number written,
    so the question's own turn votes and a system prompt's words do not ("You are a calculator. Reply with the
    number only." would vote " with" as in "multiplied with"). A prompt without one is read as before. Empty: the
    window is the last k tokens, whatever they are. `library.install.turn_boundaries` gives a tokenizer's special
    tokens."""

    computer_selection_dropout: float = 0.0
    """In training, each token vote of `computer_selection_context` is dropped with this probability (per token,
    not rescaled): a phrasing with a word never trained on is a window with that word's vote missing, so the
    other votes and the hidden state learn to choose without it. 0: keep every vote."""

    computer_selection_hidden_votes: bool = False
    """Each token of the selection window also votes through its hidden state at the computer's layer: v gains
    the mean of `W_vote RMSNorm(h_t)` over the window's voting tokens (`selection_hidden_votes (programs,
    hidden)`, zero at first, never dropped). A token id votes only where training saw it; its hidden state
    carries what the base knows of the word in context, so a synonym no phrasing had ("diminished by") votes as
    the trained words it resembles. Needs computer_selection_context > 0."""

    computer_selection_vote_layers: list[int] = field(default_factory=list)
    """The decoder layers whose outputs the hidden votes read (`computer_selection_hidden_votes`): per token, the mean
    of their states normalised to unit RMS (no weight), in place of the computer's own input through its norm
    (empty, the default). Probed on a frozen SmolLM2, the states from the middle layer up to the last name the
    operation of a word no training phrasing has more often than the last layer's alone (docs/RESULTS.md §7).
    Ascending layer indices in [0, computer_layer]; needs computer_selection_hidden_votes."""

    computer_readout_strength: float | int = 30.0
    """Initial value of the learned logit the "tokens" read-out adds to the token it writes (and subtracts from
    every number token at the end mark)."""

    computer_digit_tokens: dict[str, int] = field(default_factory=dict)
    """The tokenizer's number tokens, digit string → token id: "0" … "9" for a one-digit tokenizer (SmolLM2),
    every string of 1–3 digits for LLaMA-3 ("7", "42", "007"). The binary copy parse reads a run of them as one
    number, and the "tokens" read-out writes a value with them, in chunks of the longest length present, from the
    left (as those tokenizers split a number)."""

    computer_minus_token_ids: list[int] = field(default_factory=list)
    """Tokens that write a minus sign. In the binary encoding a minus directly before a number, and not directly
    after another number, makes it negative ("-42", "x = -3"; "5-3" and "5 - 3" stay 5 and 3); the "tokens"
    read-out writes the first of them before a negative value."""

    computer_joined_minus_token_ids: list[int] = field(default_factory=list)
    """Those of `computer_minus_token_ids` that write a symbol and then the minus ("*-", "=-", "(-", "//-": how
    LLaMA-3 and SmolLM2 write "12*-7", "x=-3"). The symbol stands between the minus and any number before it, so
    the number after one is negative even directly after another number: "12*-7" is 12 and −7."""

    computer_joined_minus_symbol_ids: list[int] = field(default_factory=list)
    """For each of `computer_joined_minus_token_ids`, in order, the token that writes its symbol alone ("*" for
    "*-"), or -1 where none does; empty: none is known. In the program selection's token votes a joined minus votes
    as its symbol: its minus belongs to the number, and "12*-7" is a product like "12*7"."""

    computer_group_separator_ids: list[int] = field(default_factory=list)
    """Tokens that write the "," between digit groups. In the binary encoding one of them directly between a run
    of 1–3 digits and a run of exactly 3 joins the two into one number: "12,345" is 12345, "-1,234,567" is
    −1234567, while "1, 234" (a list) and "1234,567" stay two numbers. Answers are written without groups.
    Empty: no grouping."""

    computer_plus_token_ids: list[int] = field(default_factory=list)
    """Tokens that write a plus sign. In the binary encoding one directly before a number, and not directly after
    another number, is the number's sign ("times +3" is "times 3": the "+" casts no vote for addition in the
    selection); "5+3" and "5 + 3" keep it as an operator."""

    computer_gate_init: float | int = 0.0
    """Initial value of the learned output gate; 0.0 leaves the base Llama's outputs exactly unchanged."""

    computer_selection_temperature: float | int = 1.0
    """Temperature of the softmax that selects a library program; > 0."""

    computer_parse: str = "linear"
    """How the parse reads a program's inputs (§3.1). "linear": a softmax over the n values from the hidden state
    at the position (`W_parse`). "copy": also a pointer over the number tokens of the sequence up to the
    position, whose keys carry each number's ordinal (first number, second, …); each slot copies the value of
    the token it attends to, and a learned gate per slot mixes the copy with the linear parse (for inputs that
    are no token of the prompt, such as a list's length). Copied values need no classifier trained on them, so
    they generalise to values and positions unseen in training. It reads the tokens of the same forward call:
    run the computer in the prefill (`computer_mask`), not on tokens continuing a KV cache. Needs
    `computer_number_token_ids`."""

    computer_number_token_ids: list[int] = field(default_factory=list)
    """For the copy parse: the token id of each value 0..n-1 written as one token (-1 where the tokenizer splits
    it). A run of such tokens is read as one number, digit group by digit group ("1", "2", "7" is 127). Ids
    are distinct, and at least one is not -1."""

    computer_copy_ordinals: int = 16
    """Ordinal embeddings of the copy parse: the k-th number token of a sequence gets embedding k (numbers past
    the last share it)."""

    computer_copy_from_end: bool = False
    """Count the copy parse's ordinals back from the position: the last number written before it gets embedding 0,
    the one before that 1, …. The operands of a question are its last numbers, wherever they stand, so a number
    written earlier ("Question 3: what is 345 plus 12?", a date in a chat template's system prompt) does not move
    them (train.py's prior then points by the ordinal alone: `recipes.point_by_ordinal_alone`). False: from the
    sequence's start (the first number gets 0), which a list's k-th element needs."""

    computer_copy_dim: int = 32
    """Width of the copy parse's queries and keys."""

    computer_ops: list[str] = field(default_factory=lambda: list(OP_NAMES))
    """The instruction set the program tensors index, in order (dcomp_isa.OP_NAMES when the model was built): a
    checkpoint from another instruction set fails to load with a message naming the ops that differ."""
    trained_sequence_length: int | None = None
    """Longest sequence (tokens) the model was trained on, recorded by the trainer; the model warns on a longer
    input, whose answers are unreliable. None: `max_position_embeddings` is the limit."""

    def __post_init__(self, **kwargs):
        _warn_misspelt_fields(kwargs)
        super().__post_init__(**kwargs)
        # Keep entries already there: a config loaded from the Hub names them "<repo>--module.Class".
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        for name in REAL_FIELDS:  # `1` in a JSON file or a call means 1.0 (checked by the assignment)
            setattr(self, name, float(getattr(self, name)))
        self.check_computer()

    def __setattr__(self, name, value):
        """An assignment to a `computer_*` / `library_*` field of a built config re-runs `check_computer`; when that
        fails the field keeps its old value. (Before `PreTrainedConfig.__post_init__` has finished, fields are
        set one by one and checked together at its end.)"""
        checked = name.startswith(COMPUTER_PREFIXES) and self.__dict__.get("_post_init_done", False)
        previous = self.__dict__.get(name)
        super().__setattr__(name, value)
        if checked and not self.__dict__.get("_computer_checks_deferred", False):
            try:
                self.check_computer()
            except ValueError:
                super().__setattr__(name, previous)
                raise

    def update(self, config_dict: dict) -> None:
        """`PreTrainedConfig.update`, checked once for the whole change; when the check fails nothing changes."""
        previous = dict(self.__dict__)
        self.__dict__["_computer_checks_deferred"] = True
        try:
            super().update(config_dict)
            del self.__dict__["_computer_checks_deferred"]
            self.check_computer()
        except ValueError:
            self.__dict__.clear()
            self.__dict__.update({key: value for key, value in previous.items() if key != "_computer_checks_deferred"})
            raise

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """`PreTrainedConfig.from_dict`, with `computer_*` / `library_*` keyword overrides (e.g. from
        `from_pretrained(folder, computer_layer=5)`) built into the config and checked with the rest, instead of
        assigned one by one afterwards."""
        overrides = {key: kwargs.pop(key) for key in list(kwargs) if key.startswith(COMPUTER_PREFIXES)}
        return super().from_dict({**config_dict, **overrides}, **kwargs)

    @property
    def eos_token_ids(self) -> list[int]:
        """`eos_token_id` as a list (a Llama config holds one id, several, or None): what the read-out's end mark
        writes at first (`end_mark_prior`)."""
        eos = self.eos_token_id
        return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)

    @classmethod
    def field_default(cls, name: str):
        """The value field `name` takes when config.json leaves it out (as a config saved before it existed)."""
        spec = {spec.name: spec for spec in fields(cls)}[name]
        if spec.default is MISSING:
            assert spec.default_factory is not MISSING, name  # every field of this config has a default
            return spec.default_factory()
        return spec.default

    def check_computer(self) -> None:
        """Raises `ValueError` naming the first field that cannot work (also run after an install)."""
        n, registers = self.computer_values, self.computer_registers
        binary = self.computer_encoding == "binary"
        # Line and memory addresses are non-negative values: fewer than this many of them.
        address_limit = 2 ** (self.computer_bits - 1) if binary else n

        def require(condition: bool, name: str, message: str) -> None:
            if not condition:
                raise ValueError(f"{name}={getattr(self, name)!r}: {message}")

        require(
            0 <= self.computer_layer < self.num_hidden_layers,
            "computer_layer",
            f"must be in [0, num_hidden_layers={self.num_hidden_layers})",
        )
        require(
            self.computer_encoding in COMPUTER_ENCODINGS, "computer_encoding", f"must be one of {COMPUTER_ENCODINGS}"
        )
        require(2 <= n <= MAX_VALUES, "computer_values", f"n must be in [2, MAX_VALUES={MAX_VALUES}]")
        require(MIN_BITS <= self.computer_bits <= MAX_BITS, "computer_bits", f"must be in [{MIN_BITS}, {MAX_BITS}]")
        # at least one data register below the return stack and one return-stack register
        require(registers >= 2, "computer_registers", "must be at least 2 (computer_call_depth >= 1 of them)")
        for name in REAL_FIELDS:
            require(math.isfinite(getattr(self, name)), name, "must be a finite number")
        require(self.computer_program_lines >= 1, "computer_program_lines", "must be at least 1")
        require(
            address_limit >= self.computer_program_lines + 1,
            "computer_bits" if binary else "computer_values",
            f"must leave more than computer_program_lines={self.computer_program_lines} non-negative values (line "
            "addresses are values)",
        )
        require(self.computer_alu in COMPUTER_ALUS, "computer_alu", f"must be one of {COMPUTER_ALUS}")
        require(
            self.computer_alu != "circuit" or n & (n - 1) == 0,
            "computer_values",
            "the circuit ALU needs n a power of two",
        )
        require(
            1 <= self.computer_call_depth < registers,
            "computer_call_depth",
            f"must be in [1, computer_registers={registers})",
        )
        require(
            1 <= self.computer_memory_size <= address_limit,
            "computer_memory_size",
            f"must be in [1, {address_limit}] (addresses are non-negative values)",
        )
        require(
            1 <= self.computer_max_steps <= MAX_STEPS, "computer_max_steps", f"must be in [1, MAX_STEPS={MAX_STEPS}]"
        )
        require(0.0 < self.computer_halt_threshold <= 1.0, "computer_halt_threshold", "must be in (0, 1]")
        require(self.computer_lanes >= 1, "computer_lanes", "must be at least 1")
        require(
            len(self.library_programs) == len(self.library_entry_points),
            "library_entry_points",
            f"needs one entry point per program in library_programs ({len(self.library_programs)})",
        )
        require(
            len(set(self.library_programs)) == len(self.library_programs),
            "library_programs",
            "program names must be unique",
        )
        require(all(name for name in self.library_programs), "library_programs", "program names must be non-empty")
        require(
            all(0 <= line < self.computer_program_lines for line in self.library_entry_points),
            "library_entry_points",
            f"must be lines in [0, computer_program_lines={self.computer_program_lines})",
        )
        data_registers = registers - self.computer_call_depth  # the top call_depth registers are the return stack
        require(
            len(self.library_input_registers) > 0 or self.library_memory_inputs > 0,
            "library_input_registers",
            "the computer needs at least one input (a register or library_memory_inputs)",
        )
        require(
            all(0 <= r < data_registers for r in self.library_input_registers),
            "library_input_registers",
            f"must be registers in [0, {data_registers}) (computer_registers - computer_call_depth)",
        )
        require(
            len(set(self.library_input_registers)) == len(self.library_input_registers),
            "library_input_registers",
            "registers must be distinct",
        )
        require(
            0 <= self.library_memory_inputs <= self.computer_memory_size,
            "library_memory_inputs",
            f"must be in [0, computer_memory_size={self.computer_memory_size}]",
        )
        require(
            0 <= self.library_output_register < registers,
            "library_output_register",
            f"must be a register in [0, computer_registers={registers})",
        )
        require(
            self.library_count_register == -1 or self.library_count_register in self.library_input_registers,
            "library_count_register",
            "must be -1 or one of library_input_registers",
        )
        require(
            self.library_count_register == -1 or self.computer_parse == "copy",
            "library_count_register",
            'counting the written numbers needs computer_parse="copy" (its number tokens)',
        )
        require(
            not self.library_list_programs or self.library_count_register != -1,
            "library_list_programs",
            "a list answer's length is the count: give library_count_register",
        )
        require(
            not self.library_programs or set(self.library_list_programs) <= set(self.library_programs),
            "library_list_programs",
            f"must be programs of library_programs {self.library_programs}",
        )
        require(
            not (self.library_list_programs and self.computer_output == "tokens")
            or bool(self.computer_list_separator_ids),
            "computer_list_separator_ids",
            "the read-out writes a list answer with separators between its numbers: give them",
        )
        require(
            all(
                0 <= token < self.vocab_size
                for token in [*self.computer_list_separator_ids, *self.computer_list_negative_separator_ids]
            ),
            "computer_list_separator_ids",
            f"must be token ids in [0, vocab_size={self.vocab_size})",
        )
        require(self.computer_output in COMPUTER_OUTPUTS, "computer_output", f"must be one of {COMPUTER_OUTPUTS}")
        require(self.computer_selection_temperature > 0, "computer_selection_temperature", "must be > 0")
        require(self.computer_parse in COMPUTER_PARSES, "computer_parse", f"must be one of {COMPUTER_PARSES}")
        require(
            self.computer_parse != "copy" or binary or len(self.computer_number_token_ids) == n,
            "computer_number_token_ids",
            f"the copy parse needs one token id per value (n={n}), got {len(self.computer_number_token_ids)}",
        )
        require(
            all(-1 <= token < self.vocab_size for token in self.computer_number_token_ids),
            "computer_number_token_ids",
            f"must be token ids in [0, vocab_size={self.vocab_size}) or -1 (none)",
        )
        tokens = [token for token in self.computer_number_token_ids if token != -1]
        require(
            not self.computer_number_token_ids or bool(tokens),
            "computer_number_token_ids",
            "all are -1: no value is written as one token, so the copy parse could read nothing",
        )
        repeated = sorted({token for token in tokens if tokens.count(token) > 1})
        require(not repeated, "computer_number_token_ids", f"token ids {repeated} stand for more than one value")
        require(
            not (self.computer_parse == "copy" and binary) or bool(self.computer_digit_tokens),
            "computer_digit_tokens",
            "the binary copy parse reads numbers from the tokenizer's number tokens: give them",
        )
        require(
            self.computer_output != "tokens" or bool(self.computer_digit_tokens),
            "computer_digit_tokens",
            'computer_output="tokens" writes numbers with the tokenizer\'s number tokens: give them',
        )
        _check_digit_tokens(self.computer_digit_tokens, self.vocab_size)
        require(
            all(0 <= token < self.vocab_size for token in self.computer_minus_token_ids),
            "computer_minus_token_ids",
            f"must be token ids in [0, vocab_size={self.vocab_size})",
        )
        group = set(self.computer_group_separator_ids)
        require(
            all(0 <= token < self.vocab_size for token in group),
            "computer_group_separator_ids",
            f"must be token ids in [0, vocab_size={self.vocab_size})",
        )
        number_symbols = {*self.computer_digit_tokens.values(), *self.computer_minus_token_ids}
        overlap = sorted(group & number_symbols)
        require(not overlap, "computer_group_separator_ids", f"token ids {overlap} write digits or a minus")
        plus = set(self.computer_plus_token_ids)
        require(
            all(0 <= token < self.vocab_size for token in plus),
            "computer_plus_token_ids",
            f"must be token ids in [0, vocab_size={self.vocab_size})",
        )
        overlap = sorted(plus & (number_symbols | group))
        require(not overlap, "computer_plus_token_ids", f"token ids {overlap} write digits, a minus or a separator")
        stray = sorted(set(self.computer_joined_minus_token_ids) - set(self.computer_minus_token_ids))
        require(not stray, "computer_joined_minus_token_ids", f"token ids {stray} are not in computer_minus_token_ids")
        symbols = self.computer_joined_minus_symbol_ids
        require(
            not symbols or len(symbols) == len(self.computer_joined_minus_token_ids),
            "computer_joined_minus_symbol_ids",
            f"has {len(symbols)} entries for {len(self.computer_joined_minus_token_ids)} joined minus tokens",
        )
        require(
            all(-1 <= token < self.vocab_size for token in symbols),
            "computer_joined_minus_symbol_ids",
            f"must be token ids in [0, vocab_size={self.vocab_size}) or -1",
        )
        require(self.computer_trigger_context >= 0, "computer_trigger_context", "must be >= 0")
        require(0.0 <= self.computer_trigger_dropout < 1.0, "computer_trigger_dropout", "must be in [0, 1)")
        require(
            self.computer_trigger_dropout == 0.0 or self.computer_trigger_context > 0,
            "computer_trigger_dropout",
            "drops token-context logits: it needs computer_trigger_context > 0",
        )
        require(self.computer_trigger_numbers >= 0, "computer_trigger_numbers", "must be >= 0")
        require(
            self.computer_trigger_numbers == 0 or self.computer_output == "tokens",
            "computer_trigger_numbers",
            'counts numbers for the token read-out\'s trigger: it needs computer_output="tokens"',
        )
        lead = self.computer_lead_token_id
        require(
            lead is None or self.computer_output == "tokens",
            "computer_lead_token_id",
            'a lead token is written by the token read-out: it needs computer_output="tokens"',
        )
        lead_minus = self.computer_lead_minus_token_id
        require(
            lead_minus is None or (lead is not None and lead_minus in self.computer_minus_token_ids),
            "computer_lead_minus_token_id",
            "must be one of computer_minus_token_ids, with a computer_lead_token_id",
        )
        require(
            self.computer_output != "tokens" or all(0 <= token < self.vocab_size for token in self.eos_token_ids),
            "eos_token_id",
            f"the read-out's end mark writes EOS: must be token ids in [0, vocab_size={self.vocab_size})",
        )
        require(
            lead is None or 0 <= lead < self.vocab_size,
            "computer_lead_token_id",
            f"must be a token id in [0, vocab_size={self.vocab_size}), got {lead}",
        )
        require(
            0.0 < self.computer_trigger_threshold < 1.0, "computer_trigger_threshold", "must be a probability in (0, 1)"
        )
        lead_threshold = self.computer_lead_threshold
        require(
            lead_threshold is None or (isinstance(lead_threshold, (int, float)) and 0.0 < lead_threshold < 1.0),
            "computer_lead_threshold",
            f"must be None or a probability in (0, 1), got {lead_threshold!r}",
        )
        require(
            lead_threshold is None or lead is not None,
            "computer_lead_threshold",
            "is the lead head's threshold: it needs a computer_lead_token_id",
        )
        window = self.computer_own_text_window
        require(window is None or window >= 0, "computer_own_text_window", f"must be None or >= 0, got {window}")
        require(
            window is None or self.computer_output == "tokens",
            "computer_own_text_window",
            'is where the token read-out\'s trigger answers: it needs computer_output="tokens"',
        )
        require(self.computer_selection_context >= 0, "computer_selection_context", "must be >= 0")
        require(
            self.computer_selection_context == 0 or self.computer_output == "tokens",
            "computer_selection_context",
            'the selection\'s token votes need computer_output="tokens", which keeps the token ids',
        )
        boundaries = self.computer_selection_boundary_ids
        require(
            not boundaries or self.computer_selection_context > 0,
            "computer_selection_boundary_ids",
            "bound the selection window: they need computer_selection_context > 0",
        )
        require(
            all(type(token) is int and 0 <= token < self.vocab_size for token in boundaries),
            "computer_selection_boundary_ids",
            f"must be token ids in [0, vocab_size={self.vocab_size})",
        )
        require(0.0 <= self.computer_selection_dropout < 1.0, "computer_selection_dropout", "must be in [0, 1)")
        require(
            isinstance(self.computer_selection_hidden_votes, bool), "computer_selection_hidden_votes", "must be a bool"
        )
        require(
            not self.computer_selection_hidden_votes or self.computer_selection_context > 0,
            "computer_selection_hidden_votes",
            "votes over the selection window: it needs computer_selection_context > 0",
        )
        layers = self.computer_selection_vote_layers
        require(
            isinstance(layers, list) and all(type(layer) is int for layer in layers),  # bool is an int subclass
            "computer_selection_vote_layers",
            f"must be a list of layer indices, got {layers!r}",
        )
        require(
            list(layers) == sorted(set(layers)) and all(0 <= layer <= self.computer_layer for layer in layers),
            "computer_selection_vote_layers",
            f"must be ascending, distinct layers in [0, computer_layer={self.computer_layer}], got {layers}",
        )
        require(
            not layers or self.computer_selection_hidden_votes,
            "computer_selection_vote_layers",
            "are the layers the hidden votes read: it needs computer_selection_hidden_votes",
        )
        require(
            self.computer_selection_dropout == 0.0 or self.computer_selection_context > 0,
            "computer_selection_dropout",
            "drops token votes: it needs computer_selection_context > 0",
        )
        require(self.computer_copy_ordinals >= 1, "computer_copy_ordinals", "must be at least 1")
        require(self.computer_copy_dim >= 1, "computer_copy_dim", "must be at least 1")
        require(
            not self.computer_copy_from_end or self.computer_parse == "copy",
            "computer_copy_from_end",
            'orders the copy parse\'s ordinals: it needs computer_parse="copy"',
        )
        require(
            list(self.computer_ops) == list(OP_NAMES),
            "computer_ops",
            f"the checkpoint's instruction set differs from dcomp_isa's ({_isa_difference(self.computer_ops)})",
        )
        require(
            self.trained_sequence_length is None or self.trained_sequence_length >= 1,
            "trained_sequence_length",
            "must be at least 1 (or None)",
        )


def _check_digit_tokens(digit_tokens: dict, vocab_size: int) -> None:
    """`computer_digit_tokens`: digit strings to distinct ids in the vocabulary, with every string of each length
    up to the longest (the read-out writes any chunk of that length, leading zeros included)."""
    where = "computer_digit_tokens"
    if not digit_tokens:
        return
    bad = [key for key in digit_tokens if not (key.isascii() and key.isdigit())]
    if bad:
        raise ValueError(f"{where}: keys must be digit strings, got {bad[:5]}")
    outside = [key for key, token in digit_tokens.items() if not 0 <= token < vocab_size]
    if outside:
        raise ValueError(f"{where}: the ids of {outside[:5]} are not in [0, vocab_size={vocab_size})")
    tokens = list(digit_tokens.values())
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"{where}: one token id stands for two digit strings")
    longest = max(map(len, digit_tokens))
    for length in range(1, longest + 1):
        missing = [f"{value:0{length}d}" for value in range(10**length) if f"{value:0{length}d}" not in digit_tokens]
        if missing:
            raise ValueError(
                f"{where}: strings of up to {longest} digits are given, but {len(missing)} of length {length} are "
                f"missing (e.g. {missing[:3]}): give every string of each length, or only the shorter lengths"
            )


def _isa_difference(ops) -> str:
    """What a checkpoint's op list has that dcomp_isa.OP_NAMES has not, and the other way round."""
    ops = list(ops)
    missing = [op for op in OP_NAMES if op not in ops]
    extra = [op for op in ops if op not in OP_NAMES]
    parts = [f"not in the checkpoint: {', '.join(missing)}"] if missing else []
    parts += [f"unknown to this code: {', '.join(extra)}"] if extra else []
    return "; ".join(parts) or f"the same ops in another order; this code has {', '.join(OP_NAMES)}"


def _warn_misspelt_fields(kwargs: dict) -> None:
    """Warns about keywords that are no field but look like a misspelt `computer_*` / `library_*` one (unknown
    keywords are otherwise kept as plain attributes, as transformers does)."""
    fields = [name for name in LlamaDCompConfig.__dataclass_fields__ if name.startswith(COMPUTER_PREFIXES)]
    for key in kwargs:
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.8)
        if key.startswith(COMPUTER_PREFIXES) or close:
            hint = f"; did you mean {close[0]!r}?" if close else ""
            warnings.warn(f"LlamaDCompConfig has no field {key!r}: it is ignored{hint}", UserWarning, stacklevel=4)


LlamaDCompConfig.register_for_auto_class()

__all__ = ["LlamaDCompConfig"]
