"""A local stand-in for fal's queue API, with fault injection.

It models what batchrunner depends on (see PROTOCOL.md): submit → ``IN_QUEUE`` →
``IN_PROGRESS`` → ``COMPLETED`` on a timer, FIFO with an optional concurrency ``capacity``;
status/result/cancel paths that drop the endpoint's sub-path; failures that end ``COMPLETED``
with an ``error_type`` (content policy, cancellation, start timeout); results that expire
(``result_ttl``; whole requests with ``status_ttl``); a reseller-style 429 throttle; public
MP4 files with Range support; and injected faults — 429s, ingress 5xx pages, app 500s,
dropped connections (before and after a job was created), non-JSON 200s and cut downloads.
``GET /_sim/counters`` shows what it saw.

Users rehearse a batch on it (``batchrunner simulate``); every batchrunner test runs against it.

Modules: :mod:`.config` (what to simulate), :mod:`.world` (jobs over time), :mod:`.state`
(lock, counters, fault draws), :mod:`.store` (sqlite persistence), :mod:`.app` (routes),
:mod:`.responses` (fault answers, dropped connections), :mod:`.media` (MP4 bytes),
:mod:`.server` (uvicorn in a thread), :mod:`.command` (the click command).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .command import simulate
from .config import Fault, SimulatorConfig

__all__ = ["Fault", "SimulatorConfig", "SimulatorServer", "create_app", "simulate"]

if TYPE_CHECKING:
    from .app import create_app
    from .server import SimulatorServer


def __getattr__(name: str) -> Any:
    """The server and its app (starlette, uvicorn) load on first use: ``batchrunner --help``
    lists ``simulate`` without importing them."""
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "SimulatorServer":
        from .server import SimulatorServer

        return SimulatorServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
