"""The video files the simulator serves: a real MP4, unique and deterministic per request.

Each file is ``sample.mp4`` (2 s, h264 + aac) followed by one top-level MP4 ``free`` box —
4-byte big-endian size, ``b"free"``, then the request id and padding derived from it — so every
job's file differs, is the same on every run, is about ``media_bytes`` long, and still plays.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
from importlib import resources

_MARK = b"batchrunner-simulator request "


@functools.cache
def sample_mp4() -> bytes:
    return resources.files("batchrunner.simulator").joinpath("sample.mp4").read_bytes()


@functools.lru_cache(maxsize=64)
def video_bytes(request_id: str, size: int) -> bytes:
    """The MP4 served for ``request_id``: ``size`` bytes, or the smallest valid file if larger."""
    sample = sample_mp4()
    head = _MARK + request_id.encode() + b"\n"
    pad = max(0, size - len(sample) - 8 - len(head))
    payload = head + hashlib.shake_256(request_id.encode()).digest(pad)
    return sample + struct.pack(">I", 8 + len(payload)) + b"free" + payload


def video_size(request_id: str, size: int) -> int:
    """``len(video_bytes(request_id, size))`` without building the file."""
    head = len(_MARK) + len(request_id.encode()) + 1
    return max(size, len(sample_mp4()) + 8 + head)


@functools.cache
def video_sha256(request_id: str, size: int) -> str:
    return hashlib.sha256(video_bytes(request_id, size)).hexdigest()


class RangeNotSatisfiable(Exception):
    """A ``Range`` header that selects no byte of the file (→ 416)."""


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte of a single-range ``Range`` header.

    None means "send the whole file" (no header, or a form this server ignores, such as several
    ranges). Raises :class:`RangeNotSatisfiable` for a range past the end.
    """
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)  # bytes=-N: the last N bytes
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None  # syntactically invalid: ignored, per RFC 9110
    if first >= size:
        raise RangeNotSatisfiable
    return first, min(last, size - 1)
