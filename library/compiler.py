"""Neural compiler and decompiler (paper Figure 4, Appendix E).

`compile_program` turns a `Program` into probabilistic program tensors ϱ at full certainty (one-hot
rows); `decompile` reads program tensors — compiled, trained or emitted by a controller — back as assembly,
annotating every choice that is not certain with its probabilities. `decompile(compile_program(p))`
assembles back to p.
"""

from __future__ import annotations

import dataclasses

import torch

from dcomp_circuits import bits_to_signed, int_to_bits
from dcomp_isa import OP_INDEX, OP_NAMES, OPS, OPS_BY_NAME, signed_range
from dcomp_machine import ProgramTensors

from .program import Program


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
    lines, lanes = len(program), program.lanes
    index = torch.zeros(5, lines, lanes, dtype=torch.long)  # op, a, b, out, imm
    index[0] = OP_INDEX["nop"]
    for i, line in enumerate(program.lines):
        for k, instruction in enumerate(line):
            fields = (OP_INDEX[instruction.op], instruction.a, instruction.b, instruction.out, instruction.imm)
            for field, value in enumerate(fields):
                index[field, i, k] = value
    widths = (len(OPS), num_registers, num_registers, num_registers, n)
    if int(index[1:4].max()) >= num_registers:
        raise ValueError(f"{program.name}: a register is out of range for num_registers={num_registers}")
    if int(index[4].max()) >= n:
        raise ValueError(f"{program.name}: an immediate is out of range for n={n}")
    one_hot = [torch.nn.functional.one_hot(index[f], w).to(dtype) for f, w in enumerate(widths)]
    return ProgramTensors(*one_hot)


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


def decompile(
    tensors: ProgramTensors,
    *,
    labels: dict[str, int] | None = None,
    certain: float = 0.999,
    name: str = "program",
    bits: int | None = None,
) -> str:
    """Program tensors → assembly text.

    Each line takes the most likely op and operands; a choice whose probability is below `certain` gets a
    comment with the top alternatives and their probabilities, e.g. `add r1 r2 r2  ; op: add 0.81, sub 0.19`.
    Jump/call targets inside the program are written as labels (`labels`, or `L<line>` generated for
    targets without one); targets past the end (which halt) as numbers.
    A batched (contextual) program is decompiled one example at a time: index the batch first. With `bits`
    the immediates are the binary machine's bit probabilities (`compile_program(..., bits=...)`).
    """
    if tensors.op.dim() != 3:
        raise ValueError("decompile takes one program of shape (lines, lanes, ·); index the batch first")
    names_of: dict[int, list[str]] = {}
    for label, line in (labels or {}).items():
        names_of.setdefault(line, []).append(label)
    fields = {"a": tensors.a, "b": tensors.b, "o": tensors.out, "i": tensors.imm, "l": tensors.imm}
    body = []  # (line, text, notes)
    for i in range(tensors.lines):
        lanes, notes = [], []
        for k in range(tensors.lanes):
            op_index, note = _choice(tensors.op[i, k], lambda j: OP_NAMES[j], certain)
            op = OP_NAMES[op_index]
            if note:
                notes.append(f"op: {note}")
            words = [op]
            for letter in OPS_BY_NAME[op].operands:
                prefix = "r" if letter in "abo" else ""
                if bits is not None and letter in "il":
                    value, operand_note = _bits_choice(fields[letter][i, k], certain)
                else:
                    value, operand_note = _choice(fields[letter][i, k], lambda j, p=prefix: f"{p}{j}", certain)
                if letter == "l" and value < tensors.lines:
                    if value not in names_of:
                        taken = {label for names in names_of.values() for label in names}
                        names_of[value] = [
                            next(
                                f"L{value}{'_' * j}" for j in range(len(taken) + 1) if f"L{value}{'_' * j}" not in taken
                            )
                        ]
                    words.append(names_of[value][0])
                else:
                    words.append(f"{prefix}{value}")
                if operand_note:
                    notes.append(f"{letter}: {operand_note}")
            lanes.append(" ".join(words))
        while len(lanes) > 1 and lanes[-1] == "nop":
            lanes.pop()  # padding of a parallel line (a trailing `nop` lane means the same)
        body.append((i, " | ".join(lanes), notes))

    out = [f"; {name}: decompiled, {tensors.lines} lines"]
    for i, text, notes in body:
        out.extend(f"{label}:" for label in names_of.get(i, ()))
        out.append(f"    {text}" + (f"  ; {'; '.join(notes)}" if notes else ""))
    out.extend(f"{label}:" for label in names_of.get(tensors.lines, ()))  # a label just past the end
    return "\n".join(out) + "\n"
