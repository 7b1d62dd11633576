"""Experiment 4, diagnostics: per-step gradient norms and halting through the differentiable interpreter.

The paper blames the collapse of its Tables 1–2 at recursion depth 3 on long gradient paths. This script
measures the path directly. For `fib` at recursion depth d (8·d steps) and `gcd` with k Euclid steps
(2·k + 2 steps), each compiled and run alone on the differentiable machine from sharp (one-hot) or softened
input distributions, it records

* gradient norms: with the loss L = −log r0_T[answer] at the interpreter's step count T (the step budget the
  experiments give the machine) against the reference interpreter's answer, ||∂L/∂S_t|| for every step
  t = 0..T, separately for the registers, the memory and the program counter (per example, median over the
  examples);
* halting: the halted mass h_t at every step up to `--horizon`·T, against the interpreter's exact halting
  step T: the expected halting step, the mass still running at T and at the step limit, the first step with
  h ≥ the machine's halt threshold, and whether r0 at T agrees with the interpreter.

Softened inputs are what a network feeds the machine: each input register holds (1 − ε) on the true value and
ε spread evenly over the other n − 1 values (ε = 0: one-hot). The machine runs in float64 so that the norms,
which span many decades, carry no float32 rounding floor.

    python -m experiments.diagnostics --json runs/diagnostics.json --figures docs/figures
    python -m experiments.diagnostics --quick          # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from dcomp_machine import MachineState, ProgramTensors, RegisterMachine, one_hot_values
from experiments.common import Timer, markdown_table, setup
from library.compiling import compile_library
from library.interpreter import run_reference
from library.plotting import figure
from library.program import Program

INPUT_REGISTERS = {"fib": (1, 2, 3), "gcd": (1, 2)}  # fib: r1 = a, r2 = b, r3 = d; gcd: r1 = a, r2 = b
LABELS = {"fib": "depth d", "gcd": "Euclid steps k"}
COMPONENTS = ("registers", "memory", "pc")
DTYPE = torch.float64


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of one diagnostics run (the command line's defaults)."""

    n: int = 32
    fib_depths: tuple[int, ...] = (1, 2, 3, 4, 5)
    gcd_steps: tuple[int, ...] = (1, 2, 3, 4, 5)  # Euclid steps; n = 32 allows at most 6 (21, 13)
    softness: tuple[float, ...] = (0.0, 0.01, 0.1, 0.3)  # ε, the input mass off the true value
    examples: int = 64  # input tuples per case
    horizon: float = 2.0  # the halting run goes on to horizon · T steps


@dataclasses.dataclass(frozen=True)
class Case:
    """One program at one depth: input values, the interpreter's answers and its (common) step count."""

    program: str
    label: int  # fib: the recursion depth d; gcd: the number of Euclid steps k
    values: torch.Tensor  # (examples, inputs) long, in INPUT_REGISTERS[program] order
    answers: torch.Tensor  # (examples,) long: the interpreter's r0
    steps: int  # T: the interpreter's step count, the same for every example of the case


# ------------------------------------------------------------------------------------------------ cases
def compile_alone(name: str, n: int) -> tuple[Program, ProgramTensors]:
    """A standard program linked on its own: the interpreter's `Program` and the machine's one-hot tensors."""
    compiled = compile_library([name], n=n, dtype=DTYPE)
    return compiled.program, compiled.tensors


def fib_values(n: int, depth: int, examples: int, generator: torch.Generator) -> torch.Tensor:
    """`(examples, 3)`: random (a, b) with the depth d."""
    pairs = torch.randint(n, (examples, 2), generator=generator)
    return torch.cat([pairs, torch.full((examples, 1), depth)], 1)


def euclid_steps(a: int, b: int) -> int:
    """How many (a, b) → (b, a mod b) steps until b = 0."""
    steps = 0
    while b:
        a, b, steps = b, a % b, steps + 1
    return steps


