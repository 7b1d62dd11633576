"""Shared tiny LlamaDComp models for the PEFT, Hub and tokenizer tests (CPU, a fraction of a second to build).

The same tiny shapes as tests/test_modeling.py and tests/test_install.py (which keep their own copies): a 2-layer,
hidden-32 Llama with a 300-token vocabulary and a 16-value machine running the library add, sub, mul, fib.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from library.install import from_llama
from modeling_llama_dcomp import LlamaDCompComputer, LlamaDCompForCausalLM

REPO = Path(__file__).resolve().parents[1]
TINY_LLAMA = dict(
    vocab_size=300,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
N, REGISTERS, MEMORY, DEPTH = 16, 8, 8, 2
COMPUTER = dict(
    computer_values=N,
    computer_registers=REGISTERS,
    computer_memory_size=MEMORY,
    computer_call_depth=DEPTH,
    computer_max_steps=12,
    library_input_registers=[1, 2, 3],
)
LIBRARY = ["add", "sub", "mul", "fib"]
# Every runtime file a checkpoint carries (`save_pretrained` copies them for trust_remote_code).
CODE_FILES = (
    "configuration_llama_dcomp.py",
    "modeling_llama_dcomp.py",
    "dcomp_machine.py",
    "dcomp_alu.py",
    "dcomp_isa.py",
    "dcomp_circuits.py",
    "dcomp_numbers.py",
)


def tiny_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **overrides})).eval()


def tiny_model(gate: float = 0.5, layer: int = 1, seed: int = 0, **computer) -> LlamaDCompForCausalLM:
    """A converted tiny Llama with the test library (gate 0.5 by default, so the computer reaches the logits)."""
    llama = tiny_llama(seed)
    return from_llama(
        llama, computer_layer=layer, library=LIBRARY, **{**COMPUTER, "computer_gate_init": gate, **computer}
    ).eval()


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, TINY_LLAMA["vocab_size"], (batch, length), generator=generator)


def steer(computer: LlamaDCompComputer, program: str, inputs: dict[int, int], scale: float = 100.0) -> torch.Tensor:
    """Weights that make the computer select `program` and parse `inputs` (register → value) with certainty on
    the hidden state e_0; returns that hidden state `(1, 1, hidden)`."""
    hidden = torch.zeros(1, 1, computer.norm.weight.shape[0])
    hidden[..., 0] = 1.0
    with torch.no_grad():
        computer.select.weight.zero_()
        computer.select.weight[computer.program_names.index(program), 0] = scale
        computer.parse.weight.zero_()
        for slot, register in enumerate(computer.input_registers):
            computer.parse.weight[slot * computer.n + inputs.get(register, 0), 0] = scale
    return hidden


def library_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every buffer of every computer module (program tensors, entry points, ALU tables), by name."""
    return {name: buffer.detach().clone() for name, buffer in model.named_buffers() if ".computer." in name}


# A child process that must not be able to import the checkout: it loads the model through trust_remote_code only.
# argv: [repo]; it strips the repo from sys.path and checks that none of its modules can be imported.
NOT_IMPORTABLE_PRELUDE = textwrap.dedent(
    """
    import importlib, os, sys
    repo = os.path.realpath(sys.argv[1])
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != repo]
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "").lower()]
    for name in ("dcomp_machine", "library", "modeling_llama_dcomp", "configuration_llama_dcomp"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} is importable: the test would not prove remote code")
    """
)
