"""The differentiable register machine (paper §3.2 and Appendix E, after Bunel et al. 2016).

Run-time code: it travels with a checkpoint (`save_pretrained` copies it) and imports only torch and its
siblings. Everything here is a probability mixture, so the machine runs "everything, everywhere, all at once";
with one-hot programs and inputs every step equals the exact reference interpreter (`library/interpreter.py`).

State (eq. 1): S = (M, R, c, h) — memory `(batch, memory_size, width)`, registers `(batch, num_registers,
width)`, program counter `(batch, lines)`, halting probability `(batch,)` and return-stack overflow probability
`(batch,)`, with `pc.sum(-1) + halted + overflowed == 1`.

Values have one of two encodings (Appendix C), chosen per machine; the step (eq. 2–6, 17) is the same for both
and asks the encoding only to read, mix, compute (eq. 7) and decode values:

* unit (`UnitValues`, width n): a value is a distribution over [0, n), arithmetic mod n (the table ALU);
* binary (`BinaryValues`, width bits): a value is `bits` bit probabilities of a signed two's complement integer,
  arithmetic by circuits (`dcomp_circuits.BinaryALU`); only memory addresses and jump/return targets are
  decoded to one-hot, from their bits (`dcomp_circuits.binary_to_addresses`).

See docs/ARCHITECTURE.md for the full semantics of one step.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

try:
    from .dcomp_alu import TableALU
    from .dcomp_circuits import BinaryALU, all_bits, any_bit, binary_to_addresses, bits_to_signed, int_to_bits
    from .dcomp_isa import ALU_OPS, DEFAULT_CALL_DEPTH, MAX_BITS, MIN_BITS, OP_INDEX, OPS
except ImportError:  # a checkout, where these files are top-level modules
    from dcomp_alu import TableALU
    from dcomp_circuits import BinaryALU, all_bits, any_bit, binary_to_addresses, bits_to_signed, int_to_bits
    from dcomp_isa import ALU_OPS, DEFAULT_CALL_DEPTH, MAX_BITS, MIN_BITS, OP_INDEX, OPS


_ALU_INDEX = [OP_INDEX[name] for name in ALU_OPS]
# `run` checkpoints its steps by default, CHECKPOINT_STEPS at a time, once a plain run would keep about this many
# values (512 MiB in float32; estimated as state values × max_steps × the encoding's `kept_per_state_value`): below
# it the recomputation (~1.5× the time) costs more than the memory it saves.
CHECKPOINT_MIN_ELEMENTS = 1 << 27
CHECKPOINT_STEPS = 3
_WRITE_INDEX = [i for i, op in enumerate(OPS) if op.writes_register]
# Elements of the memory-write backward's row dot products taken at once (2 MiB float32: cache-sized).
DOT_CHUNK_ELEMENTS = 1 << 19


@dataclass
class _RegisterUpdate:
    """An affine map of the register file, R ← A R + B C: A `(batch, registers, registers)`, B `(batch,
    registers, k)`, C `(batch, k, width)` (k values written). Composing the lanes' maps on these small matrices
    and applying the result once costs one register-sized product forward and backward, where lane-by-lane
    updates would write (and differentiate) the register file once per lane and stack operation."""

    keep: torch.Tensor
    rows: torch.Tensor
    values: torch.Tensor

    @staticmethod
    def identity(registers: torch.Tensor) -> _RegisterUpdate:
        batch, count, width = registers.shape
        eye = torch.eye(count, dtype=registers.dtype, device=registers.device).expand(batch, count, count)
        return _RegisterUpdate(eye, registers.new_zeros(batch, count, 0), registers.new_zeros(batch, 0, width))

    def then(self, keep: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> _RegisterUpdate:
        """This map followed by A' R + B' C': A' A R + (A' B C + B' C')."""
        return _RegisterUpdate(
            keep @ self.keep, torch.cat([keep @ self.rows, rows], -1), torch.cat([self.values, values], 1)
        )

    def apply(self, registers: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.keep, registers).baddbmm_(self.rows, self.values)


def _by_line(pc: torch.Tensor, per_line: torch.Tensor, batched: bool) -> torch.Tensor:
    """Σ_l pc_bl x_l (eq. 17's mixture of lines): pc `(batch, lines)`, x `(lines, ...)` shared by the batch (one
    matrix product, no batch copy of x), or `(batch, lines, ...)` when `batched` (a contextual program)."""
    if batched:
        return torch.einsum("bl,bl...->b...", pc, per_line)
    return (pc @ per_line.flatten(1)).view(pc.shape[0], *per_line.shape[1:])


class _Mix(torch.autograd.Function):
    """``X_i ← (1 − w_i) X_i + w_i c`` with ``w_i = p a_i`` for every row i (the memory write of eq. 3–4): X
    `(batch, rows, width)`, p `(batch,)`, a `(batch, rows)`, c `(batch, width)`.

    Exact zeros cost nothing: when no row is written (w = 0, most steps of a program whose writes are few) the
    output is X itself, forward and backward (no new state, no state-sized gradient). The backward needs the
    row-wise dot products ``d_i = g_i · (c − X_i)`` only where they meet a nonzero factor, ``∂p = Σ_i a_i d_i``
    and ``∂a_i = p d_i``, so it computes them only on those rows; ``∂X_i = (1 − w_i) g_i``, ``∂c = Σ_i w_i
    g_i``. Saves X (the state before the write, which the step that made it holds anyway) and the small p, a, c."""

    @staticmethod
    def forward(ctx, rows, p, address, value):
        weights = p[:, None] * address  # (batch, rows)
        ctx.save_for_backward(rows, p, address, value)
        ctx.written = bool(weights.any())
        if not ctx.written:
            return rows
        weights = weights[..., None]
        return (rows * (1 - weights)).addcmul_(weights, value[:, None, :])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        rows, p, address, value = ctx.saved_tensors
        weights = p[:, None] * address
        grad_rows = grad_p = grad_address = grad_value = None
        if ctx.needs_input_grad[0]:
            grad_rows = grad * (1 - weights)[..., None] if ctx.written else grad
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            needed = torch.zeros_like(address, dtype=torch.bool)  # (batch, rows): where d_i meets a nonzero factor
            if ctx.needs_input_grad[1]:
                needed |= address != 0
            if ctx.needs_input_grad[2]:
                needed |= (p != 0)[:, None]
            dots = torch.zeros_like(address)
            if bool(needed.all()):
                # In batch chunks of ~DOT_CHUNK_ELEMENTS: the difference c − X_i then stays in cache instead of
                # being a fresh state-sized tensor (measured ~2.5× faster).
                step = max(1, DOT_CHUNK_ELEMENTS // rows[0].numel())
                for start in range(0, rows.shape[0], step):
                    part = slice(start, start + step)
                    dots[part] = torch.linalg.vecdot(grad[part], value[part, None, :] - rows[part])
            elif bool(needed.any()):
                batch, row = needed.nonzero(as_tuple=True)
                dots[batch, row] = torch.linalg.vecdot(grad[batch, row], value[batch] - rows[batch, row])
            grad_p = (address * dots).sum(-1) if ctx.needs_input_grad[1] else None
            grad_address = p[:, None] * dots if ctx.needs_input_grad[2] else None
        if ctx.needs_input_grad[3] and ctx.written:
            grad_value = torch.bmm(weights[:, None, :], grad)[:, 0]
        return grad_rows, grad_p, grad_address, grad_value


class _Read(torch.autograd.Function):
    """eq. 2's read, ``r = a M``: a `(batch, lanes, cells)`, M `(batch, cells, width)`. The memory's gradient is
    skipped when a is exactly 0 (no line that may read is running): autograd's matrix product would still write
    a memory-sized zero gradient every step."""

    @staticmethod
    def forward(ctx, address, memory):
        ctx.save_for_backward(address, memory)
        return torch.bmm(address, memory)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        address, memory = ctx.saved_tensors
        grad_address = torch.bmm(grad, memory.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_memory = None
        if ctx.needs_input_grad[1] and bool(address.any()):
            # a^T g, lane by lane as outer products: with a few lanes, ~6× faster than bmm on CPU.
            grad_memory = address[:, 0, :, None] * grad[:, 0, None, :]
            for lane in range(1, address.shape[1]):
                grad_memory.addcmul_(address[:, lane, :, None], grad[:, lane, None, :])
        return grad_address, grad_memory


class _Recomputed(torch.autograd.Function):
    """Activation checkpointing of one function (see `recomputed`)."""

    @staticmethod
    def forward(ctx, fn, *tensors):
        ctx.fn = fn
        ctx.save_for_backward(*tensors)
        return fn(*tensors)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        needs = ctx.needs_input_grad[1:]
        # Leaves (parameters that `fn` may reach without its arguments) are used as they are, the rest detached.
        inputs = [
            t if t.is_leaf and t.requires_grad else t.detach().requires_grad_(need)
            for t, need in zip(ctx.saved_tensors, needs)
        ]
        with torch.enable_grad():
            outputs = ctx.fn(*inputs)
        outputs = (outputs,) if isinstance(outputs, torch.Tensor) else outputs
        pairs = [(out, g) for out, g in zip(outputs, grads) if out.requires_grad and g is not None]
        wanted = [t for t, need in zip(inputs, needs) if need]
        found = iter(
            torch.autograd.grad([out for out, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True)
            if pairs and wanted
            else [None] * len(wanted)
        )
        return (None, *(next(found) if need else None for need in needs))


def recomputed(fn, *tensors: torch.Tensor):
    """``fn(*tensors)`` (a tensor or a tuple of tensors) with activation checkpointing: when a gradient is recorded, the
    forward runs without recording anything and autograd keeps only `tensors`; the backward runs ``fn`` again
    with autograd and differentiates that. Unlike `torch.utils.checkpoint` (non-reentrant), whose first pass
    records a graph, the first pass is a plain no-grad forward. ``fn`` must compute the same values twice. Pass
    compact tensors (a view keeps its whole base alive), and pass the parameters ``fn`` uses too (a module's),
    so that they get their gradient."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _Recomputed.apply(fn, *tensors)
    return fn(*tensors)


def _state_tensors(state) -> tuple[torch.Tensor, ...]:
    return tuple(getattr(state, field.name) for field in fields(state))


@dataclass
class ProgramTensors:
    """A probabilistic program ϱ (eq. 16–17): for each line and parallel lane, distributions over the op,
    the two input registers, the output register and the immediate value.

    Shapes: `op (..., lines, lanes, num_ops)`, `a`/`b`/`out (..., lines, lanes, num_registers)`,
    `imm (..., lines, lanes, n)`; an optional leading batch dimension gives one program per example
    (a contextual program from a controller δ(θ, z), eq. 16). `FIELDS` and `widths` name the fields and
    their last dimensions once, for every module that builds, stores or checks program tensors."""

    op: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    out: torch.Tensor
    imm: torch.Tensor

    FIELDS: ClassVar[tuple[str, ...]] = ("op", "a", "b", "out", "imm")

    @staticmethod
    def widths(n: int, num_registers: int) -> tuple[int, ...]:
        """The last dimension of each field, in `FIELDS` order, for a machine with n values."""
        return (len(OPS), num_registers, num_registers, num_registers, n)

    @property
    def lines(self) -> int:
        return self.op.shape[-3]

    @property
    def lanes(self) -> int:
        return self.op.shape[-2]

    def fields(self) -> dict[str, torch.Tensor]:
        """`{field name: tensor}` in `FIELDS` order."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def map(self, function) -> ProgramTensors:
        """A ProgramTensors of `function(tensor)` applied to every field."""
        return ProgramTensors(*(function(tensor) for tensor in self.fields().values()))

    def to(self, *args, **kwargs) -> ProgramTensors:
        return self.map(lambda tensor: tensor.to(*args, **kwargs))

    def expand(self, batch_size: int) -> ProgramTensors:
        """The program with a leading batch dimension of `batch_size` (a view when it had none)."""
        return self.map(lambda tensor: tensor.expand(batch_size, *tensor.shape[-3:]))

    def check(self, n: int | None = None, num_registers: int | None = None, *, where: str = "program tensors") -> None:
        """Raises ValueError naming the field when the tensors are not one program of shape `(..., lines, lanes,
        width)`: equal leading dimensions, the widths of `widths(n, num_registers)` (inferred from `imm` and `a`
        when not given), floating point, finite, and non-negative (rows are distributions)."""
        n = self.imm.shape[-1] if n is None else n
        num_registers = self.a.shape[-1] if num_registers is None else num_registers
        leading = tuple(self.op.shape[:-1])
        for (name, tensor), width in zip(self.fields().items(), self.widths(n, num_registers)):
            if tensor.dim() < 3 or tuple(tensor.shape[:-1]) != leading or tensor.shape[-1] != width:
                raise ValueError(
                    f"{where}: field {name!r} has shape {tuple(tensor.shape)}, expected {(*leading, width)} "
                    f"(lines, lanes, width) with n={n} and num_registers={num_registers}"
                )
            if not tensor.is_floating_point():
                raise ValueError(f"{where}: field {name!r} has dtype {tensor.dtype}, expected a floating dtype")
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"{where}: field {name!r} holds NaN or infinite values")
            if bool((tensor < 0).any()):
                raise ValueError(f"{where}: field {name!r} holds negative probabilities")

    def save(self, path, metadata: dict[str, str] | None = None) -> None:
        """Writes the fields to a safetensors file (no pickle), with string `metadata`."""
        from safetensors.torch import save_file

        save_file({name: t.detach().contiguous() for name, t in self.fields().items()}, str(path), metadata=metadata)

    @classmethod
    def load(cls, path) -> tuple[ProgramTensors, dict[str, str]]:
        """Reads a file written by `save`: the tensors (checked with `check`) and the file's metadata. Raises
        ValueError naming the file when it is not a safetensors file of program tensors."""
        from safetensors import SafetensorError, safe_open

        if Path(path).is_dir():
            raise ValueError(f"{path}: is a directory, not a file of program tensors")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                names = set(handle.keys())  # safe_open has no `in`
                missing = [name for name in cls.FIELDS if name not in names]
                if missing:
                    raise ValueError(f"{path}: not compiled program tensors (missing tensors: {', '.join(missing)})")
                tensors = cls(*(handle.get_tensor(name) for name in cls.FIELDS))
        except SafetensorError as error:
            raise ValueError(f"{path}: not a safetensors file ({error})") from None
        tensors.check(where=str(path))
        return tensors, metadata


@dataclass
class MachineState:
    """S = (M, R, c, h) of eq. 1, batched, plus the probability that a `call` overflowed the return stack (the
    mass that stopped there, neither running nor halted). Values are rows of the machine's encoding."""

    memory: torch.Tensor  # (batch, memory_size, width)
    registers: torch.Tensor  # (batch, num_registers, width)
    pc: torch.Tensor  # (batch, lines)
    halted: torch.Tensor  # (batch,)
    overflowed: torch.Tensor  # (batch,)

    def decode(self, values: UnitValues | BinaryValues | None = None) -> dict[str, torch.Tensor]:
        """Most likely value of every register and memory cell, with its probability, in the encoding `values`
        (`RegisterMachine.values`; unit over the rows' width when omitted)."""
        values = UnitValues(self.registers.shape[-1]) if values is None else values
        registers, register_p = values.most_likely(self.registers)
        memory, memory_p = values.most_likely(self.memory)
        return {
            "registers": registers,
            "register_probs": register_p,
            "memory": memory,
            "memory_probs": memory_p,
            "pc": self.pc.argmax(-1),
            "halted": self.halted,
            "overflowed": self.overflowed,
        }


@dataclass
class MachineRun:
    """Result of `RegisterMachine.run`: the final state, how many steps ran, and optionally every state."""

    state: MachineState
    steps: int
    trace: list[MachineState] | None = None


def one_hot_values(values: torch.Tensor, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Unit encoding (Appendix C) of integer values: `(...,)` → `(..., n)`."""
    return nn.functional.one_hot(values.long(), n).to(dtype)


class UnitValues:
    """The unit encoding (Appendix C): a value is a distribution over [0, n); arithmetic is mod n.

    The value algebra the step asks of an encoding: `encode` integers, `addresses` (the probability of each of
    the first `size` values, and the rest), `nonzero` (the jump flag), `written_mass` (the normalisation of a
    written value), `most_likely` (read-out) and the default ALU (eq. 7); the model also asks for `mixture`
    (the copy parse) and `nll` (the answer loss)."""

    name = "unit"
    # What autograd keeps in a plain run, per state value and step (the register file, written memory, reads and
    # written values; measured on fib, docs/RESULTS.md §6): `run` uses it to decide whether to checkpoint.
    kept_per_state_value = 0.8

    def __init__(self, n: int):
        self.n = self.width = n
        self.empty = n - 1  # "no caller" on the return stack: the largest value, never a line address

    def encode(self, values: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Integers `(...,)` in [0, n) → one-hot `(..., n)`."""
        return one_hot_values(values, self.n, dtype)

    def addresses(self, values: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`(..., n)` → (P(value = k) for k < size `(..., size)`, P(value ≥ size) `(...,)`)."""
        return values[..., :size], values[..., size:].sum(-1)

    def probability_of_empty(self, values: torch.Tensor) -> torch.Tensor:
        return values[..., self.empty]

    def nonzero(self, values: torch.Tensor) -> torch.Tensor:
        return 1 - values[..., 0]

    @staticmethod
    def written_mass(values: torch.Tensor, write_probability: torch.Tensor) -> torch.Tensor:
        """The mass of an op-weighted mixture of written values: their sum (= write probability on distributions)."""
        return values.sum(-1, keepdim=True)

    def most_likely(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probability, value = values.max(-1)
        return value, probability

    def mixture(self, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Σ_t weights[..., t] · encode(values[..., t]): `weights (P, S, T)`, integers `values (P, T)` in [0, n) →
        `(P, S, n)`, each weight added at its value (no `(P, T, n)` one-hots)."""
        indices = values[:, None].expand_as(weights)
        return weights.new_zeros(*weights.shape[:2], self.n).scatter_add(-1, indices, weights)

    @staticmethod
    def nll(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """−log P(value = target): `values (..., n)`, integers `targets (...)` → `(...)`."""
        picked = values.gather(-1, targets[..., None].to(values.device)).squeeze(-1)
        return -picked.clamp_min(1e-12).log()

    def default_alu(self) -> nn.Module:
        return TableALU(self.n)

    def check_alu(self, alu: nn.Module) -> None:
        if getattr(alu, "encoding", "unit") != "unit" or alu.n != self.n:
            raise ValueError(f"the machine works on n={self.n} unit values but the ALU is {alu}")


class BinaryValues:
    """The binary encoding (Appendix C–D): a value is `bits` probabilities of the bits (least significant first)
    of a signed two's complement integer in [−2^(bits−1), 2^(bits−1)); arithmetic wraps (`dcomp_isa.alu_signed`).

    Registers and memory hold per-bit marginals, so a mixture of values keeps only its marginals (exact on sharp
    values). Addresses and targets are decoded from the bits (`binary_to_addresses`: negative values are out of
    range). "No caller" is −1 (every bit 1). Same interface as `UnitValues`."""

    name = "binary"
    # As `UnitValues.kept_per_state_value`: the circuits keep several bit-sized tensors per op.
    kept_per_state_value = 3.5

    def __init__(self, bits: int):
        if not MIN_BITS <= bits <= MAX_BITS:
            raise ValueError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
        self.bits = self.width = bits
        self.empty = -1

    def encode(self, values: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Signed integers `(...,)` → their two's complement bits `(..., bits)` (0/1, exact in any float dtype)."""
        return int_to_bits(values.long(), self.bits, dtype)

    @staticmethod
    def addresses(values: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return binary_to_addresses(values, size)

    @staticmethod
    def probability_of_empty(values: torch.Tensor) -> torch.Tensor:
        return all_bits(values)

    @staticmethod
    def nonzero(values: torch.Tensor) -> torch.Tensor:
        return any_bit(values)

    @staticmethod
    def written_mass(values: torch.Tensor, write_probability: torch.Tensor) -> torch.Tensor:
        """Bits carry no mass: the mixture of written values weighs the writing ops' probability in all."""
        return write_probability

    @staticmethod
    def most_likely(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The value of the rounded bits and its probability Π max(p, 1 − p) (bits read as independent)."""
        return bits_to_signed(values), torch.maximum(values, 1 - values).prod(-1)

    def mixture(self, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Σ_t weights[..., t] · encode(values[..., t]): `weights (P, S, T)`, signed integers `values (P, T)` →
        `(P, S, bits)`, the exact per-bit marginals of the mixture."""
        return torch.einsum("pst,ptb->psb", weights, self.encode(values, weights.dtype))

    def nll(self, values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """−log P(value = target) with the bits read as independent: −Σ_i log P(bit i = target's bit i).
        `values (..., bits)`, signed integers `targets (...)` → `(...)`."""
        target_bits = self.encode(targets.to(values.device), values.dtype)
        picked = torch.where(target_bits > 0.5, values, 1 - values)
        return -picked.clamp_min(1e-12).log().sum(-1)

    def default_alu(self) -> nn.Module:
        return BinaryALU(self.bits)

    def check_alu(self, alu: nn.Module) -> None:
        if getattr(alu, "encoding", "unit") != "binary" or alu.bits != self.bits:
            raise ValueError(f"the machine works on {self.bits}-bit binary values but the ALU is {alu}")


class RegisterMachine(nn.Module):
    """The differentiable interpreter I: S_t, ϱ ↦ S_{t+1}, with adaptive recurrence.

    Args:
        n: number of values of the unit encoding; arithmetic is mod n. Leave it out for the binary encoding.
        num_registers: registers R; the top `call_depth` of them form the return stack.
        memory_size: memory cells; addresses are values, so `memory_size <= n` (`<= 2^(bits−1)` in binary).
        call_depth: return-stack depth, i.e. how deep `call`s may nest; one more nested `call` overflows.
        alu: the module for eq. 7 (`TableALU` or `CircuitALU` for unit values, `BinaryALU` for bits); defaults
            to `TableALU(n)`, or `BinaryALU(bits)`.
        halt_threshold: `run` stops once every batch element has halted (or overflowed) with at least this
            probability.
        bits: the binary encoding with values of this many bits (signed two's complement, 8 to 64), instead of n.
    """

    def __init__(
        self,
        n: int | None = None,
        num_registers: int = 16,
        memory_size: int = 32,
        call_depth: int = DEFAULT_CALL_DEPTH,
        alu: nn.Module | None = None,
        halt_threshold: float = 0.99,
        *,
        bits: int | None = None,
    ):
        super().__init__()
        # Line addresses and memory addresses are non-negative values: fewer than `address_limit`.
        self.values: UnitValues | BinaryValues
        if n is not None and bits is None:
            if n < 2:
                raise ValueError(f"n must be at least 2, got {n}")
            self.values, self.address_limit = UnitValues(n), n
        elif bits is not None and n is None:
            self.values, self.address_limit = BinaryValues(bits), 2 ** (bits - 1)
        else:
            raise ValueError(f"give exactly one of n (unit values) and bits (binary values); got n={n}, bits={bits}")
        if not 1 <= call_depth < num_registers:
            raise ValueError(
                f"call_depth must be in [1, num_registers), got {call_depth} with {num_registers} registers"
            )
        if not 1 <= memory_size <= self.address_limit:
            raise ValueError(
                f"memory_size must be in [1, {self.address_limit}] (addresses are non-negative values), "
                f"got {memory_size}"
            )
        if not 0.0 < halt_threshold <= 1.0:
            raise ValueError(f"halt_threshold must be in (0, 1], got {halt_threshold}")
        self.n, self.bits = n, bits
        self.num_registers = num_registers
        self.memory_size = memory_size
        self.call_depth = call_depth
        self.halt_threshold = halt_threshold
        self.alu = alu if alu is not None else self.values.default_alu()
        self.values.check_alu(self.alu)

    @property
    def encoding(self) -> str:
        return self.values.name

    def encode(self, values: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Integers `(...,)` → sharp values `(..., width)` of this machine's encoding."""
        return self.values.encode(values, dtype)

    def decode(self, state: MachineState) -> dict[str, torch.Tensor]:
        """`state.decode` in this machine's encoding (signed integers for binary values)."""
        return state.decode(self.values)

    # ----------------------------------------------------------------------------------------------- state
    def initial_state(
        self,
        batch_size: int,
        lines: int,
        inputs: dict[int, torch.Tensor] | None = None,
        memory: torch.Tensor | None = None,
        entry: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> MachineState:
        """Registers hold 0 and the return stack holds "no caller" (n − 1, or −1 in binary); then the caller's
        inputs.

        Args:
            inputs: register index → value `(batch, width)` (a distribution over n values, or bits).
            memory: `(batch, cells, width)` values for the first `cells` memory cells.
            entry: `(batch, lines)` distribution over start lines (selection of a library program);
                line 0 when omitted.
        """
        if lines > self.address_limit - 1:
            raise ValueError(
                f"a program of {lines} lines needs more than {lines} values (line addresses are values); "
                f"{self.address_limit} non-negative values here"
            )
        width = self.values.width
        zero = self.encode(torch.zeros((), dtype=torch.long, device=device), dtype)
        registers = zero.expand(batch_size, self.num_registers, width).clone()
        registers[:, -self.call_depth :] = self.encode(torch.tensor(self.values.empty, device=device), dtype)
        for index, value in (inputs or {}).items():
            if not 0 <= index < self.num_registers:
                raise ValueError(f"input register r{index} out of range [0, {self.num_registers})")
            registers[:, index] = value.to(dtype)
        cells = zero.expand(batch_size, self.memory_size, width).clone()
        if memory is not None:
            if memory.shape[1] > self.memory_size:
                raise ValueError(f"{memory.shape[1]} memory cells given but memory_size is {self.memory_size}")
            cells[:, : memory.shape[1]] = memory.to(dtype)
        if entry is None:
            entry = one_hot_values(torch.zeros(batch_size, dtype=torch.long, device=device), lines, dtype)
        nothing = torch.zeros(batch_size, dtype=dtype, device=device)
        return MachineState(cells, registers, entry.to(dtype), nothing, nothing.clone())

    # ------------------------------------------------------------------------------------------------ step
    def step(self, program: ProgramTensors, state: MachineState) -> MachineState:
        """One interpreter step I(S_t, ϱ) (eq. 2–7 and 17), all lanes of the current line."""
        pc, registers, memory = state.pc, state.registers, state.memory
        shared, program = program, program.expand(pc.shape[0])  # `shared` keeps a program without batch unexpanded
        running = pc.sum(-1)  # (batch,) = 1 − h − overflowed
        # Below machine epsilon the running mass carries no information, and dividing by it would blow up the
        # gradient (1 / running²); its instruction is weighted by that mass anyway.
        running_enough = running > torch.finfo(running.dtype).eps
        safe_running = torch.where(running_enough, running, torch.ones_like(running))[:, None, None]

        # eq. 17: the instruction is the pc-weighted mixture of lines, per lane.
        batched = shared.op.dim() == 4
        op = _by_line(pc, shared.op, batched)  # (batch, lanes, num_ops), mass 1 − h
        arg_a = _by_line(pc, shared.a, batched) / safe_running  # (batch, lanes, registers)
        arg_b = _by_line(pc, shared.b, batched) / safe_running
        # Joint mass of "this line writes a register" and "it writes register r" (no cross-line terms).
        line_writes = shared.op[..., _WRITE_INDEX].sum(-1, keepdim=True)  # (..., lines, lanes, 1)
        write_to = _by_line(pc, shared.out * line_writes, batched)  # (batch, lanes, registers)

        # Register reads, from the state before the line, as one product (one register-sized gradient): u_j,
        # v_j = R_ij r_i (dot products), the top of the return stack and its bottom.
        lanes, depth = program.lanes, self.call_depth
        stack_rows = torch.eye(self.num_registers, dtype=pc.dtype, device=pc.device)[[-1, -depth]]  # (2, registers)
        selectors = torch.cat([arg_a, arg_b, stack_rows.expand(pc.shape[0], 2, -1)], 1)  # (batch, 2 lanes + 2, R)
        reads = torch.bmm(selectors, registers)  # (batch, 2 lanes + 2, width)
        # One split (one gradient for `reads`), not four slices that would each write a zero-padded gradient.
        u, v, return_target, bottom = reads.split([lanes, lanes, 1, 1], 1)
        return_target, bottom = return_target.squeeze(1), bottom.squeeze(1)
        live = self._live_ops(program)
        values = self._values(shared, pc, op, u, v, memory, live)  # (batch, lanes, width), mass = write prob.

        # The written value is the mixture normalised by its mass, c = values / m; eq. 5's a c is taken as
        # (a / m) values, so that the division runs on the small weights and keeps no value-sized tensor.
        write_mass = self.values.written_mass(values, op[..., _WRITE_INDEX].sum(-1, keepdim=True))
        per_mass = 1 / torch.where(write_mass > torch.finfo(values.dtype).eps, write_mass, torch.ones_like(write_mass))
        # A `call` overflows when the bottom of the return stack holds a caller: it would be dropped.
        stack_full = 1 - self.values.probability_of_empty(bottom)  # (batch,)
        # Every lane's register update is affine in R, R ← A R + B C (lanes write in order: a later lane wins):
        # composed here on (registers × registers) matrices, then applied to the register file in one product.
        update = _RegisterUpdate.identity(registers)
        addresses, data = u.unbind(1), v.unbind(1)
        for lane in range(lanes):
            update = update.then(*self._write_registers(write_to[:, lane], values[:, lane], per_mass[:, lane]))
            # A lane whose ops never include call/ret/write would leave the stack/memory as they are: skip it.
            if live[lane]["call"] or live[lane]["ret"]:
                update = update.then(*self._return_stack(program, pc, lane, op[:, lane], stack_full))
            if live[lane]["write"]:
                memory = self._write_memory(memory, op[:, lane, OP_INDEX["write"]], addresses[lane], data[lane])
        registers = update.apply(registers)

        pc, halted, overflowed = self._next_pc(program, pc, state, u, return_target, stack_full)
        return MachineState(memory, registers, pc, halted, overflowed)

    @staticmethod
    def _live_ops(program: ProgramTensors) -> list[dict[str, bool]]:
        """Per lane, op name → whether some line may run it. An op that no line holds contributes exactly 0 to
        the step and — when the program needs no gradient — to every gradient, so its work can be skipped
        (everything is live for a program that is being trained)."""
        if program.op.requires_grad and torch.is_grad_enabled():
            return [dict.fromkeys(OP_INDEX, True) for _ in range(program.lanes)]
        used = program.op.ne(0).flatten(0, -3).any(0).tolist()  # (lanes, num_ops)
        return [dict(zip(OP_INDEX, lane)) for lane in used]

    def _line_values(self, weights: torch.Tensor, first: int) -> torch.Tensor:
        """`(..., lines)` weights on lines → the weighted mixture of the values first, first + 1, ... `(..., width)`."""
        lines = torch.arange(first, first + weights.shape[-1], device=weights.device)
        return weights @ self.encode(lines, weights.dtype)

    def _values(self, program, pc, op, u, v, memory, live) -> torch.Tensor:
        """Every register-writing op's result, weighted by its probability: eq. 7 plus set/copy/read/store (each
        only where some lane may run it: the others contribute exactly 0)."""
        used = {name for lane in live for name, on in lane.items() if on}
        batched = program.op.dim() == 4
        # eq. 7, lane by lane: each lane evaluates only the ALU ops that some line holds in it (none: exactly 0).
        lanes = []
        for k, (lane, u_k, v_k) in enumerate(zip(live, u.unbind(1), v.unbind(1))):
            ops = tuple(name for name in ALU_OPS if lane[name])
            lanes.append(self.alu(op[:, k, _ALU_INDEX], u_k, v_k, ops=ops) if ops else torch.zeros_like(u_k))
        values = torch.stack(lanes, 1)  # (batch, lanes, width)
        if "set" in used:  # the immediate of each line, weighted by that line's probability of being a `set`
            values = values + _by_line(pc, program.imm * program.op[..., OP_INDEX["set"], None], batched)
        if "copy" in used:
            values = values + op[..., OP_INDEX["copy"], None] * u
        if "read" in used:  # eq. 2: r_j = M_ij a_i, where address mass beyond the memory reads 0
            address, _ = self.values.addresses(u, self.memory_size)  # (batch, lanes, memory_size)
            unmapped = 1 - address.sum(-1, keepdim=True)  # (batch, lanes, 1)
            zero = self.encode(torch.zeros((), dtype=torch.long, device=u.device), u.dtype)
            # Weighted through the address (the read is linear in it): no read-sized tensor is kept.
            p_read = op[..., OP_INDEX["read"], None]  # (batch, lanes, 1)
            values = values + _Read.apply(p_read * address, memory) + (p_read * unmapped) * zero
        if "store" in used:  # the address of the line itself, as a value
            addresses = self.encode(torch.arange(program.lines, device=pc.device), pc.dtype)[:, None]  # (lines, 1, w)
            values = values + _by_line(pc, program.op[..., OP_INDEX["store"], None] * addresses, batched)
        return values

    @staticmethod
    def _write_registers(write_to, values, per_mass) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """eq. 5: R_i ← (1 − a_i) R_i + a_i c, with a the (write-weighted) output-register distribution and c the
        written value, the op-weighted `values` times `per_mass` (1 / their mass), as the affine map (A, B, C) =
        (I − diag(a), a · per_mass, values) of `_RegisterUpdate`."""
        keep = torch.diag_embed(1 - write_to)  # (batch, registers, registers)
        return keep, (write_to * per_mass)[..., None], values[:, None, :]

    def _write_memory(self, memory, p, address, value) -> torch.Tensor:
        """eq. 3–4: M ← (1 − p) M + p ((1 − a) ⊙ M + a ⊗ c) = (1 − p a) ⊙ M + p a ⊗ c."""
        address = self.values.addresses(address, memory.shape[1])[0]  # (batch, memory_size)
        return _Mix.apply(memory, p, address, value)

    def _return_stack(self, program, pc, lane, op, stack_full) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`call` pushes pc + 1 onto the top `call_depth` registers; `ret` pops them (refilling "no caller").
        A `call` that overflows leaves the stack as it was. Returned as the affine map (A, B, C) of
        `_RegisterUpdate`: on the stack rows (index −1 the top) A = (1 − p_call − p_ret) I + p_call · (row i
        takes row i + 1) + p_ret · (row i takes row i − 1); B C adds the return address on top and p_ret "no
        caller" at the bottom."""
        p_ret, pushes = op[:, OP_INDEX["ret"]], 1 - stack_full  # (batch,)
        p_call = op[:, OP_INDEX["call"]] * pushes
        registers, depth = self.num_registers, self.call_depth
        eye = torch.eye(registers, dtype=pc.dtype, device=pc.device)
        below = registers - depth
        up = torch.zeros_like(eye)  # row i takes row i + 1 (a push moves callers down)
        up[below:-1, below + 1 :] = eye[below + 1 :, below + 1 :]
        down = torch.zeros_like(eye)  # row i takes row i − 1 (a pop moves callers up)
        down[below + 1 :, below:-1] = eye[below:-1, below:-1]
        stay = eye.clone()
        stay[below:, below:] = 0
        moves = 1 - p_call - p_ret  # (batch,)
        keep = stay + moves[:, None, None] * (eye - stay) + p_call[:, None, None] * up + p_ret[:, None, None] * down
        # Return address line + 1 as a value, weighted by the probability that the line is a call.
        return_address = self._line_values(pc * program.op[:, :, lane, OP_INDEX["call"]], 1) * pushes[:, None]
        empty = self.encode(torch.tensor(self.values.empty, device=pc.device), pc.dtype)
        rows = torch.stack([eye[-1].expand(pc.shape[0], registers), eye[below] * p_ret[:, None]], -1)  # (b, R, 2)
        return keep, rows, torch.stack([return_address, empty.expand_as(return_address)], 1)

    def _next_pc(self, program, pc, state, u, return_target, stack_full):
        """eq. 6, generalised: each line's mass moves to the next line, a jump/call target, the popped return
        address, or halts (`halt`, past the last line, or a target outside the program); an overflowing
        `call`'s mass stops in `overflowed`."""
        lines = program.lines
        op = program.op  # (batch, lines, lanes, num_ops)
        taken = op[..., OP_INDEX["jump"]] * self.values.nonzero(u)[:, None, :]  # (batch, lines, lanes)
        calls = op[..., OP_INDEX["call"]]
        branch = taken + calls * (1 - stack_full)[:, None, None]
        p_ret = op[..., OP_INDEX["ret"]].sum(-1)  # (batch, lines)
        p_halt = op[..., OP_INDEX["halt"]].sum(-1)
        stay = pc * (1 - p_halt - p_ret - (taken + calls).sum(-1))  # mass that moves on to the next line

        # Destinations inside the program, and the mass of those outside it (which halts).
        inside, outside = self.values.addresses(program.imm, lines)  # (batch, lines, lanes, lines), (b, l, k)
        target = torch.einsum("bl,blk,blkm->bm", pc, branch, inside)
        leaves = torch.einsum("bl,blk,blk->b", pc, branch, outside)
        ret_mass = (pc * p_ret).sum(-1)  # (batch,)
        ret_inside, ret_outside = self.values.addresses(return_target, lines)
        target = target + ret_mass[:, None] * ret_inside
        moved = nn.functional.pad(stay, (1, 0))  # (batch, lines + 1): line i → i + 1
        new_pc = moved[:, :lines] + target
        new_halted = state.halted + moved[:, lines] + leaves + ret_mass * ret_outside + (pc * p_halt).sum(-1)
        overflowed = state.overflowed + torch.einsum("bl,blk->b", pc, calls) * stack_full
        return (*self._settle(program, new_pc, new_halted), overflowed)

    @staticmethod
    def _settle(program: ProgramTensors, pc: torch.Tensor, halted: torch.Tensor):
        """Mass that sits on a `halt` line halts at once, so executing `halt` costs no step (as in the
        reference interpreter, whose `steps` counts the executed lines other than `halt`)."""
        arriving = pc * program.op[..., OP_INDEX["halt"]].sum(-1)  # (batch, lines)
        return pc - arriving, halted + arriving.sum(-1)

    def settle(self, program: ProgramTensors, state: MachineState) -> MachineState:
        """The state with the mass on `halt` lines moved to h; `run` starts with it (a step ends with it)."""
        pc, halted = self._settle(program.expand(state.pc.shape[0]), state.pc, state.halted)
        return replace(state, pc=pc, halted=halted)

    # ------------------------------------------------------------------------------------------------- run
    def run(
        self,
        program: ProgramTensors,
        state: MachineState,
        max_steps: int,
        halt_threshold: float | None = None,
        return_trace: bool = False,
        checkpoint: int | None = None,
    ) -> MachineRun:
        """Adaptive recurrence: step until `max_steps`, or until every batch element has stopped (halted or
        overflowed) with probability ≥ `halt_threshold` (early exit).

        `checkpoint` = k > 0 recomputes the steps in the backward pass, k at a time, instead of keeping their
        intermediate tensors (activation checkpointing of the recurrence): autograd holds one state per k steps
        and, during the backward, the intermediates of k steps, at the cost of one more forward pass; 0 keeps
        everything. By default it is `CHECKPOINT_STEPS` when a gradient is being recorded and a plain run would
        keep at least `CHECKPOINT_MIN_ELEMENTS` values (estimated from the state's size, `max_steps` and the
        encoding's `kept_per_state_value`), else 0. A trace keeps every state, so it checkpoints step
        by step."""
        threshold = self.halt_threshold if halt_threshold is None else halt_threshold
        state = self.settle(program, state)
        trace = [state] if return_trace else None
        if checkpoint is None:
            state_values = state.memory.numel() + state.registers.numel()
            kept = state_values * max_steps * self.values.kept_per_state_value
            large = kept >= CHECKPOINT_MIN_ELEMENTS
            checkpoint = CHECKPOINT_STEPS if torch.is_grad_enabled() and large else 0
        if return_trace:
            checkpoint = min(checkpoint, 1)
        steps = 0
        while steps < max_steps and not self._stopped(state, threshold):
            if checkpoint:
                state, taken = self._checkpointed_steps(program, state, min(checkpoint, max_steps - steps), threshold)
            else:
                state, taken = self.step(program, state), 1
            steps += taken
            if trace is not None:
                trace.append(state)
        return MachineRun(state, steps, trace)

    @staticmethod
    def _stopped(state: MachineState, threshold: float) -> bool:
        return bool((state.halted + state.overflowed >= threshold).all())

    def _steps(self, program: ProgramTensors, state: MachineState, count: int, threshold: float):
        """Up to `count` steps, fewer once every element has stopped: (state, steps taken)."""
        done = 0
        while done < count and not self._stopped(state, threshold):
            state, done = self.step(program, state), done + 1
        return state, done

    def _checkpointed_steps(
        self, program: ProgramTensors, state: MachineState, count: int, threshold: float
    ) -> tuple[MachineState, int]:
        """`_steps`, recomputed in the backward pass (activation checkpointing, `recomputed`)."""
        taken: list[int] = []

        def steps(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            after, done = self._steps(ProgramTensors(*tensors[5:10]), MachineState(*tensors[:5]), count, threshold)
            taken.append(done)  # the recomputation takes the same steps
            return _state_tensors(after)

        after = recomputed(steps, *_state_tensors(state), *program.fields().values(), *self.parameters())
        return MachineState(*after), taken[0]

    def extra_repr(self) -> str:
        width = f"n={self.n}" if self.bits is None else f"bits={self.bits}"
        return (
            f"{width}, num_registers={self.num_registers}, memory_size={self.memory_size}, "
            f"call_depth={self.call_depth}, halt_threshold={self.halt_threshold}"
        )
