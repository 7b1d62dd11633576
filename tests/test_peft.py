"""PEFT on LlamaDComp: LoRA on the base Llama's attention and MLP weights, the computer block's trainable parts in
`modules_to_save`, the compiled library never trained; adapters save and load onto a fresh base, and
`merge_and_unload` gives back a LlamaDComp model with the same logits and an intact, verified library."""

from __future__ import annotations

import json

import pytest
import torch
from model_fixtures import library_buffers, random_ids, tiny_model
from safetensors.torch import load_file

from modeling_llama_dcomp import LlamaDCompComputer, LlamaDCompForCausalLM

peft = pytest.importorskip("peft")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
COMPUTER_PARAMETERS = ("gate", "norm.weight", "select.weight", "parse.weight", "output_proj.weight")
STEPS = 3


def lora_config() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, modules_to_save=["computer"])


def batch() -> dict[str, torch.Tensor]:
    """Two sequences, labels on the last 3 tokens, the computer at the last prompt token only."""
    ids = random_ids(2, 8)
    labels = torch.full_like(ids, -100)
    labels[:, 5:] = ids[:, 5:]
    computer_mask = torch.zeros_like(ids, dtype=torch.bool)
    computer_mask[:, 4] = True
    return {
        "input_ids": ids,
        "labels": labels,
        "computer_mask": computer_mask,
        "logits_to_keep": LlamaDCompForCausalLM.labelled_positions(labels),
    }


def train(peft_model, steps: int = STEPS) -> torch.optim.Optimizer:
    """A few AdamW steps (no weight decay: a parameter changes only through its gradient)."""
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    inputs = batch()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = peft_model(**inputs).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
    peft_model.eval()
    return optimizer


def logits(model, ids: torch.Tensor, computer_mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, computer_mask=computer_mask).logits


@pytest.fixture
def base_checkpoint(tmp_path):
    """A saved LlamaDComp checkpoint (gate 0.5, computer after layer 1): the base every adapter is trained on."""
    directory = tmp_path / "base"
    tiny_model().save_pretrained(directory)
    return directory


def test_lora_trains_adapters_and_computer_but_no_base_weight_or_library_buffer(base_checkpoint):
    model = LlamaDCompForCausalLM.from_pretrained(base_checkpoint)
    peft_model = get_peft_model(model, lora_config())
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    assert all(".lora_" in name or ".computer.modules_to_save." in name for name in trainable), trainable
    assert {name.rsplit(".lora_", 1)[0].rsplit(".", 1)[1] for name in trainable if ".lora_" in name} == set(TARGETS)
    computer_trainable = {name.split(".modules_to_save.default.")[1] for name in trainable if ".computer." in name}
    assert computer_trainable == set(COMPUTER_PARAMETERS)

    before_parameters = {name: p.detach().clone() for name, p in peft_model.named_parameters()}
    before_buffers = library_buffers(peft_model)
    # The original computer and its trainable copy both hold the library: 7 buffers each.
    assert len(before_buffers) == 2 * 7 and all(
        "index_tables" in n or "program_" in n or "entry_points" in n for n in before_buffers
    )
    optimizer = train(peft_model)

    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(buffer) in optimized for buffer in peft_model.buffers())
    assert all(not buffer.requires_grad for buffer in peft_model.buffers())
    after_buffers = library_buffers(peft_model)
    assert after_buffers.keys() == before_buffers.keys()
    for name, buffer in before_buffers.items():  # bit for bit, dtype included
        assert after_buffers[name].dtype == buffer.dtype and torch.equal(after_buffers[name], buffer), name

    for name, p in peft_model.named_parameters():
        changed = not torch.equal(p.detach(), before_parameters[name])
        assert changed == (name in trainable), f"{name}: changed={changed}, trainable={name in trainable}"
    # The base model's own computer (modules_to_save keeps it as `original_module`) is untouched as well.
    assert any(".computer.original_module.gate" in name for name in before_parameters)
    peft_model.base_model.model.verify_library()


def test_adapter_saves_and_loads_onto_a_fresh_base_with_identical_logits(base_checkpoint, tmp_path):
    peft_model = get_peft_model(LlamaDCompForCausalLM.from_pretrained(base_checkpoint), lora_config())
    train(peft_model)
    ids, computer_mask = random_ids(2, 7, seed=5), batch()["computer_mask"][:, :7]
    expected = logits(peft_model, ids)
    expected_masked = logits(peft_model, ids, computer_mask)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)

    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base_checkpoint)  # a local path: change it to a Hub id to publish
    assert config["modules_to_save"] == ["computer"] and sorted(config["target_modules"]) == sorted(TARGETS)
    saved = load_file(adapter / "adapter_model.safetensors")
    computer_keys = {key.split(".computer.", 1)[1] for key in saved if ".computer." in key}
    assert set(COMPUTER_PARAMETERS) <= computer_keys
    assert {"program_op", "program_imm", "entry_points", "machine.alu.index_tables"} <= computer_keys
    assert not any("base_layer" in key or "embed_tokens" in key or "lm_head" in key for key in saved)

    fresh = LlamaDCompForCausalLM.from_pretrained(base_checkpoint)
    untrained = logits(fresh, ids)
    loaded = PeftModel.from_pretrained(fresh, adapter).eval()
    assert torch.equal(logits(loaded, ids), expected)
    assert torch.equal(logits(loaded, ids, computer_mask), expected_masked)
    assert not torch.allclose(untrained, expected)  # the adapter (and the trained computer) did something
    loaded.base_model.model.verify_library()


def test_merge_and_unload_returns_a_llama_dcomp_model_with_the_same_logits_and_library(base_checkpoint, tmp_path):
    original = library_buffers(LlamaDCompForCausalLM.from_pretrained(base_checkpoint))
    peft_model = get_peft_model(LlamaDCompForCausalLM.from_pretrained(base_checkpoint), lora_config())
    train(peft_model)
    trained_computer = {
        name: p.detach().clone()
        for name, p in peft_model.named_parameters()
        if ".computer.modules_to_save.default." in name
    }
    ids = random_ids(2, 7, seed=5)
    expected = logits(peft_model, ids)

    merged = peft_model.merge_and_unload()
    assert type(merged) is LlamaDCompForCausalLM
    assert not any(
        "lora_" in name or "modules_to_save" in name or "original_module" in name
        for name, _ in merged.named_parameters()
    )
    assert isinstance(merged.computer, LlamaDCompComputer) and len(merged.computers()) == 1
    torch.testing.assert_close(logits(merged, ids), expected, rtol=1e-5, atol=1e-5)
    for name, p in trained_computer.items():  # the trained copy of the computer is the merged model's computer
        merged_name = name.removeprefix("base_model.model.").replace(".modules_to_save.default", "")
        assert torch.equal(merged.get_parameter(merged_name), p), name
    buffers = library_buffers(merged)
    assert buffers.keys() == original.keys()
    for name, buffer in original.items():
        assert buffers[name].dtype == buffer.dtype and torch.equal(buffers[name], buffer), name
    merged.verify_library()

    # The merged model is an ordinary LlamaDComp checkpoint again.
    merged.save_pretrained(tmp_path / "merged")
    reloaded = LlamaDCompForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert torch.equal(logits(reloaded, ids), logits(merged, ids))
