"""Issue 15, config: every way a LlamaDCompConfig field is set — construction, keyword overrides on load, attribute
assignment, `update` — is checked, and a bad field raises `ValueError` naming it (a misspelt one warns)."""

from __future__ import annotations

import contextlib
import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_configuration import VALID
from transformers import AutoConfig

from configuration_llama_dcomp import MAX_STEPS, MAX_VALUES, LlamaDCompConfig

NOT_FINITE = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"computer_values": "16"}, "computer_values"),  # a string for an int
        ({"computer_layer": 1.5}, "computer_layer"),
        ({"library_input_registers": "12"}, "library_input_registers"),
        ({"computer_registers": 0}, "computer_registers"),  # not computer_call_depth
        ({"computer_registers": 1, "computer_call_depth": 1}, "computer_registers"),
        ({"computer_values": 10**9}, "computer_values"),
        ({"computer_values": MAX_VALUES + 1}, "computer_values"),
        ({"computer_max_steps": 10**9}, "computer_max_steps"),
        ({"computer_max_steps": MAX_STEPS + 1}, "computer_max_steps"),
        ({"computer_number_token_ids": [-1] * 16}, "computer_number_token_ids"),  # none readable
        ({"computer_number_token_ids": [5, 6, 5]}, "computer_number_token_ids"),  # one id, two values
        ({"trained_sequence_length": 0}, "trained_sequence_length"),
    ],
)
def test_bad_values_raise_value_error_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        LlamaDCompConfig(**{**VALID, **changes})


def test_the_bounds_themselves_are_accepted():
    LlamaDCompConfig(**{**VALID, "computer_max_steps": MAX_STEPS, "computer_number_token_ids": [5, -1, -1, 7]})


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize("field", ["computer_gate_init", "computer_selection_temperature", "computer_halt_threshold"])
def test_real_fields_must_be_finite(field, value):
    with pytest.raises(ValueError, match=rf"^{field}="):
        LlamaDCompConfig(**{**VALID, field: value})


def test_a_misspelt_field_warns_with_the_close_match():
    with pytest.warns(UserWarning, match="no field 'computer_layr'.*did you mean 'computer_layer'"):
        LlamaDCompConfig(**VALID, computer_layr=1)
    with pytest.warns(UserWarning, match="no field 'library_foo'"):
        LlamaDCompConfig(**VALID, library_foo=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LlamaDCompConfig(**VALID, rope_theta=10_000.0)  # an ordinary Llama field: no word


# ------------------------------------------------------------------------------------------------ assignment
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("computer_layer", 7),
        ("computer_halt_threshold", 0.0),
        ("computer_halt_threshold", math.nan),
        ("computer_values", "16"),
        ("library_output_register", 99),
        ("computer_max_steps", 10**9),
    ],
)
def test_an_invalid_assignment_raises_and_changes_nothing(name, value):
    config = LlamaDCompConfig(**VALID)
    before = config.to_dict()
    with pytest.raises(ValueError, match=rf"^{name}="):
        setattr(config, name, value)
    assert config.to_dict() == before


def test_a_valid_assignment_is_kept():
    config = LlamaDCompConfig(**VALID)
    config.computer_max_steps = 100
    assert config.computer_max_steps == 100


def test_update_checks_the_change_as_a_whole():
    config = LlamaDCompConfig(**VALID)
    change = {"library_programs": ["add"], "library_entry_points": [3]}  # invalid one field at a time
    config.update(change)
    assert config.library_programs == ["add"] and config.library_entry_points == [3]
    before = config.to_dict()
    with pytest.raises(ValueError, match="^library_entry_points="):
        config.update({"library_programs": ["a", "b"], "library_entry_points": [0, 99]})
    assert config.to_dict() == before
    assert "_computer_checks_deferred" not in config.__dict__


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from([n for n in LlamaDCompConfig.__dataclass_fields__ if n.startswith(("computer_", "library_"))]),
    value=st.one_of(st.integers(-(10**12), 10**12), st.floats(allow_nan=True), st.text(max_size=3), st.none()),
)
def test_assignment_either_keeps_a_valid_config_or_raises_value_error(name, value):
    """Whatever is assigned, the config stays one that passes `check_computer`: only ValueError escapes."""
    config = LlamaDCompConfig(**VALID)
    with contextlib.suppress(ValueError):
        setattr(config, name, value)
    config.check_computer()


# ----------------------------------------------------------------------------------------- keyword overrides
@pytest.fixture
def saved_config(tmp_path):
    LlamaDCompConfig(**VALID).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("override", "field"),
    [({"computer_layer": 5}, "computer_layer"), ({"computer_halt_threshold": 0}, "computer_halt_threshold")],
)
def test_keyword_overrides_on_load_are_checked(saved_config, override, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        LlamaDCompConfig.from_pretrained(saved_config, **override)
    with pytest.raises(ValueError, match=rf"^{field}="):
        AutoConfig.from_pretrained(saved_config, trust_remote_code=True, **override)


def test_a_valid_keyword_override_is_built_in(saved_config):
    config = LlamaDCompConfig.from_pretrained(saved_config, computer_layer=0, computer_max_steps=20)
    assert (config.computer_layer, config.computer_max_steps) == (0, 20)


def test_a_misspelt_keyword_override_warns(saved_config):
    with pytest.warns(UserWarning, match="did you mean 'computer_layer'"):
        LlamaDCompConfig.from_pretrained(saved_config, computer_layr=1)
