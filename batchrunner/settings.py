"""Every run option, declared once: its type, default, help text, command-line flag, TOML key.

:class:`Settings` is what a run needs besides the manifest and the key. Each field carries an
:class:`Option` in its metadata; from it come the click options of ``batchrunner run`` (and of
``plan``/``validate`` where they apply, :func:`batchrunner.cli.settings_options`), the keys a
``batchrunner.toml`` may set (:data:`batchrunner.config.KEYS`), and the rows of the README's
options table — a test checks all four agree. The scheduler takes :class:`Settings` directly,
and the ledger stores it per run (:meth:`Settings.stored`, :meth:`Settings.from_stored`).

Adding an option: one field here (with its :class:`Option`), one README row, and its test.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from batchrunner.errors import UsageError
from batchrunner.models import DEFAULT_MODEL
from batchrunner.providers import PROVIDERS
from batchrunner.retry import RetryPolicy
from batchrunner.streams import STREAM_STALL


@dataclass(frozen=True)
class Option:
    """How a setting appears to users. ``flag`` None: not on the command line; ``toml`` None:
    not in ``batchrunner.toml``. ``kind`` names the click type (see ``cli.settings_options``)."""

    help: str
    flag: str | None = ""  # "" means "--" + the field name with dashes
    toml: str | None = ""  # "" means the field name
    # "path", "dir", "choice:a,b", "int:1:1000", "float:0.01", "duration", "flag", "text"
    kind: str = ""
    shown: Any = None  # the default as --help shows it, when it is not the value itself


def option(default: Any, help: str, **how: Any) -> Any:
    """A dataclass field with its :class:`Option`."""
    meta = {"option": Option(help, **how)}
    if isinstance(default, list | dict | RetryPolicy):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Settings:
    """Everything a run needs besides the manifest and the key; stored per run (no key)."""

    ledger: Path = option(
        Path("batchrunner.db"),
        "The SQLite ledger recording every job; reuse it to resume.",
        kind="path",
    )
    out: Path = option(Path("outputs"), "Folder the videos are written to.", kind="dir")
    model: str = option(
        DEFAULT_MODEL,
        "Endpoint id (`batchrunner models list` shows them); a manifest's `model` column "
        "names one for each row.",
        kind="text",
    )
    allow_unregistered: bool = option(
        False,
        "Run a model the registry does not know: its input is sent unvalidated (a local "
        "file in a *_url column as a data: URI).",
        kind="flag",
    )
    price_per_job: float | None = option(
        None, "With --allow-unregistered: what each job costs (needed by --budget).", kind="float:0"
    )
    provider: str = option(
        "quickrouter",
        "API preset (origin and auth scheme).",
        kind="choice:" + ",".join(sorted(PROVIDERS)),
    )
    base_url: str | None = option(
        None, "Override the API origin (http:// only for loopback).", kind="text"
    )
    auth_scheme: str | None = option(None, "Override the auth scheme.", kind="choice:bearer,key")
    concurrency: int = option(8, "Most jobs in flight at the provider.", kind="int:1:1000")
    rps: float | None = option(
        None,
        "Most API requests per second (default: no fixed cap; a 429 slows requests down).",
        kind="float:0.01",
    )
    streams: bool = option(
        True,
        "Follow each job's status stream (a 404 or a failing stream falls back to polling).",
        flag="--stream/--no-stream",
        toml="stream",
        kind="flag",
    )
    stream_stall: float = option(
        STREAM_STALL,
        "Poll a job instead once its status stream has sent nothing for this long.",
        kind="duration",
        shown="45s",
    )
    download_concurrency: int = option(
        4, "Most downloads at once.", flag="--downloads", toml="downloads", kind="int:1:64"
    )
    poll_min: float = option(
        0.25, "Shortest pause between status checks of a job (seconds).", kind="float:0.01"
    )
    poll_max: float = option(
        15.0, "Longest pause between status checks of a job (seconds).", kind="float:0.01"
    )
    queue_timeout: float = option(
        30 * 60.0,
        "Cancel and fail a job waiting in the provider's queue longer than this without "
        "moving up (one that completes anyway is fetched).",
        kind="duration",
        shown="30m",
    )
    run_timeout: float = option(
        20 * 60.0,
        "Cancel and fail a job running longer than this (one that completes anyway is fetched).",
        kind="duration",
        shown="20m",
    )
    max_runtime: float | None = option(
        None,
        "Send no job after this long; those sent are followed to their videos (exit 75); "
        "e.g. 45m, 2h.",
        kind="duration",
    )
    budget: float | None = option(
        None,
        "Most USD this ledger may commit, counting earlier runs; stops submitting (exit 75).",
        kind="float:0",
    )
    run_budget: float | None = option(
        None,
        "Most USD one run may commit, earlier runs not counted (a nightly cap); stops "
        "submitting (exit 75).",
        kind="float:0",
    )
    sheet: str | None = option(
        None, "Excel sheet to read (name or 0-based index); default first.", kind="sheet"
    )
    check_urls: bool = option(
        False,
        "Before sending anything, fetch the start of every file URL (image_url...): a broken, "
        "private or web-page link is a problem of its row.",
        kind="flag",
    )
    resubmit_unknown: bool = option(
        False,
        "Submit again jobs whose earlier submit got no answer (may pay twice).",
        toml=None,
        kind="flag",
    )
    simulate: bool = option(
        False, "Run against the built-in simulator (no key, no cost).", toml=None, kind="flag"
    )
    stop_grace: float = option(
        3.0,
        "On a stop, how long a submit under way may take to answer.",
        flag=None,
        toml=None,
        kind="float:0",
    )
    retry: RetryPolicy = option(
        RetryPolicy(), "How transient failures are retried.", flag=None, toml=None
    )

    ONE_OFF = ("resubmit_unknown", "max_runtime")  # decisions of one invocation, not stored

    def __post_init__(self) -> None:
        """Values from a TOML file or a Python caller are typed and checked as the command line
        checks them: ``"30m"`` as seconds, paths as Paths, ranges and choices enforced; a value
        of the wrong type is a :class:`UsageError` naming the option, never a crash mid-run.
        None is the option's default."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        for name, how in options().items():
            value = getattr(self, name)
            if value is None:
                made = fields[name].default_factory
                default = made() if made is not dataclasses.MISSING else fields[name].default
                setattr(self, name, default)
                continue
            if name == "retry":
                if not isinstance(value, RetryPolicy):
                    raise UsageError(f"retry must be a RetryPolicy, got {value!r}")
                continue
            setattr(self, name, checked(name, how.kind, value))
        if self.poll_min > self.poll_max:  # the pause grows from one to the other
            raise UsageError(
                f"the shortest pause between status checks (poll_min, {self.poll_min:g} s) is "
                f"longer than the longest (poll_max, {self.poll_max:g} s): lower --poll-min or "
                "raise --poll-max"
            )

    def stored(self) -> dict[str, Any]:
        values = asdict(self)
        for one_off in self.ONE_OFF:
            values.pop(one_off)
        values["ledger"], values["out"] = str(self.ledger), str(self.out)
        values["out_at"] = os.path.abspath(self.out)  # where it was, whatever the folder
        return values

    @classmethod
    def from_stored(cls, values: dict[str, Any], **overrides: Any) -> Settings:
        given = {k: v for k, v in overrides.items() if v is not None}
        if "out" not in given and values.get("out"):
            values = {**values, "out": stored_out(values)}
        values = {**cls().stored(), **values, **given}
        values["ledger"], values["out"] = Path(values["ledger"]), Path(values["out"])
        values["retry"] = (
            RetryPolicy(**values["retry"])
            if isinstance(values.get("retry"), dict)
            else RetryPolicy()
        )
        return cls(**{k: v for k, v in values.items() if k in NAMES})


