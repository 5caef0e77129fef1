"""What a simulator does: its timing, its limits and the faults it injects.

:class:`SimulatorConfig` is plain data, and the one declaration of ``batchrunner simulate``'s
options: a field with :func:`option` metadata is an option of that name, default and help
(:mod:`.command` builds them). :class:`Fault` is one fault rule, written on the command line as
``route:kind[:probability][:times=N][:after=N][:retry_after=S]``, for example
``submit:429:0.2:retry_after=1`` or ``media:cut:times=1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import click

FaultRoute = Literal["submit", "status", "stream", "result", "cancel", "media", "any"]
FaultKind = Literal[
    "429", "502", "503", "504", "500", "drop", "drop_after_accept", "html_200", "invalid_json",
    "cut", "404", "drop_midway", "silent", "ignored", "403", "redirect",
]  # fmt: skip
# Kinds only a status stream can suffer: 404 (the stream is not offered, as at a reseller
# without it), drop_midway (the first event, then the connection drops), silent (keep-alive
# comments only, never an event).
STREAM_KINDS: tuple[str, ...] = ("404", "drop_midway", "silent")
# 403: only media suffers it (a storage host refusing the file: a signed URL expired, a proxy or
# firewall forbidding the host)
# redirect: a 301 to the same path over https, as a server that serves only https answers http
# ignored: only a cancel suffers it; it is answered CANCELLATION_REQUESTED and the job carries on
# (a running app that does not honour the cancel)
AuthScheme = Literal["bearer", "key", "any"]

FAULT_ROUTES: tuple[str, ...] = get_args(FaultRoute)
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
FAULT_SYNTAX = "route:kind[:probability][:times=N][:after=N][:retry_after=S]"


@dataclass
class Fault:
    """One fault rule, checked on every request to its route before the request is handled.

    ``route="any"`` matches every queue route (submit, status and its stream, result, cancel) but
    not media; ``status`` matches the status stream too, ``stream`` only the stream. Rules are
    checked in order; each rule counts every request on its route (for ``after``), and the first
    rule that fires decides the answer. ``probability`` is drawn from an RNG keyed by
    ``(seed, rule index, n-th matching request)``, so a config replays exactly.
    """

    route: FaultRoute
    kind: FaultKind
    probability: float = 1.0  # chance per matching request
    times: int | None = None  # inject at most this many times in total (None = unlimited)
    after: int = 0  # skip the first `after` matching requests
    retry_after: float | None = None  # 429 only: send a Retry-After header (seconds)

    def __post_init__(self) -> None:
        if self.route not in FAULT_ROUTES:
            raise ValueError(
                f"unknown fault route {self.route!r}; expected one of {', '.join(FAULT_ROUTES)}"
            )
        if self.kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}"
            )
        if not (0.0 <= self.probability <= 1.0) or math.isnan(self.probability):
            raise ValueError(f"fault probability must be between 0 and 1, got {self.probability}")
        if self.times is not None and self.times < 0:
            raise ValueError(f"fault times must be 0 or more, got {self.times}")
        if self.after < 0:
            raise ValueError(f"fault after must be 0 or more, got {self.after}")
        if self.retry_after is not None:
            if self.kind != "429":
                raise ValueError("retry_after only applies to 429 faults")
            if not (self.retry_after >= 0 and math.isfinite(self.retry_after)):
                raise ValueError(f"retry_after must be 0 or more seconds, got {self.retry_after}")
        if self.kind == "drop_after_accept" and self.route != "submit":
            raise ValueError("drop_after_accept only applies to the submit route")
        if self.kind in ("cut", "403") and self.route != "media":
            raise ValueError(f"{self.kind} only applies to the media route")
        if self.kind in STREAM_KINDS and self.route != "stream":
            raise ValueError(f"{self.kind} only applies to the stream route")
        if self.kind == "ignored" and self.route != "cancel":
            raise ValueError("ignored only applies to the cancel route")

    def matches(self, route: str) -> bool:
        """Whether this rule looks at a request on ``route`` (``stream`` counts as ``status``)."""
        if self.route == route or (self.route == "any" and route != "media"):
            return True
        return self.route == "status" and route == "stream"

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Read ``route:kind[:probability][:times=N][:after=N][:retry_after=S]``.

        Raises :class:`ValueError` naming the part that is wrong.
        """
        parts = [part.strip() for part in text.strip().split(":")]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ValueError(f"bad fault {text!r}: expected {FAULT_SYNTAX}")
        route, kind, options = parts[0].lower(), parts[1].lower(), parts[2:]
        values: dict[str, float | int] = {}
        for option in options:
            key, sep, raw = option.partition("=")
            key = key.strip().lower() if sep else "probability"
            raw = raw.strip() if sep else option
            if key not in ("probability", "times", "after", "retry_after"):
                raise ValueError(f"bad fault {text!r}: unknown option {key!r} ({FAULT_SYNTAX})")
            if key in values:
                raise ValueError(f"bad fault {text!r}: {key} given twice")
            try:
                values[key] = int(raw) if key in ("times", "after") else float(raw)
            except ValueError:
                kind_of = "a whole number" if key in ("times", "after") else "a number"
                raise ValueError(
                    f"bad fault {text!r}: {key} must be {kind_of}, got {raw!r}"
                ) from None
        try:
            return cls(
                route=cast(FaultRoute, route),
                kind=cast(FaultKind, kind),
                probability=float(values.get("probability", 1.0)),
                times=int(values["times"]) if "times" in values else None,
                after=int(values.get("after", 0)),
                retry_after=float(values["retry_after"]) if "retry_after" in values else None,
            )
        except ValueError as exc:
            raise ValueError(f"bad fault {text!r}: {exc}") from None

    def __str__(self) -> str:
        text = f"{self.route}:{self.kind}"
        if self.probability != 1.0:
            text += f":{self.probability:g}"
        if self.times is not None:
            text += f":times={self.times}"
        if self.after:
            text += f":after={self.after}"
        if self.retry_after is not None:
            text += f":retry_after={self.retry_after:g}"
        return text


