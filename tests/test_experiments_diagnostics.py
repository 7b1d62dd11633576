"""Smoke test of experiments/diagnostics.py (per-step gradient norms and halting through the interpreter): on
one-hot inputs the machine halts exactly at the interpreter's step and agrees with its answer, and every case
has one finite gradient norm per step."""

from __future__ import annotations

import math

import pytest
import torch

from experiments import diagnostics as dg

torch.set_num_threads(1)  # as the experiments do: tiny tensors, and two threads stall on a shared machine


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    figures = tmp_path_factory.mktemp("figures")
    results = dg.main(["--quick", "--figures", str(figures)])
    assert {p.name for p in figures.iterdir()} == {"diagnostics_gradient_norms.png", "diagnostics_halting.png"}
    return results


def test_every_case_and_softness_ran(results):
    expected = {
        f"{name}/{label}/{eps}"
        for name, labels in (("fib", dg.QUICK.fib_depths), ("gcd", dg.QUICK.gcd_steps))
        for label in labels
        for eps in dg.QUICK.softness
    }
    assert set(results) == expected


def test_sharp_inputs_halt_at_the_interpreters_step_with_its_answer(results):
    for key, result in results.items():
        if result["epsilon"] == 0.0:
            assert result["threshold_at_T"] == 100.0, key
            assert result["expected_step"] == pytest.approx(result["steps"]), key
            assert result["mixture"]["expected_step"] == pytest.approx(result["steps"]), key
            assert result["running_at_T"] == pytest.approx(0.0, abs=1e-9), key
            assert result["agree"] == 100.0 and result["p_answer"] == pytest.approx(1.0), key
    assert results["fib/2/0.0"]["steps"] == 16 and results["gcd/1/0.0"]["steps"] == 4  # fib: 8·d, gcd: 2·k + 2


def test_one_finite_gradient_norm_per_step(results):
    for key, result in results.items():
        for component in dg.COMPONENTS:
            norms = result["norms"][component]
            assert len(norms) == result["steps"] + 1, key
            assert all(math.isfinite(v) for v in norms), key
        assert all(v > 0 for v in result["norms"]["registers"]), key  # the answer depends on r_t at every step
        assert len(result["halted_curve"]) == result["limit"] + 1, key
        if result["epsilon"] == 0.0:  # −log p at p = 1: ∂L/∂r0[answer] = −1, nothing else
            assert result["norms"]["registers"][-1] == pytest.approx(1.0), key


def test_mixture_halting_of_one_hot_inputs_is_the_step_table():
    table = torch.tensor([[3, 5], [7, 9]])  # steps of inputs (x, y) in {0, 1}²
    inputs = [torch.tensor([[0.0, 1.0], [0.5, 0.5]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    halted = dg.mixture_halted(table, inputs, limit=9)  # (10, 2)
    assert halted[:, 0].tolist() == [0.0] * 7 + [1.0] * 3  # (1, 0): 7 steps
    assert halted[:, 1].tolist() == [0.0] * 5 + [0.5] * 4 + [1.0]  # (0, 1) or (1, 1): 5 or 9 steps
