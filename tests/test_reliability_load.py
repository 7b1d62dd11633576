"""Issue 15, loading: a saved folder loads only as it was saved — every field that changes the computer's answers is
fingerprinted, weights are finite, keyword overrides cannot drop the computer, and `library.loading` imports only
the folder's own code and finds its tokenizer or says why not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_fixtures import random_ids, tiny_model
from safetensors.torch import load_file, save_file
from test_install import tiny_tokenizer
from transformers import AutoModelForCausalLM

from configuration_llama_dcomp import LlamaDCompConfig
from library.install import save_model_with_tokenizer
from library.loading import LoadingError, check_generation_arguments, load_model, load_tokenizer
from modeling_llama_dcomp import ANSWER_FIELDS, LibraryMismatchError, LlamaDCompForCausalLM


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny model with its tokenizer, saved once; tests copy it before changing anything."""
    folder = tmp_path_factory.mktemp("saved")
    save_model_with_tokenizer(tiny_model(), tiny_tokenizer(split_digits=False), folder)
    return folder


@pytest.fixture
def folder(saved, tmp_path) -> Path:
    copy = tmp_path / "model"
    copy.mkdir()
    for path in saved.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# ------------------------------------------------------------------------------------- fingerprinted fields
# A valid new value for every answer-changing field of the tiny model (COMPUTER in model_fixtures).
EDITS = {
    "computer_layer": 0,
    "computer_encoding": "binary",
    "computer_values": 32,
    "computer_bits": 32,
    "computer_registers": 10,
    "computer_memory_size": 4,
    "computer_call_depth": 3,
    "computer_max_steps": 30,
    "computer_halt_threshold": 0.5,
    "computer_alu": "circuit",
    "computer_output": "residual_add",  # "tokens" needs digit tokens too: checked below through the fingerprint
    "computer_selection_temperature": 2.0,
    "computer_parse": "copy",
    "computer_number_token_ids": [-1] * 15 + [7],
    "computer_digit_tokens": {str(digit): 10 + digit for digit in range(10)},
    "computer_joined_minus_symbol_ids": [6],
    "computer_joined_minus_token_ids": [5],
    "computer_minus_token_ids": [5],
    "computer_group_separator_ids": [6],
    "computer_plus_token_ids": [7],
    "computer_copy_ordinals": 4,
    "computer_copy_from_end": True,  # needs the copy parse too: checked in test_readout
    "computer_copy_dim": 8,
    "library_input_registers": [2, 1, 3],
    "library_memory_inputs": 2,
    "library_output_register": 3,
    "library_list_programs": ["add"],
    "library_count_register": 1,
    "computer_list_separator_ids": [5],
    "computer_list_negative_separator_ids": [6],
    "computer_trigger_context": 2,
    "computer_trigger_numbers": 8,  # needs "tokens" too: checked in test_readout
    "computer_selection_context": 2,  # needs "tokens" too: checked in test_readout
    "computer_selection_boundary_ids": [5],  # needs a selection context too: checked in test_readout
    "computer_selection_hidden_votes": True,  # needs a selection context too: checked in test_readout
    "computer_selection_vote_layers": [0],  # needs the hidden votes too: checked in test_readout
    "computer_lead_token_id": 5,  # needs "tokens" too: checked in test_readout
    "computer_lead_minus_token_id": 5,  # needs a lead token too: checked in test_readout
}
COPYING = {"computer_parse": "copy", "computer_number_token_ids": list(range(10, 26))}
# Fields that cannot change alone: their edit also changes these (listed after them in ANSWER_FIELDS).
COMPANIONS = {
    "computer_parse": {"computer_number_token_ids": list(range(10, 26))},
    "computer_joined_minus_symbol_ids": {"computer_joined_minus_token_ids": [5], "computer_minus_token_ids": [5]},
    "computer_joined_minus_token_ids": {"computer_minus_token_ids": [5]},
    "library_count_register": COPYING,
    "library_list_programs": {"library_count_register": 1, **COPYING},
}


def test_every_answer_field_has_an_edit():
    assert set(EDITS) == set(ANSWER_FIELDS)


@pytest.mark.parametrize(
    "field",
    [
        name
        for name in ANSWER_FIELDS
        if name
        not in (
            "computer_output",
            "computer_copy_from_end",
            "computer_trigger_numbers",
            "computer_selection_context",
            "computer_selection_boundary_ids",
            "computer_selection_hidden_votes",
            "computer_selection_vote_layers",
            "computer_lead_token_id",
            "computer_lead_minus_token_id",
        )
    ],
)
def test_editing_an_answer_field_in_config_json_fails_to_load_naming_it(folder, field):
    changes = {field: EDITS[field], **COMPANIONS.get(field, {})}
    edit_config(folder, **changes)
    with pytest.raises(LibraryMismatchError, match=rf"config\.{field}="):
        LlamaDCompForCausalLM.from_pretrained(folder)


