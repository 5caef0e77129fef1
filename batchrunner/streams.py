"""Status by stream: reading fal's server-sent events, and remembering where streams work.

``GET .../requests/{id}/status/stream`` answers ``text/event-stream``: one ``data:`` line with a
status object per change, a ``: ping`` comment about every 15 s, closed after ``COMPLETED``
(PROTOCOL.md). Following it costs one request per job and tells the runner the moment a job is
done; polling costs one request per look and notices completion up to a poll interval late.

* :func:`sse_events` turns the bytes of such a response into status objects (``dict``) and
  ``None`` for each keep-alive comment, so a reader can tell "alive" from "stalled".
* :class:`StreamMemory` is what a run has learnt per API origin: whether streams are served
  there at all, and whether they keep failing. Per job the rule is simple — one stream; if it
  fails, stalls or is not offered, the job is polled from then on (at once, then adaptively).
  Per origin:

  ==========================================  ===============================================
  what happened                               what the run does next on that origin
  ==========================================  ===============================================
  a stream reached ``COMPLETED``              streams work: failures in a row reset to 0
  404/405 (or not events) and a poll of the   not offered: every later job polls
  same job then answered normally
  ``FAILURES_BEFORE_POLLING`` failures in a   flaky: every later job polls (a dropped or
  row (dropped, stalled, 5xx, bad event)      silent stream costs a stall each time)
  ==========================================  ===============================================

  The memory lasts one run: the next run tries streams again (a reseller may have added them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# A stream that sent nothing (no event, no comment) for this long is given up; fal sends a
# comment every 15 s, so three missed comments. Its first event must come within this too.
STREAM_STALL = 45.0
FAILURES_BEFORE_POLLING = 3


class BadEvent(ValueError):
    """A ``data:`` payload that is not a JSON object."""


def parse_event(data: str) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError:
        raise BadEvent(f"a status event that is not JSON: {data[:80]!r}") from None
    if not isinstance(body, dict):
        raise BadEvent(f"a status event that is not a JSON object: {data[:80]!r}")
    return body


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any] | None]:
    """Server-sent events from a response's bytes: each event's ``data`` as a JSON object, and
    ``None`` for each comment line (a keep-alive). ``event:``, ``id:`` and ``retry:`` are
    ignored. Lines end with CR LF, LF or CR (a CR at the end of a chunk waits for the next, in
    case an LF follows) and are UTF-8, as the standard fixes: no charset to look up."""
    data: list[str] = []  # the data lines of the event being read
    rest = b""
    async for chunk in chunks:
        lines = (rest + chunk).splitlines(keepends=True)
        rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        for event in _read(lines, data):
            yield event
    for event in _read([rest] if rest else [], data):
        yield event
    if data:  # the last event, without its blank line
        yield parse_event("\n".join(data))


def _read(lines: list[bytes], data: list[str]) -> Iterator[dict[str, Any] | None]:
    """The events and comments ``lines`` complete; ``data`` collects an unfinished event."""
    for raw in lines:
        line = raw.rstrip(b"\r\n").decode(errors="replace")
        if not line:
            if data:
                yield parse_event("\n".join(data))
                data.clear()
        elif line.startswith(":"):
            yield None
        else:
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value.removeprefix(" "))


@dataclass
class _Origin:
    offered: bool = True
    failures_in_a_row: int = 0
    completed: int = 0
    failed: int = 0


@dataclass
class StreamMemory:
    """Per API origin: whether a job should follow its status stream or be polled."""

    enabled: bool = True
    origins: dict[str, _Origin] = field(default_factory=dict)

    def _of(self, origin: str) -> _Origin:
        return self.origins.setdefault(origin, _Origin())

    def worth_trying(self, origin: str) -> bool:
        seen = self._of(origin)
        return self.enabled and seen.offered and seen.failures_in_a_row < FAILURES_BEFORE_POLLING

    def completed(self, origin: str) -> None:
        seen = self._of(origin)
        seen.completed += 1
        seen.failures_in_a_row = 0

    def failed(self, origin: str, why: str) -> None:
        seen = self._of(origin)
        seen.failed += 1
        seen.failures_in_a_row += 1
        if seen.failures_in_a_row == FAILURES_BEFORE_POLLING:
            logger.info(
                "status streams at %s failed %d times in a row (%s): polling from now on",
                origin,
                FAILURES_BEFORE_POLLING,
                why,
            )

    def not_offered(self, origin: str) -> None:
        seen = self._of(origin)
        if seen.offered:
            logger.info("%s does not serve status streams: polling from now on", origin)
        seen.offered = False
