"""Adaptive neural compilation (Bunel et al. 2016; paper §2 and "Neural Compilation by Memorization": "we may
wish to specialize programs to a known, static input distribution").

A general program, compiled and made trainable (`ProgramParameters`, eq. 9's θ with every entry
trainable), is fine-tuned on a *biased* input distribution with

    L = Σ_cells CE(final memory, answer)  +  λ · Σ_t (1 − h_t)

where Σ_t (1 − h_t) is the expected number of steps: the running mass summed over the machine's steps
(a one-hot program that halts after S steps scores exactly S). The adapted program halts sooner on the
biased inputs and stays correct there; on other inputs it may not (`Evaluation` reports both).

Tasks (Bunel et al.'s, all inputs and outputs in memory; registers start at 0):

* `increment`: a 0-terminated list at M[0..]; add 1 to every element. Biased: lists of length 1.
* `listk`: M[0] = k, M[1] = head of a linked list of (next, value) nodes at M[2..]; write the value of
  node k to M[0] (the program writes each visited node's value there). Biased: k = 0.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dcomp_machine import ProgramTensors, RegisterMachine, one_hot_values
from library.training.losses import value_nll

from .assembler import assemble
from .compiler import decode
from .freezing import ProgramParameters
from .interpreter import Execution, run_reference
from .program import Program

_N = 16  # values of the tasks' machine; also its memory size, so every value may be an address


@dataclass(frozen=True)
class Task:
    """A general program over inputs held in memory, and a sampler of inputs (biased or not)."""

    name: str
    source: str  # assembly of the general program
    sample: Callable[[random.Random, bool], list[int]]  # (rng, biased) → the initial memory
    n: int = _N
    num_registers: int = 12
    memory_size: int = _N
    max_steps: int = 64  # step budget of the reference interpreter (enough for every unbiased input)

    def program(self) -> Program:
        return assemble(self.source, self.name, n=self.n, num_registers=self.num_registers)

    def inputs(self, count: int, *, biased: bool, seed: int) -> list[list[int]]:
        rng = random.Random(seed)
        return [self.sample(rng, biased) for _ in range(count)]

    def run(self, program: Program, memory: list[int]) -> Execution:
        """The reference interpreter's `Execution` of `program` on one input."""
        return run_reference(
            program,
            n=self.n,
            num_registers=self.num_registers,
            memory_size=self.memory_size,
            memory=memory,
            max_steps=self.max_steps,
        )

    def answers(self, memories: list[list[int]]) -> torch.Tensor:
        """The general program's final memories `(batch, memory_size)`: the targets."""
        general = self.program()
        return torch.tensor([self.run(general, memory).state.memory for memory in memories])


