"""The exact-match metric (library/metrics/exact_match) loads offline with evaluate.load and computes per group."""

import socket
from pathlib import Path

import pytest

METRIC = Path(__file__).parent.parent / "library" / "metrics" / "exact_match"


@pytest.fixture(scope="module")
def evaluate():
    """`evaluate`, imported here (several seconds) rather than when the test session collects."""
    return pytest.importorskip("evaluate")


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("path", [METRIC, METRIC / "exact_match.py"], ids=["folder", "file"])
def test_loads_offline(evaluate, no_network, path):
    metric = evaluate.load(str(path))
    assert isinstance(metric, evaluate.Metric)
    assert metric.compute(predictions=[7, 1, 3], references=[7, 2, 3]) == {"exact_match": 2 / 3}


def test_exact_match_and_groups(evaluate, no_network):
    from library.tasks import exact_match_metric

    metric = exact_match_metric()
    result = metric.compute(predictions=[7, 1, 3, 0], references=[7, 2, 3, 0], groups=["add", "sub", "sub", "mul"])
    assert result == {"exact_match": 0.75, "per_group": {"add": 1.0, "mul": 1.0, "sub": 0.5}}
    # strings compare exactly (the int option would have parsed " 7" as 7); lists of ints work too
    assert metric.compute(predictions=["7", " 7"], references=["7", "7"])["exact_match"] == 0.5
    result = metric.compute(predictions=[[3, 5, 9], [1, 2]], references=[[3, 5, 9], [2, 1]], groups=[3, 2])
    assert result == {"exact_match": 0.5, "per_group": {"2": 0.0, "3": 1.0}}
    metric.add_batch(predictions=[1, 2], references=[1, 2])
    metric.add_batch(predictions=[3], references=[4])
    assert metric.compute(groups=["a", "a", "b"]) == {"exact_match": 2 / 3, "per_group": {"a": 1.0, "b": 0.0}}
    with pytest.raises(ValueError, match="2 groups for 3 predictions"):
        metric.compute(predictions=[1, 2, 3], references=[1, 2, 3], groups=["a", "b"])
