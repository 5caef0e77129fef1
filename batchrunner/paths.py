"""Where a job's video goes: names from the manifest, always inside the output folder."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

_UNSAFE_CHARS = re.compile(r"[\x00-\x1f<>:\"|?*\\]")
# letters and digits of any script are kept (``狐`` names ``0001-狐.mp4``, not ``0001-job.mp4``,
# which the next row to take row 1 would also want)
_NOT_FILENAME = re.compile(r"(?:[^\w.~-]|_)+")
# A file name is at most 255 bytes on common file systems; a video's also gets its row number
# in front (``0001-``, longer past row 9,999), maybe an extension, and ``.part`` while it loads.
MAX_NAME_BYTES = 230  # a file or folder name in an ``output`` cell
SAFE_NAME_CHARS = 200  # a name made from a job id (a video's, a poster's)
MP4_SUFFIXES = frozenset({".mp4", ".mov", ".m4v"})  # names an MP4 (a QuickTime file) goes by
# the names of other kinds of video: an MP4 saved under one would be mislabelled
OTHER_VIDEO_SUFFIXES = frozenset(
    {".webm", ".mkv", ".avi", ".gif", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".ogv", ".3gp"}
)


def name_part(text: str) -> str:
    """``text`` made one part of a file name, for a placeholder in an output name: ``16:9`` →
    ``16_9``, ``a/b`` → ``a_b`` (a cell's value never makes a folder, nor climbs out of one);
    ends that are dots or spaces trimmed (``..`` is not a folder)."""
    return _UNSAFE_CHARS.sub("_", text.replace("/", "_")).strip(". ") or "_"


def check_output_name(name: str) -> str | None:
    """Why ``name`` cannot be an output file name, or ``None`` when it can.

    Allowed: a relative path with ``/`` separators (sub-folders are fine). Refused: absolute
    paths, drive letters, ``..`` parts, control characters, empty parts.
    """
    if not name or not name.strip():
        return "the output name is empty"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or name[1:2] == ":":
        return "the output name must be relative to --out, not an absolute path"
    if _UNSAFE_CHARS.search(name):
        return 'the output name contains a character not allowed in file names (\\ : * ? " < > |)'
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "the output name may not contain '..', '.' or empty folder names"
    longest = max(len(part.encode()) for part in parts)
    if longest > MAX_NAME_BYTES:
        return (
            f"a file or folder name in the output name is {longest} bytes long; at most "
            f"{MAX_NAME_BYTES} fit in a file name"
        )
    return None


def output_path(out_dir: Path, name: str) -> Path:
    """The absolute file path for ``name`` under ``out_dir``; raises ValueError if unsafe.

    Checked twice: by name (:func:`check_output_name`) and by where the path resolves to,
    so a symlinked folder inside ``out_dir`` cannot lead outside it either.
    """
    return output_path_in(out_dir.resolve(), name)


def output_path_in(root: Path, name: str) -> Path:
    """:func:`output_path` for an output folder already resolved (a run resolves its own
    once, not for every video).

    A checked name has no ``.`` or ``..`` parts, so below a resolved ``root`` only a symbolic
    link can lead elsewhere: the path is resolved (and checked) when one of its parts is a
    link, which costs an ``lstat`` a part instead of one for every folder from ``/`` down."""
    problem = check_output_name(name)
    if problem:
        raise ValueError(f"{problem}: {name!r}")
    path = root / name
    if _has_link(str(root), name):
        path = path.resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"the output name leads outside {root}: {name!r}")
    return path


def _has_link(root: str, name: str) -> bool:
    """Whether a part of ``root/name`` below ``root`` is a symbolic link."""
    below = root
    for part in name.split("/"):
        below = os.path.join(below, part)
        try:
            if stat.S_ISLNK(os.lstat(below).st_mode):
                return True
        except (FileNotFoundError, NotADirectoryError):
            return False  # nothing further down exists, links included
        except OSError:
            return True  # not ours to read: resolve() decides
    return False


def safe_name(text: str) -> str:
    """``text`` reduced to characters safe in any file name (``16:9`` → ``16_9``; letters and
    digits of every script kept, composed as NFC), and short enough for one: past
    :data:`SAFE_NAME_CHARS` bytes it is cut, and ends with a hash of ``text`` so that two long
    ids that start alike still name two files; an id with nothing to keep (``🦊``) is ``job``
    and a hash of it."""
    name = _NOT_FILENAME.sub("_", unicodedata.normalize("NFC", text)).strip("._")
    if name and len(name.encode()) <= SAFE_NAME_CHARS:
        return name
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    if not name:
        return f"job-{digest}"
    cut = name.encode()[: SAFE_NAME_CHARS - 11].decode(errors="ignore")
    return f"{cut}-{digest}"


def default_output_name(job_id: str, row: int | None, extension: str = ".mp4") -> str:
    """``0007-<job id>.mp4``: sorts like the manifest and stays unique."""
    safe_id = safe_name(job_id)
    stem = f"{row:04d}-{safe_id}" if row is not None else safe_id
    return stem + extension


def video_name(job_id: str, row: int | None, output: str | None, extension: str = ".mp4") -> str:
    """Where a job's video goes under ``--out``: always with its row number in front.

    ``0007-<job id>.mp4`` by default; the ``output`` cell's name keeps its folder and gets the
    row too (``day2/lake.mp4`` of row 7 → ``day2/0007-lake.mp4``), so a folder of videos sorts
    like the spreadsheet and each file says which row it came from.
    """
    if not output:
        return default_output_name(job_id, row, extension)
    if row is None:
        return output
    folder, slash, name = output.rpartition("/")
    return f"{folder}{slash}{row:04d}-{name}"


def with_extension(name: str, extension: str) -> str:
    """Add ``extension`` unless the user's name ends with it, or another name of its kind of
    file (``clip1`` → ``clip1.mp4``, ``take 1.5`` → ``take 1.5.mp4``; ``a.MOV`` is kept)."""
    return name if PurePosixPath(name).suffix.lower() in _names_of(extension) else name + extension


def check_video_suffix(name: str, extension: str) -> str | None:
    """Why ``name`` would mislabel a video saved as ``extension`` (``shot.webm`` for an MP4),
    or None."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in OTHER_VIDEO_SUFFIXES and suffix not in _names_of(extension):
        kind = extension.lstrip(".").upper()
        return (
            f"this model's videos are {kind} files, not {suffix}: end the name with "
            f"{extension}, or leave the extension off"
        )
    return None


def _names_of(extension: str) -> frozenset[str]:
    return MP4_SUFFIXES if extension.lower() in MP4_SUFFIXES else frozenset({extension.lower()})


def part_path(path: Path) -> Path:
    """The temporary file a download streams into before the atomic rename."""
    return path.with_name(path.name + ".part")


def own_file_size(path: Path) -> int:
    """The size of ``path`` if it is a regular file of its own; 0 when there is none. A link
    or anything else there (put in a shared folder by someone else: ours are regular files)
    is removed, so that nothing written next goes through it to a file outside the folder."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return 0
    if stat.S_ISREG(found.st_mode):
        return found.st_size
    path.unlink()
    return 0


def open_to_write(path: Path, *, append: bool = False) -> BinaryIO:
    """``path`` opened to be written (over, or at its end), never through a link:
    a symbolic link there is removed and a file made in its place (:func:`own_file_size`)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        own_file_size(path)
        fd = os.open(path, flags, 0o666)
    return os.fdopen(fd, "ab" if append else "wb")


_MEDIA_KINDS = {
    **dict.fromkeys(MP4_SUFFIXES | OTHER_VIDEO_SUFFIXES, "a video"),
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".webp", ".gif", ".heic", ".avif"), "an image"),
}


