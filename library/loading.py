"""Loading a saved model folder safely: only the folder's own code, its own tokenizer, checked generation arguments.

`trust_remote_code=True` makes transformers import the modules that `auto_map` in config.json (and
tokenizer_config.json) names, and an entry may point outside the folder: an absolute path (`/abs/dir/evil.Class`)
or another folder or repository (`dir--evil.Class`) is imported as well. `load_model` and `load_tokenizer` first
check that every entry names a flat code file of the folder itself (`module.Class`, with `<folder>/module.py` a
regular file inside the folder) and raise `LoadingError` naming the file and the entry otherwise, before anything
is imported. A folder saved from a Hub download whose entries still read `<repo>--module.Class` is refused too:
save it again with this checkout (its config then names the local files).

    from library.loading import check_generation_arguments, load_model, load_tokenizer
    model, tokenizer = load_model("runs/default"), load_tokenizer("runs/default")
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

# Files whose `auto_map` names code that `trust_remote_code` imports.
CODE_REFERENCE_FILES = ("config.json", "tokenizer_config.json")
# Any one of these makes a folder hold a tokenizer `AutoTokenizer` can build (fast, SentencePiece, BPE).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


class LoadingError(ValueError):
    """A model folder that cannot be loaded as it is: missing, without a needed file, or naming outside code."""


def model_folder(folder: str | os.PathLike) -> Path:
    """`folder` as a Path, once it is a directory holding a config.json (else `LoadingError`: a Hub id or a typo
    would otherwise reach the Hub client and fail with "Repo id must be in the form …")."""
    path = Path(folder)
    if not path.is_dir():
        raise LoadingError(f"{path}: no such folder (give a folder written by train.py or save_pretrained)")
    if not (path / "config.json").is_file():
        raise LoadingError(f"{path}: no config.json, so this is no saved model folder")
    return path


def code_references(path: Path) -> list[tuple[str, str]]:
    """`(auto_map key, "module.Class")` for every code reference in the JSON file `path` (none when absent)."""
    if not path.is_file():
        return []
    try:
        auto_map = json.loads(path.read_text(encoding="utf-8")).get("auto_map") or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise LoadingError(f"{path}: not a JSON object ({error})") from error
    if isinstance(auto_map, list):  # a tokenizer's legacy form: [slow class, fast class]
        auto_map = {"AutoTokenizer": auto_map}
    if not isinstance(auto_map, dict):
        raise LoadingError(f"{path}: auto_map must be an object, got {auto_map!r}")
    references = []
    for key, value in auto_map.items():
        for reference in value if isinstance(value, list) else [value]:
            if reference is not None:
                references.append((key, reference))
    return references


def check_code_references(folder: str | os.PathLike) -> None:
    """Raises `LoadingError` unless every `auto_map` entry of the folder's config.json and tokenizer_config.json
    names one of the folder's own flat code files as `module.Class`."""
    folder = Path(folder)
    root = folder.resolve()
    for name in CODE_REFERENCE_FILES:
        for key, reference in code_references(folder / name):
            module, dot, class_name = reference.rpartition(".") if isinstance(reference, str) else ("", "", "")
            source = folder / f"{module}.py"
            own = (
                bool(dot)
                and module.isidentifier()
                and class_name.isidentifier()
                and source.is_file()
                and source.resolve().parent == root
            )
            if not own:
                raise LoadingError(
                    f"{folder / name}: auto_map[{key!r}] = {reference!r} names code outside the folder; only the "
                    "folder's own files are loaded ('module.Class' for a module.py next to config.json)"
                )


def load_model(folder: str | os.PathLike, **kwargs):
    """`AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, **kwargs)` once the folder is a saved
    model whose code references are its own files (`check_code_references`). A LlamaDComp model then also passes
    its own load checks (library fingerprint, finite weights)."""
    folder = model_folder(folder)
    check_code_references(folder)
    return AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, **kwargs)


def load_tokenizer(folder: str | os.PathLike):
    """The tokenizer saved with the model (`library.install.save_model_with_tokenizer`), loaded without a prompt:
    `AutoTokenizer` reads the model's config first, which names the folder's code, so `trust_remote_code=True` is
    passed once `check_code_references` has passed."""
    folder = model_folder(folder)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise LoadingError(
            f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer with the model "
            "(library.install.save_model_with_tokenizer)"
        )
    check_code_references(folder)
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=True)


def check_generation_arguments(prompts: Sequence[str], max_new_tokens: int) -> None:
    """Raises `ValueError` naming the argument when there is nothing to answer or no token may be generated."""
    if isinstance(prompts, str) or not prompts:
        raise ValueError(f"prompts: give a list of questions, got {prompts!r}")
    for index, prompt in enumerate(prompts, start=1):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt {index} is empty: {prompt!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: must be a whole number of at least 1")
