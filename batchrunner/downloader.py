"""Fetch a finished video to disk, verified, without ever leaving a half-written file behind.

The file streams into ``<name>.part``; its size is checked against the result's ``file_size``
and the response's Content-Length; its sha256 is computed on the way; then it is fsynced and
renamed into place atomically. An interrupted ``.part`` is resumed with a Range request when the
server honours it (206 from the right offset), else fetched again from the start. A file already
in place with the expected size is hashed and kept, not fetched again.

Downloads use their own HTTP client with no credentials at all: media URLs are public, and the
API token must never reach the CDN.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from batchrunner.answers import NEVER_SENT
from batchrunner.errors import DownloadError, TransientError
from batchrunner.paths import open_to_write, own_file_size, part_path
from batchrunner.reach import Reach
from batchrunner.retry import RetryPolicy, call_with_retry, mark_waiting
from batchrunner.transport import AiohttpTransport, Answer, send

logger = logging.getLogger(__name__)

MEDIA_TIMEOUT = httpx.Timeout(60.0, connect=10.0)

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_REDIRECTS = (301, 302, 303, 307, 308)  # as httpx.Response.is_redirect


@dataclass(frozen=True)
class Downloaded:
    path: Path
    bytes: int
    sha256: str
    fetched: bool  # False when a verified file was already there


class MediaClient:
    """Fetches media over ``transport`` (a pool of its own, :class:`AiohttpTransport` unless
    given): no credentials at all, no cookies, redirects followed (CDNs redirect) up to
    :data:`MAX_REDIRECTS` hops and only to http(s). Straight to the transport, like
    :class:`~batchrunner.client.QueueClient`: ``httpx.AsyncClient`` would add nothing wanted
    and cost as much CPU as the download itself."""

    MAX_REDIRECTS = 5

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = MEDIA_TIMEOUT,
        patience: float | None = None,
    ):
        self.transport = transport or AiohttpTransport()
        self._timeout = timeout
        self._patience = patience
        self._reach: dict[str, Reach] = {}  # by origin: a media host down mid-run is waited for
        self._listener: Callable[[Reach], None] | None = None

    def listen(self, listener: Callable[[Reach], None]) -> None:
        """Tell ``listener`` of each media host's outage being waited for, as it begins and
        ends (:class:`batchrunner.reach.Waits`)."""
        self._listener = listener
        for reach in self._reach.values():
            reach.listener = listener

    async def __aenter__(self) -> MediaClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    @asynccontextmanager
    async def get(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Answer]:
        """The answer to ``GET url`` after any redirects, its body not yet read."""
        for _ in range(self.MAX_REDIRECTS + 1):
            reach = self._reach_of(url)
            started = time.monotonic()
            try:
                response = await send(
                    self.transport, "GET", url, headers, timeout=self._timeout, stream=True
                )
            except NEVER_SENT as exc:
                reach.failed(started)
                if reach.waiting:
                    mark_waiting(exc)
                raise
            reach.answered()
            location = response.headers.get("location")
            if response.status_code in _REDIRECTS and location:
                await response.aclose()
                url = str(response.url.join(location))
                if not _is_http(url):
                    raise DownloadError(
                        f"redirected to a URL that is not http(s): {_short(url)}", permanent=True
                    )
                continue
            try:
                yield response
            finally:
                await response.aclose()
            return
        raise DownloadError(f"more than {self.MAX_REDIRECTS} redirects", permanent=True)

    def _reach_of(self, url: str) -> Reach:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        reach = self._reach.get(origin)
        if reach is None:
            name = f"the media host {origin}"
            reach = self._reach[origin] = Reach(name, patience=self._patience, origin=origin)
            reach.listener = self._listener
        return reach


class _Failed(TransientError):
    """One try failed, worth another; ``kind`` is what happened, the same for every file that
    fails alike (``ConnectError``, ``answered 503``)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class _Cut(_Failed):
    """The body ended early or the connection dropped: worth resuming."""

    def __init__(self, message: str, kind: str = "cut short"):
        super().__init__(message, kind)


class _Gone(_Failed):
    """404/410: retried a few times (a CDN may lag behind), then the download fails for good."""


class _SizeMismatch(DownloadError):
    """The bytes served are not the size the result promised (not retried in place)."""


