"""A job as the ledger stores it: the records (:class:`NewJob` planned, :class:`Job` stored,
:class:`Move` asked, :class:`Standing` compared), the ``jobs`` columns they are read from, the JSON
their JSON columns hold, and a job's place in manifest order (:func:`order_key`)."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import Any, NamedTuple

from batchrunner import identity
from batchrunner.cells import unescaped
from batchrunner.frozen import assemble
from batchrunner.states import JobState


def _none() -> None:
    return None


# Columns holding JSON text, decoded on read; an empty one reads as what its factory makes (a
# new dict or list each time: a job's fields are never shared with another job).
_JSON_EMPTY: dict[str, Callable[[], Any]] = {
    "input": dict,
    "files": dict,
    "metadata": dict,
    "result": _none,
    "media": _none,
    "warnings": list,
}
JSON_COLUMNS = tuple(_JSON_EMPTY)


def now() -> str:
    """Timestamps are UTC ISO-8601 with milliseconds: sortable and readable in exports."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class NewJob:
    """A job as the plan produces it, before the ledger has seen it."""

    job_id: str
    endpoint: str
    input: dict[str, Any]
    row: int | None = None
    line: int | None = None
    variant: str = ""
    files: dict[str, Any] = field(default_factory=dict)
    output_name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    price_usd: float | None = None
    take_of: str | None = None  # the job this one is a new take of (``retry --new-take``)

    @property
    def input_hash(self) -> str:
        return _input_hash(self.endpoint, self.input, self.files)


@dataclass(frozen=True, kw_only=True)
class Job(NewJob):
    """A job as stored: the planned job plus what has happened to it. Read-only; change it
    through :meth:`Ledger.transition`."""

    state: JobState
    cost_usd: float | None = None  # what its latest send may cost: reserved at the intent
    earlier_usd: float | None = None  # what its earlier sends may have cost (m006)
    request_id: str | None = None
    origin: str | None = None
    status_url: str | None = None
    response_url: str | None = None
    cancel_url: str | None = None
    queue_position: int | None = None
    result: dict[str, Any] | None = None
    video_url: str | None = None
    file_size: int | None = None
    output_path: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    error: str | None = None
    billable_units: float | None = None  # x-fal-billable-units of the result, when sent
    billed_usd: float | None = None  # those units priced by the model's rule
    submits: int = 0
    created_at: str | None = None
    submitted_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    done_at: str | None = None
    updated_at: str | None = None
    media: dict[str, Any] | None = None  # what the file is (see batchrunner.verify)
    warnings: list[str] = field(default_factory=list)  # how it differs from the request
    poster: str | None = None  # a JPEG frame of the video, beside the ledger

    @property
    def spent_usd(self) -> float | None:
        """What the job may have cost in all, every send counted; None when nothing. A send
        is counted at its estimate, or at what the provider billed for it when that is more
        (a price raised since the registry was written): what a budget caps."""
        if self.cost_usd is None and self.earlier_usd is None:
            return None
        latest = max(self.cost_usd or 0.0, self.billed_usd or 0.0)
        return round(latest + (self.earlier_usd or 0.0), 4)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        """The job of a ``jobs`` row read as a mapping (its columns that are not fields are
        left out)."""
        return cls.from_values([row[name] for name in JOB_COLUMNS])

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> Job:
        r"""The job of a ``jobs`` row selected as :data:`JOB_SELECT` (its columns in field order).

        Every field is set from its column (JSON decoded, state made a :class:`JobState`) and
        the job made by :func:`~batchrunner.frozen.assemble`: the frozen dataclass's
        ``__init__``, setting each of the 40 fields again, was more than half of reading a job.
        """
        found = dict(zip(JOB_COLUMNS, values, strict=True))
        for name, empty in _JSON_EMPTY.items():
            text = found[name]
            found[name] = loads(text) if text else empty()
        found["state"] = STATES[found["state"]]
        return assemble(cls, found)


@dataclass(frozen=True, slots=True)
class Move:
    """A transition asked of :meth:`Ledger.transitions`: the arguments of
    :meth:`Ledger.transition`."""

    job_id: str
    new: JobState
    detail: str | None = None
    expect: JobState | Iterable[JobState] | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


# Every field of a Job is a column of ``jobs``; reads select exactly these, in this order.
JOB_COLUMNS = tuple(f.name for f in dataclass_fields(Job))
JOB_SELECT = ", ".join(f"[{name}]" for name in JOB_COLUMNS)
STATES = {state.value: state for state in JobState}


class Standing(NamedTuple):
    """Where a stored job stands, without reading the rest of it: what the planner compares a
    manifest row with (:meth:`Ledger.standings`)."""

    job_id: str
    row: int | None
    state: JobState
    input_hash: str
    price_usd: float | None


@dataclass(frozen=True)
class AddResult:
    added: int
    existing: int


OrderKey = tuple[bool, int, bool, str, str]


def order_key(row: int | None, variant: str | None, job_id: str) -> OrderKey:
    """A job's place in manifest order, as the ledger's ``order by row, variant, job_id``
    sorts it in SQLite (NULL first); the job id comes last."""
    return (row is not None, row or 0, variant is not None, variant or "", job_id)


def dumps(value: Any) -> str:
    """The JSON a JSON column holds: keys sorted, no spaces, anything else as its ``str``."""
    return _ENCODER.encode(value)


def loads(text: str) -> Any:
    """``json.loads(text)``, in a quarter less time for what the ledger stores: the empty
    object and list it writes for most jobs' files, metadata and warnings are made without
    decoding, and the rest is decoded by the decoder's scanner directly (its wrapper's work is
    only to skip whitespace, which the ledger never writes; text with any goes the long way)."""
    if text == "{}":
        return {}
    if text == "[]":
        return []
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:  # not JSON: let the decoder raise its usual error
        return _DECODER.decode(text)
    return value if end == len(text) else _DECODER.decode(text)


_DECODER = json.JSONDecoder()
# the decoder's scanner: (value, where it ends) of the JSON at an index; not in the stubs
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


# json.dumps(value, sort_keys=True, separators=(",", ":"), default=str), built once: json.dumps
# makes a new encoder for every call with options (a third of recording 100,000 jobs)
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def loose_hash(payload: Mapping[str, Any], files: Mapping[str, Any]) -> str:
    """A request's hash without its model, its text as it reads (:func:`as_read`): what one
    row asks of whichever model runs it, however its file was saved."""
    return _input_hash("", as_read(payload), files)


def as_read(value: Any) -> Any:
    """``value`` with every text's line breaks made ``\n`` and its Unicode composed (NFC):
    what a file converted to CRLF line ends, or saved by a tool that decomposes accents
    (``e`` + ``◌́`` for ``é``), still reads as; a workbook's ``_x000D_`` read before it was
    decoded (:func:`batchrunner.cells.unescaped`) reads as the line break it is."""
    if isinstance(value, str):
        if value.isascii() and "\r" not in value and "_x" not in value:
            return value
        value = unescaped(value)  # a workbook's text recorded before it was decoded
        return unicodedata.normalize("NFC", value.replace("\r\n", "\n").replace("\r", "\n"))
    if isinstance(value, Mapping):
        return {key: as_read(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [as_read(item) for item in value]
    return value


def _input_hash(endpoint: str, payload: Mapping[str, Any], files: Mapping[str, Any]) -> str:
    return identity.input_hash(endpoint, payload, {k: f["sha256"] for k, f in files.items()})
