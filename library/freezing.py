"""Freezing library programs (paper Appendix, "Freezing Library Programs", eq. 8–9).

A trainable program is a set of logits θ with the shapes of `ProgramTensors`; the program is ϱ = softmax(θ)
per field (a controller δ(θ) with no context, eq. 16). Freezing masks the update element-wise:

    θ_t = θ_{t−1} − η (∇L ⊙ M)                                                             (eq. 9)

with M = 1 for trainable and 0 for frozen entries. `ProgramParameters` keeps one boolean mask per field
(buffers, so they are saved with the weights) and applies it twice:

* to the gradient, by a tensor hook (`g ↦ g ⊙ M`): eq. 9 literally, so gradient norms and clipping see
  only the trainable entries. With plain SGD, and with Adam(W) whose state starts at zero and whose
  weight decay is 0, this alone keeps frozen entries bit-exactly fixed;
* to the update, by `mask_updates(optimizer, params)`: θ_t ← where(M, θ_t, θ_{t−1}) after every
  `optimizer.step()`. Weight decay, momentum carried over from before a freeze, or any other optimizer
  rule would otherwise still move frozen entries; this is the robust form, and the one to use.

Masks are set by `freeze_all`, `freeze_lines` (whole lines, or single fields of them, e.g. only the op of
line 3) and `freeze_program` (everything except one program's lines, e.g. `library_lines(linked, "fib")`:
the library stays fixed while one entry is fine-tuned).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from dcomp_machine import ProgramTensors

from .compiler import compile_program
from .program import Program
from .stdlib import LinkedLibrary

FIELDS: tuple[str, ...] = ProgramTensors.FIELDS  # op, a, b, out, imm


def softmax_program(logits: ProgramTensors) -> ProgramTensors:
    """ϱ = softmax of every field's logits over its last dimension."""
    return ProgramTensors(*(getattr(logits, name).softmax(-1) for name in FIELDS))


class ProgramParameters(nn.Module):
    """Logits θ of one program, `op (lines, lanes, num_ops)`, `a`/`b`/`out (lines, lanes, num_registers)`,
    `imm (lines, lanes, n)`, with a gradient mask M per field (eq. 9); all entries start trainable."""

    def __init__(self, logits: ProgramTensors):
        super().__init__()
        for name in FIELDS:
            parameter = nn.Parameter(getattr(logits, name).detach().clone())
            self.register_parameter(name, parameter)
            self.register_buffer(f"{name}_mask", torch.ones_like(parameter, dtype=torch.bool))
        self._hook_masks()

    def _hook_masks(self) -> None:
        """g ↦ g ⊙ M on every field's gradient (eq. 9)."""
        for name in FIELDS:
            getattr(self, name).register_hook(lambda grad, name=name: torch.where(self.mask(name), grad, 0.0))

    def __setstate__(self, state) -> None:
        """Copies and unpickled modules get fresh parameters without hooks: hook them again."""
        super().__setstate__(state)
        self._hook_masks()

    @classmethod
    def from_program(
        cls,
        program: Program | ProgramTensors,
        *,
        n: int,
        num_registers: int,
        confidence: float = 0.99,
    ) -> ProgramParameters:
        """Logits whose softmax puts probability `confidence` on every compiled choice and spreads the rest
        evenly: a one-hot program (a `Program`, or compiled/linked `ProgramTensors`) made trainable.
        `confidence` < 1 keeps the gradients finite; the decoded program is the original at any value
        above 1/width."""
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
        tensors = (
            program
            if isinstance(program, ProgramTensors)
            else compile_program(program, n=n, num_registers=num_registers)
        )

        def logits(one_hot: torch.Tensor) -> torch.Tensor:
            rest = math.log((1 - confidence) / (one_hot.shape[-1] - 1))
            return torch.where(one_hot > 0.5, math.log(confidence), rest)

        return cls(ProgramTensors(*(logits(getattr(tensors, name)) for name in FIELDS)))

    def mask(self, name: str) -> torch.Tensor:
        """M for field `name`: a bool tensor with the field's shape, True = trainable."""
        return getattr(self, f"{name}_mask")

    def masked_parameters(self) -> Iterable[tuple[nn.Parameter, torch.Tensor]]:
        return ((getattr(self, name), self.mask(name)) for name in FIELDS)

    def tensors(self) -> ProgramTensors:
        """ϱ = softmax(θ) per field, the program that `RegisterMachine` runs."""
        return softmax_program(ProgramTensors(*(getattr(self, name) for name in FIELDS)))

    @property
    def lines(self) -> int:
        return self.op.shape[-3]


def freeze_all(params: ProgramParameters) -> None:
    """M = 0 everywhere: the whole program is fixed (a frozen library)."""
    for _, mask in params.masked_parameters():
        mask.fill_(False)


def freeze_lines(
    params: ProgramParameters, lines: Iterable[int], *, fields: Iterable[str] = FIELDS, frozen: bool = True
) -> None:
    """Freezes (or, with `frozen=False`, unfreezes) `fields` of `lines`, in all lanes;
    `freeze_lines(p, [3], fields=["op"])` fixes only the op of line 3."""
    lines = list(lines)
    for name in fields:
        if name not in FIELDS:
            raise ValueError(f"unknown field {name!r}; fields are {FIELDS}")
        params.mask(name)[lines] = not frozen


def freeze_program(params: ProgramParameters, lines: range | Iterable[int], *, keep: Iterable[str] = FIELDS) -> None:
    """Freezes everything except the `keep` fields of `lines` (one program of a linked library, given by its
    line range): eq. 9's "freezing all but one library program"."""
    freeze_all(params)
    freeze_lines(params, lines, fields=keep, frozen=False)


def library_lines(library: LinkedLibrary, name: str) -> range:
    """The lines of program `name` in a linked library: from its entry point to the next program's."""
    starts = sorted(library.entry_points.values()) + [len(library.program)]
    start = library.entry_points[name]
    return range(start, starts[starts.index(start) + 1])


def mask_updates(optimizer: torch.optim.Optimizer, params: ProgramParameters) -> list:
    """Applies M to every update of `optimizer`: θ_t ← where(M, θ_t, θ_{t−1}), so frozen entries stay
    bit-exactly fixed whatever the optimizer does (weight decay, momentum). Returns the hook handles."""
    saved: list[torch.Tensor] = []

    def remember(*_):
        saved[:] = [parameter.detach().clone() for parameter, _ in params.masked_parameters()]

    @torch.no_grad()
    def restore(*_):
        for (parameter, mask), before in zip(params.masked_parameters(), saved):
            parameter.copy_(torch.where(mask, parameter, before))

    return [optimizer.register_step_pre_hook(remember), optimizer.register_step_post_hook(restore)]
