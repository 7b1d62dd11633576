"""The main job: teach a LlamaDComp model to use its compiled library from natural language (paper §4.2).

    python train.py                                          # the calculator experiment, mod 128, on CPU
    python train.py --task fibonacci --output-dir runs/fib
    python train.py predict --model runs/default "Add 3 and 4"

Data come from `library.tasks` (held-out phrasings and operand pairs in `test`, longer inputs in `test_long`);
supervision is on the answer tokens only (cross-entropy), the LM head runs only at labelled positions and the
computer only at the answer position. The output folder is Hub-ready: config with `auto_map`, the run-time
code files, `model.safetensors`, the tokenizer and README.md rendered from `model_card.md`.
Data parallelism comes from the standard launchers, unchanged: `torchrun --nproc_per_node N train.py ...` or
`accelerate launch --multi_gpu --num_processes N --num_machines 1 train.py ...` (mixed precision where CUDA
has it; gloo on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
import time
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

TASK_PROGRAMS = {
    "arithmetic": ("add", "sub", "mul", "div"),
    "fibonacci": ("fib",),
    "sort": ("sort",),
    "max": ("list_max",),
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODEL_CARD = Path(__file__).resolve().parent / "model_card.md"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--task", choices=sorted(TASK_PROGRAMS), default="arithmetic", help="training task")
    parser.add_argument("--n", type=int, default=128, help="number of values: arithmetic is mod n")
    parser.add_argument("--train-size", type=int, default=30000, help="training examples")
    parser.add_argument("--eval-size", type=int, default=1000, help="examples per validation/test split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of the model")
    parser.add_argument("--model", type=Path, default=None, help="start from this Llama checkpoint folder")
    parser.add_argument("--gguf", type=Path, default=None, help="start from this GGUF file of a Llama model")
    parser.add_argument("--hidden-size", type=int, default=128, help="hidden size of a from-scratch model")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers of a from-scratch model")
    parser.add_argument("--computer-layer", type=int, default=None,
                        help="decoder layer the computer follows (default: the last one)")
    parser.add_argument("--no-computer", action="store_true", help="the same model without the computer (baseline)")
    parser.add_argument("--lora", action="store_true", help="LoRA adapters on the base weights; the block trains fully")
    parser.add_argument("--epochs", type=float, default=1.0, help="training epochs")
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (-1: --epochs decides)")
    parser.add_argument("--batch-size", type=int, default=32, help="per-device batch size")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate of the base weights")
    parser.add_argument("--computer-learning-rate", type=float, default=1e-2,
                        help="peak learning rate of the computer block (its heads are small and start far off)")
    parser.add_argument("--warmup-steps", type=int, default=50, help="linear warm-up steps")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/default"), help="checkpoints and the final model")
    parser.add_argument("--save-steps", type=int, default=250, help="checkpoint every this many steps")
    parser.add_argument("--logging-steps", type=int, default=25, help="log every this many steps")
    parser.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --output-dir")
    parser.add_argument("--push-to-hub", action="store_true", help="push the final model to the Hub (Trainer)")
    parser.add_argument("--hub-model-id", default=None, help="repository id for --push-to-hub")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per process (default: CPU cores / processes)")
    return parser


# ------------------------------------------------------------------------------------------------------ data
def build_datasets(args, tokenizer):
    """Tokenized train/validation/test/test_long splits; labels only on the answer (paper §4.2)."""
    from library.tasks import load_task, tokenize_for_causal_lm

    name, kwargs = ("list", {"kind": args.task}) if args.task in ("sort", "max") else (args.task, {})
    sizes = {"train_size": args.train_size, "validation_size": args.eval_size, "test_size": args.eval_size}
    raw = load_task(name, n=args.n, seed=args.seed, **sizes, **kwargs)
    return tokenize_for_causal_lm(raw, tokenizer)


class AnswerCollator:
    """Pads a batch and marks where the computer runs (`answer_position`) and where logits are needed (labels)."""

    def __init__(self, pad_token_id: int, with_computer: bool):
        self.pad_token_id, self.with_computer = pad_token_id, with_computer

    def __call__(self, rows: list[dict]) -> dict:
        def pad(key, value):
            return pad_sequence([torch.tensor(row[key]) for row in rows], batch_first=True, padding_value=value)

        batch = {"input_ids": pad("input_ids", self.pad_token_id), "attention_mask": pad("attention_mask", 0),
                 "labels": pad("labels", -100)}
        shifted = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=-100)
        batch["logits_to_keep"] = shifted != -100  # the LM head runs only where a label is predicted
        batch["shift_labels"] = shifted[batch["logits_to_keep"]]  # (kept,): the targets of those logits
        if self.with_computer:
            computer_mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
            computer_mask[torch.arange(len(rows)), torch.tensor([row["answer_position"] for row in rows])] = True
            batch["computer_mask"] = computer_mask
        return batch


# ----------------------------------------------------------------------------------------------------- model
def build_model(args, tokenizer):
    """A from-scratch LlamaDComp in the paper's shape, or a given Llama (folder or GGUF) with a library installed;
    `--no-computer` gives the same Llama without the block."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from library.install import from_llama, number_token_ids

    if args.gguf is not None:
        llama = AutoModelForCausalLM.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name)
        llama.config.quantization_config = None
    elif args.model is not None:
        llama = LlamaForCausalLM.from_pretrained(args.model)
    else:
        torch.manual_seed(args.seed)
        llama = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=args.hidden_size, intermediate_size=4 * args.hidden_size,
            num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
            max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ))
    if args.no_computer:
        return llama
    layer = llama.config.num_hidden_layers - 1 if args.computer_layer is None else args.computer_layer
    model = from_llama(llama, computer_layer=layer, library=list(TASK_PROGRAMS[args.task]), tokenizer=tokenizer,
                       computer_values=args.n, computer_gate_init=1.0, **_computer_inputs(args.task))
    init_parse_from_embeddings(model, number_token_ids(tokenizer, args.n))
    return model


