"""Training throughput and peak memory of LlamaDComp against the same LlamaForCausalLM without the computer block.

The model is the paper's small shape: hidden 128, 2 decoder layers, the LLaMA-3 vocabulary (128,256 tokens, the real
tokenizer from `library.tokenizer`), with the computer (n = 128, the mod-128 calculator library) after layer
`--computer-layer`. Batches are real prompts from `library.tasks.arithmetic_task`, tokenized with
`tokenize_for_causal_lm` ("Add 3 and 4 " → answer "7" + EOS; labels on the answer and EOS only), right-padded per
batch. LlamaDComp is `library.install.from_llama` of the very Llama it is compared with (same weights, gate 0: the
same loss at the first step, checked).

Configurations (each a full training step: forward, loss, backward, AdamW step over all parameters):

* Llama, with full logits, or with the LM head only at labelled positions (boolean `logits_to_keep` with
  `shift_labels`, the same loss);
* LlamaDComp with the computer on every non-padding position (the default) or only at the answer position
  (`computer_mask` = `answer_position`, where the first answer token is predicted), each with full or
  labelled-only logits.

Every configuration runs in its own child process, forked from the driver once the driver has imported torch,
transformers and the model code (no model or tensor of another configuration exists in it; the fork saves the
~5 s of CPU, 15 s of wall time on a busy machine, of importing per configuration). Data loading and model building
are not timed. Measured:

* step time: median wall time of --steps training steps after --warmup steps, and the median CPU time
  (`time.process_time`) of the same steps, split into forward (with loss), backward and optimizer step; tokens/s =
  non-padding tokens of the batch / step time. On a shared machine CPU time is the robust figure (other processes
  inflate wall time much more than CPU time); "× Llama" divides this row's CPU tokens/s by the CPU tokens/s of the
  Llama with the same logits setting;
* memory, from the kernel's counters (tracemalloc does not see torch's allocations): VmHWM, the peak resident set,
  reset to the current resident set by writing 5 to /proc/self/clear_refs (Linux). Process peak = highest resident
  set of the child (it starts as the driver after its imports); model built = resident set with model and
  optimizer built; training peak = highest rise over that during all steps (gradients, AdamW states,
  activations, logits); fwd+bwd peak = median rise during forward + backward of a timed step over the resident set
  at its start (activations, logits, gradients; the AdamW states exist by then, gradients are freed after every
  step). Each child sets glibc's mmap threshold to 64 KiB (`mallopt`), so freed tensors leave the resident set
  instead of staying cached by malloc.

Threads: torch.set_num_threads(--threads) in every child, OMP_NUM_THREADS / MKL_NUM_THREADS set to the same value and
OMP_WAIT_POLICY=PASSIVE (unless set) before torch is imported: spinning OpenMP threads on a small shared machine can
make steps many times slower. With --rounds > 1 the configurations run interleaved (round-robin) and the medians pool
all rounds.

Example: python -m benchmarks.bench_model --quick
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks.harness import reset_peak, run_forked, set_thread_environment, status_kib, write_report

# name: (model, computer runs at, logits at)
CONFIGS = {
    "llama-full": ("Llama", "—", "all positions"),
    "llama-labelled": ("Llama", "—", "labelled"),
    "dcomp-every-full": ("LlamaDComp", "every position", "all positions"),
    "dcomp-answer-full": ("LlamaDComp", "answer position", "all positions"),
    "dcomp-every-labelled": ("LlamaDComp", "every position", "labelled"),
    "dcomp-answer-labelled": ("LlamaDComp", "answer position", "labelled"),
}
MMAP_THRESHOLD = 64 * 1024


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 8, 1 warm-up + 3 timed steps, 1 round (< 2 min)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch", type=int, default=16, help="prompts per training step")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (optimizer state, allocator)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round (median)")
    parser.add_argument("--rounds", type=int, default=3, help="child processes per configuration, interleaved")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per child (default 1)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=512)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--computer-layer", type=int, default=0, help="decoder layer after which the computer runs")
    parser.add_argument(
        "--library",
        nargs="+",
        default=["add", "sub", "mul", "div"],
        help="programs (default: the arithmetic task's calculator)",
    )
    parser.add_argument("--max-steps", type=int, default=16, help="computer_max_steps (the run exits once halted)")
    parser.add_argument(
        "--input-registers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="library_input_registers (parsed from the hidden state)",
    )
    parser.add_argument("--tie-embeddings", action="store_true", help="tie the LM head to the input embeddings")
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.warmup, args.steps, args.rounds = 8, 1, 3, 1
    return args


# ---------------------------------------------------------------------------------------------------------
# Data (driver): the same batches for every configuration
# ---------------------------------------------------------------------------------------------------------


def prepare_batches(args) -> tuple[list[dict], dict]:
    """Tokenized arithmetic prompts, right-padded per batch: one dict of tensors per step."""
    import torch

    from library.tasks import arithmetic_task, tokenize_for_causal_lm
    from library.tokenizer import llama3_tokenizer

    tokenizer = llama3_tokenizer()
    count = args.batch * (args.warmup + args.steps)
    task = arithmetic_task(n=128, train_size=count, validation_size=0, test_size=0, seed=0)["train"]
    rows = tokenize_for_causal_lm(task, tokenizer)
    batches = []
    for step in range(args.warmup + args.steps):
        chunk = rows.select(range(step * args.batch, (step + 1) * args.batch))
        length = max(len(ids) for ids in chunk["input_ids"])
        ids = torch.full((args.batch, length), tokenizer.pad_token_id)
        mask = torch.zeros(args.batch, length, dtype=torch.long)
        labels = torch.full((args.batch, length), -100)
        answer = torch.zeros(args.batch, length, dtype=torch.bool)
        for row, (tokens, target, position) in enumerate(
            zip(chunk["input_ids"], chunk["labels"], chunk["answer_position"])
        ):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
            labels[row, : len(tokens)] = torch.tensor(target)
            answer[row, position] = True
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels, "answer_mask": answer})
    lengths = [len(ids) for ids in rows["input_ids"]]
    info = {
        "vocab": len(tokenizer),
        "prompts": count,
        "tokens_min": min(lengths),
        "tokens_max": max(lengths),
        "example": rows[0]["text"] + " " + rows[0]["answer_text"],
        "special": (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id),
    }
    return batches, info


# ---------------------------------------------------------------------------------------------------------
# One configuration (forked child)
# ---------------------------------------------------------------------------------------------------------


class PeakTracker:
    """Peak resident-set figures from VmHWM, which writing 5 to /proc/self/clear_refs resets to the current VmRSS."""

    def __init__(self):
        self.works = reset_peak()
        self.process = status_kib("VmRSS")
        self.built = self.step_start = self.process
        self.training = 0

    def _record(self) -> int:
        """Peak since the last reset; updates the process and training peaks; resets. Returns the peak (KiB)."""
        peak = status_kib("VmHWM")
        self.process = max(self.process, peak)
        self.training = max(self.training, peak - self.built)
        reset_peak()
        return peak

    def model_built(self) -> None:
        self._record()
        self.built = status_kib("VmRSS")
        self.training = 0

    def start_step(self) -> None:
        self._record()
        self.step_start = status_kib("VmRSS")

    def rise(self) -> int:
        """Peak since the start of the step over the resident set at its start (KiB)."""
        return self._record() - self.step_start


def build_model(name: str, args, special: tuple[int, int, int]):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from library.install import from_llama

    torch.manual_seed(0)
    bos, eos, pad = special
    config = LlamaConfig(
        vocab_size=128_256,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=256,
        tie_word_embeddings=args.tie_embeddings,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    llama = LlamaForCausalLM(config)
    if CONFIGS[name][0] == "Llama":
        return llama
    # W_out keeps its random init (from_llama without a tokenizer): its values do not change the cost.
    return from_llama(
        llama,
        computer_layer=args.computer_layer,
        library=args.library,
        computer_values=128,
        computer_max_steps=args.max_steps,
        library_input_registers=args.input_registers,
    )


def run_one(name: str, args, batches: list[dict], special: tuple[int, int, int]) -> dict:
    import torch

    from modeling_llama_dcomp import shift_labels

    ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD (also stops its dynamic growth)
    torch.set_num_threads(args.threads)
    peaks = PeakTracker()
    model_kind, computer_at, logits_at = CONFIGS[name]
    model = build_model(name, args, special).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    peaks.model_built()

    machine_steps = []
    if model_kind == "LlamaDComp":  # count the interpreter steps of every computer run (early exit once halted)
        machine = model.computer.machine
        run = machine.run

        def counted(*a, **k):
            result = run(*a, **k)
            machine_steps.append(result.steps)
            return result

        machine.run = counted

    def inputs(batch: dict) -> dict:
        labels = batch["labels"]
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}
        if logits_at == "labelled":
            shifted = shift_labels(labels)
            keep = shifted != -100  # positions whose next token is labelled
            kwargs.update(logits_to_keep=keep, shift_labels=shifted[keep])
        if computer_at == "answer position":
            kwargs["computer_mask"] = batch["answer_mask"]
        return kwargs

    def step(batch: dict) -> tuple[float, list[float], int]:
        """One training step: the loss, the CPU seconds of forward (with loss), backward and optimizer step, and
        the peak KiB that forward + backward add over the resident set at the start of the step."""
        peaks.start_step()
        marks = [time.process_time()]
        loss = model(**inputs(batch)).loss
        marks.append(time.process_time())
        loss.backward()
        marks.append(time.process_time())
        forward_backward = peaks.rise()
        optimizer.step()
        marks.append(time.process_time())
        optimizer.zero_grad(set_to_none=True)  # every step starts without gradients
        return float(loss.detach()), [b - a for a, b in zip(marks, marks[1:])], forward_backward

    losses, wall, cpu, phases, tokens, step_peaks = [], [], [], [], [], []
    for index, batch in enumerate(batches):
        t0, c0 = time.perf_counter(), time.process_time()
        loss, phase, forward_backward = step(batch)
        elapsed, elapsed_cpu = time.perf_counter() - t0, time.process_time() - c0
        losses.append(loss)
        if index >= args.warmup:
            wall.append(elapsed)
            cpu.append(elapsed_cpu)
            phases.append(phase)
            step_peaks.append(forward_backward)
            tokens.append(int(batch["attention_mask"].sum()))
    peaks.start_step()  # records the last step's optimizer peak
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "phases_s": phases,
        "tokens": tokens,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "process_peak_mib": peaks.process / 1024 if peaks.works else None,
        "built_mib": peaks.built / 1024,
        "training_peak_mib": peaks.training / 1024 if peaks.works else None,
        "step_peak_mib": statistics.median(step_peaks) / 1024 if peaks.works else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "machine_steps": statistics.median(machine_steps) if machine_steps else None,
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------


def summarize(runs: list[dict]) -> dict:
    """Pools the rounds: medians over all timed steps, peaks as the largest of the rounds (step peaks: median)."""

    def largest(key):
        values = [run[key] for run in runs if run[key] is not None]
        return max(values) if values else None

    wall = [s for run in runs for s in run["wall_s"]]
    cpu = [s for run in runs for s in run["cpu_s"]]
    phases = [phase for run in runs for phase in run["phases_s"]]
    step_peaks = [run["step_peak_mib"] for run in runs if run["step_peak_mib"] is not None]
    return {
        "step_ms": statistics.median(wall) * 1e3,
        "step_cpu_ms": statistics.median(cpu) * 1e3,
        "phase_cpu_ms": [statistics.median(phase[i] for phase in phases) * 1e3 for i in range(3)],
        "tokens_per_s": statistics.median(t / s for run in runs for t, s in zip(run["tokens"], run["wall_s"])),
        "tokens_per_cpu_s": statistics.median(t / s for run in runs for t, s in zip(run["tokens"], run["cpu_s"])),
        "tokens": statistics.median(t for run in runs for t in run["tokens"]),
        "process_peak_mib": largest("process_peak_mib"),
        "built_mib": largest("built_mib"),
        "training_peak_mib": largest("training_peak_mib"),
        "step_peak_mib": statistics.median(step_peaks) if step_peaks else None,
        "first_loss": runs[0]["first_loss"],
        "parameters": runs[0]["parameters"],
        "machine_steps": runs[0]["machine_steps"],
        "threads": runs[0]["threads"],
        "samples": len(wall),
    }


def first_loss_check(rows: dict[str, dict]) -> str:
    """LlamaDComp at gate 0 computes the Llama's function: its first-step loss must equal the Llama's (with the
    same logits setting) exactly; labelled-only logits give the full-logits loss up to rounding."""
    llama = {CONFIGS[name][2]: row["first_loss"] for name, row in rows.items() if CONFIGS[name][0] == "Llama"}
    problems = [
        f"{name}: {row['first_loss']!r} != Llama {llama[CONFIGS[name][2]]!r}"
        for name, row in rows.items()
        if CONFIGS[name][2] in llama and row["first_loss"] != llama[CONFIGS[name][2]]
    ]
    values = [row["first_loss"] for row in rows.values()]
    if max(values) - min(values) > 1e-4 * abs(values[0]):
        problems.append(f"losses spread from {min(values)!r} to {max(values)!r}")
    if problems:
        return "FAILED: " + "; ".join(problems)
    compared = (
        "LlamaDComp's bit-equal to the Llama's with the same logits setting (gate 0)"
        if llama
        else "no Llama row to compare with"
    )
    return (
        f"first-step loss {values[0]:.6f} in every configuration, {compared}; spread "
        f"{max(values) - min(values):.1g} (labelled-only vs full logits: rounding)"
    )


def rows_extra(rows: dict[str, dict]) -> str:
    """How many parameters the computer adds (LlamaDComp rows minus Llama rows), as text."""
    llama = [row["parameters"] for name, row in rows.items() if CONFIGS[name][0] == "Llama"]
    dcomp = [row["parameters"] for name, row in rows.items() if CONFIGS[name][0] == "LlamaDComp"]
    return f"{dcomp[0] - llama[0]:,}" if llama and dcomp else "a few"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def markdown(rows: dict[str, dict]) -> str:
    lines = [
        "| model | computer runs at | logits at | params | step ms (wall) | step ms (CPU) | tokens/s (wall) "
        "| tokens/s (CPU) | × Llama tokens/s (CPU) | CPU ms fwd / bwd / AdamW | × Llama fwd+bwd speed (CPU) "
        "| process peak MiB | model built MiB "
        "| training peak MiB (over built) | fwd+bwd peak MiB (over step start) | machine steps |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        kind, computer_at, logits_at = CONFIGS[name]
        baseline = rows.get("llama-full" if logits_at == "all positions" else "llama-labelled")
        ratio = f"{row['tokens_per_cpu_s'] / baseline['tokens_per_cpu_s']:.2f}" if baseline else "—"
        model_ratio = f"{sum(baseline['phase_cpu_ms'][:2]) / sum(row['phase_cpu_ms'][:2]):.2f}" if baseline else "—"
        steps = f"{row['machine_steps']:g}" if row["machine_steps"] is not None else "—"
        lines.append(
            f"| {kind} | {computer_at} | {logits_at} | {row['parameters'] / 1e6:.2f} M | {row['step_ms']:.0f} | "
            f"{row['step_cpu_ms']:.0f} | {row['tokens_per_s']:.0f} | {row['tokens_per_cpu_s']:.0f} | {ratio} | "
            f"{' / '.join(f'{ms:.0f}' for ms in row['phase_cpu_ms'])} | {model_ratio} | "
            f"{_mib(row['process_peak_mib'])} | "
            f"{_mib(row['built_mib'])} | {_mib(row['training_peak_mib'])} | {_mib(row['step_peak_mib'])} | {steps} |"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    set_thread_environment(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the children are forked after tokenizing
    os.environ["HF_HUB_OFFLINE"] = "1"
    start = time.perf_counter()
    load = os.getloadavg()[0]
    import torch  # noqa: F401  (imported once here; the forked children share it)
    import transformers  # noqa: F401

    import library.install  # noqa: F401
    import modeling_llama_dcomp  # noqa: F401

    batches, data = prepare_batches(args)
    print(f"  imports and data ready ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in args.configs}
    for round_index in range(args.rounds):
        for name in args.configs:
            runs[name].append(run_forked(run_one, name, args, batches, data["special"]))
            print(
                f"  round {round_index + 1} {name} done ({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    rows = {name: summarize(runs[name]) for name in args.configs}
    loss_note = first_loss_check(rows)
    threads = sorted({row["threads"] for row in rows.values()})
    header = (
        f"Model: hidden {args.hidden}, {args.layers} layers, intermediate {args.intermediate}, {args.heads} heads, "
        f"vocabulary {data['vocab']:,} (LLaMA-3 tokenizer), {'tied' if args.tie_embeddings else 'untied'} "
        f"embeddings; computer after layer {args.computer_layer}, n = 128, library {', '.join(args.library)}, "
        f"computer_max_steps {args.max_steps}, inputs parsed into r{', r'.join(map(str, args.input_registers))}. "
        f"Data: {data['prompts']} arithmetic prompts "
        f'({data["tokens_min"]}–{data["tokens_max"]} tokens with BOS, answer and EOS; e.g. "{data["example"]}"), '
        f"batch {args.batch}, right-padded. Step = forward + loss + backward + AdamW over all parameters.\n\n"
        f"{os.cpu_count()} CPUs, load average {load:.1f} at start and {os.getloadavg()[0]:.1f} at the end; torch "
        f"threads {', '.join(map(str, threads))} (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}). Medians of {args.steps} steps after {args.warmup} "
        f"warm-up step(s) × {args.rounds} round(s), each configuration in its own forked child per round; tokens/s "
        f"counts non-padding tokens (median {rows[args.configs[0]]['tokens']:.0f} per batch). × Llama = CPU "
        f"tokens/s of the row / CPU tokens/s of the Llama with the same logits setting. CPU ms fwd / bwd / AdamW = "
        f"median CPU time of forward (with loss), backward, optimizer step; × Llama fwd+bwd speed = the Llama's "
        f"(fwd + bwd) CPU time / this row's, i.e. the model's own overhead without the optimizer step (the same "
        f"AdamW work in every row: the computer adds {rows_extra(rows)} parameters).\n\n"
        f"Memory (VmHWM / VmRSS from /proc/self/status, VmHWM reset through /proc/self/clear_refs; glibc mmap "
        f"threshold {MMAP_THRESHOLD // 1024} KiB): process peak = highest resident set of the child (which starts "
        f"as the driver after importing torch and transformers); model built = resident set with model and optimizer "
        f"built; training peak = highest rise over that during all steps; fwd+bwd peak = median rise during "
        f"forward + backward of a timed step over the resident set at its start. Machine steps = median "
        f"interpreter steps per computer run (early exit once halted).\n\n"
        f"Check: {loss_note}. Total {time.perf_counter() - start:.0f} s."
    )
    title = "# Training cost of the computer block: LlamaDComp vs the same Llama"
    write_report(title, __spec__.name, argv, f"{header}\n\n{markdown(rows)}", args.output)


if __name__ == "__main__":
    main()
