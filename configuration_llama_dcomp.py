"""Configuration of LlamaDComp: LLaMA with a differentiable computer and a neurally compiled library.

Run-time code: it travels with a checkpoint (`save_pretrained` copies it) and imports only transformers and its
siblings. Paper: Saldyt & Kambhampati, "Algorithmic Language Models with Neurally Compiled Libraries" (§3,
Figure 1): an intermediate decoder layer of LLaMA *selects* a library program and *parses* its inputs, the
differentiable computer Δ runs it, and its output is written back into the residual stream.
"""

# No `from __future__ import annotations`: @strict checks field types from the evaluated annotations.
from dataclasses import field

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig

try:
    from .dcomp_isa import DEFAULT_CALL_DEPTH, OP_NAMES
except ImportError:  # a checkout, where the run-time files are top-level modules
    from dcomp_isa import DEFAULT_CALL_DEPTH, OP_NAMES


COMPUTER_ALUS = ("table", "circuit")
COMPUTER_OUTPUTS = ("residual_add",)
COMPUTER_PARSES = ("linear", "copy")
REAL_FIELDS = ("computer_halt_threshold", "computer_gate_init", "computer_selection_temperature")
# The classes `trust_remote_code` loads from a checkpoint's own files; every LlamaDComp config carries all three
# (`save_pretrained` alone would record only the saved model's class).
AUTO_MAP = {
    "AutoConfig": "configuration_llama_dcomp.LlamaDCompConfig",
    "AutoModel": "modeling_llama_dcomp.LlamaDCompModel",
    "AutoModelForCausalLM": "modeling_llama_dcomp.LlamaDCompForCausalLM",
}


@strict
class LlamaDCompConfig(LlamaConfig):
    r"""
    A [`LlamaConfig`] plus the differentiable computer Δ and its program library Λ (paper §3, Figure 1).

    The library fields (`computer_program_lines`, `computer_lanes`, `library_programs`, `library_entry_points`,
    `library_fingerprint`) describe the compiled library stored in the model's buffers; they are written by
    `library.install.install_library` / `library.install.from_llama`, not by hand. A default config holds no
    library (no programs): such a model builds, saves and loads, but its forward raises until a library is
    installed.

    Every field is checked when the config is built; a config that cannot work raises `ValueError` naming the
    field.

    ```python
    >>> from configuration_llama_dcomp import LlamaDCompConfig
    >>> config = LlamaDCompConfig(num_hidden_layers=2, computer_layer=1, computer_values=16, computer_memory_size=8)
    ```"""

    model_type = "llama_dcomp"

    computer_layer: int = 0
    """Index (0-based) of the decoder layer after which the computer block runs; `< num_hidden_layers`."""

    computer_values: int = 128
    """n: the number of values (one-hot width, arithmetic mod n; the paper's mod-128 calculator uses 128).
    Line addresses are values, so `n > computer_program_lines`."""

    computer_registers: int = 16
    """Registers R of the machine; the top `computer_call_depth` of them form the return stack."""

    computer_memory_size: int = 32
    """Memory cells M (addresses are values, so at most n)."""

    computer_call_depth: int = DEFAULT_CALL_DEPTH
    """Depth of the return stack, i.e. how deep `call`s may nest; `< computer_registers`."""

    computer_max_steps: int = 64
    """Most interpreter steps per run (adaptive recurrence, eq. 17; the run exits early once halted)."""

    computer_halt_threshold: float | int = 0.99
    """The run stops once every position has halted with at least this probability; in (0, 1]."""

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
    """Hash of the compiled library (program tensors, program names, entry points), checked at load time so a
    checkpoint whose buffers do not match its config fails loudly. Written by the installer."""

    computer_output: str = "residual_add"
    """How the output reaches the language model: "residual_add" adds `gate * W_out(p_out)` to the residual
    stream after `computer_layer`."""

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
    it). A run of such tokens is read as one number, digit group by digit group ("1", "2", "7" is 127)."""

    computer_copy_ordinals: int = 16
    """Ordinal embeddings of the copy parse: the k-th number token of a sequence gets embedding k (numbers past
    the last share it)."""

    computer_copy_dim: int = 32
    """Width of the copy parse's queries and keys."""

    computer_ops: list[str] = field(default_factory=lambda: list(OP_NAMES))
    """The instruction set the program tensors index, in order (dcomp_isa.OP_NAMES when the model was built): a
    checkpoint from another instruction set fails to load with a message naming the ops that differ."""

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Keep entries already there: a config loaded from the Hub names them "<repo>--module.Class".
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        for name in REAL_FIELDS:  # `1` in a JSON file or a call means 1.0
            setattr(self, name, float(getattr(self, name)))
        self.check_computer()

    def check_computer(self) -> None:
        """Raises `ValueError` naming the first field that cannot work (also run after an install)."""
        n, registers = self.computer_values, self.computer_registers

        def require(condition: bool, name: str, message: str) -> None:
            if not condition:
                raise ValueError(f"{name}={getattr(self, name)!r}: {message}")

        require(
            0 <= self.computer_layer < self.num_hidden_layers,
            "computer_layer",
            f"must be in [0, num_hidden_layers={self.num_hidden_layers})",
        )
        require(n >= 2, "computer_values", "n must be at least 2")
        require(self.computer_program_lines >= 1, "computer_program_lines", "must be at least 1")
        require(
            n >= self.computer_program_lines + 1,
            "computer_values",
            f"n must exceed computer_program_lines={self.computer_program_lines} (line addresses are values)",
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
            1 <= self.computer_memory_size <= n,
            "computer_memory_size",
            f"must be in [1, computer_values={n}] (addresses are values)",
        )
        require(self.computer_max_steps >= 1, "computer_max_steps", "must be at least 1")
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
        require(self.computer_output in COMPUTER_OUTPUTS, "computer_output", f"must be one of {COMPUTER_OUTPUTS}")
        require(self.computer_selection_temperature > 0, "computer_selection_temperature", "must be > 0")
        require(self.computer_parse in COMPUTER_PARSES, "computer_parse", f"must be one of {COMPUTER_PARSES}")
        require(
            self.computer_parse != "copy" or len(self.computer_number_token_ids) == n,
            "computer_number_token_ids",
            f"the copy parse needs one token id per value (n={n}), got {len(self.computer_number_token_ids)}",
        )
        require(
            all(-1 <= token < self.vocab_size for token in self.computer_number_token_ids),
            "computer_number_token_ids",
            f"must be token ids in [0, vocab_size={self.vocab_size}) or -1 (none)",
        )
        require(self.computer_copy_ordinals >= 1, "computer_copy_ordinals", "must be at least 1")
        require(self.computer_copy_dim >= 1, "computer_copy_dim", "must be at least 1")
        require(
            list(self.computer_ops) == list(OP_NAMES),
            "computer_ops",
            f"the checkpoint's instruction set differs from dcomp_isa's ({_isa_difference(self.computer_ops)})",
        )


def _isa_difference(ops) -> str:
    """What a checkpoint's op list has that dcomp_isa.OP_NAMES has not, and the other way round."""
    ops = list(ops)
    missing = [op for op in OP_NAMES if op not in ops]
    extra = [op for op in ops if op not in OP_NAMES]
    parts = [f"not in the checkpoint: {', '.join(missing)}"] if missing else []
    parts += [f"unknown to this code: {', '.join(extra)}"] if extra else []
    return "; ".join(parts) or f"the same ops in another order; this code has {', '.join(OP_NAMES)}"


LlamaDCompConfig.register_for_auto_class()

__all__ = ["LlamaDCompConfig"]