def _computer_inputs(task: str) -> dict:
    """Which registers / memory cells the block parses for a task's programs (library/programs headers)."""
    if task == "arithmetic":
        return {"library_input_registers": [1, 2]}
    if task == "fibonacci":
        return {"library_input_registers": [1, 2, 3], "computer_max_steps": 64}
    return {"library_input_registers": [1], "library_memory_inputs": 8, "computer_max_steps": 128}


def init_parse_from_embeddings(model, token_ids: list[list[int]], scale: float = 4.0) -> None:
    """Start every parse head at the (normalised) number-token embeddings.

    With near-uniform parsed inputs the gradient through e.g. `add` (a circular convolution) carries no
    information about either operand; the hidden state at the answer position, however, starts as a mix of the
    prompt's token embeddings, so h·E_v already favours the numbers present in the prompt. The machine's output
    then holds the right answer with large probability from the first step, and training only has to learn
    which number goes to which register (the paper's parsing problem)."""
    embeddings = model.get_input_embeddings().weight  # (vocab, hidden)
    with torch.no_grad():
        numbers = torch.stack([embeddings[torch.as_tensor(ids)].mean(0) for ids in token_ids])  # (n, hidden)
        numbers = scale * numbers / numbers.norm(dim=-1, keepdim=True)
        for computer in model._computers():
            weight = computer.parse.weight  # (inputs · n, hidden)
            weight.copy_(numbers.repeat(weight.shape[0] // len(token_ids), 1).to(weight.dtype))


def add_lora(model):
    from peft import LoraConfig, get_peft_model

    modules_to_save = [] if not hasattr(model, "_computers") else ["computer"]
    config = LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS, modules_to_save=modules_to_save)
    return get_peft_model(model, config)


def optimizer_groups(model, args) -> list[dict]:
    """The computer block learns faster than the base weights (its heads start far from a solution)."""
    computer = [p for name, p in model.named_parameters() if p.requires_grad and ".computer." in name]
    base = [p for name, p in model.named_parameters() if p.requires_grad and ".computer." not in name]
    return [{"params": base, "lr": args.learning_rate}, {"params": computer, "lr": args.computer_learning_rate}]


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate_split(model, dataset, collator, batch_size: int = 64) -> dict:
    """Exact match of the answer and per-operation accuracy, with the local `evaluate` metric module.

    The answer counts as right only if every answer token (the number and EOS) is the argmax at its position
    given the prompt and the previous answer tokens, which is exactly what greedy decoding would produce."""
    from library.tasks import exact_match_metric

    model.eval()
    predictions, references = [], []
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = collator(rows)
        labels, keep = batch.pop("labels"), batch["logits_to_keep"]
        del batch["shift_labels"]
        logits = model(**{k: v.to(model.device) for k, v in batch.items()}).logits  # (kept, vocab): labelled only
        guess = torch.zeros_like(labels)
        guess[keep] = logits.reshape(-1, logits.shape[-1]).argmax(-1).cpu()
        targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
        for row in range(len(rows)):
            predictions.append(guess[row][keep[row]].tolist())
            references.append(targets[row][keep[row]].tolist())
    groups = [row.get("operation", row.get("program")) for row in dataset]
    model.train()
    return exact_match_metric().compute(predictions=predictions, references=references, groups=groups)


def render_model_card(args, model, results: dict, seconds: float) -> str:
    """README.md of the output folder, from the `model_card.md` template."""
    config = model.config
    library = ", ".join(f"`{name}` (line {entry})" for name, entry in
                        zip(getattr(config, "library_programs", []), getattr(config, "library_entry_points", [])))
    rows = "\n".join(f"| {split} | {result['exact_match']:.2%} | "
                     + ", ".join(f"{group} {acc:.1%}" for group, acc in result.get("per_group", {}).items()) + " |"
                     for split, result in results.items())
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "command"}
    return string.Template(MODEL_CARD.read_text()).substitute(
        task=args.task, n=args.n, library=library or "none (`--no-computer` baseline)",
        architecture=f"{type(model).__name__}, hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
                     f"vocabulary {config.vocab_size:,}",
        computer_layer=getattr(config, "computer_layer", "—"), results=rows,
        settings=json.dumps(settings, indent=2), seconds=f"{seconds:.0f}",
        command="python train.py " + " ".join(sys.argv[1:]),
    )


