"""``batchrunner simulate``: run the queue simulator in the foreground until Ctrl-C."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import MISSING, fields
from types import FrameType
from typing import Any, TypeVar

import click

from .config import SimulatorConfig

F = TypeVar("F", bound=Callable[..., Any])


def config_options(fn: F) -> F:
    """An option for every :class:`SimulatorConfig` field that declares one: its flag, default,
    type and help come from the field (the one declaration)."""
    for spec in reversed(fields(SimulatorConfig)):
        how = spec.metadata.get("option")
        if how is None:
            continue
        default = spec.default_factory() if spec.default_factory is not MISSING else spec.default
        fn = click.option(
            how["flag"] or "--" + spec.name.replace("_", "-"),
            spec.name,
            type=how["type"],
            default=default,
            multiple=how["multiple"],
            metavar=how["metavar"],
            show_default=default not in (None, [], ()),
            help=how["help"],
        )(fn)
    return fn


@click.command(name="simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8787,
    show_default=True,
    help="Port to listen on (0: a free one).",
)
@config_options
@click.option(
    "--ssl-certfile",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Serve HTTPS with this certificate (PEM); needs --ssl-keyfile.",
)
@click.option(
    "--ssl-keyfile",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Private key (PEM) for --ssl-certfile.",
)
def simulate(
    host: str,
    port: int,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    **config_values: Any,
) -> None:
    """Run a local fal-compatible queue to rehearse a batch without spending money.

    Jobs wait, run and complete on a timer; videos are small real MP4 files served from
    /media/. Counters of everything the simulator saw are at /_sim/counters. A prompt with
    #policy fails its job; one with #lie:duration, #lie:aspect, #lie:audio or #lie:notvideo
    gets a clip unlike its request (half the seconds, the ratio turned, audio flipped, not a
    video at all).

    \b
    Example:
        batchrunner simulate --port 8787 --run-seconds 3 --capacity 2 \\
            --fault submit:429:0.2:retry_after=1 --fault media:cut:times=1
        curl -X POST http://127.0.0.1:8787/fal-ai/veo3/image-to-video \\
            -H 'Authorization: Key test' -H 'Content-Type: application/json' \\
            -d '{"prompt": "a cat", "image_url": "https://example.com/cat.png"}'
        curl http://127.0.0.1:8787/_sim/counters
    """
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise click.UsageError("--ssl-certfile and --ssl-keyfile go together")
    try:
        config = SimulatorConfig(**config_values)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)

    from .server import SimulatorServer  # uvicorn and starlette: only when the command runs

    server = SimulatorServer(
        config, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile
    )
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except OSError as exc:
            raise click.UsageError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        print(f"batchrunner simulator listening on {server.url}", flush=True)
        while not stop_requested:
            time.sleep(0.1)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
