"""Smoke tests of the §4.1 experiments (experiments/minimal_network.py, experiments/circuits_vs_tables.py):
the pieces they rely on are exact, and both scripts run end to end in their --quick mode."""

from __future__ import annotations

import pytest
import torch

from dcomp_machine import RegisterMachine, one_hot_values
from experiments import circuits_vs_tables as cvt
from experiments import minimal_network as mn
from experiments.common import MachineTool, select

N = 16
PROGRAMS = ("add", "sub", "fib")
torch.set_num_threads(1)  # as the experiments do: tiny tensors, and two threads stall on a shared machine


def one_hot_inputs(values: torch.Tensor, n: int = N) -> dict[int, torch.Tensor]:
    return {r: one_hot_values(values[:, i], n) for i, r in enumerate(mn.INPUT_REGISTERS)}


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_fib_parallel_matches_fib_in_d_plus_2_steps(depth):
    values = torch.cartesian_prod(torch.arange(N), torch.arange(N))
    values = torch.cat([values, torch.full((len(values), 1), depth)], 1)
    answers = mn.fibonacci_answers(values[:, 0], values[:, 1], depth, N)
    for parallel in (False, True):
        variant = mn.Variant(parallel=parallel)
        library = mn.library_for(variant, PROGRAMS, N)
        tool = MachineTool(library, RegisterMachine(N, memory_size=N), mn.fib_steps(variant, depth))
        selection = one_hot_values(torch.full((len(values),), PROGRAMS.index("fib")), len(PROGRAMS))
        assert torch.equal(tool(one_hot_inputs(values), selection).argmax(-1), answers)


def test_table_tool_equals_the_machine_on_one_hot_inputs():
    variant, steps = mn.Variant(), mn.fib_steps(mn.Variant(), 2)
    library = mn.library_for(variant, PROGRAMS, N)
    table = mn.TableTool(mn.program_tables(library, mn.SOURCES, N, [steps])[steps])
    machine = MachineTool(library, RegisterMachine(N, memory_size=N), steps)
    values = torch.randint(N, (64, 3), generator=torch.Generator().manual_seed(0))
    for p in range(len(PROGRAMS)):
        selection = one_hot_values(torch.full((64,), p), len(PROGRAMS))
        expected = machine(one_hot_inputs(values), selection)
        torch.testing.assert_close(table(one_hot_inputs(values), selection), expected, atol=1e-5, rtol=0)
    assert table.used[PROGRAMS.index("fib")] == (0, 1, 2) and table.used[PROGRAMS.index("add")] == (0, 1)


def test_hard_selection_is_exactly_one_hot_with_the_softmax_gradient():
    logits = torch.randn(5, 7, requires_grad=True)
    hard = select(logits, "hard")
    assert torch.equal(hard, one_hot_values(logits.argmax(-1), 7))
    weights = torch.randn(5, 7)
    (hard * weights).sum().backward()
    soft_logits = logits.detach().clone().requires_grad_()
    (soft_logits.softmax(-1) * weights).sum().backward()
    torch.testing.assert_close(logits.grad, soft_logits.grad)


def test_interface_init_adds_the_same_identity_block_for_every_slot_and_register():
    """The prior says "a register holds one of the inputs" and nothing about which slot; the readout starts
    as a scaled identity."""
    models = {}
    for init in ("default", "interface"):
        torch.manual_seed(0)
        models[init] = mn.MinimalNetwork(N, 3, len(PROGRAMS), init=init)
    added = models["interface"].before.weight - models["default"].before.weight
    torch.testing.assert_close(added[: 3 * N], 3.0 * torch.eye(N).repeat(3, 3))
    assert not added[3 * N :].any()
    torch.testing.assert_close(models["interface"].after.weight, 10.0 * torch.eye(N))


def test_tied_network_runs_unchanged_at_any_width():
    """With its routing and selection set by hand, the n-independent network is exact with the circuit
    ALU at n = 32 and at n = 256: no parameter depends on n."""
    order = [1, 2, 0]
    model = cvt.PermutationNetwork(len(cvt.ALU_OPS))
    with torch.no_grad():
        model.routing.fill_(-30.0)
        for register, slot in enumerate([order.index(0), order.index(1)]):
            model.routing[register, slot] = 30.0
        model.program.weight.fill_(-30.0)
        model.program.bias.zero_()
        for i, op in enumerate(cvt.TASK_OPS):
            model.program.weight[cvt.ALU_OPS.index(op), i] = 30.0
    for n in (32, 256):
        data = cvt.large_range_data(cvt.Settings(large_n=n, large_examples=64), order)
        logits = model(data, cvt.calculator(n, "circuit"))
        assert torch.equal(logits.argmax(-1), data.answers)


@pytest.mark.slow  # trains
def test_minimal_network_quick_run():
    results = mn.main(["--quick", "--variants", "paper", "init+bootstrap"])
    assert set(results) == {"paper/1/0", "init+bootstrap/1/0"}
    bootstrap = results["init+bootstrap/1/0"]
    assert {"table", "swap", "test", "decoded", "curve"} <= set(bootstrap)
    assert len(bootstrap["curve"]) == mn.QUICK.epochs
    assert all(0.0 <= bootstrap[key] <= 100.0 for key in ("table", "swap", "test", "decoded"))


@pytest.mark.slow  # trains
def test_circuits_vs_tables_quick_run():
    results = cvt.main(["--quick", "--networks", "tied"])
    assert set(results) == {f"tied/{arm}/0" for arm in cvt.ARMS}
    swap = results["tied/table→circuit/0"]
    assert {"before_swap", "after_swap", "large_circuit", "large_table", "large_small_table"} <= set(swap)
    assert swap["curve"][-1][0] == pytest.approx(cvt.QUICK.epochs)
