"""Adaptive neural compilation: the tasks' general programs, the expected-steps measure, and a short
adaptation that makes Increment halt sooner on its biased inputs without losing accuracy there."""

from __future__ import annotations

import random

import pytest
import torch

from dcomp_isa import OP_INDEX
from library.adaptation import TASKS, Evaluator, adapt, run_on_machine
from library.compiler import compile_program
from library.freezing import ProgramParameters


def _expected_answer(task_name: str, memory: list[int]) -> list[int]:
    """The tasks' meaning, written in plain Python."""
    memory = list(memory)
    if task_name == "increment":
        i = 0
        while memory[i] != 0:
            memory[i] += 1
            i += 1
    else:  # listk
        node = memory[1]
        for _ in range(memory[0]):
            node = memory[node]
        memory[0] = memory[node + 1]
    return memory


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("biased", [True, False])
def test_general_programs_solve_their_tasks(name, biased):
    task = TASKS[name]
    memories = task.inputs(50, biased=biased, seed=1)
    for memory, answer in zip(memories, task.answers(memories).tolist()):
        assert answer == _expected_answer(name, memory)
        assert task.run(task.program(), memory).halted


def test_biased_inputs_are_biased():
    rng = random.Random(0)
    assert all(TASKS["increment"].sample(rng, True)[1] == 0 for _ in range(20))  # length-1 lists
    assert all(TASKS["listk"].sample(rng, True)[0] == 0 for _ in range(20))  # k = 0


@pytest.mark.parametrize("name", sorted(TASKS))
def test_expected_steps_of_a_one_hot_program_are_its_step_count(name):
    task = TASKS[name]
    evaluate = Evaluator.for_task(task, size=6, seed=0)
    program = task.program()
    tensors = compile_program(program, n=task.n, num_registers=task.num_registers)
    run = run_on_machine(evaluate.machine, tensors, evaluate.biased, evaluate.horizon)
    steps = [task.run(program, memory).steps for memory in evaluate.biased]
    assert run.expected_steps.tolist() == pytest.approx(steps, abs=1e-4)
    assert torch.equal(run.memory.argmax(-1), evaluate.biased_answers)


def test_soft_program_gets_gradients_from_the_step_count():
    task = TASKS["increment"]
    evaluate = Evaluator.for_task(task, size=4, seed=0)
    params = ProgramParameters.from_program(task.program(), n=task.n, num_registers=task.num_registers, confidence=0.9)
    run = run_on_machine(evaluate.machine, params.tensors(), evaluate.biased, evaluate.horizon)
    run.expected_steps.sum().backward()
    # Halting at line 6 (`jump 2 loop`) instead of looping back saves steps: descent raises its halt logit.
    assert task.program().lines[6][0].op == "jump"
    assert float(params.op.grad[6, 0, OP_INDEX["halt"]]) < 0


def test_quick_adaptation_halts_sooner_and_stays_correct_on_the_biased_inputs():
    result = adapt(TASKS["increment"], iterations=25, batch=8, evaluation_size=32, seed=0)
    before, after = result.before, result.after
    assert after.biased_steps < before.biased_steps
    assert after.expected_steps < before.expected_steps
    assert after.biased_accuracy >= before.biased_accuracy == 1.0
    assert len(result.losses) == 25 and result.losses[-1] < result.losses[0]
