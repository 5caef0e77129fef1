"""Shared fixtures: an isolated environment, a live simulator, fast settings, manifests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchrunner.simulator import SimulatorServer
from tests.helpers import fast_config

KEY_VARS = ("BATCHRUNNER_API_KEY", "QUICKROUTER_API_KEY", "FAL_KEY")


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No test sees a real key from the developer's shell, or the developer's own models."""
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BATCHRUNNER_MODELS_DIR", str(tmp_path_factory.mktemp("models")))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(fast_config()) as server:
        yield server


# Screenshots a test attaches with record_property("screenshot", path) are listed at the end of
# the run (and in --junitxml), so CI output says where to look.
_SCREENSHOTS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _SCREENSHOTS.extend(
            (report.nodeid, str(value))
            for name, value in report.user_properties
            if name == "screenshot"
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _SCREENSHOTS:
        terminalreporter.section("screenshots")
        for nodeid, path in _SCREENSHOTS:
            terminalreporter.write_line(f"{nodeid}: {path}")
