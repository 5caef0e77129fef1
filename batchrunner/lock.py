"""One runner per ledger: an OS-level lock on ``<ledger>.lock``.

``fcntl.flock`` is released by the operating system when the holder exits, however it exits
(SIGKILL included), so a stale lock file never blocks the next run. The file holds the holder's
pid and start time, for the message a second runner prints.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO

from batchrunner.errors import LedgerError, LedgerLockedError
from batchrunner.ledger import now


def lock_path(ledger_path: Path) -> Path:
    return ledger_path.with_name(ledger_path.name + ".lock")


class LedgerLock:
    """``with LedgerLock(path, "run"):`` — raises :class:`LedgerLockedError` if held elsewhere."""

    def __init__(self, ledger_path: Path, command: str):
        self.path = lock_path(ledger_path)
        self.command = command
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        except OSError as exc:  # the ledger's folder cannot be made or written
            raise LedgerError(
                f"cannot write the ledger's lock file {self.path}: {_why(self.path, exc)}; "
                "give the ledger a path in a folder you can write"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise LedgerLockedError(
                f"the ledger is in use by another batchrunner ({holder}); "
                "wait for it to finish or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        info = {"pid": os.getpid(), "started_at": now(), "command": self.command}
        handle.write(json.dumps(info))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> LedgerLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _why(path: Path, exc: OSError) -> str:
    """What stopped ``path`` being written: a file where a folder should be, or the OS's word."""
    nearest = next((parent for parent in path.parents if parent.exists()), None)
    if nearest is not None and not nearest.is_dir():
        return f"{nearest} is a file, not a folder"
    return str(exc.strerror or exc)


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']}, `{info['command']}` started at {info['started_at']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
