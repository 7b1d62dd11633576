"""library.texts: ordinary text read offline from installed modules' docstrings."""

import pytest

from experiments.pass_through import MODULES
from library.texts import TRAINING_PACKAGES, docstring_paragraphs, module_files


def test_paragraphs_are_long_distinct_docstrings_read_from_source_without_importing():
    paragraphs = docstring_paragraphs(("json",), min_chars=120)
    assert len(paragraphs) == len(set(paragraphs)) >= 3 and min(map(len, paragraphs)) >= 120
    assert all("\n" not in paragraph and "  " not in paragraph for paragraph in paragraphs)
    assert any("JSON" in paragraph for paragraph in paragraphs)


def test_paragraphs_in_their_lines_hold_the_same_words_as_written():
    """keep_lines: each paragraph as the docstring writes it (lines, indentation); collapsed, it is a paragraph of
    the default layout wherever it is long enough."""
    kept = docstring_paragraphs(("json",), min_chars=120, keep_lines=True)
    collapsed = docstring_paragraphs(("json",), min_chars=120)
    assert len(kept) == len(set(kept)) and min(map(len, kept)) >= 120
    assert any("\n    " in paragraph for paragraph in kept)  # an indented example line
    assert all(not line.endswith(" ") for paragraph in kept for line in paragraph.splitlines())
    assert set(collapsed) <= {" ".join(paragraph.split()) for paragraph in kept}


def test_module_files_of_a_package_a_module_and_a_built_in():
    assert len(module_files("json")) > 1 and all(path.suffix == ".py" for path in module_files("json"))
    assert [path.name for path in module_files("textwrap")] == ["textwrap.py"]
    assert module_files("itertools") == []  # built into the interpreter: no source
    with pytest.raises(ValueError, match="'no_such_module_here' is not installed"):
        module_files("no_such_module_here")


def test_training_texts_are_disjoint_from_the_pass_through_texts():
    """The trigger learns silence on other packages' docstrings than those that measure it."""
    assert not {name.split(".")[0] for name in MODULES} & set(TRAINING_PACKAGES)
    files = {path for name in TRAINING_PACKAGES for path in module_files(name)}
    assert not files & {path for name in MODULES for path in module_files(name)}
