"""Freezing (eq. 9): masked entries of a trainable program stay bit-exactly fixed under SGD and Adam."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from listings import PAPER_FIBONACCI

from dcomp_machine import RegisterMachine, one_hot_values
from library.assembler import assemble
from library.compiler import compile_program, decompile
from library.freezing import (
    FIELDS,
    ProgramParameters,
    freeze_all,
    freeze_lines,
    freeze_program,
    library_lines,
    mask_updates,
)
from library.stdlib import standard_library

N, REGISTERS, MEMORY = 16, 8, 8


def _params(confidence: float = 0.9) -> ProgramParameters:
    program = assemble(PAPER_FIBONACCI, "fibonacci", n=N, num_registers=REGISTERS)
    return ProgramParameters.from_program(program, n=N, num_registers=REGISTERS, confidence=confidence)


def _loss(params: ProgramParameters) -> torch.Tensor:
    """A loss through the differentiable machine: make memory cell 1 hold 5 after six steps."""
    machine = RegisterMachine(N, REGISTERS, MEMORY)
    inputs = {4: one_hot_values(torch.tensor([1]), N)}  # r4 != 0: the loop keeps going
    state = machine.initial_state(1, params.lines, inputs=inputs)
    final = machine.run(params.tensors(), state, max_steps=6).state
    return -final.memory[0, 1, 5].clamp_min(1e-12).log()


def _snapshot(params: ProgramParameters) -> dict[str, torch.Tensor]:
    return {name: getattr(params, name).detach().clone() for name in FIELDS}


def _assert_only_trainable_moved(params: ProgramParameters, before: dict[str, torch.Tensor]) -> None:
    for name in FIELDS:
        now, mask = getattr(params, name).detach(), params.mask(name)
        assert torch.equal(now[~mask], before[name][~mask]), f"{name}: a frozen entry moved"
    moved = sum(int((getattr(params, name).detach() != before[name])[params.mask(name)].sum()) for name in FIELDS)
    assert moved > 0, "no trainable entry moved"


def test_from_program_puts_confidence_on_the_compiled_choices():
    program = assemble(PAPER_FIBONACCI, "fibonacci", n=N, num_registers=REGISTERS)
    tensors = ProgramParameters.from_program(program, n=N, num_registers=REGISTERS, confidence=0.8).tensors()
    compiled = compile_program(program, n=N, num_registers=REGISTERS)
    for name in FIELDS:
        chosen = (getattr(tensors, name) * getattr(compiled, name)).sum(-1)
        assert torch.allclose(chosen, torch.full_like(chosen, 0.8))
    with torch.no_grad():
        assert assemble(decompile(tensors), n=N, num_registers=REGISTERS).lines == program.lines
    with pytest.raises(ValueError):
        ProgramParameters.from_program(program, n=N, num_registers=REGISTERS, confidence=1.0)


def test_mask_helpers():
    params = _params()
    freeze_lines(params, [3], fields=["op"])
    assert not params.mask("op")[3].any() and params.mask("op")[2].all() and params.mask("a")[3].all()
    freeze_program(params, range(2, 4))
    for name in FIELDS:
        mask = params.mask(name)
        assert mask[2:4].all() and not mask[:2].any() and not mask[4:].any()
    freeze_program(params, range(0, 1), keep=["imm"])
    assert params.mask("imm")[0].all() and not params.mask("op")[0].any()
    freeze_all(params)
    assert not any(params.mask(name).any() for name in FIELDS)
    with pytest.raises(ValueError):
        freeze_lines(params, [0], fields=["opcode"])


def test_gradient_hook_zeroes_frozen_gradients():
    params = _params()
    freeze_lines(params, [1, 2])
    freeze_lines(params, [5], fields=["imm"])
    _loss(params).backward()
    for name in FIELDS:
        grad, mask = getattr(params, name).grad, params.mask(name)
        assert bool((grad[~mask] == 0).all()), name
    assert float(params.op.grad[params.mask("op")].abs().sum()) > 0


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.5),
        lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9),
        lambda p: torch.optim.Adam(p, lr=0.1, weight_decay=0.0),
    ],
    ids=["sgd", "sgd-momentum", "adam"],
)
def test_gradient_hooks_alone_keep_frozen_entries_exact(make_optimizer):
    """With zero optimizer state and no weight decay, g ⊙ M is enough: the frozen entries never move."""
    params = _params()
    freeze_lines(params, [0, 3])
    freeze_lines(params, [6], fields=["op"])
    before = _snapshot(params)
    optimizer = make_optimizer(params.parameters())
    for _ in range(4):
        optimizer.zero_grad()
        _loss(params).backward()
        optimizer.step()
    _assert_only_trainable_moved(params, before)


def test_weight_decay_and_carried_momentum_need_masked_updates():
    """AdamW's decay and Adam's momentum from before a freeze move frozen entries despite g ⊙ M = 0;
    `mask_updates` keeps them bit-exact."""
    for guarded in (False, True):
        params = _params()
        optimizer = torch.optim.AdamW(params.parameters(), lr=0.1, weight_decay=0.1)
        optimizer.zero_grad()
        _loss(params).backward()
        optimizer.step()  # momentum on every entry
        freeze_program(params, range(2, 5))
        if guarded:
            mask_updates(optimizer, params)
        before = _snapshot(params)
        for _ in range(3):
            optimizer.zero_grad()
            _loss(params).backward()
            optimizer.step()
        if guarded:
            _assert_only_trainable_moved(params, before)
        else:
            assert not torch.equal(params.op.detach()[0], before["op"][0])


def test_masked_updates_with_adam():
    params = _params()
    optimizer = torch.optim.Adam(params.parameters(), lr=0.1)
    mask_updates(optimizer, params)
    freeze_lines(params, [1, 4])
    before = _snapshot(params)
    for _ in range(5):
        optimizer.zero_grad()
        _loss(params).backward()
        optimizer.step()
    _assert_only_trainable_moved(params, before)


def test_masks_are_saved_with_the_weights():
    params = _params()
    freeze_lines(params, [2])
    restored = _params()
    restored.load_state_dict(params.state_dict())
    assert torch.equal(restored.mask("op"), params.mask("op"))


def test_all_but_one_library_program_frozen():
    """eq. 9 on the linked standard library: fine-tuning `fib` leaves every other program bit-exact."""
    linked = standard_library(n=128, num_registers=16, names=["add", "fib", "sum"])
    params = ProgramParameters.from_program(linked.program, n=128, num_registers=16, confidence=0.9)
    fib = library_lines(linked, "fib")
    assert fib.start == linked.entry_points["fib"] and fib.stop == linked.entry_points["sum"]
    freeze_program(params, fib)
    optimizer = torch.optim.AdamW(params.parameters(), lr=0.1, weight_decay=0.01)
    mask_updates(optimizer, params)
    before = _snapshot(params)
    for _ in range(2):
        optimizer.zero_grad()
        sum((getattr(params.tensors(), name) ** 2).sum() for name in FIELDS).backward()
        optimizer.step()
    outside = [line for line in range(params.lines) if line not in fib]
    for name in FIELDS:
        assert torch.equal(getattr(params, name).detach()[outside], before[name][outside]), name
        assert not torch.equal(getattr(params, name).detach()[fib.start : fib.stop], before[name][fib.start : fib.stop])


def test_a_copy_keeps_masking_its_gradients():
    params = _params()
    freeze_lines(params, [0, 1])
    for clone in (copy.deepcopy(params), pickle.loads(pickle.dumps(params))):
        _loss(clone).backward()
        assert bool((clone.op.grad[:2] == 0).all()) and float(clone.op.grad[2:].abs().sum()) > 0
        assert params.op.grad is None