def gcd_values(n: int, steps: int, examples: int, generator: torch.Generator) -> torch.Tensor:
    """`(≤ examples, 2)`: a random sample of the pairs (a, b) in [0, n)² that take exactly `steps` Euclid steps."""
    pairs = torch.tensor([(a, b) for a in range(n) for b in range(n) if euclid_steps(a, b) == steps])
    if len(pairs) == 0:
        raise ValueError(f"no pair below n = {n} takes {steps} Euclid steps")
    return pairs[torch.randperm(len(pairs), generator=generator)[:examples]]


def make_case(name: str, label: int, values: torch.Tensor, program: Program, n: int) -> Case:
    """Runs the reference interpreter on every input tuple; its step count must not depend on the values."""
    registers = INPUT_REGISTERS[name]
    runs = [run_reference(program, n=n, memory_size=n, registers=dict(zip(registers, row))) for row in values.tolist()]
    steps = {run.steps for run in runs}
    if len(steps) != 1 or not all(run.halted for run in runs):
        raise ValueError(f"{name} {label}: the interpreter's step counts differ or a run did not halt: {steps}")
    answers = torch.tensor([run.state.registers[0] for run in runs])
    return Case(name, label, values, answers, steps.pop())


def make_cases(settings: Settings, generator: torch.Generator, programs: Mapping[str, Program]) -> list[Case]:
    """fib at every depth, gcd at every Euclid step count."""
    n = settings.n
    cases = [
        make_case("fib", d, fib_values(n, d, settings.examples, generator), programs["fib"], n)
        for d in settings.fib_depths
    ]
    cases += [
        make_case("gcd", k, gcd_values(n, k, settings.examples, generator), programs["gcd"], n)
        for k in settings.gcd_steps
    ]
    return cases


def step_table(program: Program, name: str, n: int, max_steps: int) -> torch.Tensor:
    """`(n,) * inputs` long: the interpreter's step count for every input tuple, max_steps + 1 where it has not
    halted by then (the exact reference for softened inputs, which are mixtures of tuples)."""
    registers = INPUT_REGISTERS[name]
    runs = (
        run_reference(program, n=n, memory_size=n, registers=dict(zip(registers, values)), max_steps=max_steps)
        for values in itertools.product(range(n), repeat=len(registers))
    )
    return torch.tensor([run.steps if run.halted else max_steps + 1 for run in runs]).view((n,) * len(registers))


# ---------------------------------------------------------------------------------------------- inputs
def soften(values: torch.Tensor, n: int, epsilon: float) -> torch.Tensor:
    """`(examples,)` values → `(examples, n)`: 1 − ε on the value, ε / (n − 1) on each other value."""
    one_hot = one_hot_values(values, n, DTYPE)
    return (1 - epsilon) * one_hot + epsilon / (n - 1) * (1 - one_hot)


def entropy(epsilon: float, n: int) -> float:
    """Entropy (nats) of one softened input distribution."""
    terms = [(1 - epsilon, 1), (epsilon / (n - 1), n - 1)]
    return 0.0 - sum(count * p * math.log(p) for p, count in terms if p > 0)  # 0.0 −: no "-0.00" at ε = 0


def start_state(machine: RegisterMachine, program: ProgramTensors, case: Case, epsilon: float) -> MachineState:
    """The settled initial state with the softened inputs, every component a leaf that requires grad (so that
    ∂L/∂S_0 exists for memory and pc too, which do not depend on the inputs)."""
    inputs = {r: soften(case.values[:, i], machine.n, epsilon) for i, r in enumerate(INPUT_REGISTERS[case.program])}
    state = machine.settle(program, machine.initial_state(len(case.values), program.lines, inputs=inputs, dtype=DTYPE))
    leaves = {c: getattr(state, c).detach().requires_grad_() for c in COMPONENTS}
    return dataclasses.replace(state, **leaves)


def trajectory(
    machine: RegisterMachine, program: ProgramTensors, state: MachineState, steps: int
) -> list[MachineState]:
    """S_0 .. S_steps, stepped one by one (`run` stops early once every example has halted; we need every step)."""
    states = [state]
    for _ in range(steps):
        states.append(machine.step(program, states[-1]))
    return states