def _increment_sample(rng: random.Random, biased: bool) -> list[int]:
    length = 1 if biased else rng.randint(0, _N // 2 - 1)
    return [rng.randint(1, _N - 2) for _ in range(length)] + [0] * (_N - length)


def _listk_sample(rng: random.Random, biased: bool) -> list[int]:
    slots = (_N - 2) // 2
    length = rng.randint(1, slots)
    k = 0 if biased else rng.randrange(length)
    where = rng.sample(range(slots), length)  # node i lives at address 2 + 2 · where[i]
    memory = [k, 2 + 2 * where[0]] + [rng.randrange(_N) for _ in range(2 * slots)]
    for node, slot in enumerate(where[:-1]):
        memory[2 + 2 * slot] = 2 + 2 * where[node + 1]
    return memory


TASKS: dict[str, Task] = {
    "increment": Task(
        "increment",
        """
        loop:   read  1 2          ; r2 = M[r1]
                jump  2 body       ; not the terminator
                halt
        body:   inc   2 2
                write 1 2          ; M[r1] = r2 + 1
                inc   1 1
                jump  2 loop       ; r2 != 0: always
        """,
        _increment_sample,
    ),
    "listk": Task(
        "listk",
        """
                read  0 1          ; r1 = k
                inc   0 2          ; r2 = 1
                read  2 3          ; r3 = head
        loop:   inc   3 4
                read  4 5          ; r5 = value of the current node
                write 0 5          ; M[0] = r5: the answer so far
                jump  1 walk       ; k != 0: walk on
                halt
        walk:   read  3 3          ; r3 = next
                dec   1 1
                jump  2 loop       ; r2 = 1: always
        """,
        _listk_sample,
    ),
}


@dataclass
class TaskRun:
    memory: torch.Tensor  # (batch, memory_size, n) final memory distributions
    expected_steps: torch.Tensor  # (batch,) Σ_t (1 − h_t)


def run_on_machine(
    machine: RegisterMachine, program: ProgramTensors, memories: list[list[int]], max_steps: int
) -> TaskRun:
    """Runs `program` for `max_steps` steps (no early exit, so every step's running mass counts)."""
    memory = one_hot_values(torch.tensor(memories), machine.n)  # (batch, memory_size, n)
    state = machine.initial_state(len(memories), program.lines, memory=memory)
    expected_steps = torch.zeros(len(memories))
    for _ in range(max_steps):
        expected_steps = expected_steps + state.pc.sum(-1)  # running mass 1 − h_t before step t
        state = machine.step(program, state)
    return TaskRun(state.memory, expected_steps)


def answer_loss(memory: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """Σ_cells −log p(cell = answer): `(batch, memory_size, n)`, `(batch, memory_size)` → `(batch,)`."""
    return value_nll(memory, answers).sum(-1)


@dataclass
class Evaluation:
    """A program on held-out inputs. Reference figures run the decoded (argmax) program on the exact
    interpreter: accuracy = halted with the right memory, steps = its exact step count. Machine figures run
    the soft program ϱ on the differentiable machine (biased inputs)."""

    biased_accuracy: float
    biased_steps: float
    unbiased_accuracy: float
    unbiased_steps: float
    machine_accuracy: float
    expected_steps: float


def _reference_score(task: Task, program: Program, memories: list[list[int]], answers: torch.Tensor):
    runs = [task.run(program, memory) for memory in memories]
    correct = [run.halted and list(run.state.memory) == answer for run, answer in zip(runs, answers.tolist())]
    return sum(correct) / len(runs), sum(run.steps for run in runs) / len(runs)


@torch.no_grad()
def argmax_program(params: ProgramParameters, task: Task) -> Program:
    """The argmax program of `params` (`compiler.decode`)."""
    return decode(params.tensors(), name=task.name)


@dataclass
class Evaluator:
    """Held-out inputs, their answers and the machine: `adapt`'s evaluations (and its training machine)."""

    task: Task
    machine: RegisterMachine
    horizon: int  # machine steps per run
    biased: list[list[int]]
    unbiased: list[list[int]]
    biased_answers: torch.Tensor
    unbiased_answers: torch.Tensor

    @classmethod
    def for_task(cls, task: Task, *, size: int, seed: int) -> Evaluator:
        biased = task.inputs(size, biased=True, seed=seed + 1)
        unbiased = task.inputs(size, biased=False, seed=seed + 2)
        general = task.program()
        # Room for the general program on every biased input, and as much again for soft programs' stragglers.
        horizon = 2 * max(task.run(general, memory).steps for memory in biased)
        machine = RegisterMachine(task.n, task.num_registers, task.memory_size)
        return cls(task, machine, horizon, biased, unbiased, task.answers(biased), task.answers(unbiased))

    @torch.no_grad()
    def __call__(self, params: ProgramParameters) -> Evaluation:
        program = argmax_program(params, self.task)
        run = run_on_machine(self.machine, params.tensors(), self.biased, self.horizon)
        machine_correct = (run.memory.argmax(-1) == self.biased_answers).all(-1)
        return Evaluation(
            *_reference_score(self.task, program, self.biased, self.biased_answers),
            *_reference_score(self.task, program, self.unbiased, self.unbiased_answers),
            machine_accuracy=float(machine_correct.float().mean()),
            expected_steps=float(run.expected_steps.mean()),
        )


@dataclass
class AdaptationResult:
    params: ProgramParameters
    program: Program  # the decoded adapted program
    before: Evaluation  # the compiled general program (soft, at the initial confidence)
    after: Evaluation
    iterations: int
    seconds: float  # wall time of the training loop
    losses: list[float]


def adapt(
    task: Task,
    *,
    step_cost: float = 0.5,
    lr: float = 0.1,
    iterations: int = 100,
    batch: int = 32,
    confidence: float = 0.9,
    evaluation_size: int = 256,
    seed: int = 0,
) -> AdaptationResult:
    """Fine-tunes `task`'s compiled general program with Adam on fresh biased batches, minimising answer
    cross-entropy + `step_cost` (λ) × expected steps."""
    evaluate = Evaluator.for_task(task, size=evaluation_size, seed=seed)
    params = ProgramParameters.from_program(
        task.program(), n=task.n, num_registers=task.num_registers, confidence=confidence
    )
    before = evaluate(params)
    optimizer = torch.optim.Adam(params.parameters(), lr=lr)
    rng = random.Random(seed)
    losses = []
    start = time.perf_counter()
    for _ in range(iterations):
        memories = [task.sample(rng, True) for _ in range(batch)]
        run = run_on_machine(evaluate.machine, params.tensors(), memories, evaluate.horizon)
        loss = (answer_loss(run.memory, task.answers(memories)) + step_cost * run.expected_steps).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    return AdaptationResult(params, argmax_program(params, task), before, evaluate(params), iterations, seconds, losses)
