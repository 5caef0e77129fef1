"""Local image files named in a manifest, and how they are sent.

A cell of a file field (``spec.file_fields``, e.g. ``image_url``) that is not an http(s) URL or
a ``data:`` URI names a local file, relative to the manifest's folder. At load time the file is
checked (exists, at most :data:`~batchrunner.models.MAX_IMAGE_BYTES`, a PNG/JPEG/WEBP/GIF by its
first bytes) and fingerprinted once per (path, mtime, size); the job keeps its absolute path.
At submit time :func:`materialize` reads it again into a ``data:`` URI, refusing a file that
changed or vanished since the manifest was checked, so what is sent is what was planned.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from batchrunner.errors import UsageError
from batchrunner.models import MAX_IMAGE_BYTES

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class LocalFile:
    path: str  # absolute path
    sha256: str
    size: int
    mime: str  # image/png, image/jpeg, image/webp or image/gif, from the file's first bytes


def sniff_mime(head: bytes) -> str | None:
    """The image type from a file's first 12 bytes, or None when it is none we accept."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    return None


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


LIMIT_TEXT = f"at most {MAX_IMAGE_BYTES // (1024 * 1024)} MB is allowed"


def is_local(cell: str) -> bool:
    """A cell names a local file unless it is a URL (any scheme) or a ``data:`` URI."""
    return not (_URL.match(cell) or cell[:5].lower() == "data:")


def normalize_url(cell: str) -> str:
    """``HTTPS://x`` → ``https://x``: the scheme is case-insensitive, the model's check is not."""
    match = _URL.match(cell)
    return cell[: match.end()].lower() + cell[match.end() :] if match else cell


def data_uri_problem(uri: str) -> str | None:
    """Why a ``data:`` URI cannot be sent (malformed, or more than the size limit), or None."""
    head, comma, data = uri.partition(",")
    if not comma:
        return "a data: URI needs a ',' between its type and its data"
    if head.lower().endswith(";base64"):
        data = "".join(data.split())
        size = len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))
    else:
        size = len(unquote_to_bytes(data))
    if size > MAX_IMAGE_BYTES:
        return f"the data: URI holds {megabytes(size)}; {LIMIT_TEXT}"
    return None


def resolve(cell: str, base_dir: Path) -> Path:
    """The absolute path a cell names: ``~`` expanded, relative to ``base_dir``."""
    return Path(os.path.abspath(base_dir / Path(cell).expanduser()))  # ".." folded, links kept


class ImageChecker:
    """Checks local images for one manifest load; each (path, mtime, size) is read once."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int, int], LocalFile | str] = {}

    def check(self, path: Path) -> LocalFile | str:
        """The file's :class:`LocalFile`, or why it cannot be used (one readable sentence)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return f"image file not found: {path}"
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
        if not path.is_file():
            return f"{path} is a folder, not an image file"
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in self._seen:
            self._seen[key] = self._inspect(path, stat.st_size)
        return self._seen[key]

    @staticmethod
    def _inspect(path: Path, size: int) -> LocalFile | str:
        if size > MAX_IMAGE_BYTES:
            return f"the image {path} is {megabytes(size)}; {LIMIT_TEXT}"
        try:
            with path.open("rb") as handle:
                mime = sniff_mime(handle.read(12))
                if mime is None:
                    return f"{path} is not a PNG, JPEG, WEBP or GIF image (checked by its content)"
                handle.seek(0)
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
        return LocalFile(path=str(path), sha256=digest, size=size, mime=mime)


def data_uri(file: LocalFile) -> str:
    """The file as ``data:<mime>;base64,...``, read now; UsageError if it changed or vanished."""
    try:
        data = Path(file.path).read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"the image {file.path} is gone since the manifest was checked; put it back"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read the image {file.path}: {exc.strerror}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise UsageError(f"the image {file.path} is now {megabytes(len(data))}; {LIMIT_TEXT}")
    if hashlib.sha256(data).hexdigest() != file.sha256:
        raise UsageError(
            f"the image {file.path} changed since the manifest was checked; "
            "load the manifest again so the job matches what is sent"
        )
    return f"data:{file.mime};base64,{base64.b64encode(data).decode('ascii')}"


def materialize(payload: dict[str, Any], files: dict[str, LocalFile]) -> dict[str, Any]:
    """A copy of ``payload`` with local-file fields replaced by data: URIs: what is POSTed."""
    body = dict(payload)
    for name, file in files.items():
        body[name] = data_uri(file)
    return body
