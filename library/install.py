"""Installing a compiled library into a LlamaDComp model, converting a Llama, and explaining computer traces.

Compile time: this module may import anything in `library/`; the model's run-time files never import it. The
model side of an install is `LlamaDCompPreTrainedModel.set_library` (buffers + config fields + fingerprint).

    from library.install import from_llama, install_library, explain
    model = from_llama(llama, computer_layer=1, library=["add", "sub", "fib"], tokenizer=tokenizer,
                       computer_values=128)
    print(explain(model.trace_computer(input_ids), model))
    save_model_with_tokenizer(model, tokenizer, "checkpoint")  # the model and its tokenizer, one folder
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from configuration_llama_dcomp import LlamaDCompConfig
from modeling_llama_dcomp import ComputerTrace, LlamaDCompForCausalLM, LlamaDCompPreTrainedModel

from .compiler import decompile
from .compiling import CompiledLibrary, compile_library
from .program import Program
from .python import python_library
from .stdlib import LinkedLibrary

# Items may also be Python functions: function objects, `.py` paths or source text (library/python, docs/PYTHON.md).
LibrarySpec = LinkedLibrary | Mapping[str, str | Path | Program | Callable] | Sequence[str | Path | Callable]
# Config entries of a Llama that describe its checkpoint, not its architecture: not carried into the new config.
_NOT_CARRIED = ("quantization_config", "model_type", "architectures", "auto_map", "transformers_version", "dtype")


def compile_for(library: LibrarySpec, config: LlamaDCompConfig) -> CompiledLibrary:
    """`compiling.compile_library` of a `LinkedLibrary`, standard program names or `{name: source or Program}`,
    for the config's machine (n values or B bits, registers, call depth). Python functions (function objects,
    `.py` paths or source text; docs/PYTHON.md) may stand next to them: they are compiled for that machine first."""
    bits = config.computer_bits if config.computer_encoding == "binary" else None
    machine = dict(n=config.computer_values, num_registers=config.computer_registers, bits=bits)
    if not isinstance(library, LinkedLibrary):
        library = python_library(
            library, memory_size=config.computer_memory_size, call_depth=config.computer_call_depth, **machine
        )
    return compile_library(library, call_depth=config.computer_call_depth, **machine)


def install_library(model: LlamaDCompPreTrainedModel, library: LibrarySpec) -> LinkedLibrary:
    """(Re)compiles `library` for the model's machine and writes it into the model: the program-tensor buffers
    and the config's library fields (`computer_program_lines`, `computer_lanes`, `library_programs`,
    `library_entry_points`, `library_fingerprint`). The selection head keeps its rows of programs kept by
    name; new programs get fresh rows. Returns the linked library."""
    compiled = compile_for(library, model.config)
    model.set_library(compiled.tensors, list(compiled.names), list(compiled.entry_points.values()))
    return compiled.linked


# A minus after spaces ("-", " -"), and one joined to symbols that stand before a sign, not after an operand: an
# operator, an opening bracket or quote, a separator, another minus ("*-", "//-", "=-", "(-", ",-", "--": "5--3" is
# 5 - (-3)); not ")-" or "]-" (an operand ends there: "(3)-2" is a subtraction) and not "+/-"; but ")--" and "]--"
# (LLaMA-3 writes "(3)--2" as "(", "3", ")--", "2": the operator, then the sign of -2).
BARE_MINUS = r" *[-\u2212]"  # "-" or the typographic minus "−"
PLUS = r" *\+"
JOINED_MINUS = r" *(?:(?!\+/)[\[({*/+=,:;%^|~!\"'-]{1,2}|[)\]]-)-"


def number_token_ids(tokenizer, n: int) -> list[list[int]]:
    """Token ids of the numbers "0" … "n-1" (no special tokens), one list per value: a single id where the
    tokenizer has the number as one token, several where it splits it (their embeddings are averaged)."""
    ids = [tokenizer.encode(str(value), add_special_tokens=False) for value in range(n)]
    empty = [value for value, tokens in enumerate(ids) if not tokens]
    if empty:
        raise ValueError(f"the tokenizer encodes the numbers {empty} as no tokens")
    return ids


def number_vocabulary(tokenizer) -> tuple[dict[str, int], list[int], list[int]]:
    """The tokenizer's number tokens, as `LlamaDCompConfig.computer_digit_tokens`, `computer_minus_token_ids` and
    `computer_joined_minus_token_ids` want them: every token that decodes to a string of ASCII digits, of each length
    up to the longest length whose 10^L strings are all tokens (so any chunk can be written); the tokens that
    decode to "-" (or the typographic "−") after optional spaces and at most two symbols that can stand before a
    sign, the plain "-" first (the one the read-out writes after a prompt that ends in a space); and those of them
    with a symbol
    (`JOINED_MINUS`: LLaMA-3 and SmolLM2 write "[-5" as "[-", "5" and "12*-7" as "12", "*-", "7")."""
    digits: dict[str, int] = {}
    minus: list[tuple[int, bool, int]] = []
    joined: list[int] = []
    for token in range(len(tokenizer)):
        text = tokenizer.decode([token])
        if text.isascii() and text.isdigit():
            digits.setdefault(text, token)
        elif (is_joined := bool(re.fullmatch(JOINED_MINUS, text))) or re.fullmatch(BARE_MINUS, text):
            minus.append((len(text), "\u2212" in text, token))  # the ASCII "-" before "−": the one written
            joined += [token] if is_joined else []
    longest = 0
    while all(f"{value:0{longest + 1}d}" in digits for value in range(10 ** (longest + 1))):
        longest += 1
    if longest == 0:
        raise ValueError("the tokenizer has no single-token digits 0-9: it cannot read or write numbers token-wise")
    chunks = {text: token for text, token in digits.items() if len(text) <= longest}
    return chunks, [token for *_, token in sorted(minus)], sorted(joined)


def joined_minus_symbols(tokenizer, joined: list[int]) -> list[int]:
    """For each joined minus token (`number_vocabulary`'s third list), the token that writes its symbol alone ("*"
    for "*-", " (" for " (-"), or -1 where the tokenizer writes that symbol with more than one token
    (`computer_joined_minus_symbol_ids`)."""
    symbols = []
    for token in joined:
        ids = tokenizer.encode(tokenizer.decode([token])[:-1], add_special_tokens=False)
        symbols.append(ids[0] if len(ids) == 1 else -1)
    return symbols


def plus_signs(tokenizer) -> list[int]:
    """The tokens that decode to "+" after optional spaces (`computer_plus_token_ids`: LLaMA-3 and SmolLM2 write
    "+5" and "times +5" with "+" and " +")."""
    return [token for token in range(len(tokenizer)) if re.fullmatch(PLUS, tokenizer.decode([token]))]


def turn_boundaries(tokenizer) -> list[int]:
    """The tokenizer's special added tokens (`computer_selection_boundary_ids`): a chat template opens each turn with
    one ("<|im_start|>", "<|start_header_id|>"), so the last before a question's numbers starts the question's turn.
    (`all_special_ids` holds only the named ones: BOS, EOS, padding.)"""
    return sorted(token for token, added in tokenizer.added_tokens_decoder.items() if added.special)


def group_separators(tokenizer) -> list[int]:
    """The token the tokenizer writes between digit groups (`computer_group_separator_ids`; LLaMA-3 and SmolLM2:
    ","), from how it tokenizes "1,000"; none when it does not write "," as a token of its own there."""
    one, ids = tokenizer.encode("1", add_special_tokens=False), tokenizer.encode("1,000", add_special_tokens=False)
    separator = ids[len(one) : len(one) + 1]
    if ids[: len(one)] != one or not separator or tokenizer.decode(separator) != ",":
        return []
    return separator


def list_separators(tokenizer) -> tuple[list[int], list[int]]:
    """The tokens the tokenizer writes between two numbers of a list ", "-joined: before a non-negative number and
    before a negative one, its minus included (`computer_list_separator_ids`, `computer_list_negative_separator_ids`;
    LLaMA-3 and SmolLM2: ",", " " and ",", " -"), from how it tokenizes "1, 1" and "1, -1"."""
    one = tokenizer.encode("1", add_special_tokens=False)
    found = []
    for text in ("1, 1", "1, -1"):
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(one) != 1 or ids[:1] != one or ids[-1:] != one or len(ids) < 3:
            raise ValueError(f"the tokenizer writes {text!r} as {ids}: no separator tokens between the numbers")
        found.append(ids[1:-1])
    return found[0], found[1]


def from_llama(
    llama: LlamaForCausalLM,
    *,
    computer_layer: int,
    library: LibrarySpec,
    tokenizer=None,
    **computer_kwargs,
) -> LlamaDCompForCausalLM:
    """A `LlamaDCompForCausalLM` with `llama`'s weights and buffers (copied, bit for bit; tied embeddings stay
    tied) and `library` installed after decoder layer `computer_layer`. Any `LlamaForCausalLM` converts: GQA,
    an explicit `head_dim`, attention/MLP biases, scaled rope (LLaMA-3's "llama3"), any dtype (docs/SCALING.md).

    `computer_kwargs` are further `LlamaDCompConfig` fields (`computer_encoding`, `computer_values`,
    `computer_registers`, `library_input_registers`, …). With a `tokenizer`, a unit computer's W_out starts from
    the embeddings of the number tokens "0" … "n-1" (`init_output_from_embeddings`), and a binary one or one with
    `computer_output="tokens"` gets the tokenizer's number tokens (`number_vocabulary`, `joined_minus_symbols`),
    group separator (`group_separators`) and plus signs (`plus_signs`) unless they are given.
    The gate starts at `computer_gate_init` (0.0: the logits equal
    the Llama's exactly). The model is built in the Llama's dtype and moved to its device; the program buffers
    stay float32."""
    base = {key: value for key, value in llama.config.to_dict().items() if key not in _NOT_CARRIED}
    numbers_needed = (
        computer_kwargs.get("computer_encoding") == "binary" or computer_kwargs.get("computer_output") == "tokens"
    )
    if tokenizer is not None and numbers_needed and "computer_digit_tokens" not in computer_kwargs:
        digits, minus, joined = number_vocabulary(tokenizer)
        computer_kwargs = {
            **computer_kwargs,
            "computer_digit_tokens": digits,
            "computer_minus_token_ids": minus,
            "computer_joined_minus_token_ids": joined,
            "computer_joined_minus_symbol_ids": joined_minus_symbols(tokenizer, joined),
            "computer_group_separator_ids": computer_kwargs.get(
                "computer_group_separator_ids", group_separators(tokenizer)
            ),
            "computer_plus_token_ids": computer_kwargs.get("computer_plus_token_ids", plus_signs(tokenizer)),
        }
    if tokenizer is not None and computer_kwargs.get("library_list_programs"):
        if "computer_list_separator_ids" not in computer_kwargs:
            separator, negative = list_separators(tokenizer)
            computer_kwargs = {
                **computer_kwargs,
                "computer_list_separator_ids": separator,
                "computer_list_negative_separator_ids": negative,
            }
    config = LlamaDCompConfig(**{**base, **computer_kwargs, "computer_layer": computer_layer})
    compiled = compile_for(library, config)
    tensors = compiled.tensors
    config.update(
        {
            "computer_program_lines": tensors.lines,
            "computer_lanes": tensors.lanes,
            "library_programs": list(compiled.names),
            "library_entry_points": list(compiled.entry_points.values()),
        }
    )
    config._attn_implementation = llama.config._attn_implementation  # the same attention kernel: the same logits

    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(llama.dtype)  # parameters in the Llama's dtype; program buffers are float32 anyway
    try:
        model = LlamaDCompForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    missing, unexpected = model.load_state_dict(llama.state_dict(), strict=False)
    not_computer = [key for key in missing if ".computer." not in key]
    if not_computer or unexpected:
        raise ValueError(f"the Llama's weights do not fit: missing {not_computer}, unexpected {unexpected}")
    for name, buffer in llama.named_buffers():  # non-persistent ones too: the rotary inv_freq, bf16 after `.to`
        module_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(module_name), leaf, buffer.detach().clone())
    model.set_library(tensors, config.library_programs, config.library_entry_points)
    if tokenizer is not None and config.computer_encoding == "unit":
        model.init_output_from_embeddings(number_token_ids(tokenizer, config.computer_values))
    model.generation_config = copy.deepcopy(llama.generation_config)
    return model.to(llama.device)


def save_model_with_tokenizer(
    model: LlamaDCompPreTrainedModel, tokenizer, directory: str | os.PathLike, **save_kwargs
) -> Path:
    """Saves `model` (`save_pretrained(directory, **save_kwargs)`: weights, config, code files) and its `tokenizer`
    (`tokenizer.save_pretrained(directory)`: tokenizer.json and tokenizer_config.json) into one folder, so that
    `AutoTokenizer.from_pretrained(directory)` gives the tokenizer the model was built with (e.g. the LLaMA-3
    tokenizer given to `from_llama`, whose number tokens initialised W_out). `from_llama` does not save: call
    this (or both `save_pretrained`s) after it. Raises ValueError, before writing anything, when the tokenizer
    has ids beyond the model's embedding table (`len(tokenizer) > config.vocab_size`). Returns the folder.

    To publish, push both to the same repository: `model.push_to_hub(repo_id)` and
    `tokenizer.push_to_hub(repo_id)`."""
    vocab_size = model.config.vocab_size
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {vocab_size}: "
            "it is not this model's tokenizer"
        )
    directory = Path(directory)
    model.save_pretrained(directory, **save_kwargs)
    tokenizer.save_pretrained(directory)
    return directory


def explain(traces: Sequence[ComputerTrace], model: LlamaDCompPreTrainedModel) -> str:
    """Text for `model.trace_computer(...)`: per position, the selected programs, the numbers of the prompt the
    computer cannot represent (when traced with the tokenizer), the parsed inputs, the result, halting and steps,
    and the decompiled listing of the most likely program (uncertain choices annotated)."""
    program, names, entry_points = model.get_library()
    labels = dict(zip(names, entry_points))
    bits = model.config.computer_bits if model.config.computer_encoding == "binary" else None
    listing = decompile(program, labels=labels, name="library", bits=bits).splitlines()
    blocks = []
    for trace in traces:
        selected = trace.programs[0][0]
        lines = [
            f"[batch {trace.batch_index}, position {trace.position}] "
            + ", ".join(f"{name} ({p:.2f})" for name, p in trace.programs),
            *(f"  r{register} = {_values(top)}" for register, top in trace.inputs.items()),
            *(f"  M[{cell}] = {_values(top)}" for cell, top in enumerate(trace.memory_inputs)),
            f"  -> r{trace.output_register} = {_values(trace.output)}; halted {trace.halted:.3f} "
            f"after {trace.steps} steps",
            f"  {selected} (lines {trace.program_lines[0]}..{trace.program_lines[1] - 1}):",
            *(f"  {line}" for line in _program_listing(listing, selected, labels)),
        ]
        if trace.unrepresentable:
            lines.insert(
                1,
                f"  ! {', '.join(trace.unrepresentable)}: numbers the computer cannot hold, so it cannot read them "
                "and this answer is not about them",
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def _values(top: Sequence[tuple[int, float]]) -> str:
    """`value (probability), …` for best-first (value, probability) pairs."""
    return ", ".join(f"{value} ({p:.2f})" for value, p in top)


def _program_listing(listing: list[str], name: str, labels: Mapping[str, int]) -> list[str]:
    """The lines of `decompile`'s library listing from label `name:` up to the next program's label."""
    starts = {f"{program}:" for program in labels}
    start = listing.index(f"{name}:")
    end = next((i for i in range(start + 1, len(listing)) if listing[i] in starts), len(listing))
    return listing[start + 1 : end]
