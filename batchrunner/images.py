"""Local files named in a manifest (images, and audio or video where a model takes them), and
how they are sent.

A cell of a file field (``spec.file_fields``, e.g. ``image_url``, or one item of a list field
such as ``image_urls``) that is not an http(s) URL or a ``data:`` URI names a local file,
relative to the manifest's folder. At load time the file is checked (exists, at most the field's
limit, :data:`~batchrunner.models.MAX_IMAGE_BYTES` unless the schema says otherwise, and of the
right type by its first bytes: PNG/JPEG/WEBP/GIF for images, MP3/WAV for ``audio`` fields,
MP4/MOV for ``video`` fields) and fingerprinted once per (path, mtime, size); the job keeps its
absolute path. A file's key is its field (``image_url``) or, in a list, ``image_urls[1]``.
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
from urllib.parse import unquote_to_bytes, urlsplit

from batchrunner.coerce import LIST_SEPARATOR
from batchrunner.errors import UsageError
from batchrunner.models import MAX_IMAGE_BYTES

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_URL_START = re.compile(r"(?:^|[\s,;])https?://", re.IGNORECASE)
NOT_FOUND = "image file not found"
# what a cell that names no file here may have meant: a Windows path, a web address
_WINDOWS_PATH = re.compile(r"[A-Za-z]:[\\/]|\\\\")
_BARE_ADDRESS = re.compile(r"(?:www\.[^/\s]+|[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,})/", re.I)
# An http(s) URL whose host the provider cannot fetch from: none, or a name of the machine the
# manifest was written on (the provider fetches from its own servers).
_UNREACHABLE_HOST = re.compile(
    r"https?://(?:[^/?#@]*@)?(?:(?P<here>localhost|127\.[\d.]+|0\.0\.0\.0|\[::1?\])|)"
    r"(?=[:/?#]|$)",
    re.IGNORECASE,
)


def url_problem(url: str) -> str | None:
    """Why the provider could not fetch the http(s) URL ``url``, or None (most URLs: two
    string scans and one anchored match)."""
    if " " in url or not url.isprintable():  # spaces, line breaks, control characters
        urls = len(_URL_START.findall(url))
        if urls > 1:
            return (
                f"holds {urls} URLs: a cell takes one (where a field takes several, separate "
                f"them with {LIST_SEPARATOR!r})"
            )
        return "a URL cannot hold spaces or line breaks: write a space as %20"
    found = _UNREACHABLE_HOST.match(url)
    if found is None:
        return None
    if found["here"] is None:
        return "the URL has no host name"
    return (
        f"the provider fetches a URL from its own servers, which cannot reach "
        f"{found['here']} on this machine: give the file's path instead (it is sent "
        "with the request)"
    )


def unfetchable(urls: list[str]) -> list[int]:
    """The indexes of the http(s) URLs in ``urls`` that :func:`url_problem` refuses, the host
    judged once per host (a manifest's URLs share a few): asking :func:`url_problem` of each of
    100,000 URLs cost twice as much."""
    verdicts: dict[str, bool] = {}
    bad: list[int] = []
    for index, url in enumerate(urls):
        if " " in url or not url.isprintable():
            bad.append(index)
            continue
        host = url.split("/", 3)[2]  # "https://host:8/a" → "host:8"; what url_problem judges
        verdict = verdicts.get(host)
        if verdict is None:
            verdict = verdicts[host] = url_problem(url) is not None
        if verdict:
            bad.append(index)
    return bad


@dataclass(frozen=True)
class LocalFile:
    path: str  # absolute path
    sha256: str
    size: int
    mime: str  # image/png, image/jpeg, image/webp or image/gif, from the file's first bytes


def sniff_mime(head: bytes) -> str | None:
    """The file type from its first 12 bytes, or None when it is none we accept."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    return None


KINDS = {  # what a file field takes, by the word in its name
    "audio": ("audio/", "an MP3 or WAV audio file"),
    "video": ("video/", "an MP4 or MOV video"),
    "image": ("image/", "a PNG, JPEG, WEBP or GIF image"),
}


def kind_of_field(name: str) -> str:
    return next((kind for kind in ("audio", "video") if kind in name), "image")


def file_key(name: str, index: int | None) -> str:
    """``image_url`` for a single file, ``image_urls[1]`` for the second item of a list."""
    return name if index is None else f"{name}[{index}]"


_KEY = re.compile(r"^(.+)\[([0-9]+)\]$")


def place(body: dict[str, Any], key: str, value: Any) -> None:
    """Set what ``key`` (see :func:`file_key`) names in ``body`` (a list is copied, not changed)."""
    match = _KEY.match(key)
    if match is None:
        body[key] = value
        return
    name, index = match.group(1), int(match.group(2))
    items = list(body[name])
    items[index] = value
    body[name] = items


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def limit_text(max_bytes: int) -> str:
    return f"at most {max_bytes / (1024 * 1024):g} MB is allowed"


def is_local(cell: str) -> bool:
    """A cell names a local file unless it is a URL (any scheme) or a ``data:`` URI."""
    return not (_URL.match(cell) or cell[:5].lower() == "data:")


def local_path_of(cell: str) -> str:
    """The path a ``file:`` URL names (``file:///tmp/a%20b.png`` → ``/tmp/a b.png``); any other
    cell as it is. Only this machine's files: ``file://host/...`` is left to be refused."""
    if cell[:7].lower() != "file://":
        return cell
    from urllib.request import url2pathname  # only for such a cell: ~40 ms to import

    parts = urlsplit(cell)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        return cell
    return url2pathname(parts.path)


def normalize_url(cell: str) -> str:
    """``HTTPS://x`` → ``https://x``: the scheme is case-insensitive, the model's check is not."""
    match = _URL.match(cell)
    return cell[: match.end()].lower() + cell[match.end() :] if match else cell


def data_uri_problem(uri: str, max_bytes: int = MAX_IMAGE_BYTES) -> str | None:
    """Why a ``data:`` URI cannot be sent (malformed, or more than the size limit), or None."""
    head, comma, data = uri.partition(",")
    if not comma:
        return "a data: URI needs a ',' between its type and its data"
    if head.lower().endswith(";base64"):
        data = "".join(data.split())
        size = len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))
    else:
        size = len(unquote_to_bytes(data))
    if size > max_bytes:
        return f"the data: URI holds {megabytes(size)}; {limit_text(max_bytes)}"
    return None


