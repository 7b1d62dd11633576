"""`python -m library run/check/compile/decompile`: results, and a clear message (exit 1 or 2) for bad input."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from listings import FIBONACCI_COUNTDOWN
from safetensors.torch import save_file

from dcomp_machine import ProgramTensors
from library.__main__ import main

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


@pytest.mark.slow  # subprocesses
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


@pytest.mark.slow  # subprocesses
def test_check_reports_bad_assembly_with_line_and_column(tmp_path, fib_file):
    assert _cli("check", str(fib_file)).returncode == 0
    bad = tmp_path / "bad.asm"
    bad.write_text("add 1 2 3\n  mul 1 2\n")
    result = _cli("check", str(bad))
    assert result.returncode == 1
    assert "bad.asm:2:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # subprocesses
def test_compile_then_decompile(tmp_path, fib_file):
    out = tmp_path / "fib.safetensors"
    assert _cli("compile", str(fib_file), "-o", str(out), "--n", "32").returncode == 0
    result = _cli("decompile", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "fib_loop:" in lines and ["jump", "r4", "fib_loop"] in [line.split() for line in lines]
    assert _cli("decompile", str(fib_file)).returncode != 0  # not a safetensors file: clean error


# ------------------------------------------------------------------------------ argument validation (in process)
def _main(*argv: str) -> tuple[int, str, str]:
    """`main(argv)` in this process: (exit status, stdout, stderr); argparse's exits count as statuses."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as exit_:
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


def test_call_depth_reaches_the_assembler(tmp_path):
    path = tmp_path / "p.asm"
    path.write_text("call f | set 1 r1\nhalt\nf: ret\n")  # r1 is a data register with 3 registers, depth 1
    assert _main("check", str(path), "--registers", "3", "--call-depth", "1")[0] == 0
    status, _, err = _main("check", str(path), "--registers", "3", "--call-depth", "2")
    assert status == 1 and "r1 is a return-stack register (r1..r2)" in err
    status, out, _ = _main("run", str(path), "--registers", "3", "--call-depth", "1", "--n", "8", "--memory-size", "8")
    assert status == 0 and json.loads(out)["registers"] == [0, 1, 7]


def test_register_names_and_values_are_read_as_the_assembler_reads_them(fib_file):
    status, out, _ = _main("run", str(fib_file), "--set", "R1=5", "--set", "2=1", "--max-steps", "0")
    assert status == 0 and json.loads(out)["registers"][1:3] == [5, 1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-steps", "-5", "--differentiable"], "argument --max-steps: -5 is out of range [0, 100000]"),
        (["--max-steps", "10**9"], "expected an integer in [0, 100000], got '10**9'"),
        (["--set", "r1=1_0"], "expected REGISTER=VALUE such as r1=6 (decimal digits), got 'r1=1_0'"),
        (["--set", "r1=\u0663"], "got 'r1=\u0663'"),
        (["--set", "r1=1", "--set", "r1=2"], "--set r1 is given twice"),
        (["--set", "r16=1"], "--set r16=1: need a register < --registers 16"),
        (["--set", "r1=128"], "and a value in [0, 128) (--n 128)"),
        (["--memory", "1,,2"], "memory cell 2 of '1,,2' is empty"),
        (["--memory", "1,-2", "--differentiable"], "--memory cell 2 = -2 is out of range [0, 128) (--n 128)"),
        (["--memory", "200"], "--memory cell 1 = 200 is out of range [0, 128) (--n 128)"),
        (["--memory", ",".join(["1"] * 33)], "--memory has 33 cells, more than --memory-size 32"),
        (["--n", "100000"], "argument --n: 100000 is out of range [2, 4096]"),
        (["--registers", "4", "--call-depth", "4"], "call_depth = 4 must lie in [1, --registers = 4)"),
        (["--n", "16", "--memory-size", "32"], "--memory-size = 32 must lie in [1, n = 16]"),
        (["--n", "16", "--memory-size", "32", "--differentiable"], "--memory-size = 32 must lie in [1, n = 16]"),
    ],
)
def test_bad_run_arguments_exit_2_with_a_message(fib_file, args, message):
    status, out, err = _main("run", str(fib_file), *args)
    assert status == 2 and out == "" and message in err and "Traceback" not in err


