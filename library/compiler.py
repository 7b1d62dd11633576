"""Neural compiler and decoder (paper Figure 4, Appendix E).

`compile_program` turns a `Program` into probabilistic program tensors ϱ at full certainty (one-hot rows);
`decode` turns program tensors — compiled, trained or emitted by a controller — back into the `Program` of
their most likely choices; `decompile` is `decode` + `format_program`, annotating every choice that is not
certain with its probabilities. `decode(compile_program(p))` has p's lines (less `nop` padding lanes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch

from dcomp_circuits import bits_to_signed, int_to_bits
from dcomp_isa import OP_INDEX, OP_NAMES, OPS_BY_NAME, signed_range
from dcomp_machine import ProgramTensors

from .assembler import LABEL, format_program
from .program import Instruction, Program

# The Instruction field that each operand letter of dcomp_isa fills.
_OPERAND_FIELDS = {"a": "a", "b": "b", "o": "out", "i": "imm", "l": "imm"}


def compile_program(
    program: Program,
    *,
    n: int = 128,
    num_registers: int = 16,
    dtype: torch.dtype = torch.float32,
    bits: int | None = None,
) -> ProgramTensors:
    """Program → one-hot tensors ϱ of shape `(lines, lanes, ·)`; short lines are padded with `nop`.

    With `bits` (the binary machine) the immediates are their signed two's complement bits `(lines, lanes,
    bits)` instead of one-hot over n values."""
    if bits is not None:
        return _compile_binary(program, num_registers, dtype, bits)
    if len(program) > n - 1:
        raise ValueError(f"{program.name}: {len(program)} lines need n > {len(program)}; got n={n}")
    if program.symbols:
        where = ", ".join(f"'{symbol.name}' ({symbol.where})" for symbol in program.symbols)
        raise ValueError(f"{program.name}: unresolved symbols {where}: link the program first (stdlib.link)")
    lines, lanes = len(program), program.lanes
    index = torch.zeros(len(ProgramTensors.FIELDS), lines, lanes, dtype=torch.long)  # op, a, b, out, imm
    index[0] = OP_INDEX["nop"]
    for i, line in enumerate(program.lines):
        for k, instruction in enumerate(line):
            fields = (OP_INDEX[instruction.op], instruction.a, instruction.b, instruction.out, instruction.imm)
            for field, value in enumerate(fields):
                index[field, i, k] = value
    if int(index[1:4].max()) >= num_registers:
        raise ValueError(f"{program.name}: a register is out of range for num_registers={num_registers}")
    if int(index[4].max()) >= n:
        raise ValueError(f"{program.name}: an immediate is out of range for n={n}")
    widths = ProgramTensors.widths(n, num_registers)
    return ProgramTensors(*(torch.nn.functional.one_hot(index[f], w).to(dtype) for f, w in enumerate(widths)))


def _compile_binary(program: Program, num_registers: int, dtype: torch.dtype, bits: int) -> ProgramTensors:
    """`compile_program` for the binary machine: the unit tensors of op and registers, immediates as bits."""
    low, high = signed_range(bits)
    immediates = [instruction.imm for line in program.lines for instruction in line]
    if not all(low <= imm < high for imm in immediates) or len(program) >= high:
        raise ValueError(f"{program.name}: an immediate or line address is out of range for {bits}-bit values")
    # The immediates' one-hot width only has to hold the line addresses here; the bits replace it.
    unit = compile_program(
        dataclasses.replace(
            program, lines=tuple(tuple(dataclasses.replace(i, imm=0) for i in line) for line in program.lines)
        ),
        n=len(program) + 1,
        num_registers=num_registers,
        dtype=dtype,
    )
    imm = torch.zeros(len(program), program.lanes, dtype=torch.long)
    for i, line in enumerate(program.lines):
        for k, instruction in enumerate(line):
            imm[i, k] = instruction.imm
    return dataclasses.replace(unit, imm=int_to_bits(imm, bits, dtype))


def _choice(distribution: torch.Tensor, names, certain: float) -> tuple[int, str | None]:
    """Most likely entry of a distribution, and a note listing the alternatives if it is not certain."""
    probs, order = distribution.float().sort(descending=True)
    best = int(order[0])
    if float(probs[0]) >= certain:
        return best, None
    shown = [f"{names(int(i))} {float(p):.2f}" for p, i in zip(probs[:3], order[:3]) if float(p) >= 0.005]
    return best, ", ".join(shown)


def _bits_choice(bits: torch.Tensor, certain: float) -> tuple[int, str | None]:
    """The signed value of rounded bit probabilities, and a note when it is not certain (binary immediates)."""
    value = int(bits_to_signed(bits.float()))
    probability = float(torch.maximum(bits, 1 - bits).prod())
    return value, None if probability >= certain else f"{value} {probability:.2f} (bits read as independent)"


def _check_labels(labels: Mapping[str, int], lines: int) -> dict[str, int]:
    if not isinstance(labels, Mapping):
        raise ValueError(f"labels must map label names to line addresses, got {type(labels).__name__}")
    for label, address in labels.items():
        if not isinstance(label, str) or not LABEL.fullmatch(label):
            raise ValueError(f"bad label name {label!r} (a letter or '_', then letters, digits, '_' or '.')")
        if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= lines:
            raise ValueError(f"label {label!r} points at {address!r}, not a line address in 0..{lines}")
    return dict(labels)


def _decode(
    tensors: ProgramTensors, labels: Mapping[str, int] | None, name: str, certain: float, bits: int | None
) -> tuple[Program, list[str]]:
    """The argmax Program (trailing `nop` lanes dropped, `L<line>` labels for unnamed in-program targets) and,
    per line, a note on the choices less probable than `certain`. With `bits` the immediates are the binary
    machine's bit probabilities (`compile_program(..., bits=...)`)."""
    if tensors.op.dim() != 3:
        raise ValueError("decode takes one program of shape (lines, lanes, ·); index the batch first")
    tensors.check()
    labels = _check_labels(labels or {}, tensors.lines)
    named = set(labels.values())
    fields = tensors.fields()
    lines, notes = [], []
    for i in range(tensors.lines):
        lanes, line_notes = [], []
        for k in range(tensors.lanes):
            op_index, note = _choice(tensors.op[i, k], lambda j: OP_NAMES[j], certain)
            op = OP_NAMES[op_index]
            if note:
                line_notes.append(f"op: {note}")
            values = {}
            for letter in OPS_BY_NAME[op].operands:
                prefix = "r" if letter in "abo" else ""
                field = _OPERAND_FIELDS[letter]
                if bits is not None and letter in "il":
                    values[field], operand_note = _bits_choice(fields[field][i, k], certain)
                else:
                    values[field], operand_note = _choice(fields[field][i, k], lambda j, p=prefix: f"{p}{j}", certain)
                if operand_note:
                    line_notes.append(f"{letter}: {operand_note}")
                if letter == "l" and 0 <= values[field] < tensors.lines and values[field] not in named:
                    target = values[field]
                    label = next(
                        f"L{target}{'_' * j}" for j in range(len(labels) + 1) if f"L{target}{'_' * j}" not in labels
                    )
                    labels[label] = target
                    named.add(target)
            lanes.append(Instruction(op, **values))
        while len(lanes) > 1 and lanes[-1].op == "nop":
            lanes.pop()  # padding of a parallel line (a trailing `nop` lane means the same)
        lines.append(tuple(lanes))
        notes.append("; ".join(line_notes))
    return Program(tuple(lines), labels, name), notes


def decode(
    tensors: ProgramTensors,
    *,
    labels: Mapping[str, int] | None = None,
    name: str = "program",
    bits: int | None = None,
) -> Program:
    """Program tensors `(lines, lanes, ·)` → the `Program` of their most likely choices, with `labels` (a
    label per address for unnamed jump/call targets inside the program is added); `bits` for the binary
    machine's tensors. Raises ValueError for tensors that are not one finite program (`ProgramTensors.check`)
    and for bad labels."""
    return _decode(tensors, labels, name, 0.0, bits)[0]


def decompile(
    tensors: ProgramTensors,
    *,
    labels: Mapping[str, int] | None = None,
    certain: float = 0.999,
    name: str = "program",
    bits: int | None = None,
) -> str:
    """Program tensors → assembly text: `format_program(decode(tensors, bits=bits))`, where a choice whose
    probability is below `certain` gets a comment with the top alternatives and their probabilities, e.g.
    `add r1 r2 r2  ; op: add 0.81, sub 0.19`. Targets past the end (which halt) are written as numbers.
    A batched (contextual) program is decompiled one example at a time: index the batch first."""
    program, notes = _decode(tensors, labels, name, certain, bits)
    return format_program(program, comments=notes, title=f"{name}: decompiled, {len(program)} lines")
