"""Issue 15, docs: every Python snippet of README.md and model_card.md runs as written in a non-interactive process
(stdin closed) on a tiny saved model, with no prompt and no warning about remote code. A line marked
`# needs the Hub` has its model id replaced by a local folder holding a model of the same kind; the model card's
`$repo` (the repository it is published in) is a folder saved as train.py saves one. Every `python train.py` command
of README.md and docs/TRAINING.md parses, with train.py's checks of combinations."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from model_fixtures import REPO, tiny_llama, tiny_model
from test_install import tiny_tokenizer

from library.install import save_model_with_tokenizer
from library.training.arguments import check_combinations, parse_arguments

SNIPPET = re.compile(r"```python\n(.*?)```", re.DOTALL)
QUOTED = re.compile(r'"[^"]*"')
# What a snippet must never print: the remote-code prompt, and transformers' fallback once it is declined.
INTERACTIVE = ("[y/N]", "to instantiate a model of type ``", "Traceback")


def snippets(name: str) -> list[str]:
    return SNIPPET.findall((REPO / name).read_text())


def localised(snippet: str, folder: str) -> str:
    """The snippet with the model id on each `# needs the Hub` line replaced by `folder`."""
    return "\n".join(
        QUOTED.sub(repr(folder).replace("'", '"'), line, count=1) if "# needs the Hub" in line else line
        for line in snippet.splitlines()
    )


def run_snippet(code: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def assert_clean(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert not [text for text in INTERACTIVE if text in output], output[-3000:]


def test_the_docs_have_snippets_and_hub_lines_are_marked():
    assert len(snippets("README.md")) >= 1 and len(snippets("model_card.md")) == 1
    for name in ("README.md", "model_card.md"):
        for snippet in snippets(name):
            for line in snippet.splitlines():
                if re.search(r'from_pretrained\("[\w.-]+/[\w.-]+"', line):  # a Hub id
                    assert "# needs the Hub" in line, line


@pytest.mark.slow
def test_the_model_card_snippet_runs_non_interactively(tmp_path):
    folder = tmp_path / "model"
    save_model_with_tokenizer(tiny_model(), tiny_tokenizer(split_digits=False), folder)
    (snippet,) = snippets("model_card.md")
    assert_clean(run_snippet(snippet.replace("$repo", str(folder)), tmp_path))


@pytest.mark.slow
@pytest.mark.llama3
def test_the_readme_snippets_run_non_interactively(tmp_path):
    pytest.importorskip("llama_models", reason="pip install --no-deps llama-models==0.3.0")
    from library.tokenizer import llama3_tokenizer

    llama_folder = tmp_path / "llama"  # stands in for the Hub model: deep enough for computer_layer=8
    tiny_llama(vocab_size=len(llama3_tokenizer()), num_hidden_layers=9).save_pretrained(llama_folder)
    for snippet in snippets("README.md"):
        assert_clean(run_snippet(localised(snippet, str(llama_folder)), tmp_path))


BLOCK = re.compile(r"```\w*\n(.*?)```", re.DOTALL)
INLINE_COMMAND = re.compile(r"`[^`]*?python train\.py([^`]*)`")


def train_commands(name: str) -> list[str]:
    """The arguments of every `python train.py` command of a doc: in its code blocks (a line, with its backslash
    continuations) and in its inline code spans; up to a shell operator, without `predict`, `--help` and a config
    file given alone (those parse otherwise)."""
    text = (REPO / name).read_text()
    found = [
        line.split("python train.py", 1)[1]
        for block in BLOCK.findall(text)
        for line in block.replace("\\\n", " ").splitlines()
        if "python train.py" in line
    ]
    found += INLINE_COMMAND.findall(BLOCK.sub("", text))
    commands = [re.split(r"&&|\||;|>", command)[0].strip() for command in found]
    return [c for c in commands if not re.fullmatch(r"(predict .*|--help|\S+\.(ya?ml|json))?", c)]


@pytest.mark.parametrize("name", ["README.md", "docs/TRAINING.md"])
def test_every_train_command_of_the_docs_parses(name, tmp_path):
    """A flag renamed or dropped, or a combination train.py refuses, fails here rather than in a user's shell."""
    gguf = tmp_path / "base.gguf"  # `--gguf $GG` must name a file; nothing reads it here
    gguf.touch()
    commands = train_commands(name)
    assert commands, f"{name} has no train.py command"
    for command in commands:
        argv = shlex.split(command.replace("$GG", str(gguf)))
        try:
            arguments = parse_arguments(argv)
        except SystemExit as error:
            raise AssertionError(f"{name}: `python train.py {command}` does not parse") from error
        check_combinations(*arguments[:3])