async def download(
    client: MediaClient,
    url: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    retry: RetryPolicy | None = None,
    mine: bool = False,
) -> Downloaded:
    """Download ``url`` to ``dest`` (inside a folder the caller has checked); verify; return it.

    Raises :class:`DownloadError` with a readable reason when it cannot be done; a ``.part``
    file worth resuming is kept for the next try. A file already at ``dest`` that is ``mine``
    (the ledger says this job saved it there) is taken when whole and written over when not
    (cut, say); another is kept, and taken as this download only when it has the same bytes
    (:func:`_found_there`).
    """
    policy = retry or RetryPolicy(attempts=5, base_delay=0.5, max_delay=10.0)
    if not _is_http(url):
        raise DownloadError(f"the video URL is not http(s): {_short(url)}", permanent=True)
    try:
        if mine and expected_size is not None and _whole(dest, expected_size):
            return Downloaded(dest, expected_size, _sha256_of(dest), fetched=False)
        found = not mine and _found_there(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            got = await call_with_retry(
                policy, lambda: _fetch_once(client, url, dest, expected_size, found)
            )
        except _SizeMismatch:  # once more from scratch: a CDN may have served a stale copy
            part_path(dest).unlink(missing_ok=True)
            got = await call_with_retry(
                policy, lambda: _fetch_once(client, url, dest, expected_size, found)
            )
        return got
    except _SizeMismatch as exc:
        raise DownloadError(f"{exc}, again after a fresh download", permanent=True) from exc
    except _Gone as exc:  # this file is gone (each job's own fate: no cause of the run's)
        raise DownloadError(f"{exc} for {_short(url)}", permanent=True) from exc
    except TransientError as exc:
        cause = f"{_host(url)}: {getattr(exc, 'kind', type(exc).__name__)}"
        message = f"download of {_short(url)} did not complete: {exc}"
        raise DownloadError(message, cause=cause) from exc
    except OSError as exc:
        whole_device = exc.errno in _DEVICE_FULL_OR_READ_ONLY  # not one job's folder
        raise DownloadError(_disk_reason(exc, dest), disk=whole_device) from exc


async def _fetch_once(
    client: MediaClient, url: str, dest: Path, expected_size: int | None, found: bool = False
) -> Downloaded:
    part = part_path(dest)
    offset = own_file_size(part)  # not a link someone put there: it would write through it
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        async with client.get(url, headers) as response:
            if response.status_code == 416 and offset:
                part.unlink()  # our partial file is no prefix of theirs: start again
                raise _Cut("the server refused to resume; starting again")
            answered = f"answered {response.status_code}"
            if response.status_code >= 500 or response.status_code == 429:
                raise _Cut(f"the media server {answered}", answered)
            if response.status_code in (404, 410):
                raise _Gone(f"the media server {answered}", answered)
            if response.status_code >= 400:
                raise DownloadError(
                    f"the media server {answered} for {_short(url)}",
                    permanent=True,
                    cause=f"{_host(url)}: {answered}",
                )
            resumed = response.status_code == 206 and _range_start(response) == offset
            if response.status_code == 206 and not resumed and _range_start(response) != 0:
                part.unlink(missing_ok=True)  # a range we did not ask for is no prefix of ours
                raise _Cut("the server answered a range we did not ask for; starting again")
            total = _total_size(response, offset if resumed else 0)
            if expected_size is not None and total is not None and total != expected_size:
                raise _SizeMismatch(
                    f"the server offers {total} bytes but the result said {expected_size}"
                )
            digest = hashlib.sha256()
            if resumed:
                _hash_into(digest, part)
            else:
                offset = 0
            with open_to_write(part, append=resumed) as handle:
                async for chunk in response.aiter_bytes():  # as they arrive: a cut keeps them
                    handle.write(chunk)
                    digest.update(chunk)
                handle.flush()
                os.fsync(handle.fileno())
                size = handle.tell()
    except (httpx.TransportError, httpx.DecodingError) as exc:
        kind = type(exc).__name__
        cut = _Cut(f"{kind} after {_part_size(part)} bytes", kind)
        raise (mark_waiting(cut) if getattr(exc, "waiting_for_network", False) else cut) from exc
    want = expected_size if expected_size is not None else total
    if want is not None and size < want:
        raise _Cut(f"got {size} of {want} bytes")
    if want is not None and size != want:
        part.unlink()
        raise _SizeMismatch(f"got {size} bytes, expected {want}; the partial file was removed")
    if found:  # a file was at the name before this download: this video, or another's
        part.unlink()
        if _sha256_of(dest) == digest.hexdigest():
            return Downloaded(dest, size, digest.hexdigest(), fetched=False)  # a stop's, kept
        raise DownloadError(
            f"{dest} is already there and is another video (another batch's, written into "
            "this folder while this one was stopped?); it is left as it is: move it aside and "
            "run again (the result is kept)"
        )
    os.replace(part, dest)
    _fsync_dir(dest.parent)
    logger.debug("downloaded %s (%d bytes%s)", dest, size, ", resumed" if resumed else "")
    return Downloaded(dest, size, digest.hexdigest(), fetched=True)


def _range_start(response: Answer) -> int | None:
    match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
    return int(match.group(1)) if match else None


def _total_size(response: Answer, offset: int) -> int | None:
    match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
    if match and match.group(3) != "*":
        return int(match.group(3))
    length = response.headers.get("content-length")
    return offset + int(length) if length and length.isdigit() else None


def _hash_into(digest: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    _hash_into(digest, path)
    return digest.hexdigest()


def _whole(dest: Path, size: int) -> bool:
    """Whether ``dest`` is a file (not a link) of the size the result promised."""
    try:
        there = os.lstat(dest)
    except OSError:
        return False
    return stat.S_ISREG(there.st_mode) and there.st_size == size


def _found_there(dest: Path) -> bool:
    """Whether a file this download must not write over is at ``dest``: this very video (a run
    that stopped after renaming it into place, before recording it) or another batch's, told
    apart by their bytes once this one is fetched. Not a link (replaced, never written
    through), nor a file with a second name (a replaced job's video, kept beside it: renamed
    over this name only)."""
    try:
        there = os.lstat(dest)
    except OSError:
        return False
    return stat.S_ISREG(there.st_mode) and there.st_nlink == 1


def _part_size(part: Path) -> int:
    return part.stat().st_size if part.exists() else 0


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_DEVICE_FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _disk_reason(exc: OSError, dest: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device holding {dest.parent}"
    if exc.errno == errno.EDQUOT:
        return f"the disk quota is used up on the device holding {dest.parent}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write to {dest.parent}: {exc.strerror}"
    return f"cannot write {dest}: {exc.strerror or exc}"


def _is_http(url: str) -> bool:
    """Media is fetched over http(s) only, whatever a result or a redirect names."""
    return url.lower().startswith(("https://", "http://"))


def _host(url: str) -> str:
    """Where ``url`` points, as ``host[:port]`` (never a user or password it carries)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number: say the host alone
        port = None
    return f"{parts.hostname}:{port}" if port else str(parts.hostname)


def _short(url: str) -> str:
    return url if len(url) <= 120 else url[:117] + "..."