# ------------------------------------------------------------------------------------------------------ main
def train(args) -> dict:
    from transformers import Trainer, TrainingArguments

    from library.tokenizer import llama3_tokenizer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // world))
    started = time.perf_counter()
    tokenizer = llama3_tokenizer()
    data = build_datasets(args, tokenizer)
    model = build_model(args, tokenizer)
    if model.config.model_type == "llama_dcomp":  # so that checkpoints carry the code files and auto_map
        type(model.config).register_for_auto_class()
        type(model).register_for_auto_class("AutoModelForCausalLM")
    if args.lora:
        model = add_lora(model)
    print(f"initial parameter digest: {parameter_digest(model)}", flush=True)
    collator = AnswerCollator(tokenizer.pad_token_id, with_computer=not args.no_computer)
    cuda = torch.cuda.is_available()
    training_args = TrainingArguments(
        output_dir=str(args.output_dir), num_train_epochs=args.epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate,
        lr_scheduler_type="linear", warmup_steps=args.warmup_steps, weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=args.logging_steps, save_steps=args.save_steps, save_total_limit=2,
        report_to=["tensorboard"], seed=args.seed,
        remove_unused_columns=False, dataloader_drop_last=False, use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        ddp_backend="gloo" if world > 1 and not cuda else None,
        push_to_hub=args.push_to_hub, hub_model_id=args.hub_model_id,
    )
    optimizer = torch.optim.AdamW(optimizer_groups(model, args), weight_decay=0.0)
    columns = ["input_ids", "attention_mask", "labels", "answer_position"]
    train_set = data["train"].select_columns(columns)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, data_collator=collator,
                      optimizers=(optimizer, None))
    trainer.train(resume_from_checkpoint=True if args.resume else None)

    results = {split: evaluate_split(model, data[split], collator) for split in ("test", "test_long") if split in data
               and len(data[split])}
    seconds = time.perf_counter() - started
    # Every process prints the digest of its weights: after data-parallel training all of them must agree.
    print(f"rank {training_args.process_index} parameter digest: {parameter_digest(model)}", flush=True)
    if trainer.is_world_process_zero():
        final = model.merge_and_unload() if args.lora else model
        final.save_pretrained(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
        (args.output_dir / "README.md").write_text(render_model_card(args, final, results, seconds))
        (args.output_dir / "test_results.json").write_text(json.dumps(results, indent=2))
        for split, result in results.items():
            print(f"{split} exact match: {result['exact_match']:.2%}  per operation: {result.get('per_group')}")
        print(f"wall time: {seconds:.0f} s")
    if args.push_to_hub:
        trainer.push_to_hub()
    return results


def parameter_digest(model) -> str:
    """sha256 over every parameter, in name order: equal digests mean equal models."""
    import hashlib

    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(parameter.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def predict(argv: list[str]) -> None:
    """`python train.py predict --model DIR "Add 3 and 4"`: the answer and the computer's trace."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from library.install import explain

    parser = argparse.ArgumentParser(prog="train.py predict", description=predict.__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a folder written by train.py")
    parser.add_argument("prompt", help='e.g. "Add 3 and 4"')
    args = parser.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(args.model, trust_remote_code=True).eval()
    inputs = tokenizer(args.prompt.rstrip() + " ", return_tensors="pt")
    computer_mask = torch.zeros_like(inputs["input_ids"], dtype=torch.bool)
    computer_mask[:, -1] = True  # the answer position: the space before the answer
    extra = {"computer_mask": computer_mask} if hasattr(model, "trace_computer") else {}
    output = model.generate(**inputs, **extra, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    print(f"answer: {answer}")
    if extra:
        print(explain(model.trace_computer(**inputs, computer_mask=computer_mask), model))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "predict":
        predict(argv[1:])
        return
    train(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
