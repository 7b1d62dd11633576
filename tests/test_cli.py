"""`python -m library run/check/compile/decompile`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from listings import FIBONACCI_COUNTDOWN

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "library", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def fib_file(tmp_path):
    path = tmp_path / "fib.asm"
    path.write_text(FIBONACCI_COUNTDOWN)
    return path


@pytest.mark.parametrize("differentiable", [False, True])
def test_run_prints_one_json_object(fib_file, differentiable):
    args = [
        "run",
        str(fib_file),
        "--n",
        "128",
        "--set",
        "r1=6",
        "--set",
        "r2=2",
        "--set",
        "r4=3",
        "--memory",
        "0,0,0,9",
        "--max-steps",
        "500",
        "--registers",
        "16",
        "--memory-size",
        "8",
    ]
    result = _cli(*args, *(["--differentiable"] if differentiable else []))
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    # (6, 2) -> (2, 8) -> (8, 10) -> (10, 18): r2 = 18, memory holds the sequence
    assert output["registers"][1:5] == [10, 18, 3, 0]
    assert output["memory"][:4] == [8, 10, 18, 9]
    assert output["steps"] == 21 and output["halted"] is True
    if differentiable:
        assert min(output["register_probs"]) > 0.999 and output["halt_probability"] > 0.99


def test_check_reports_bad_assembly_with_line_and_column(tmp_path, fib_file):
    assert _cli("check", str(fib_file)).returncode == 0
    bad = tmp_path / "bad.asm"
    bad.write_text("add 1 2 3\n  mul 1 2\n")
    result = _cli("check", str(bad))
    assert result.returncode == 1
    assert "bad.asm:2:" in result.stderr and "Traceback" not in result.stderr


def test_compile_then_decompile(tmp_path, fib_file):
    out = tmp_path / "fib.safetensors"
    assert _cli("compile", str(fib_file), "-o", str(out), "--n", "32").returncode == 0
    result = _cli("decompile", str(out))
    assert result.returncode == 0, result.stderr
    assert "fib_loop:" in result.stdout and "jump r4 fib_loop" in result.stdout
    assert _cli("decompile", str(fib_file)).returncode != 0  # not a safetensors file: clean error


SIGNED = "add 1 2 3\nread 2 4\nset -7 r5\ndiv 5 1 6 | mod 5 1 7\nwrite 1 5\n"
DEEP = "call f1\nhalt\n" + "".join(f"f{i}: call f{i + 1}\nret\n" for i in range(1, 7)) + "f7: set 1 r1\nret\n"


@pytest.mark.slow
@pytest.mark.parametrize("differentiable", [False, True])
def test_run_with_bits_prints_signed_integers(tmp_path, differentiable):
    path = tmp_path / "signed.asm"
    path.write_text(SIGNED)
    big = str(2**63 - 1)
    args = ["run", str(path), "--bits", "64", "--set", "r1=-5", "--set", f"r2={big}", "--memory=3,-1,2"]
    result = _cli(*args, "--memory-size", "4", *(["--differentiable"] if differentiable else []))
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["registers"][1:8] == [-5, 2**63 - 1, 2**63 - 6, 0, -7, 1, -2]  # -7 // -5, -7 % -5
    assert output["memory"] == [3, -1, 2, 0] and output["registers"][12:] == [-1] * 4
    assert output["halted"] is True and output["overflow"] is False


@pytest.mark.slow
@pytest.mark.parametrize("bits", [[], ["--bits", "16"]])
@pytest.mark.parametrize("differentiable", [False, True])
def test_run_reports_return_stack_overflow(tmp_path, bits, differentiable):
    path = tmp_path / "deep.asm"
    path.write_text(DEEP)
    result = _cli("run", str(path), *bits, *(["--differentiable"] if differentiable else []))
    assert result.returncode == 3
    output = json.loads(result.stdout)
    assert output["overflow"] is True and output["halted"] is False and output["steps"] == 5


@pytest.mark.slow
@pytest.mark.parametrize("differentiable", [False, True])
def test_run_with_bits_rejects_out_of_range_values(tmp_path, differentiable):
    path = tmp_path / "signed.asm"
    path.write_text(SIGNED)
    result = _cli("run", str(path), "--bits", "8", "--set", "r1=200", *(["--differentiable"] if differentiable else []))
    assert result.returncode == 2 and "200 out of range [-128, 128)" in result.stderr
    path.write_text("set -200 r1\n")
    result = _cli("run", str(path), "--bits", "8")
    assert result.returncode == 1 and "signed.asm:1:5: immediate -200 out of range [-128, 128)" in result.stderr