def test_compile_into_a_missing_folder_is_refused(tmp_path, fib_file):
    status, _, err = _main("compile", str(fib_file), "-o", str(tmp_path / "missing" / "fib.safetensors"))
    assert status == 2 and "does not exist" in err


def _compiled(tmp_path, fib_file, **metadata) -> Path:
    out = tmp_path / "fib.safetensors"
    assert _main("compile", str(fib_file), "-o", str(out), "--n", "32")[0] == 0
    if metadata:
        tensors, stored = ProgramTensors.load(out)
        tensors.save(out, metadata={**stored, **metadata})
    return out


def test_decompile_refuses_what_is_not_one_good_program(tmp_path, fib_file):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    cases = {junk: "not a safetensors file", tmp_path: "is a directory", tmp_path / "none": "No such file"}
    good = _compiled(tmp_path, fib_file)
    tensors, metadata = ProgramTensors.load(good)
    for name, change in {
        "shapes": lambda t: setattr(t, "b", t.b[:, :, :3].contiguous()),
        "nan": lambda t: t.imm.__setitem__((0, 0, 0), float("nan")),
        "missing": None,
    }.items():
        path = tmp_path / f"{name}.safetensors"
        if change is None:
            save_file({"op": tensors.op}, str(path))
        else:
            broken = tensors.map(torch.clone)
            change(broken)
            save_file(broken.fields(), str(path), metadata=metadata)
        cases[path] = {"shapes": "field 'b' has shape", "nan": "field 'imm' holds NaN", "missing": "missing tensors"}[
            name
        ]
    cases[_compiled(tmp_path, fib_file, labels="{not json")] = "'labels' metadata is not JSON"
    cases[_compiled(tmp_path, fib_file, labels='{"x": 99}')] = "label 'x' points at 99"
    cases[_compiled(tmp_path, fib_file, labels='{"r1 x": 0}')] = "bad label name"
    for path, message in cases.items():
        status, out, err = _main("decompile", str(path))
        assert status == 2 and out == "" and message in err and "Traceback" not in err, (path, err)


# ----------------------------------------------------------------------------------------------------- fuzz
_FUZZ_WORDS = [
    "run", "check", "compile", "decompile", "--n", "--registers", "--memory-size", "--call-depth", "--set",
    "--memory", "--max-steps", "--differentiable", "-o", "--certain", "--help", "2", "3", "16", "-5", "0",
    "100000", "r1=5", "R2=3", "r1=1_0", "r1=\u0663", "1,,2", "1,-2", "x", "", "nan", "1e3", "\x00", "r99=1",
]  # fmt: skip


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_fuzz")
    files = {"good.asm": FIBONACCI_COUNTDOWN.encode(), "bad.asm": b"add 1 2\n\xff", "junk.safetensors": b"\x01" * 64}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [str(folder / name) for name in files] + [str(folder), str(folder / "missing.asm")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_arguments_exit_0_1_or_2_with_a_message(fuzz_files, data):
    words = st.sampled_from(_FUZZ_WORDS + fuzz_files) | st.text(max_size=8)
    argv = data.draw(st.lists(words, max_size=8))
    status, _, err = _main(*argv)
    assert status in (0, 1, 2), (argv, status)
    assert status == 0 or err.strip(), argv
    assert "Traceback" not in err, argv


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
    assert result.returncode == 2 and "--set r1=200: need a register < --registers 16 and a value in [-128, 128)" in (
        result.stderr
    )
    path.write_text("set -200 r1\n")
    result = _cli("run", str(path), "--bits", "8")
    assert result.returncode == 1 and "signed.asm:1:5: immediate -200 out of range [-128, 128)" in result.stderr


@pytest.mark.slow
def test_run_python_with_bits_and_a_negative_argument():
    result = _cli("run", "library/programs/gcd.py", "--call", "gcd(84, -36)", "--bits", "64")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["result"] == -12 and output["halted"] is True  # Python's gcd loop: the sign of the last divisor
    result = _cli("run", "library/programs/gcd.py", "--call", "gcd(84, -36)")
    assert result.returncode == 2 and "not a machine value in [0, 128)" in result.stderr
