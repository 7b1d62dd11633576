"""The differentiable register machine (paper §3.2 and Appendix E, after Bunel et al. 2016).

Run-time code: it travels with a checkpoint (`save_pretrained` copies it) and imports only torch and its
siblings. Everything here is a probability mixture, so the machine runs "everything, everywhere, all at once";
with one-hot programs and inputs every step equals the exact reference interpreter (`library/interpreter.py`).

State (eq. 1): S = (M, R, c, h) — memory `(batch, memory_size, n)`, registers `(batch, num_registers, n)`,
program counter `(batch, lines)` and halting probability `(batch,)`, with `pc.sum(-1) + halted == 1`.
See docs/ARCHITECTURE.md for the full semantics of one step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

try:
    from .dcomp_alu import TableALU
    from .dcomp_isa import ALU_OPS, DEFAULT_CALL_DEPTH, OP_INDEX, OPS
except ImportError:  # a checkout, where these files are top-level modules
    from dcomp_alu import TableALU
    from dcomp_isa import ALU_OPS, DEFAULT_CALL_DEPTH, OP_INDEX, OPS


_ALU_INDEX = [OP_INDEX[name] for name in ALU_OPS]
_WRITE_INDEX = [i for i, op in enumerate(OPS) if op.writes_register]


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
    """S = (M, R, c, h) of eq. 1, batched; every row is a distribution over the n values."""

    memory: torch.Tensor  # (batch, memory_size, n)
    registers: torch.Tensor  # (batch, num_registers, n)
    pc: torch.Tensor  # (batch, lines)
    halted: torch.Tensor  # (batch,)

    def decode(self) -> dict[str, torch.Tensor]:
        """Most likely value of every register and memory cell, with its probability."""
        register_p, registers = self.registers.max(-1)
        memory_p, memory = self.memory.max(-1)
        return {
            "registers": registers,
            "register_probs": register_p,
            "memory": memory,
            "memory_probs": memory_p,
            "pc": self.pc.argmax(-1),
            "halted": self.halted,
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


class RegisterMachine(nn.Module):
    """The differentiable interpreter I: S_t, ϱ ↦ S_{t+1}, with adaptive recurrence.

    Args:
        n: number of values (unit-encoding width); arithmetic is mod n.
        num_registers: registers R; the top `call_depth` of them form the return stack.
        memory_size: memory cells; addresses are values, so `memory_size <= n`.
        call_depth: return-stack depth, i.e. how deep `call`s may nest.
        alu: the module for eq. 7 (`TableALU` or `CircuitALU`); defaults to `TableALU(n)`.
        halt_threshold: `run` stops once every batch element has halted with at least this probability.
    """

    def __init__(
        self,
        n: int,
        num_registers: int = 16,
        memory_size: int = 32,
        call_depth: int = DEFAULT_CALL_DEPTH,
        alu: nn.Module | None = None,
        halt_threshold: float = 0.99,
    ):
        super().__init__()
        if n < 2:
            raise ValueError(f"n must be at least 2, got {n}")
        if not 1 <= call_depth < num_registers:
            raise ValueError(
                f"call_depth must be in [1, num_registers), got {call_depth} with {num_registers} registers"
            )
        if not 1 <= memory_size <= n:
            raise ValueError(f"memory_size must be in [1, n={n}] (addresses are values), got {memory_size}")
        if not 0.0 < halt_threshold <= 1.0:
            raise ValueError(f"halt_threshold must be in (0, 1], got {halt_threshold}")
        self.n = n
        self.num_registers = num_registers
        self.memory_size = memory_size
        self.call_depth = call_depth
        self.halt_threshold = halt_threshold
        self.alu = alu if alu is not None else TableALU(n)
        if self.alu.n != n:
            raise ValueError(f"the ALU works on n={self.alu.n} values but the machine on n={n}")

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
        """Registers hold 0 and the return stack holds n − 1 ("no caller"); then the caller's inputs.

        Args:
            inputs: register index → value distribution `(batch, n)`.
            memory: `(batch, cells, n)` distributions for the first `cells` memory cells.
            entry: `(batch, lines)` distribution over start lines (selection of a library program);
                line 0 when omitted.
        """
        if lines > self.n - 1:
            raise ValueError(f"a program of {lines} lines needs n > {lines} (line addresses are values); n={self.n}")
        zero = one_hot_values(torch.zeros((), dtype=torch.long, device=device), self.n, dtype)
        registers = zero.expand(batch_size, self.num_registers, self.n).clone()
        registers[:, -self.call_depth :] = one_hot_values(torch.tensor(self.n - 1, device=device), self.n, dtype)
        for index, value in (inputs or {}).items():
            if not 0 <= index < self.num_registers:
                raise ValueError(f"input register r{index} out of range [0, {self.num_registers})")
            registers[:, index] = value.to(dtype)
        cells = zero.expand(batch_size, self.memory_size, self.n).clone()
        if memory is not None:
            if memory.shape[1] > self.memory_size:
                raise ValueError(f"{memory.shape[1]} memory cells given but memory_size is {self.memory_size}")
            cells[:, : memory.shape[1]] = memory.to(dtype)
        if entry is None:
            entry = one_hot_values(torch.zeros(batch_size, dtype=torch.long, device=device), lines, dtype)
        return MachineState(cells, registers, entry.to(dtype), torch.zeros(batch_size, dtype=dtype, device=device))

    # ------------------------------------------------------------------------------------------------ step
    def step(self, program: ProgramTensors, state: MachineState) -> MachineState:
        """One interpreter step I(S_t, ϱ) (eq. 2–7 and 17), all lanes of the current line."""
        pc, registers, memory = state.pc, state.registers, state.memory
        program = program.expand(pc.shape[0])
        running = pc.sum(-1)  # (batch,) = 1 − h
        # Below machine epsilon the running mass carries no information, and dividing by it would blow up the
        # gradient (1 / running²); its instruction is weighted by that mass anyway.
        running_enough = running > torch.finfo(running.dtype).eps
        safe_running = torch.where(running_enough, running, torch.ones_like(running))[:, None, None]

        # eq. 17: the instruction is the pc-weighted mixture of lines, per lane.
        op = torch.einsum("bl,blko->bko", pc, program.op)  # (batch, lanes, num_ops), mass 1 − h
        arg_a = torch.einsum("bl,blkr->bkr", pc, program.a) / safe_running  # (batch, lanes, registers)
        arg_b = torch.einsum("bl,blkr->bkr", pc, program.b) / safe_running
        # Joint mass of "this line writes a register" and "it writes register r" (no cross-line terms).
        line_writes = program.op[..., _WRITE_INDEX].sum(-1, keepdim=True)  # (batch, lines, lanes, 1)
        write_to = torch.einsum("bl,blkr->bkr", pc, program.out * line_writes)  # (batch, lanes, registers)

        # Register reads: u_j, v_j = R_ij r_i (dot products), from the state before the line.
        u = torch.einsum("bkr,brn->bkn", arg_a, registers)  # (batch, lanes, n)
        v = torch.einsum("bkr,brn->bkn", arg_b, registers)
        values = self._values(program, pc, op, u, v, memory)  # (batch, lanes, n), mass = write probability

        write_mass = values.sum(-1, keepdim=True)  # (batch, lanes, 1)
        written = values / torch.where(
            write_mass > torch.finfo(values.dtype).eps, write_mass, torch.ones_like(write_mass)
        )
        return_target = registers[:, -1]  # (batch, n): top of the return stack before the line
        for lane in range(program.lanes):  # lanes write in order: a later lane wins
            registers = self._write_registers(registers, write_to[:, lane], written[:, lane])
            registers = self._return_stack(registers, program, pc, lane, op[:, lane])
            memory = self._write_memory(memory, op[:, lane, OP_INDEX["write"]], u[:, lane], v[:, lane])

        pc, halted = self._next_pc(program, pc, state.halted, u, return_target)
        return MachineState(memory, registers, pc, halted)

    def _values(self, program, pc, op, u, v, memory) -> torch.Tensor:
        """Every register-writing op's result, weighted by its probability: eq. 7 plus set/copy/read/store."""
        lines, n = program.lines, self.n
        values = self.alu(op[..., _ALU_INDEX], u, v)  # eq. 7 / 11
        # set: the immediate of each line, weighted by that line's probability of being a `set`.
        values = values + torch.einsum("bl,blkn->bkn", pc, program.imm * program.op[..., OP_INDEX["set"], None])
        values = values + op[..., OP_INDEX["copy"], None] * u
        # eq. 2: r_j = M_ij a_i, where address mass beyond the memory reads 0.
        address = u[..., : self.memory_size]  # (batch, lanes, memory_size)
        unmapped = 1 - address.sum(-1, keepdim=True)  # (batch, lanes, 1)
        read = torch.einsum("bkm,bmn->bkn", address, memory) + nn.functional.pad(unmapped, (0, n - 1))
        values = values + op[..., OP_INDEX["read"], None] * read
        # store: the address of the line itself, as a value.
        store = torch.einsum("bl,blk->bkl", pc, program.op[..., OP_INDEX["store"]])  # (batch, lanes, lines)
        return values + nn.functional.pad(store, (0, n - lines))

    @staticmethod
    def _write_registers(registers, write_to, value) -> torch.Tensor:
        """eq. 5: R_i ← (1 − a_i) R_i + a_i c, with a the (write-weighted) output-register distribution."""
        write_to = write_to[..., None]  # (batch, registers, 1)
        return (1 - write_to) * registers + write_to * value[:, None, :]

    @staticmethod
    def _write_memory(memory, p, address, value) -> torch.Tensor:
        """eq. 3–4: M ← (1 − p) M + p ((1 − a) ⊙ M + a ⊗ c) = M + p a ⊗ (c − M)."""
        address = address[:, : memory.shape[1], None]  # (batch, memory_size, 1)
        return memory + p[:, None, None] * address * (value[:, None, :] - memory)

    def _return_stack(self, registers, program, pc, lane, op) -> torch.Tensor:
        """`call` pushes pc + 1 onto the top `call_depth` registers; `ret` pops them (refilling n − 1)."""
        p_call, p_ret = op[:, OP_INDEX["call"]], op[:, OP_INDEX["ret"]]  # (batch,)
        depth, n, lines = self.call_depth, self.n, program.lines
        stack = registers[:, -depth:]  # (batch, depth, n); index -1 is the top
        # Return address line + 1 as a value, weighted by the probability that the line is a call.
        return_address = nn.functional.pad(pc * program.op[:, :, lane, OP_INDEX["call"]], (1, n - lines - 1))
        pushed = torch.cat([stack[:, 1:] * p_call[:, None, None], return_address[:, None]], dim=1)
        empty = one_hot_values(torch.tensor(n - 1, device=stack.device), n, stack.dtype).expand_as(stack[:, :1])
        popped = torch.cat([empty, stack[:, :-1]], dim=1) * p_ret[:, None, None]
        stack = (1 - p_call - p_ret)[:, None, None] * stack + pushed + popped
        return torch.cat([registers[:, :-depth], stack], dim=1)

    def _next_pc(self, program, pc, halted, u, return_target):
        """eq. 6, generalised: each line's mass moves to the next line, a jump/call target, the popped return
        address, or halts (`halt`, past the last line, or a target beyond it)."""
        lines = program.lines
        op = program.op  # (batch, lines, lanes, num_ops)
        taken = op[..., OP_INDEX["jump"]] * (1 - u[:, None, :, 0])  # (batch, lines, lanes): jump if r[a] != 0
        branch = taken + op[..., OP_INDEX["call"]]
        p_ret = op[..., OP_INDEX["ret"]].sum(-1)  # (batch, lines)
        p_halt = op[..., OP_INDEX["halt"]].sum(-1)
        stay = pc * (1 - p_halt - p_ret - branch.sum(-1))  # mass that moves on to the next line

        # Destination distribution over lines + one "halted" slot (index `lines`).
        target = torch.einsum("bl,blk,blkn->bn", pc, branch, program.imm)  # (batch, n)
        ret_mass = (pc * p_ret).sum(-1, keepdim=True)
        target = target + ret_mass * return_target
        moved = nn.functional.pad(stay, (1, 0))  # (batch, lines + 1): line i → i + 1
        new_pc = moved[:, :lines] + target[:, :lines]
        new_halted = halted + moved[:, lines] + target[:, lines:].sum(-1) + (pc * p_halt).sum(-1)
        return self._settle(program, new_pc, new_halted)

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
    ) -> MachineRun:
        """Adaptive recurrence: step until `max_steps`, or until every batch element has halted with
        probability ≥ `halt_threshold` (early exit)."""
        threshold = self.halt_threshold if halt_threshold is None else halt_threshold
        state = self.settle(program, state)
        trace = [state] if return_trace else None
        steps = 0
        while steps < max_steps and not bool((state.halted >= threshold).all()):
            state = self.step(program, state)
            steps += 1
            if trace is not None:
                trace.append(state)
        return MachineRun(state, steps, trace)

    def extra_repr(self) -> str:
        return (
            f"n={self.n}, num_registers={self.num_registers}, memory_size={self.memory_size}, "
            f"call_depth={self.call_depth}, halt_threshold={self.halt_threshold}"
        )
