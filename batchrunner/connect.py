"""Where a run's requests go: the configured API, or an in-process simulator.

:func:`api_config` resolves the API (origin, auth scheme, key) from the settings and the
environment; :func:`connect` opens the queue client for it, or starts the built-in simulator
for ``--simulate`` and points a client at that. :func:`run_info` is what the ledger records
about where a run went (never the key).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from batchrunner.models import lookup
from batchrunner.providers import ApiConfig, normalise_base_url, resolve_api
from batchrunner.ratelimit import RateLimiter
from batchrunner.settings import Settings

if TYPE_CHECKING:
    from batchrunner.client import QueueClient

SIMULATOR_ORIGIN = "simulator"  # the origin recorded for jobs run with --simulate
logger = logging.getLogger(__name__)
SHORT_REQUEST_CONNECTIONS = 16  # most kept-alive connections for submits, results and polls


@contextlib.asynccontextmanager
async def connect(
    settings: Settings, api: ApiConfig | None
) -> AsyncIterator[tuple[QueueClient, str]]:
    """A queue client for the configured API, or for an in-process simulator."""
    import httpx

    from batchrunner.client import QueueClient

    limiter = RateLimiter(settings.rps)
    # a job following its status stream holds a connection: one per job in flight; the short
    # requests share a few. All are kept alive (a new TLS connection costs more than a request).
    short = min(settings.concurrency, SHORT_REQUEST_CONNECTIONS)
    limits = httpx.Limits(max_connections=short, max_keepalive_connections=short)
    streams = httpx.Limits(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )
    if api is not None:
        async with QueueClient(
            api, retry=settings.retry, limiter=limiter, limits=limits, stream_limits=streams
        ) as client:
            yield client, api.origin
        return
    from batchrunner.simulator import SimulatorConfig, SimulatorServer

    state = settings.ledger.with_name(settings.ledger.name + ".simulator")
    extra = () if lookup(settings.model) else (settings.model,)  # --allow-unregistered
    config = SimulatorConfig(
        queue_seconds=0.3,
        run_seconds=1.5,
        jitter=0.3,
        state_path=str(state),
        extra_endpoints=extra,
    )
    with SimulatorServer(config) as server:
        simulated = ApiConfig(
            base_url=server.url, auth_scheme="bearer", token="simulator", provider="simulator"
        )
        async with QueueClient(
            simulated, retry=settings.retry, limiter=limiter, limits=limits, stream_limits=streams
        ) as client:
            yield client, SIMULATOR_ORIGIN


def api_config(
    settings: Settings, token: str | None, env: dict[str, str] | None
) -> ApiConfig | None:
    if settings.simulate:
        if settings.base_url:  # from the config file, say: checked as a real run checks it
            shown = normalise_base_url(settings.base_url)  # (a password in it is refused)
            logger.warning("--simulate: the API base URL %s is not used", shown)
        return None
    from batchrunner.transport import check_environment

    api = resolve_api(
        settings.provider,
        base_url=settings.base_url,
        auth_scheme=settings.auth_scheme,
        token=token,
        env=os.environ if env is None else env,
    )
    check_environment(api.origin)
    return api


def run_info(settings: Settings, api: ApiConfig | None) -> dict[str, Any]:
    return {
        "endpoint": settings.model,
        "provider": "simulator" if api is None else api.provider,
        "origin": SIMULATOR_ORIGIN if api is None else api.origin,
        "options": settings.stored(),
    }
