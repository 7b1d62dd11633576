"""LlamaDCompConfig: defaults, documented fields, serialisation, auto_map, and every invalid field."""

from __future__ import annotations

import ast
import inspect

import pytest
from transformers import LlamaConfig

import configuration_llama_dcomp
from configuration_llama_dcomp import AUTO_MAP, LlamaDCompConfig

TINY = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
VALID = dict(
    TINY,
    computer_layer=1,
    computer_values=16,
    computer_registers=8,
    computer_memory_size=8,
    computer_call_depth=2,
    computer_program_lines=6,
    computer_lanes=2,
    library_programs=["add", "fib"],
    library_entry_points=[0, 1],
    library_input_registers=[1, 2, 3],
    library_memory_inputs=4,
    library_output_register=0,
)


# The copy parse, for the list fields (one token per value 0..15)
COPY = {"computer_parse": "copy", "computer_number_token_ids": list(range(10, 26))}
READ_OUT = {**COPY, "computer_output": "tokens", "computer_digit_tokens": {str(d): 10 + d for d in range(10)}}
JOINED = {"computer_minus_token_ids": [5], "computer_joined_minus_token_ids": [5]}  # one joined minus


def test_defaults_build_and_describe_an_empty_library():
    config = LlamaDCompConfig()
    assert isinstance(config, LlamaConfig) and config.model_type == "llama_dcomp"
    assert config.library_programs == [] and config.library_entry_points == []
    assert config.library_fingerprint is None and config.computer_gate_init == 0.0
    assert config.computer_output == "residual_add" and config.computer_alu == "table"


def test_every_computer_field_is_documented():
    """Each `computer_*` / `library_*` field is an annotated class attribute followed by its docstring."""
    tree = ast.parse(inspect.getsource(configuration_llama_dcomp))
    body = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "LlamaDCompConfig").body
    documented = {
        statement.target.id
        for statement, following in zip(body, body[1:])
        if isinstance(statement, ast.AnnAssign)
        and isinstance(following, ast.Expr)
        and isinstance(following.value, ast.Constant)
        and isinstance(following.value.value, str)
        and following.value.value.strip()
    }
    fields = {name for name in LlamaDCompConfig.__dataclass_fields__ if name.startswith(("computer_", "library_"))}
    assert len(fields) == 51 and "trained_sequence_length" in documented
    assert fields <= documented, fields - documented


def test_round_trip_through_json(tmp_path):
    config = LlamaDCompConfig(**VALID, library_fingerprint="tensors=1;index=2", computer_gate_init=0.25)
    config.save_pretrained(tmp_path)
    loaded = LlamaDCompConfig.from_pretrained(tmp_path)
    for name in LlamaDCompConfig.__dataclass_fields__:
        if name.startswith(("computer_", "library_")):
            assert getattr(loaded, name) == getattr(config, name), name
    assert loaded.auto_map == AUTO_MAP


def test_auto_map_names_config_and_both_model_classes():
    assert set(LlamaDCompConfig().auto_map) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
    hub = {"AutoConfig": "user/repo--configuration_llama_dcomp.LlamaDCompConfig"}
    assert LlamaDCompConfig(auto_map=hub).auto_map["AutoConfig"] == hub["AutoConfig"]  # loaded entries are kept


def test_field_types_are_checked():
    with pytest.raises(ValueError, match="^computer_values="):
        LlamaDCompConfig(**{**VALID, "computer_values": "16"})
    config = LlamaDCompConfig(**VALID, computer_gate_init=1, computer_selection_temperature=2)
    assert config.computer_gate_init == 1.0 and isinstance(config.computer_gate_init, float)
    assert isinstance(config.computer_selection_temperature, float)


