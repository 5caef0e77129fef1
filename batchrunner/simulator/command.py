"""``batchrunner simulate``: run the queue simulator in the foreground until Ctrl-C."""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import click

from .config import FAULT_SYNTAX, Fault, SimulatorConfig


def _parse_faults(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[Fault]:
    faults = []
    for value in values:
        try:
            faults.append(Fault.parse(value))
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return faults


@click.command(name="simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", type=int, default=8787, show_default=True, help="Port to listen on (0: a free one)."
)
@click.option(
    "--token",
    default=None,
    help="The only API token accepted (default: any non-empty token).",
)
@click.option(
    "--auth-scheme",
    type=click.Choice(["bearer", "key", "any"]),
    default="any",
    show_default=True,
    help="Authorization scheme accepted: 'Bearer <token>', 'Key <token>' or either.",
)
@click.option(
    "--queue-seconds",
    type=click.FloatRange(min=0),
    default=0.2,
    show_default=True,
    help="Time a job waits IN_QUEUE before it can start.",
)
@click.option(
    "--run-seconds",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Time a job runs IN_PROGRESS.",
)
@click.option(
    "--jitter",
    type=click.FloatRange(min=0, max=1),
    default=0.0,
    show_default=True,
    help="Random ± fraction applied to queue and run times (seeded).",
)
@click.option(
    "--capacity",
    type=click.IntRange(min=1),
    default=None,
    help="Most jobs IN_PROGRESS at once; the rest wait IN_QUEUE (fal's behaviour).",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=None,
    help="Answer 429 to a submit while this many jobs are unfinished (a reseller's throttle).",
)
@click.option(
    "--public-origin",
    default=None,
    help="Origin written into returned *_url fields, e.g. https://queue.fal.run "
    "(default: the origin the request came to).",
)
@click.option(
    "--media-origin",
    default=None,
    help="Origin of the video URLs in results (default: the origin the request came to).",
)
@click.option(
    "--result-ttl",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds after completion after which the result answers 404 "
    "(fal keeps results about an hour).",
)
@click.option(
    "--status-ttl",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds after completion after which status and cancel answer 404 too "
    "(default: never; fal keeps request records for weeks).",
)
@click.option(
    "--media-bytes",
    type=click.IntRange(min=0),
    default=64 * 1024,
    show_default=True,
    help="Size of each served MP4 file.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for jitter and fault draws."
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    callback=_parse_faults,
    metavar="RULE",
    help=f"Inject a fault, {FAULT_SYNTAX}; routes submit, status, result, cancel, media, any; "
    "kinds 429, 500, 502, 503, 504, drop, drop_after_accept, html_200, invalid_json, cut. "
    "Repeatable.",
)
@click.option(
    "--state-path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Keep jobs in this sqlite file, so a restarted simulator still knows them.",
)
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
@click.option(
    "--balance",
    type=click.IntRange(min=0),
    default=None,
    help="Submits the account can pay for; then 403 'User is locked' until POST /_sim/top-up.",
)
@click.option(
    "--endpoint",
    "extra_endpoints",
    multiple=True,
    metavar="ID",
    help="Also serve this endpoint id, unvalidated (others not in the registry answer 404).",
)
def simulate(
    host: str,
    port: int,
    token: str | None,
    auth_scheme: str,
    queue_seconds: float,
    run_seconds: float,
    jitter: float,
    capacity: int | None,
    max_in_flight: int | None,
    public_origin: str | None,
    media_origin: str | None,
    result_ttl: float | None,
    status_ttl: float | None,
    media_bytes: int,
    seed: int,
    faults: list[Fault],
    state_path: str | None,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    balance: int | None,
    extra_endpoints: tuple[str, ...],
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
        config = SimulatorConfig(
            token=token,
            auth_scheme=auth_scheme,  # type: ignore[arg-type]  # click.Choice checked it
            queue_seconds=queue_seconds,
            run_seconds=run_seconds,
            jitter=jitter,
            capacity=capacity,
            max_in_flight=max_in_flight,
            public_origin=public_origin,
            media_origin=media_origin,
            result_ttl=result_ttl,
            status_ttl=status_ttl,
            media_bytes=media_bytes,
            seed=seed,
            faults=faults,
            state_path=state_path,
            extra_endpoints=extra_endpoints,
            balance=balance,
        )
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
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
        print(f"batchrunner simulator listening on {server.url}", flush=True)
        while not stop_requested:
            time.sleep(0.1)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