def stored_out(options: dict[str, Any]) -> str:
    """The videos' folder a run stored in the ledger: the absolute path it had (``out_at``), so
    that ``resume`` or ``report`` started in another folder finds the same one, unless the
    folder that held it is gone (the project moved: then ``out`` as typed, from here, as a
    ledger of 0.x has only that)."""
    at = options.get("out_at")
    if at and os.path.isdir(os.path.dirname(at)):
        return str(at)
    return str(options["out"])


UNITS = {"s": 1, "m": 60, "h": 3600}


def checked(name: str, kind: str, value: Any) -> Any:
    """``value`` for the option ``name`` of this :attr:`Option.kind`, typed (a duration in
    seconds, a path as a Path), or a :class:`UsageError` saying what ``name`` takes. A Python
    caller's and a ``batchrunner.toml``'s values go through here: no string for a number, no
    number for a flag, as the command line's own parsing would refuse them."""
    kind, _, rest = kind.partition(":")
    shown = _shown(value)
    if kind == "duration":
        try:
            return seconds(value)
        except ValueError:
            raise UsageError(
                f"{name} must be a duration like 90s, 45m or 2h (longer than zero), got {shown}"
            ) from None
    if kind in ("path", "dir"):
        if isinstance(value, str | os.PathLike) and str(value).strip():
            return Path(value)
        what = "file" if kind == "path" else "folder"
        raise UsageError(f"{name} must be the path of a {what}, got {shown}")
    if kind == "choice":
        if value not in rest.split(","):
            raise UsageError(f"{name} must be one of {rest.replace(',', ', ')}, got {shown}")
        return value
    if kind in ("int", "float"):
        low, _, high = rest.partition(":")
        whole = kind == "int"  # numpy's numbers too; 2.5 jobs at once is refused, not rounded
        number: int | float | None = None
        if isinstance(value, bool):  # a Real to Python: `budget = true` was a $1.00 budget
            pass
        elif isinstance(value, numbers.Integral):
            number = int(value)
        elif isinstance(value, numbers.Real) and not whole:
            number = float(value)
        if number is None or not float(low) <= number <= float(high or "inf"):
            span = f"between {low} and {high}" if high else f"at least {low}"
            noun = "a whole number" if whole else "a number"
            quoted = isinstance(value, str) and _is_number(value)
            hint = " (a number, without quotes)" if quoted else ""
            raise UsageError(f"{name} must be {noun} {span}, got {shown}{hint}")
        return number
    if kind == "flag":
        numpy_bool = getattr(getattr(value, "dtype", None), "kind", "") == "b"
        if not isinstance(value, bool) and not numpy_bool:
            raise UsageError(f"{name} must be true or false, got {shown}")
        return bool(value)
    if kind == "text":
        if not isinstance(value, str):
            raise UsageError(f"{name} must be text, got {shown}")
        return value
    if kind == "sheet":
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise UsageError(f"{name} must be a sheet's name or 0-based index, got {shown}")
        return value
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _shown(value: Any) -> str:
    """A wrong value as a message shows it: its repr, and its type when that alone is wrong."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, str | int | float | bool):
        return text
    return f"{text} ({type(value).__name__})"


def seconds(value: Any) -> float:
    """``90``, ``"90s"``, ``"45m"``, ``"2h"`` → seconds; ValueError for anything else or <= 0."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (like 90s, 45m, 2h)")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip().lower()
        factor = UNITS.get(text[-1:])
        try:
            number = float(text[:-1] if factor else text) * (factor or 1)
        except ValueError:
            raise ValueError(f"{value!r} is not a duration (like 90s, 45m, 2h)") from None
    if not number > 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return number


def options() -> dict[str, Option]:
    """Field name → its :class:`Option`, in declaration order."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(Settings)}


def flag_of(name: str) -> str | None:
    flag = options()[name].flag
    return "--" + name.replace("_", "-") if flag == "" else flag


def toml_key(name: str) -> str | None:
    key = options()[name].toml
    return name if key == "" else key


NAMES = tuple(f.name for f in dataclasses.fields(Settings))
