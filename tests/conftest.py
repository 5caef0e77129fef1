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