def option(
    help: str,
    type: Any = None,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    multiple: bool = False,
) -> dict[str, Any]:
    """Field metadata: the field is also the ``batchrunner simulate`` option ``flag`` (default:
    ``--field-name``), with the field's default and this help and click type."""
    return {"option": {"help": help, "type": type, "flag": flag, "metavar": metavar,
                       "multiple": multiple}}  # fmt: skip


class FaultRule(click.ParamType):
    """A ``--fault`` value: :meth:`Fault.parse`, its error a usage error naming the option."""

    name = "rule"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Fault):
            return value
        try:
            return Fault.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SECONDS = click.FloatRange(min=0)


@dataclass
class SimulatorConfig:
    """Everything a simulator instance does differently from the defaults."""

    token: str | None = field(
        default=None,
        metadata=option("The only API token accepted (default: any non-empty token)."),
    )
    auth_scheme: AuthScheme = field(
        default="any",
        metadata=option(
            "Authorization scheme accepted: 'Bearer <token>', 'Key <token>' or either.",
            click.Choice(get_args(AuthScheme)),
        ),
    )
    queue_seconds: float = field(
        default=0.2, metadata=option("Time a job waits IN_QUEUE before it can start.", SECONDS)
    )
    run_seconds: float = field(
        default=1.0, metadata=option("Time a job runs IN_PROGRESS.", SECONDS)
    )
    jitter: float = field(
        default=0.0,
        metadata=option(
            "Random ± fraction applied to queue and run times (seeded).",
            click.FloatRange(min=0, max=1),
        ),
    )
    capacity: int | None = field(
        default=None,
        metadata=option(
            "Most jobs IN_PROGRESS at once; the rest wait IN_QUEUE (fal's behaviour).",
            click.IntRange(min=1),
        ),
    )
    max_in_flight: int | None = field(
        default=None,
        metadata=option(
            "Answer 429 to a submit while this many jobs are unfinished (a reseller's throttle).",
            click.IntRange(min=1),
        ),
    )
    public_origin: str | None = field(
        default=None,
        metadata=option(
            "Origin written into returned *_url fields, e.g. https://queue.fal.run "
            "(default: the origin the request came to)."
        ),
    )
    media_origin: str | None = field(
        default=None,
        metadata=option(
            "Origin of the video URLs in results (default: the origin the request came to)."
        ),
    )
    result_ttl: float | None = field(
        default=None,
        metadata=option(
            "Seconds after completion after which the result answers 404 "
            "(fal keeps results about an hour).",
            SECONDS,
        ),
    )
    # Seconds after completion until status, stream and cancel answer 404 too (the request is
    # forgotten). None: never — fal keeps request records ~30 days, longer than results.
    status_ttl: float | None = field(
        default=None,
        metadata=option(
            "Seconds after completion after which status and cancel answer 404 too "
            "(default: never; fal keeps request records for weeks).",
            SECONDS,
        ),
    )
    billing_factor: float = field(
        default=1.0,
        metadata=option(
            "Bill this many times the units a job's price rule gives (x-fal-billable-units): "
            "a price raised since the model registry was written.",
            click.FloatRange(min=0),
        ),
    )
    policy_marker: str = "#policy"  # a prompt containing this fails with content_policy_violation
    lie_marker: str = "#lie:"  # "#lie:duration" etc. in a prompt: a clip unlike the request
    # a prompt containing this completes with a result whose video URL is a local file:// path
    file_url_marker: str = "#file-url"
    # ... or whose file_size is not the size of the file served
    wrong_size_marker: str = "#wrong-size"
    # Submits the account can pay for; after that, submits answer 403 "User is locked" (status
    # and result calls still answer) until POST /_sim/top-up adds more. None: unlimited.
    balance: int | None = field(
        default=None,
        metadata=option(
            "Submits the account can pay for; then 403 'User is locked' until POST /_sim/top-up.",
            click.IntRange(min=0),
        ),
    )
    # size of each served MP4 (padded with a trailing `free` box)
    media_bytes: int = field(
        default=64 * 1024,
        metadata=option("Size of each served MP4 file.", click.IntRange(min=0)),
    )
    seed: int = field(default=0, metadata=option("Seed for jitter and fault draws.", int))
    faults: list[Fault] = field(
        default_factory=list,
        metadata=option(
            f"Inject a fault, {FAULT_SYNTAX}; routes submit, status, stream, result, cancel, "
            "media, any; kinds 429, 500, 502, 503, 504, drop, drop_after_accept, html_200, "
            "invalid_json, redirect (a 301 to https); on media: cut, 403; on stream: 404, "
            "drop_midway, silent; on cancel: ignored (answered CANCELLATION_REQUESTED, the job "
            "carries on). Repeatable.",
            FaultRule(),
            flag="--fault",
            metavar="RULE",
            multiple=True,
        ),
    )
    state_path: str | None = field(
        default=None,
        metadata=option(
            "Keep jobs in this sqlite file, so a restarted simulator still knows them.",
            click.Path(dir_okay=False),
        ),
    )
    # Endpoints served besides the registry's (accepted unvalidated, unpriced); any other
    # endpoint id answers 404 like fal's unknown applications.
    extra_endpoints: tuple[str, ...] = field(
        default=(),
        metadata=option(
            "Also serve this endpoint id, unvalidated (others not in the registry answer 404).",
            flag="--endpoint",
            metavar="ID",
            multiple=True,
        ),
    )
    # Additions beyond the brief's minimum, both with the faithful default:
    errors_in_status: bool = True  # COMPLETED statuses of failed jobs carry error/error_type
    stream_ping_seconds: float = 15.0  # SSE keep-alive comment interval

    def __post_init__(self) -> None:
        if self.auth_scheme not in get_args(AuthScheme):
            raise ValueError(f"auth_scheme must be bearer, key or any, got {self.auth_scheme!r}")
        for name in ("queue_seconds", "run_seconds", "jitter"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be 0 or more, got {value}")
        if self.jitter > 1:
            raise ValueError(f"jitter is a fraction between 0 and 1, got {self.jitter}")
        for name in ("capacity", "max_in_flight"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be 1 or more (or unset), got {value}")
        for name in ("result_ttl", "status_ttl"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be 0 or more seconds, got {value}")
        if self.media_bytes < 0:
            raise ValueError(f"media_bytes must be 0 or more, got {self.media_bytes}")
        if not self.stream_ping_seconds > 0:
            raise ValueError(
                f"stream_ping_seconds must be positive, got {self.stream_ping_seconds}"
            )
        if not self.policy_marker:
            raise ValueError("policy_marker must not be empty")
        if not self.lie_marker:
            raise ValueError("lie_marker must not be empty")
        for name in ("public_origin", "media_origin"):
            value = getattr(self, name)
            if value is not None:
                if not value.startswith(("http://", "https://")):
                    raise ValueError(f"{name} must look like scheme://host:port, got {value!r}")
                setattr(self, name, value.rstrip("/"))
        self.faults = [Fault.parse(f) if isinstance(f, str) else f for f in self.faults]