def not_over_an_input(destination: Path, inputs: list[tuple[Path, str]]) -> None:
    """Refuse to write ``destination`` where one of ``inputs`` (path, what it is) is: the
    manifest a ledger was run from, the ledger itself. ``export -o shots.csv`` replaced the sheet
    the nightly run reads with the export, silently. Nor a name a video or an image goes by: a
    paid video (``report -o 0001-a.mp4``) or an input image was written over with the page.
    Any other file is overwritten, as a re-export should."""
    from batchrunner.errors import UsageError

    kind = _MEDIA_KINDS.get(destination.suffix.lower())
    if kind is not None:  # a paid video of the batch, an input image: `report -o 0001-a.mp4`
        raise UsageError(
            f"{destination} is named like {kind}, which what is written here is not (and one "
            "there would be lost): give a name that says what it is"
        )
    for source, what in inputs:
        try:
            # resolved first: "new/../shots.csv" names the sheet once "new" is made
            same = os.path.samefile(destination.resolve(), source)
        except OSError:  # either is missing (or a DataFrame's made-up name)
            continue
        if same:
            other = destination.with_name(f"{destination.stem}-results{destination.suffix}")
            raise UsageError(
                f"{destination} is {what}: writing over it would lose it; give another name, "
                f"e.g. {other}"
            )


@contextmanager
def written_whole(destination: Path) -> Iterator[Path]:
    """A file to write in place of ``destination``, renamed over it once written whole: a write
    that fails halfway (a full disk, Ctrl-C, an image changed) leaves the last good export or
    page as it was, not a broken one. Its folder is made if need be. The part's name is this
    write's own (``report`` beside a run writing the same gallery), and ends as the
    destination's does: writers pick the format from it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    mine = f"{os.getpid()}-{secrets.token_hex(4)}"
    part = destination.with_name(f".{destination.stem}.{mine}.part{destination.suffix}")
    try:
        yield part
        os.replace(part, destination)
    finally:
        part.unlink(missing_ok=True)