def misread(cell: str, in_list: bool = False) -> str:
    """What a cell naming no file here may have meant, as a hint to add to "not found"
    (``in_list``: an item of a list field's cell)."""
    if _WINDOWS_PATH.match(cell):
        return (
            "; a Windows path names a file on that computer: copy the file beside the "
            "manifest and write its path from there (images/fox.png)"
        )
    if _BARE_ADDRESS.match(cell):
        return f"; if it is a web address, write it whole: https://{cell}"
    if in_list and _SEVERAL_FILES.search(cell):
        return f"; several files in one cell are separated by {LIST_SEPARATOR} (a.png | b.png)"
    return ""


_SEVERAL_FILES = re.compile(r"\.\w{2,5}\s*[,;]\s*\S")  # "a.png, b.png", "a.png;b.png"


def as_written_here(cell: str, base_dir: Path) -> str:
    """A local path as a sheet made on another computer may write it, made this one's: the
    quotes Windows' "Copy as path" puts around it dropped, and a relative path's backslashes
    (``images\\fox.png``) made slashes where that names a file and the cell as written does
    not."""
    path = cell.strip()
    if len(path) > 1 and path[0] == path[-1] == '"':
        path = path[1:-1].strip()
    if "\\" in path and os.sep == "/" and not _WINDOWS_PATH.match(path):
        forward = path.replace("\\", "/")
        if not resolve(path, base_dir).exists() and resolve(forward, base_dir).exists():
            return forward
    return path


def resolve(cell: str, base_dir: Path) -> Path:
    """The absolute path a cell names: ``~`` expanded, relative to ``base_dir``."""
    return Path(os.path.abspath(base_dir / Path(cell).expanduser()))  # ".." folded, links kept


class ImageChecker:
    """Checks local files for one manifest load; each (path, mtime, size) is read once."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int, int, int, str], LocalFile | str] = {}

    def check(
        self, path: Path, max_bytes: int = MAX_IMAGE_BYTES, kind: str = "image"
    ) -> LocalFile | str:
        """The file's :class:`LocalFile`, or why it cannot be used (one readable sentence)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return f"{NOT_FOUND}: {path}"
        except OSError as exc:
            return f"cannot read {path}: {exc.strerror}"
        if not path.is_file():
            return f"{path} is a folder, not an image file"
        key = (str(path), stat.st_mtime_ns, stat.st_size, max_bytes, kind)
        if key not in self._seen:
            self._seen[key] = self._inspect(path, stat.st_size, max_bytes, kind)
        return self._seen[key]

    @staticmethod
    def _inspect(path: Path, size: int, max_bytes: int, kind: str) -> LocalFile | str:
        prefix, described = KINDS[kind]
        if size > max_bytes:
            return f"the {kind} {path} is {megabytes(size)}; {limit_text(max_bytes)}"
        try:
            with path.open("rb") as handle:
                mime = sniff_mime(handle.read(12))
                if mime is None or not mime.startswith(prefix):
                    return f"{path} is not {described} (checked by its content)"
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
    if hashlib.sha256(data).hexdigest() != file.sha256:
        raise UsageError(
            f"the image {file.path} changed since the manifest was checked; "
            "load the manifest again so the job matches what is sent"
        )
    return f"data:{file.mime};base64,{base64.b64encode(data).decode('ascii')}"


def materialize(payload: dict[str, Any], files: dict[str, LocalFile]) -> dict[str, Any]:
    """A copy of ``payload`` with local-file fields replaced by data: URIs: what is POSTed."""
    body = dict(payload)
    for key, file in files.items():
        place(body, key, data_uri(file))
    return body
