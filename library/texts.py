"""Ordinary text that ships offline: the documentation strings of installed Python modules.

Three disjoint sources, so that what teaches the computer to stay silent is not what measures it:
`TRAINING_PACKAGES` (the Hugging Face stack this project installs anyway) give the trigger's negatives
(`train.py --text_fraction`), `CALIBRATION_PACKAGES` choose where it fires (`experiments.trigger_threshold`), and
the standard library (`experiments.pass_through`) gives the no-computation controls. Docstrings are read from the
source files with `ast`, so nothing is imported or run.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

TRAINING_PACKAGES = ("transformers", "datasets", "huggingface_hub", "accelerate", "peft")
CALIBRATION_PACKAGES = ("numpy",)  # installed with datasets


def module_files(name: str) -> list[Path]:
    """The source files of module or package `name`, sorted (a package: every .py file below it; a module built
    into the interpreter, such as `itertools`, has none)."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ValueError(f"module {name!r} is not installed")
    origin = Path(spec.origin or "")
    if origin.suffix != ".py":
        return []
    return sorted(origin.parent.rglob("*.py")) if spec.submodule_search_locations else [origin]


@functools.cache
def docstring_paragraphs(modules: tuple[str, ...], min_chars: int = 200, keep_lines: bool = False) -> tuple[str, ...]:
    """The distinct paragraphs of at least `min_chars` characters of the module, class and function docstrings of
    `modules`, in file and source order: whitespace collapsed, or with `keep_lines` as written (lines and their
    indentation kept, trailing spaces cut), so that a code example, a doctest's "# 5" comment or a numbered list
    stands on its own lines as in the text a user writes."""
    paragraphs: dict[str, None] = {}
    for name in modules:
        for path in module_files(name):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):  # a template or a file for another Python
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    for paragraph in (ast.get_docstring(node) or "").split("\n\n"):
                        if keep_lines:
                            paragraph = "\n".join(line.rstrip() for line in paragraph.strip("\n").splitlines())
                        else:
                            paragraph = " ".join(paragraph.split())
                        if len(paragraph) >= min_chars:
                            paragraphs.setdefault(paragraph)
    return tuple(paragraphs)