def test_a_valid_keyword_override_of_an_answer_field_is_refused(folder):
    for field, value in [("computer_layer", 0), ("computer_max_steps", 30), ("library_output_register", 3)]:
        with pytest.raises(LibraryMismatchError, match=rf"config\.{field}=.*passed to from_pretrained"):
            LlamaDCompForCausalLM.from_pretrained(folder, **{field: value})


def test_an_invalid_keyword_override_fails_before_any_model_is_built(folder):
    with pytest.raises(ValueError, match="^computer_layer=5"):
        LlamaDCompForCausalLM.from_pretrained(folder, computer_layer=5)
    with pytest.raises(ValueError, match="^computer_layer=5"):
        AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, computer_layer=5)


def test_the_fingerprint_records_each_field_once(folder):
    fingerprint = json.loads((folder / "config.json").read_text())["library_fingerprint"]
    keys = [part.split("=")[0] for part in fingerprint.split(";")]
    assert keys == ["tensors", "index", *ANSWER_FIELDS]


@pytest.mark.parametrize("fingerprint", ["garbage", "tensors=1;index", ";", "a=b;;c=d"])
def test_a_garbage_fingerprint_gives_a_clear_error(folder, fingerprint):
    edit_config(folder, library_fingerprint=fingerprint)
    with pytest.raises(LibraryMismatchError, match="is not a fingerprint written by the installer"):
        LlamaDCompForCausalLM.from_pretrained(folder)


def test_a_fingerprint_without_the_field_hashes_is_refused(folder):
    fingerprint = json.loads((folder / "config.json").read_text())["library_fingerprint"]
    edit_config(folder, library_fingerprint=";".join(fingerprint.split(";")[:2]))  # an older installer's
    with pytest.raises(LibraryMismatchError, match="records no hash of .*computer_layer"):
        LlamaDCompForCausalLM.from_pretrained(folder)


def without_hash(folder: Path, field: str) -> None:
    """The folder's fingerprint as an installer from before `field` existed wrote it."""
    fingerprint = json.loads((folder / "config.json").read_text())["library_fingerprint"]
    parts = [part for part in fingerprint.split(";") if not part.startswith(f"{field}=")]
    assert len(parts) == len(fingerprint.split(";")) - 1
    edit_config(folder, library_fingerprint=";".join(parts))


def test_a_checkpoint_from_before_a_field_loads_while_the_field_holds_its_default(saved, folder):
    """A new answer field must not orphan older checkpoints: with no hash of it and its default value (what
    config.json without it loads with), the checkpoint loads and answers as before."""
    without_hash(folder, "computer_halt_threshold")
    path = folder / "config.json"
    config = json.loads(path.read_text())
    assert config.pop("computer_halt_threshold") == LlamaDCompConfig.field_default("computer_halt_threshold")
    path.write_text(json.dumps(config))  # as config.json from before the field
    model = LlamaDCompForCausalLM.from_pretrained(folder)
    assert model.config.computer_halt_threshold == LlamaDCompConfig.field_default("computer_halt_threshold")
    ids = random_ids(2, 6)
    expected = LlamaDCompForCausalLM.from_pretrained(saved)(input_ids=ids).logits
    torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=0, atol=0)


def test_a_field_without_a_hash_and_off_its_default_is_refused(folder):
    without_hash(folder, "computer_halt_threshold")
    edit_config(folder, computer_halt_threshold=0.95)
    with pytest.raises(
        LibraryMismatchError, match=r"records no hash of \['computer_halt_threshold'\], and they differ"
    ):
        LlamaDCompForCausalLM.from_pretrained(folder)


def test_verify_library_fails_without_a_computer():
    model = tiny_model()
    model.model.layers[1].computer = None  # what a layer index pointing nowhere would build
    with pytest.raises(LibraryMismatchError, match="no decoder layer holds the computer"):
        model.verify_library()


# --------------------------------------------------------------------------------------------- finite weights
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("key", ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.computer.gate"])
def test_a_non_finite_weight_refuses_to_load_naming_the_tensor(folder, key, bad):
    weights = load_file(folder / "model.safetensors")
    weights[key] = weights[key].clone().view(-1).index_fill(0, torch.tensor([0]), bad).view(weights[key].shape)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"{key} holds NaN or inf"):
        LlamaDCompForCausalLM.from_pretrained(folder)