INVALID = [
    ({"computer_layer": 2}, "computer_layer"),  # == num_hidden_layers
    ({"computer_layer": -1}, "computer_layer"),
    ({"computer_values": 1, "computer_program_lines": 1, "computer_memory_size": 1}, "computer_values"),
    ({"computer_values": 6, "computer_memory_size": 6}, "computer_values"),  # n <= program lines
    ({"computer_program_lines": 0, "library_programs": [], "library_entry_points": []}, "computer_program_lines"),
    ({"computer_alu": "dense"}, "computer_alu"),
    ({"computer_alu": "circuit", "computer_values": 12, "computer_memory_size": 8}, "computer_values"),
    ({"library_entry_points": [0]}, "library_entry_points"),  # two programs, one entry point
    ({"library_entry_points": [0, 6]}, "library_entry_points"),  # past the last line
    ({"library_entry_points": [0, -1]}, "library_entry_points"),
    ({"library_programs": ["add", "add"]}, "library_programs"),
    ({"library_programs": ["add", ""]}, "library_programs"),
    ({"library_input_registers": [1, 6]}, "library_input_registers"),  # r6 is on the return stack
    ({"library_input_registers": [-1]}, "library_input_registers"),
    ({"library_input_registers": [1, 1]}, "library_input_registers"),
    ({"library_input_registers": [], "library_memory_inputs": 0}, "library_input_registers"),
    ({"library_output_register": 8}, "library_output_register"),
    ({"library_output_register": -1}, "library_output_register"),
    ({"computer_memory_size": 17}, "computer_memory_size"),  # > n
    ({"computer_memory_size": 0, "library_memory_inputs": 0}, "computer_memory_size"),
    ({"computer_call_depth": 8}, "computer_call_depth"),  # >= registers
    ({"computer_call_depth": 0}, "computer_call_depth"),
    ({"library_memory_inputs": 9}, "library_memory_inputs"),  # > memory size
    ({"library_memory_inputs": -1}, "library_memory_inputs"),
    ({"computer_max_steps": 0}, "computer_max_steps"),
    ({"computer_halt_threshold": 0.0}, "computer_halt_threshold"),
    ({"computer_halt_threshold": 1.5}, "computer_halt_threshold"),
    ({"computer_lanes": 0}, "computer_lanes"),
    ({"computer_output": "replace"}, "computer_output"),
    ({"computer_selection_temperature": 0.0}, "computer_selection_temperature"),
    ({"computer_parse": "pointer"}, "computer_parse"),
    ({"computer_parse": "copy"}, "computer_number_token_ids"),  # one token id per value is needed
    ({"computer_parse": "copy", "computer_number_token_ids": [5, 6]}, "computer_number_token_ids"),
    ({"computer_number_token_ids": [-2]}, "computer_number_token_ids"),
    ({"computer_number_token_ids": [10**9]}, "computer_number_token_ids"),  # >= vocab_size
    ({"computer_minus_token_ids": [10**9]}, "computer_minus_token_ids"),  # >= vocab_size
    ({"computer_joined_minus_token_ids": [5]}, "computer_joined_minus_token_ids"),  # not a minus token
    ({"computer_joined_minus_symbol_ids": [6]}, "computer_joined_minus_symbol_ids"),  # no joined minus to match
    ({**JOINED, "computer_joined_minus_symbol_ids": [-2]}, "computer_joined_minus_symbol_ids"),  # no token id
    ({"computer_group_separator_ids": [10**9]}, "computer_group_separator_ids"),  # >= vocab_size
    ({"computer_group_separator_ids": [5], "computer_minus_token_ids": [5]}, "computer_group_separator_ids"),
    ({"computer_plus_token_ids": [10**9]}, "computer_plus_token_ids"),  # >= vocab_size
    ({"computer_plus_token_ids": [5], "computer_group_separator_ids": [5]}, "computer_plus_token_ids"),
    ({"computer_copy_ordinals": 0}, "computer_copy_ordinals"),
    ({"computer_copy_dim": 0}, "computer_copy_dim"),
    ({"library_count_register": 4}, "library_count_register"),  # not an input register
    ({"library_count_register": 1}, "library_count_register"),  # counting needs the copy parse
    ({"library_list_programs": ["add"]}, "library_list_programs"),  # a list answer's length is the count
    ({"library_list_programs": ["sort"], "library_count_register": 1, **COPY}, "library_list_programs"),
    (
        {"library_list_programs": ["add"], "library_count_register": 1, "computer_output": "tokens", **COPY},
        "computer_list_separator_ids",
    ),
    ({"computer_list_separator_ids": [10**9]}, "computer_list_separator_ids"),
    ({**READ_OUT, "eos_token_id": 10**9}, "eos_token_id"),  # the end mark writes it
    ({**READ_OUT, "eos_token_id": [2, -1]}, "eos_token_id"),
    ({"computer_trigger_context": -1}, "computer_trigger_context"),
    ({"computer_trigger_dropout": 0.5}, "computer_trigger_dropout"),  # no token logits to drop
    ({**READ_OUT, "computer_trigger_context": 2, "computer_trigger_dropout": 1.0}, "computer_trigger_dropout"),
    ({"computer_trigger_numbers": 8}, "computer_trigger_numbers"),  # counts for the "tokens" read-out's trigger
    ({"computer_copy_from_end": True}, "computer_copy_from_end"),  # orders the copy parse's ordinals
    ({**READ_OUT, "computer_trigger_numbers": -1}, "computer_trigger_numbers"),
    ({"computer_lead_token_id": 5}, "computer_lead_token_id"),  # the lead is written by the "tokens" read-out
    ({"computer_lead_minus_token_id": 5, "computer_minus_token_ids": [5]}, "computer_lead_minus_token_id"),  # no lead
    ({"computer_trigger_threshold": 0.0}, "computer_trigger_threshold"),
    ({"computer_trigger_threshold": 1.0}, "computer_trigger_threshold"),
    ({"computer_own_text_window": 2}, "computer_own_text_window"),  # no token read-out
    ({**READ_OUT, "computer_own_text_window": -1}, "computer_own_text_window"),
    ({"computer_lead_threshold": 0.3}, "computer_lead_threshold"),  # no lead head
    ({**READ_OUT, "computer_lead_token_id": 5, "computer_lead_threshold": 1.0}, "computer_lead_threshold"),
    ({**READ_OUT, "computer_lead_token_id": 5, "computer_lead_threshold": float("nan")}, "computer_lead_threshold"),
    ({"computer_selection_context": -1}, "computer_selection_context"),
    ({"computer_selection_context": 8}, "computer_selection_context"),  # the votes need the "tokens" read-out
    ({"computer_selection_boundary_ids": [5]}, "computer_selection_boundary_ids"),  # no window to bound
    (
        {**READ_OUT, "computer_selection_context": 8, "computer_selection_boundary_ids": [10**9]},
        "computer_selection_boundary_ids",
    ),
    ({"computer_selection_dropout": 0.5}, "computer_selection_dropout"),  # no votes to drop
    ({"computer_selection_dropout": 1.0}, "computer_selection_dropout"),
    ({"computer_selection_hidden_votes": True}, "computer_selection_hidden_votes"),  # no window to vote over
    ({"computer_selection_hidden_votes": 1}, "computer_selection_hidden_votes"),  # not a bool
    ({"computer_selection_vote_layers": "0"}, "computer_selection_vote_layers"),  # not a list of layers
    ({"computer_selection_vote_layers": [1, 0]}, "computer_selection_vote_layers"),  # not ascending
    ({"computer_selection_vote_layers": [0, 0]}, "computer_selection_vote_layers"),  # not distinct
    ({"computer_selection_vote_layers": [-1]}, "computer_selection_vote_layers"),
    ({"computer_selection_vote_layers": [9]}, "computer_selection_vote_layers"),  # after the computer's layer
    ({"computer_selection_vote_layers": [0]}, "computer_selection_vote_layers"),  # no hidden votes to read them
]


