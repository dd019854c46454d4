"""The boot test's figures in the run's summary, so CI's log shows them for a passing run too."""

from __future__ import annotations

import pytest

from tests.systemd import bootbox


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if bootbox.FIGURES:
        terminalreporter.section("boot test figures")
        for line in bootbox.FIGURES:
            terminalreporter.write_line(line)
