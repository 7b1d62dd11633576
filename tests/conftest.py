"""Shared pytest options.

`--fail-on-skip` (used by `.ci/run`) turns a run in which any test was skipped into a failure: CI installs every
optional package (the real LLaMA-3 tokenizer, SmolLM2-135M, gguf, peft), so a skip there means a test silently
stopped running.
"""

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fail-on-skip",
        action="store_true",
        help="fail the run if any test was skipped (every optional package is expected)",
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not session.config.getoption("--fail-on-skip"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and exitstatus == 0:
        for report in skipped:
            reporter.write_line(f"--fail-on-skip: skipped {report.nodeid}: {report.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
