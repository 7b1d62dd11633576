"""Neural compilation by memorization (paper Appendix, eq. 10).

Instead of writing a program's tensors directly (`compile_program`), train a program controller
δ(θ, z) ↦ ϱ (eq. 16) to emit them: θ̃ = argmin_θ L(δ(θ, e(x))) (eq. 10), with L the cross-entropy between
δ's logits and the compiled program's choices. The controller deliberately overfits one program; it is an
initialisation for later fine-tuning, and, once its argmax decompiles to the target, an exact compilation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from dcomp_machine import ProgramTensors

from .compiler import compile_program, decode
from .freezing import FIELDS, softmax_program
from .program import Program


class ProgramController(nn.Module):
    """δ(θ, z) (eq. 16): an MLP from a line's one-hot index (⊕ an optional context z) to the logits of that
    line's op, a, b, out and imm in every lane. `forward` returns ϱ = softmax of them as `ProgramTensors`,
    `(lines, lanes, ·)`, or `(batch, lines, lanes, ·)` for a batch of contexts (contextual programs)."""

    def __init__(self, lines: int, lanes: int, *, n: int, num_registers: int, hidden: int = 64, context: int = 0):
        super().__init__()
        self.lines, self.lanes = lines, lanes
        self.widths = ProgramTensors.widths(n, num_registers)
        self.mlp = nn.Sequential(
            nn.Linear(lines + context, hidden), nn.ReLU(), nn.Linear(hidden, lanes * sum(self.widths))
        )

    def logits(self, z: torch.Tensor | None = None) -> ProgramTensors:
        """Unnormalised ϱ; `z` is `(batch, context)` or None."""
        index = torch.eye(self.lines, device=self.mlp[0].weight.device)  # (lines, lines)
        if z is not None:
            index = index.expand(z.shape[0], self.lines, self.lines)
            context = z[:, None, :].expand(-1, self.lines, -1)  # (batch, lines, context)
            index = torch.cat([index, context], dim=-1)  # (batch, lines, lines + context)
        out = self.mlp(index)  # (..., lines, lanes * Σ widths)
        out = out.unflatten(-1, (self.lanes, sum(self.widths)))  # (..., lines, lanes, Σ widths)
        return ProgramTensors(*out.split(self.widths, dim=-1))

    def forward(self, z: torch.Tensor | None = None) -> ProgramTensors:
        return softmax_program(self.logits(z))


def memorization_loss(logits: ProgramTensors, target: ProgramTensors) -> torch.Tensor:
    """L of eq. 10: the summed cross-entropy of every field against the one-hot target program."""
    return sum(
        nn.functional.cross_entropy(
            getattr(logits, name).flatten(0, -2), getattr(target, name).flatten(0, -2).argmax(-1)
        )
        for name in FIELDS
    )


def _instructions(program: Program) -> tuple:
    """The program's lines without `nop` padding lanes: what decides whether two programs are the same."""
    return tuple(tuple(i for i in line if i.op != "nop") or line[:1] for line in program.lines)


def decompiles_to(tensors: ProgramTensors, program: Program) -> bool:
    """Whether the argmax of `tensors` (`decode`) is exactly `program`'s instructions."""
    return _instructions(decode(tensors)) == _instructions(program)


def least_confidence(tensors: ProgramTensors, target: ProgramTensors) -> float:
    """The smallest probability that `tensors` gives to any of the one-hot `target`'s choices."""
    return min(float((getattr(tensors, name) * getattr(target, name)).sum(-1).min()) for name in FIELDS)


@dataclass
class MemorizationResult:
    controller: ProgramController
    steps_to_exact: int | None  # first optimisation step after which the controller decompiles to the target
    steps_to_confident: int | None  # first step after which, moreover, every choice has p >= `confidence`
    losses: list[float]  # eq. 10's loss before each step
    seconds: float  # wall time of the whole run


def memorize(
    program: Program,
    *,
    n: int,
    num_registers: int,
    hidden: int = 64,
    lr: float = 3e-2,
    max_steps: int = 2000,
    seed: int = 0,
    confidence: float | None = None,
) -> MemorizationResult:
    """Trains a fresh `ProgramController` with Adam on eq. 10 until its decompiled argmax is `program`
    (checked after every step) or `max_steps` have run. With `confidence`, training goes on until every
    compiled choice also has at least that probability, so that ϱ itself runs the program on the machine."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    target = compile_program(program, n=n, num_registers=num_registers)
    controller = ProgramController(len(program), program.lanes, n=n, num_registers=num_registers, hidden=hidden)
    optimizer = torch.optim.Adam(controller.parameters(), lr=lr)
    losses: list[float] = []
    steps_to_exact = steps_to_confident = None
    for step in range(1, max_steps + 1):
        loss = memorization_loss(controller.logits(), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        with torch.no_grad():
            tensors = controller()
            if steps_to_exact is None and decompiles_to(tensors, program):
                steps_to_exact = step
            if steps_to_exact is None:
                continue
            if confidence is None:
                break
            if least_confidence(tensors, target) >= confidence:
                steps_to_confident = step
                break
    return MemorizationResult(controller, steps_to_exact, steps_to_confident, losses, time.perf_counter() - start)
