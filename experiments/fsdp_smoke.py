"""FSDP smoke run: a Llama converted with `library.install.from_llama`, sharded one decoder layer per FSDP unit
(the model's `_no_split_modules`: `LlamaDCompDecoderLayer`, so the computer stays whole inside its layer) over
several processes, trained for a few steps; then checks that the library survived and that the full state dict
reloads into a single-process model with the same outputs (docs/SCALING.md).

    python -m experiments.fsdp_smoke --output_dir runs/fsdp                      # 2 CPU processes, FSDP2, gloo
    python -m experiments.fsdp_smoke --output_dir runs/fsdp1 --fsdp_version 1
    python -m experiments.fsdp_smoke --output_dir runs/fsdp_gpu --backend nccl --mixed_precision bf16

`output_dir` receives `report.json` (per rank: losses, whether every library buffer is bit-equal before and after
training; the parameters the steps changed; the seconds), `model/` (the trained model, `save_pretrained` from the
gathered full state dict) and `logits.safetensors` (the sharded model's logits on `ids`, for comparison).

The tiny model (hidden 32, 4 heads over 2 KV heads, tied embeddings, 2 layers, a 16-value machine running
add/sub/mul/fib with the gate open) is the same on every rank (seed 0); each rank trains on its own random tokens.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import LlamaConfig, LlamaForCausalLM

from library.install import from_llama
from modeling_llama_dcomp import LlamaDCompForCausalLM, LlamaDCompPreTrainedModel

TINY_LLAMA = dict(
    vocab_size=300,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=True,  # as Llama-3.2-1B/3B
)
COMPUTER = dict(
    computer_values=16,
    computer_registers=8,
    computer_memory_size=8,
    computer_call_depth=2,
    computer_max_steps=12,
    library_input_registers=[1, 2, 3],
    computer_gate_init=0.5,
)
LIBRARY = ["add", "sub", "mul", "fib"]
LEARNING_RATES = {"parse": 1e-2, "computer": 1e-2, "embeddings": 1e-2, "layers": 1e-2}
BATCH, LENGTH = 2, 8


def build_model() -> LlamaDCompForCausalLM:
    """The tiny Llama (seed 0) converted with the library installed after layer 0."""
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA))
    return from_llama(llama, computer_layer=0, library=LIBRARY, **COMPUTER)


def library_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the computer's buffers (program tensors, entry points, ALU tables), by their unwrapped name
    (FSDP1 inserts `_fsdp_wrapped_module.` into the names of wrapped modules)."""
    return {
        name.replace("_fsdp_wrapped_module.", ""): buffer.detach().cpu().clone()
        for name, buffer in model.named_buffers()
        if ".computer." in name
    }


def shard(model: LlamaDCompForCausalLM, fsdp_version: int, mixed_precision: str, device: torch.device):
    """One FSDP unit per layer class named in `model._no_split_modules`, then the root (embeddings, norm, LM head).
    bf16 mixed precision as accelerate sets it (`FullyShardedDataParallelPlugin.set_mixed_precision`)."""
    layer_classes = {type(module) for module in model.modules() if type(module).__name__ in model._no_split_modules}
    bf16 = mixed_precision == "bf16"
    if fsdp_version == 2:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16) if bf16 else None
        kwargs = {"mp_policy": policy} if policy else {}
        for module in model.modules():
            if type(module) in layer_classes:
                fully_shard(module, **kwargs)
        return fully_shard(model, **kwargs)
    from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    return FullyShardedDataParallel(
        model,
        auto_wrap_policy=functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=layer_classes),
        mixed_precision=MixedPrecision(torch.bfloat16, torch.bfloat16, torch.bfloat16) if bf16 else None,
        device_id=device,
        use_orig_params=True,  # the model's parameter groups (one learning rate each) need the original parameters
    )


def worker(rank: int, args: argparse.Namespace, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(args.backend, rank=rank, world_size=args.processes)
    device = torch.device("cuda", rank) if args.backend == "nccl" else torch.device("cpu")
    start = time.perf_counter()
    model = build_model().to(device).train()
    before = library_buffers(model)
    initial = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    model = shard(model, args.fsdp_version, args.mixed_precision, device)
    optimizer = torch.optim.AdamW(LlamaDCompPreTrainedModel.parameter_groups(model, LEARNING_RATES))
    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own batches
    losses = []
    for _ in range(args.steps):
        ids = torch.randint(3, TINY_LLAMA["vocab_size"], (BATCH, LENGTH), generator=generator).to(device)
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    after = library_buffers(model)
    changed_buffers = [
        name for name in before if before[name].dtype != after[name].dtype or not torch.equal(before[name], after[name])
    ]

    model.eval()
    ids = torch.randint(3, TINY_LLAMA["vocab_size"], (BATCH, LENGTH), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model(ids.to(device)).logits.float().cpu()  # (batch, seq, vocab): a collective, on every rank
    # cpu_offload gathers onto the CPU; for FSDP1 on a CPU model it segfaults (torch 2.13), and is not needed there.
    offload = device.type != "cpu"
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=offload))
    report = {"rank": rank, "losses": losses, "changed_buffers": changed_buffers, "buffers": len(before)}
    if rank == 0:
        single = build_model()
        single.load_state_dict(state)  # strict: every parameter and persistent buffer, by its original name
        single.save_pretrained(args.output_dir / "model")
        save_file({"ids": ids, "logits": logits}, args.output_dir / "logits.safetensors")
        report["changed_parameters"] = sorted(
            name for name, value in state.items() if not torch.equal(value, initial[name])
        )
    report["seconds"] = time.perf_counter() - start
    (args.output_dir / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--fsdp_version", type=int, choices=[1, 2], default=2)
    parser.add_argument("--backend", choices=["gloo", "nccl"], default="gloo", help="nccl: one GPU per process")
    parser.add_argument("--mixed_precision", choices=["no", "bf16"], default="no")
    parser.add_argument("--steps", type=int, default=3)
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    mp.spawn(worker, args=(args, free_port()), nprocs=args.processes)
    ranks = [json.loads((args.output_dir / f"rank{rank}.json").read_text()) for rank in range(args.processes)]
    report = {
        "command": f"python -m experiments.fsdp_smoke {' '.join(sys.argv[1:] if argv is None else argv)}".strip(),
        "settings": {key: str(value) for key, value in vars(args).items()},
        "torch": torch.__version__,
        "ranks": ranks,
        "wall_seconds": time.perf_counter() - start,
    }
    (args.output_dir / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
