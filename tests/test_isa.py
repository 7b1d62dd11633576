"""The instruction-set checklist (docs/ISA.md, "Adding an instruction"): every op of dcomp_isa reaches every layer
that must know it, and the layers that cannot derive it from the table fail here when one is missed."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import strategies
import torch

import dcomp_isa
import modeling_llama_dcomp
from benchmarks import bench_alu
from configuration_llama_dcomp import LlamaDCompConfig
from library.stdlib import CALCULATOR, calculator_source

ROOT = Path(__file__).resolve().parents[1]


def test_docs_isa_table_lists_every_op_in_order():
    text = (ROOT / "docs" / "ISA.md").read_text(encoding="utf-8")
    table = text.split("## Instructions", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z]+)` \|", table, flags=re.MULTILINE)
    assert tuple(documented) == dcomp_isa.OP_NAMES


def test_the_fuzzer_draws_every_op():
    assert set(strategies.DATA_OPS) | set(strategies.CONTROL_OPS) == set(dcomp_isa.OP_NAMES)
    assert set(strategies.CONTROL_OPS) == set(dcomp_isa.CONTROL_OPS)


def test_benchmarks_count_every_alu_op():
    assert len(dcomp_isa.ALU_OPS) == bench_alu.NUM_OPS
    for path in (ROOT / "benchmarks").glob("*.py"):  # no op count written out by hand
        assert not re.search(rf"\b{len(dcomp_isa.ALU_OPS)}\b.*\bops?\b", path.read_text(encoding="utf-8")), path


@pytest.mark.parametrize("op", dcomp_isa.ALU_OPS)
def test_every_alu_op_is_a_calculator_program(op):
    assert op in CALCULATOR
    assert f"    {op} r1 " in calculator_source(op)


def test_the_config_records_the_instruction_set():
    assert LlamaDCompConfig().computer_ops == list(dcomp_isa.OP_NAMES)


def test_the_fingerprint_covers_the_op_names(monkeypatch):
    sizes = SimpleNamespace(
        computer_program_lines=2, computer_lanes=1, computer_registers=4, computer_values=8, computer_encoding="unit"
    )
    program = modeling_llama_dcomp.halt_program(sizes)
    before = modeling_llama_dcomp.library_fingerprint(program, ["p"], [0])
    monkeypatch.setattr(modeling_llama_dcomp, "OP_NAMES", tuple(reversed(dcomp_isa.OP_NAMES)))
    after = modeling_llama_dcomp.library_fingerprint(program, ["p"], [0])
    assert before.split(";")[0] == after.split(";")[0] and before != after
    assert torch.equal(program.op, modeling_llama_dcomp.halt_program(sizes).op)
