"""The video files the simulator serves: a real MP4, unique and deterministic per request.

Each file is the clip for the job's :class:`~.clips.MediaShape` (aspect ratio, duration, audio
or not; see :mod:`.clips`) followed by one top-level MP4 ``free`` box — 4-byte big-endian size,
``b"free"``, then the request id and padding derived from it — so every job's file differs, is
the same on every run, is about ``media_bytes`` long (never shorter than the clip), and still
plays as the clip.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct

from .clips import MediaShape, clip_bytes

_MARK = b"batchrunner-simulator request "
# what an unplayable "video" is (MediaShape.playable False): a CDN's error page, sent with 200
_NOT_A_VIDEO = (
    b"<!DOCTYPE html><html><head><title>Access denied</title></head>"
    b"<body><h1>Access denied</h1><p>This file is not available.</p></body></html>\n"
)
DEFAULT_SHAPE = MediaShape()


def sample_mp4() -> bytes:
    """The clip of a job submitted without a shape (2 s, 16:9, with audio)."""
    return clip_bytes(DEFAULT_SHAPE)


def video_bytes(request_id: str, size: int, shape: MediaShape | None = None) -> bytes:
    """The MP4 served for ``request_id``: ``size`` bytes, or the smallest valid file if larger.

    ``shape`` None means :data:`DEFAULT_SHAPE`.
    """
    return _video_bytes(request_id, size, shape or DEFAULT_SHAPE)


@functools.lru_cache(maxsize=64)
def _video_bytes(request_id: str, size: int, shape: MediaShape) -> bytes:
    clip = _clip(shape)
    head = _MARK + request_id.encode() + b"\n"
    pad = max(0, size - len(clip) - 8 - len(head))
    payload = head + hashlib.shake_256(request_id.encode()).digest(pad)
    return clip + struct.pack(">I", 8 + len(payload)) + b"free" + payload


def video_size(request_id: str, size: int, shape: MediaShape | None = None) -> int:
    """``len(video_bytes(request_id, size, shape))`` without building the file."""
    head = len(_MARK) + len(request_id.encode()) + 1
    return max(size, len(_clip(shape or DEFAULT_SHAPE)) + 8 + head)


def _clip(shape: MediaShape) -> bytes:
    return clip_bytes(shape) if shape.playable else _NOT_A_VIDEO


def video_sha256(request_id: str, size: int, shape: MediaShape | None = None) -> str:
    """sha256 (hex) of :func:`video_bytes` — the ``ETag`` and the counters' ``media_sha256``."""
    return _video_sha256(request_id, size, shape or DEFAULT_SHAPE)


@functools.lru_cache(maxsize=4096)
def _video_sha256(request_id: str, size: int, shape: MediaShape) -> str:
    return hashlib.sha256(_video_bytes(request_id, size, shape)).hexdigest()


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