# -------------------------------------------------------------------------------------------- gradients
def answer_loss(state: MachineState, answers: torch.Tensor) -> torch.Tensor:
    """Σ over examples of −log r0[answer]: summed, so each example's gradient is its own loss's."""
    r0 = state.registers[:, 0]  # (examples, n)
    return -r0.gather(1, answers[:, None]).clamp_min(torch.finfo(r0.dtype).tiny).log().sum()


def state_gradients(states: Sequence[MachineState], loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """{component: `(len(states), examples, ...)`}: ∂loss/∂component_t. A component the loss does not reach
    (the last state's memory and pc) gets 0."""
    tensors = [getattr(state, c) for state in states for c in COMPONENTS]
    grads = torch.autograd.grad(loss, tensors, allow_unused=True, materialize_grads=True)
    return {c: torch.stack(grads[i :: len(COMPONENTS)]) for i, c in enumerate(COMPONENTS)}


def tangent(grad: torch.Tensor) -> torch.Tensor:
    """The gradient projected onto the simplex's tangent space (each row's mean removed): the part that moves
    mass between values (between lines, for the pc), which is all a change of a distribution can use; the
    removed part would change the row's total mass, which no input distribution can do."""
    return grad - grad.mean(-1, keepdim=True)


def median_norms(grad: torch.Tensor) -> list[float]:
    """`(steps, examples, ...)` → per step the median over examples of the per-example norm."""
    return grad.flatten(2).norm(dim=2).median(1).values.tolist()


def input_norms(grad: torch.Tensor, inputs: torch.Tensor) -> dict[str, float]:
    """Medians over examples of the input gradient's norms `(examples, inputs, n)`: raw, on the tangent space,
    and through a softmax that produced the inputs (∂L/∂z = p ⊙ (g − ⟨p, g⟩): what a network's logits get)."""
    logits = inputs * (grad - (inputs * grad).sum(-1, keepdim=True))
    return {
        f"input_{kind}": float(g.flatten(1).norm(dim=1).median())
        for kind, g in (("raw", grad), ("tangent", tangent(grad)), ("logits", logits))
    }


# ---------------------------------------------------------------------------------------------- halting
def mixture_halted(table: torch.Tensor, inputs: Sequence[torch.Tensor], limit: int) -> torch.Tensor:
    """`(limit + 1, examples)`: the exact halted mass per step when the inputs are independent draws from their
    distributions `(examples, n)` each: Σ over input tuples of P(tuple) · [the interpreter halts by step t]."""
    joint = inputs[0]
    for distribution in inputs[1:]:  # (examples, n^k), the first input slowest, as the flattened table
        joint = (joint[:, :, None] * distribution[:, None, :]).flatten(1)
    halted_by = table.flatten()[:, None] <= torch.arange(limit + 1)  # (n^k, limit + 1)
    return (joint @ halted_by.to(joint.dtype)).T


def halting_summary(halted: torch.Tensor, steps: int) -> dict:
    """From the halted mass `(limit + 1, examples)` per step: the mean curve, the expected halting step (of the
    mass halted by the limit) and the running mass at the interpreter's step T and at the limit."""
    newly = halted.diff(dim=0, prepend=torch.zeros_like(halted[:1]))  # (limit + 1, examples)
    t = torch.arange(len(halted), dtype=halted.dtype)[:, None]
    expected = (t * newly).sum(0) / halted[-1].clamp_min(torch.finfo(halted.dtype).tiny)
    return {
        "halted_curve": halted.mean(1).tolist(),
        "expected_step": float(expected.mean()),
        "running_at_T": max(0.0, float(1 - halted[steps].mean())),  # max: no −1e-14 from rounding
        "running_at_limit": max(0.0, float(1 - halted[-1].mean())),
    }


def threshold_steps(halted: torch.Tensor, steps: int, threshold: float) -> dict:
    """The share of examples (%) whose first step with h ≥ `threshold` (the machine's early exit) is exactly the
    interpreter's T, and of those that never reach it by the limit."""
    reached = halted >= threshold  # (limit + 1, examples)
    first = torch.where(reached.any(0), reached.int().argmax(0), -1)
    return {
        "threshold": threshold,
        "threshold_at_T": 100.0 * float((first == steps).double().mean()),
        "threshold_never": 100.0 * float((first < 0).double().mean()),
    }


def agreement(state: MachineState, answers: torch.Tensor) -> dict:
    """Whether r0's most likely value is the interpreter's answer (%), and the mean probability of the answer."""
    r0 = state.registers[:, 0].detach()
    return {
        "agree": 100.0 * float((r0.argmax(-1) == answers).double().mean()),
        "p_answer": float(r0.gather(1, answers[:, None]).mean()),
    }


# ------------------------------------------------------------------------------------------------- runs
def step_limit(case: Case, horizon: float) -> int:
    """How long the halting run lasts: `horizon` times the interpreter's step count."""
    return max(case.steps, math.ceil(horizon * case.steps))


def diagnose(
    machine: RegisterMachine, program: ProgramTensors, table: torch.Tensor, case: Case, epsilon: float, horizon: float
) -> dict:
    """One case at one softness: per-step gradient norms (median over examples) up to T; the machine's halting
    up to the limit, next to the exact mixture of interpreter runs (`table`: its step counts); agreement at T."""
    limit = step_limit(case, horizon)
    states = trajectory(machine, program, start_state(machine, program, case, epsilon), limit)
    final = states[case.steps]
    loss = answer_loss(final, case.answers)
    grads = state_gradients(states[: case.steps + 1], loss)
    halted = torch.stack([state.halted.detach() for state in states])  # (limit + 1, examples)
    rows = list(INPUT_REGISTERS[case.program])
    inputs = states[0].registers.detach()[:, rows]  # (examples, inputs, n)
    mixture = halting_summary(mixture_halted(table, inputs.unbind(1), limit), case.steps)
    return {
        "program": case.program,
        "label": case.label,
        "epsilon": epsilon,
        "steps": case.steps,
        "limit": limit,
        "loss": float(loss.detach()) / len(case.answers),
        "norms": {c: median_norms(grads[c]) for c in COMPONENTS},
        "tangent_norms": {c: median_norms(tangent(grads[c])) for c in COMPONENTS},
        **input_norms(grads["registers"][0][:, rows], inputs),
        **halting_summary(halted, case.steps),
        **threshold_steps(halted, case.steps, machine.halt_threshold),
        "mixture": mixture,
        **agreement(final, case.answers),
    }


def run_all(settings: Settings, seed: int) -> dict[str, dict]:
    """Every case at every softness, keyed 'program/label/ε'."""
    generator = setup(seed)
    compiled = {name: compile_alone(name, settings.n) for name in INPUT_REGISTERS}
    cases = make_cases(settings, generator, {name: program for name, (program, _) in compiled.items()})
    longest = {name: max(step_limit(c, settings.horizon) for c in cases if c.program == name) for name in compiled}
    tables = {name: step_table(program, name, settings.n, longest[name]) for name, (program, _) in compiled.items()}
    machine = RegisterMachine(settings.n, memory_size=settings.n)
    return {
        f"{case.program}/{case.label}/{epsilon}": diagnose(
            machine, compiled[case.program][1], tables[case.program], case, epsilon, settings.horizon
        )
        for case in cases
        for epsilon in settings.softness
    }


# ----------------------------------------------------------------------------------------------- report
def report(results: Mapping[str, dict], settings: Settings, seed: int, timer: Timer) -> str:
    """Markdown: a gradient table and a halting table, one row per program, depth and softness."""
    rows = list(results.values())
    entropies = ", ".join(f"ε = {e}: {entropy(e, settings.n):.2f}" for e in settings.softness)
    gradient_header = [
        "program",
        "label",
        "ε",
        "T",
        "loss",
        "‖∂L/∂R_T‖",
        "‖∂L/∂R_0‖",
        "tangent ‖∂L/∂R_0‖",
        "‖∂L/∂inputs‖",
        "tangent",
        "via softmax logits",
        "max_t ‖∂L/∂M_t‖",
        "‖∂L/∂pc_0‖",
        "tangent ‖∂L/∂pc_0‖",
    ]
    gradient_rows = [
        [
            r["program"],
            r["label"],
            r["epsilon"],
            r["steps"],
            *(
                f"{v + 0.0:.3g}"
                for v in (
                    r["loss"],
                    r["norms"]["registers"][-1],
                    r["norms"]["registers"][0],
                    r["tangent_norms"]["registers"][0],
                    r["input_raw"],
                    r["input_tangent"],
                    r["input_logits"],
                    max(r["norms"]["memory"]),
                    r["norms"]["pc"][0],
                    r["tangent_norms"]["pc"][0],
                )
            ),
        ]
        for r in rows
    ]
    halting_header = [
        "program",
        "label",
        "ε",
        "T",
        "limit",
        "E[halting step]",
        "running at T",
        "running at limit",
        "exact mixture: E[halting step]",
        "running at T",
        "running at limit",
        f"first h ≥ {rows[0]['threshold']} at T (%)",
        "never (%)",
        "r0 agrees at T (%)",
        "mean p(answer) at T",
    ]
    halting_rows = [
        [
            r["program"],
            r["label"],
            r["epsilon"],
            r["steps"],
            r["limit"],
            *_halting_cells(r),
            *_halting_cells(r["mixture"]),
            f"{r['threshold_at_T']:.0f}",
            f"{r['threshold_never']:.0f}",
            f"{r['agree']:.1f}",
            f"{r['p_answer']:.3f}",
        ]
        for r in rows
    ]
    sizes = (
        f"n = {settings.n}, {settings.examples} examples per case (gcd: at most that many pairs), seed {seed}; "
        f"norms are medians over the examples; input entropy (nats, max {math.log(settings.n):.2f}): "
        f"{entropies}; wall time {timer.seconds:.0f} s (CPU {timer.cpu_seconds:.0f} s)"
    )
    return "\n\n".join(
        [markdown_table(gradient_header, gradient_rows), markdown_table(halting_header, halting_rows), sizes]
    )


def _halting_cells(halting: Mapping[str, float]) -> list[str]:
    return [f"{halting['expected_step']:.2f}", f"{halting['running_at_T']:.3g}", f"{halting['running_at_limit']:.3g}"]


def plot_gradients(results: Mapping[str, dict], settings: Settings, path: Path) -> None:
    """Log-scale gradient norm vs step: per program a row; columns registers, memory, pc (one line per depth,
    sharp inputs) and registers at the deepest case for every softness. Zeros (unreached) are left out."""
    programs = {"fib": settings.fib_depths, "gcd": settings.gcd_steps}
    title = "Gradient of L = −log r0_T[answer] w.r.t. the machine state at every step (median over examples)"
    with figure(path, rows=len(programs), columns=4, size=(17, 3.8 * len(programs)), title=title) as axes:
        for row, (name, labels) in zip(axes, programs.items()):
            _plot_gradient_row(row, name, labels, results, settings)


def _plot_gradient_row(row, name: str, labels: Sequence, results: Mapping[str, dict], settings: Settings) -> None:
    for ax, component in zip(row, COMPONENTS):
        curves = [results[f"{name}/{label}/{settings.softness[0]}"]["norms"][component] for label in labels]
        for i, (label, norms) in enumerate(zip(labels, curves)):
            _plot_norms(ax, norms, f"{LABELS[name]} = {label}", f"C{i}")
        if not any(v > 0 for norms in curves for v in norms):
            ax.text(0.5, 0.5, "0 at every step", transform=ax.transAxes, ha="center")
        ax.set_title(f"{name}: ‖∂L/∂{component}_t‖, ε = {settings.softness[0]}", fontsize=9)
    for i, epsilon in enumerate(settings.softness):
        _plot_norms(row[3], results[f"{name}/{labels[-1]}/{epsilon}"]["norms"]["registers"], f"ε = {epsilon}", f"C{i}")
    row[3].set_title(f"{name}, {LABELS[name]} = {labels[-1]}: ‖∂L/∂registers_t‖ by softness", fontsize=9)
    for ax in row:
        ax.set(xlabel="step t", yscale="log")
        ax.legend(fontsize=7)


def _plot_norms(ax, norms: Sequence[float], label: str, color: str) -> None:
    values = torch.tensor(norms)
    ax.plot(
        torch.arange(len(values)),
        values.where(values > 0, torch.tensor(float("nan"))),
        marker=".",
        markersize=3,
        color=color,
        label=label,
    )


def plot_halting(results: Mapping[str, dict], settings: Settings, path: Path) -> None:
    """Mean halted mass vs step: per program a row, per softness a column, one line per depth with the
    interpreter's halting step dotted and the exact mixture of interpreter runs dashed in the same colour."""
    programs = {"fib": settings.fib_depths, "gcd": settings.gcd_steps}
    title = (
        "Cumulative halted mass (mean over examples): machine (solid), exact mixture of interpreter runs "
        "over the softened inputs (dashed); dotted: the interpreter's halting step T on the sharp inputs"
    )
    size = (4.2 * len(settings.softness), 3.6 * len(programs))
    with figure(path, rows=len(programs), columns=len(settings.softness), size=size, title=title) as axes:
        for row, (name, labels) in zip(axes, programs.items()):
            _plot_halting_row(row, name, labels, results, settings)


def _plot_halting_row(row, name: str, labels: Sequence, results: Mapping[str, dict], settings: Settings) -> None:
    for ax, epsilon in zip(row, settings.softness):
        for i, label in enumerate(labels):
            result = results[f"{name}/{label}/{epsilon}"]
            ax.plot(result["halted_curve"], color=f"C{i}", label=f"{LABELS[name]} = {label}")
            if epsilon > 0:  # at ε = 0 the mixture is the interpreter's run, which the machine matches
                ax.plot(result["mixture"]["halted_curve"], color=f"C{i}", linestyle="--", linewidth=1)
            ax.axvline(result["steps"], color=f"C{i}", linestyle=":", linewidth=1)
        ax.set(title=f"{name}, ε = {epsilon}", xlabel="step t", ylabel="halted mass h_t", ylim=(-0.02, 1.02))
    row[0].legend(fontsize=7)


# --------------------------------------------------------------------------------------------- command
QUICK = Settings(n=16, fib_depths=(1, 2), gcd_steps=(1, 2), softness=(0.0, 0.1), examples=4)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=Settings.n)
    parser.add_argument("--fib-depths", type=int, nargs="+", default=list(Settings.fib_depths))
    parser.add_argument("--gcd-steps", type=int, nargs="+", default=list(Settings.gcd_steps))
    parser.add_argument(
        "--softness",
        type=float,
        nargs="+",
        default=list(Settings.softness),
        help="input mass ε off the true value; the first one is plotted per depth (use 0)",
    )
    parser.add_argument("--examples", type=int, default=Settings.examples)
    parser.add_argument(
        "--horizon",
        type=float,
        default=Settings.horizon,
        help="the halting run lasts horizon × the interpreter's step count",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every case's result here")
    parser.add_argument(
        "--figures",
        type=Path,
        default=None,
        help="write diagnostics_gradient_norms.png and diagnostics_halting.png into this folder",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: n = 16, depths 1-2, 4 examples")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        return QUICK
    return Settings(
        n=args.n,
        fib_depths=tuple(args.fib_depths),
        gcd_steps=tuple(args.gcd_steps),
        softness=tuple(args.softness),
        examples=args.examples,
        horizon=args.horizon,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    settings = settings_from(args)
    timer = Timer()
    results = run_all(settings, args.seed)
    print(report(results, settings, args.seed, timer))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    if args.figures:
        plot_gradients(results, settings, args.figures / "diagnostics_gradient_norms.png")
        plot_halting(results, settings, args.figures / "diagnostics_halting.png")
    return results


if __name__ == "__main__":
    main()
