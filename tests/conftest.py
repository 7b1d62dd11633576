"""Puts tests/ on sys.path so that test modules can `from strategies import programs`."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