# ------------------------------------------------------------------------------------ library.loading
def test_load_model_and_tokenizer_load_the_folder(folder):
    model, tokenizer = load_model(folder), load_tokenizer(folder)
    assert type(model).__name__ == "LlamaDCompForCausalLM"
    assert tokenizer("add 3 and 4").input_ids == tiny_tokenizer(split_digits=False)("add 3 and 4").input_ids


def test_a_missing_folder_or_config_says_so(tmp_path):
    with pytest.raises(LoadingError, match="no such folder"):
        load_model(tmp_path / "nonexistent")
    with pytest.raises(LoadingError, match="no config.json"):
        load_tokenizer(tmp_path)


def test_a_folder_without_tokenizer_files_says_so(folder):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(LoadingError, match="no tokenizer files"):
        load_tokenizer(folder)


EVIL = 'import pathlib\npathlib.Path({marker!r}).write_text("imported")\nclass Evil:\n    pass\n'


@pytest.fixture
def outside(tmp_path) -> tuple[Path, Path]:
    """A module outside the model folder that leaves a marker file when imported."""
    directory, marker = tmp_path / "outside", tmp_path / "marker"
    directory.mkdir()
    (directory / "evil.py").write_text(EVIL.format(marker=str(marker)))
    return directory, marker


@pytest.mark.parametrize("form", ["absolute", "repo", "dotted", "missing"])
@pytest.mark.parametrize("key", ["AutoConfig", "AutoModelForCausalLM"])
def test_code_outside_the_folder_is_never_imported(folder, outside, monkeypatch, form, key):
    directory, marker = outside
    monkeypatch.chdir(directory.parent)  # where "outside--evil" resolves
    reference = {
        "absolute": f"{directory}/evil.Evil",
        "repo": "outside--evil.Evil",
        "dotted": "outside.evil.Evil",
        "missing": "nowhere.Evil",
    }[form]
    auto_map = {**json.loads((folder / "config.json").read_text())["auto_map"], key: reference}
    edit_config(folder, auto_map=auto_map)
    for load in (load_model, load_tokenizer):
        with pytest.raises(LoadingError, match=rf"config.json: auto_map\['{key}'\] = .* names code outside"):
            load(folder)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["{directory}/evil.Evil", "outside--evil.Evil"])
def test_without_the_check_transformers_imports_the_outside_module(folder, outside, reference):
    """The attack the check stops is real: in a fresh process, plain `from_pretrained` imports the module."""
    directory, marker = outside
    auto_map = {**json.loads((folder / "config.json").read_text())["auto_map"]}
    auto_map["AutoModelForCausalLM"] = reference.format(directory=directory)
    edit_config(folder, auto_map=auto_map)
    script = "import sys\nfrom transformers import AutoModelForCausalLM\n"
    script += "AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
    subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        cwd=directory.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(directory.parent / "modules")},
    )  # it fails after the import (Evil is no model)
    assert marker.read_text() == "imported"


def test_a_tokenizer_auto_map_is_checked_too(folder, outside):
    directory, marker = outside
    path = folder / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "auto_map": [None, f"{directory}/evil.Evil"]}))
    with pytest.raises(LoadingError, match="tokenizer_config.json: auto_map"):
        load_tokenizer(folder)
    assert not marker.exists()


def test_a_symlink_out_of_the_folder_is_not_its_own_code(folder, outside):
    directory, marker = outside
    (folder / "evil.py").symlink_to(directory / "evil.py")
    auto_map = {**json.loads((folder / "config.json").read_text())["auto_map"], "AutoConfig": "evil.Evil"}
    edit_config(folder, auto_map=auto_map)
    with pytest.raises(LoadingError, match="names code outside"):
        load_model(folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("prompts", "max_new_tokens", "message"),
    [
        ([], 4, "prompts"),
        ("Add 3 and 4", 4, "prompts"),
        (["Add 3 and 4", "  "], 4, "prompt 2 is empty"),
        (["Add 3 and 4"], -1, "max_new_tokens=-1"),
        (["Add 3 and 4"], 0, "max_new_tokens=0"),
        (["Add 3 and 4"], True, "max_new_tokens=True"),
    ],
)
def test_generation_arguments_are_checked(prompts, max_new_tokens, message):
    with pytest.raises(ValueError, match=message):
        check_generation_arguments(prompts, max_new_tokens)
    check_generation_arguments(["Add 3 and 4"], 1)
