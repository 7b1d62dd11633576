"""Scaling: `library.install.from_llama` on every shape of `LlamaForCausalLM` (GQA, LLaMA-3 rope scaling, biases,
an explicit head_dim, tied embeddings, bf16, the published Llama-3.2 config), and FSDP training of the converted
model on 2 CPU processes (gloo) through `experiments/fsdp_smoke.py` (docs/SCALING.md)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from hypothesis import example, given, settings
from hypothesis import strategies as st
from model_fixtures import COMPUTER, LIBRARY, REPO, TINY_LLAMA, library_buffers, random_ids, tiny_llama, tiny_model
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from experiments import fsdp_smoke
from library.install import from_llama
from modeling_llama_dcomp import LlamaDCompForCausalLM

# Llama-3.2-1B's config.json as published (keys and values), shrunk to the tiny shapes: the legacy `rope_scaling`
# key with the "llama3" rope, an EOS list, no pad token, an explicit head_dim, tied embeddings, bf16.
LLAMA_32_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "head_dim": 8,
    "hidden_act": "silu",
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0",
    "use_cache": True,
    "vocab_size": 128256,
}
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
# The fields of an architecture that the converted config must carry unchanged.
ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "attention_bias",
    "mlp_bias",
    "rope_parameters",
    "rms_norm_eps",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)


def assert_converts_exactly(llama: LlamaForCausalLM, computer_layer: int = 1) -> LlamaDCompForCausalLM:
    """Converts `llama` with the gate open (0.5) and checks: every base weight copied bit for bit, the
    architecture fields carried, the logits equal to the Llama's where the computer does not run
    (`computer_mask` all False) and where its gate is closed (0.0), and different where it runs with the gate
    open (so the comparison can fail)."""
    model = from_llama(llama, computer_layer=computer_layer, library=LIBRARY, **COMPUTER, computer_gate_init=0.5)
    model.eval()
    base, ours = llama.state_dict(), model.state_dict()
    assert all(".computer." in key for key in set(ours) - set(base)) and set(base) <= set(ours)
    for key, tensor in base.items():
        assert torch.equal(ours[key], tensor), key
    for field in ARCHITECTURE_FIELDS:
        assert getattr(model.config, field) == getattr(llama.config, field), field
    assert model.dtype == llama.dtype and model.computer.program_op.dtype == torch.float32
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == llama.config.tie_word_embeddings

    ids = random_ids(2, 7, seed=3).clamp(max=llama.config.vocab_size - 1)
    with torch.no_grad():
        expected = llama(ids).logits
        assert torch.equal(model(ids, computer_mask=torch.zeros_like(ids, dtype=torch.bool)).logits, expected)
        assert not torch.equal(model(ids).logits, expected)
        model.computer.gate.zero_()
        assert torch.equal(model(ids).logits, expected)
    return model


def test_from_llama_converts_the_published_llama_3_2_config():
    config = LlamaConfig(**LLAMA_32_CONFIG)
    assert config.rope_parameters["rope_type"] == "llama3" and config.pad_token_id is None
    torch.manual_seed(0)
    llama = LlamaForCausalLM(config).to(config.dtype).eval()
    model = assert_converts_exactly(llama, computer_layer=0)
    assert model.dtype == torch.bfloat16 and model.config.eos_token_id == [128001, 128008, 128009]


def test_from_llama_round_trips_a_converted_llama_3_2_through_save_pretrained(tmp_path):
    config = LlamaConfig(**{**LLAMA_32_CONFIG, "vocab_size": TINY_LLAMA["vocab_size"]})
    torch.manual_seed(0)
    llama = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    from_llama(llama, computer_layer=1, library=LIBRARY, **COMPUTER).save_pretrained(tmp_path)
    loaded = LlamaDCompForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.dtype == torch.bfloat16 and loaded.computer.program_op.dtype == torch.float32
    assert loaded.config.rope_parameters == llama.config.rope_parameters and loaded.config.head_dim == 8
    ids = random_ids(1, 6)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, llama(ids).logits)


@settings(max_examples=25, deadline=None)
@given(
    kv_heads=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([None, 4, 8, 16]),
    bias=st.booleans(),
    mlp_bias=st.booleans(),
    tied=st.booleans(),
    llama3_rope=st.booleans(),
    bf16=st.booleans(),
    computer_layer=st.sampled_from([0, 1]),
)
# `.to(bfloat16)` rounds the Llama's rotary inv_freq (a buffer outside the state dict): it must be copied too.
@example(
    kv_heads=2, head_dim=None, bias=False, mlp_bias=False, tied=False, llama3_rope=False, bf16=True, computer_layer=0
)
def test_from_llama_converts_every_llama_shape(
    kv_heads, head_dim, bias, mlp_bias, tied, llama3_rope, bf16, computer_layer
):
    """GQA/MQA (num_key_value_heads < num_attention_heads), head_dim unlike hidden / heads, attention and MLP
    biases, tied or untied embeddings, the "llama3" rope, bf16: always the Llama's logits while the computer is
    closed or not run."""
    overrides = dict(
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        attention_bias=bias,
        mlp_bias=mlp_bias,
        tie_word_embeddings=tied,
    )
    if head_dim is not None:
        overrides["head_dim"] = head_dim
    if llama3_rope:
        overrides["rope_parameters"] = LLAMA3_ROPE
    llama = tiny_llama(**overrides)
    if bias:  # nn.Linear biases start at zero in a fresh Llama: make them matter
        with torch.no_grad():
            for name, parameter in llama.named_parameters():
                if name.endswith(".bias"):
                    parameter.normal_(std=0.1)
    if bf16:
        llama = llama.to(torch.bfloat16)
    assert_converts_exactly(llama, computer_layer=computer_layer)


# ------------------------------------------------------------------------------------------------------ FSDP
def test_the_shipped_fsdp_configs_shard_one_decoder_layer_per_unit(tmp_path):
    """experiments/fsdp_config.json (`--fsdp_config`) and experiments/accelerate_fsdp.yaml parse into the same
    FSDP2 plan, and accelerate's wrap policy for it picks exactly the decoder layers, the computer inside one."""
    arguments = TrainingArguments(
        output_dir=str(tmp_path), fsdp=True, fsdp_config=str(REPO / "experiments/fsdp_config.json"), report_to="none"
    )
    plugin_args = arguments.fsdp_plugin_args
    launcher = load_config_from_file(str(REPO / "experiments/accelerate_fsdp.yaml"))
    assert launcher.distributed_type == "FSDP" and launcher.mixed_precision == "bf16"
    for version, layer_class, state_dict_type in [
        (plugin_args["fsdp_version"], plugin_args["transformer_cls_names_to_wrap"], plugin_args["state_dict_type"]),
        (
            launcher.fsdp_config["fsdp_version"],
            launcher.fsdp_config["fsdp_transformer_layer_cls_to_wrap"],
            launcher.fsdp_config["fsdp_state_dict_type"],
        ),
    ]:
        assert (version, layer_class, state_dict_type) == (2, "LlamaDCompDecoderLayer", "FULL_STATE_DICT")
    assert layer_class in LlamaDCompForCausalLM._no_split_modules

    model = tiny_model(layer=1)
    policy = fsdp2_prepare_auto_wrap_policy(FullyShardedDataParallelPlugin(**plugin_args), model)
    wrapped = [name for name, module in model.named_modules() if policy(module)]
    assert wrapped == ["model.layers.0", "model.layers.1"]
    assert model.get_submodule("model.layers.1.computer") is model.computer