@pytest.mark.parametrize(("changes", "field"), INVALID, ids=[f"{f}-{i}" for i, (_, f) in enumerate(INVALID)])
def test_a_config_that_cannot_work_raises_naming_the_field(changes, field):
    LlamaDCompConfig(**VALID)  # the baseline is valid
    with pytest.raises(ValueError, match=rf"^{field}="):
        LlamaDCompConfig(**{**VALID, **changes})


def test_invalid_config_json_raises_on_load():
    with pytest.raises(ValueError, match="^computer_layer="):
        LlamaDCompConfig.from_dict({**VALID, "computer_layer": 5})


def test_an_invalid_assignment_raises_and_leaves_the_field_as_it_was():
    config = LlamaDCompConfig(**VALID)
    with pytest.raises(ValueError, match="^library_entry_points="):
        config.library_entry_points = [0, 9]
    assert config.library_entry_points == [0, 1]


def test_a_checkpoint_from_another_instruction_set_is_refused():
    from dcomp_isa import OP_NAMES

    ops = [op for op in OP_NAMES if op != "not"] + ["pow"]
    with pytest.raises(ValueError, match=r"^computer_ops=.*not in the checkpoint: not; unknown to this code: pow"):
        LlamaDCompConfig(**{**VALID, "computer_ops": ops})
    with pytest.raises(ValueError, match=r"^computer_ops=.*the same ops in another order"):
        LlamaDCompConfig.from_dict({**VALID, "computer_ops": list(reversed(OP_NAMES))})