@pytest.mark.slow
@pytest.mark.parametrize("fsdp_version", [2, 1])
def test_fsdp_on_two_cpu_processes_keeps_the_library_and_saves_a_model_with_the_same_outputs(tmp_path, fsdp_version):
    """2 processes over gloo, one FSDP unit per `_no_split_modules` layer: three optimizer steps train the base
    and the computer, leave every library buffer bit-equal (and float32) on every rank, and the gathered full
    state dict loads (`from_pretrained`, library verified) into one process with the sharded model's logits."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "experiments.fsdp_smoke", "--output_dir", str(tmp_path)]
    command += ["--fsdp_version", str(fsdp_version)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())

    ranks = report["ranks"]
    assert [rank["rank"] for rank in ranks] == [0, 1]
    for rank in ranks:
        assert rank["changed_buffers"] == [] and rank["buffers"] == 7, rank  # 5 program tensors, entries, ALU
        assert len(rank["losses"]) == 3 and all(math.isfinite(loss) for loss in rank["losses"])
    assert ranks[0]["losses"] != ranks[1]["losses"]  # each rank its own data
    changed = set(ranks[0]["changed_parameters"])
    computer = "model.layers.0.computer."
    assert {computer + name for name in ("gate", "select.weight", "parse.weight", "output_proj.weight")} <= changed
    assert "model.layers.1.self_attn.q_proj.weight" in changed and "model.embed_tokens.weight" in changed

    model = LlamaDCompForCausalLM.from_pretrained(tmp_path / "model").eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as Llama-3.2-1B/3B
    fresh = library_buffers(fsdp_smoke.build_model())
    for name, buffer in library_buffers(model).items():
        assert buffer.dtype == fresh[name].dtype and torch.equal(buffer, fresh[name]), name
    saved = load_file(tmp_path / "logits.safetensors")
    with torch.no_grad():
        assert torch.equal(model(saved["ids"]).logits, saved["logits"])
