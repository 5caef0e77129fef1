"""One runner per ledger: an OS-level lock on ``<ledger>.lock`` (and one batch per output folder:
:class:`OutputLock`).

``fcntl.flock`` is released by the operating system when the holder exits, however it exits
(SIGKILL included), so a stale lock file never blocks the next run. The file holds the holder's
pid, host and start time, for the message a second runner prints, and whether it stops cleanly
on SIGTERM: ``cancel --all`` stops a ``run``, ``resume`` or ``retry`` that holds the ledger
that way (:meth:`LedgerLock.acquire` with ``stop_holder``). ``cancel JOB_ID`` works beside it
(:func:`batch_holding`): it moves a job the holder has not sent only from the state it read,
as the holder's submit intent moves it only from ``pending``, so never both.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import IO, Any

from batchrunner.errors import LedgerError, LedgerLockedError
from batchrunner.jobs import now

logger = logging.getLogger(__name__)

STOPPABLE = frozenset({"run", "resume", "retry"})  # commands that stop cleanly on SIGTERM
STOP_WAIT_SECONDS = 60.0  # how long a stopped holder gets to let go of the ledger
# A lock taken for a moment only, to see whether it is free (batch_holding, for `status` and
# `cancel`), is waited out: a run starting in that moment starts, rather than exit 3.
PROBE_SECONDS = 0.25


def lock_path(ledger_path: Path) -> Path:
    """Beside the ledger's file itself: one reached through a link (or a linked folder) has
    the same lock as when named directly."""
    real = Path(os.path.realpath(ledger_path))
    return real.with_name(real.name + ".lock")


class LedgerLock:
    """``with LedgerLock(path, "run"):`` — raises :class:`LedgerLockedError` if held elsewhere."""

    def __init__(self, ledger_path: Path, command: str, *, stop_holder: bool = False):
        self.path = lock_path(ledger_path)
        self.command = command
        self.stop_holder = stop_holder
        self.stopped: str | None = None  # the holder stopped to take the lock, described
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LedgerLockedError` naming its holder. With
        ``stop_holder``, a ``run``, ``resume`` or ``retry`` holding it on this machine is sent
        SIGTERM (it stops as on Ctrl-C: nothing new bought, what was sent recorded) and
        waited for, up to :data:`STOP_WAIT_SECONDS`; another ``cancel`` is only waited for."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        except OSError as exc:  # the ledger's folder cannot be made or written
            raise LedgerError(
                f"cannot write the ledger's lock file {self.path}: {_why(self.path, exc)}; "
                "give the ledger a path in a folder you can write"
            ) from None
        if not _locked(handle, within=PROBE_SECONDS):
            handle.seek(0)
            holder = _read(handle.read())
            try:
                if not self.stop_holder or holder.get("command") not in STOPPABLE | {"cancel"}:
                    raise LedgerLockedError(
                        f"the ledger is in use by another batchrunner ({_describe(holder)}); "
                        f"wait for it to finish or stop it{_how_to_stop(holder)}"
                    )
                self.stopped = _stop(holder)
                if not _locked(handle, within=STOP_WAIT_SECONDS):
                    raise LedgerLockedError(
                        f"the ledger is still in use by another batchrunner "
                        f"({_describe(holder)}) after {STOP_WAIT_SECONDS:g} s; wait for it to "
                        f"finish or stop it{_how_to_stop(holder)}, then try again"
                    )
            except LedgerLockedError:
                handle.close()
                raise
        # only the main thread receives signals: a run on another (a notebook's) has no
        # handler, and SIGTERM would end the whole program
        main = threading.current_thread() is threading.main_thread()
        self._file = _held(handle, self.command, stops_on_sigterm=main)

    def release(self) -> None:
        _let_go(self._file)
        self._file = None

    def __enter__(self) -> LedgerLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class OutputLock:
    """One batch per output folder: an OS-level lock on ``<out>/.batchrunner.lock``. Two
    ledgers sharing ``--out`` at once wrote over each other's videos, or took each other's as
    their own: the same row numbers and ids name the same files. Raises
    :class:`LedgerLockedError` (exit 3) naming the other batch and its ledger. A folder the
    lock cannot be made in is left to the downloads to report."""

    NAME = ".batchrunner.lock"

    def __init__(self, out: Path, ledger_path: Path, command: str):
        self.path = Path(os.path.realpath(out)) / self.NAME
        self.ledger = os.path.realpath(ledger_path)
        self.command = command
        self._file: IO[str] | None = None

    def __enter__(self) -> OutputLock:
        try:
            handle = open(self.path, "a+")  # held open for the lock's lifetime
        except OSError:
            return self
        if not _locked(handle, within=PROBE_SECONDS):
            handle.seek(0)
            holder = _read(handle.read())
            handle.close()
            raise LedgerLockedError(
                f"{self.path.parent} is being written by another batchrunner "
                f"({_describe(holder)}, ledger {holder.get('ledger', '?')}): two batches in one "
                "folder write over each other's videos; give this one an --out of its own, or "
                "wait for that one to finish"
            )
        self._file = _held(handle, self.command, ledger=self.ledger)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _let_go(self._file)
        self._file = None


def _held(handle: IO[str], command: str, **more: Any) -> IO[str]:
    """``handle``, whose lock was just taken, with its holder written in it (for the message
    the next taker prints)."""
    handle.seek(0)
    handle.truncate()
    info = {"pid": os.getpid(), "started_at": now(), "command": command}
    handle.write(json.dumps({**info, "host": socket.gethostname(), **more}))
    handle.flush()
    return handle


def _let_go(handle: IO[str] | None) -> None:
    """Release and close a held lock file (None: none is held)."""
    if handle is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def batch_holding(ledger_path: Path) -> str | None:
    """The ``run``, ``resume`` or ``retry`` that holds the ledger now, described (on whatever
    machine); None when none does (free, held by another command, or no lock file)."""
    try:
        with open(lock_path(ledger_path)) as handle:
            if _locked(handle):
                return None  # free (the lock goes with the file's closing)
            holder = _read(handle.read())
    except OSError:
        return None
    return _describe(holder) if holder.get("command") in STOPPABLE else None


def _why(path: Path, exc: OSError) -> str:
    """What stopped ``path`` being written: a file where a folder should be, or the OS's word."""
    nearest = next((parent for parent in path.parents if parent.exists()), None)
    if nearest is not None and not nearest.is_dir():
        return f"{nearest} is a file, not a folder"
    return str(exc.strerror or exc)


def _locked(handle: IO[str], within: float = 0.0) -> bool:
    """Whether the lock was taken, trying until ``within`` seconds have passed: ``flock``
    itself cannot wait for a while only."""
    deadline = time.monotonic() + within
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _read(text: str) -> dict[str, Any]:
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    try:
        return f"pid {holder['pid']}, `{holder['command']}` started at {holder['started_at']}"
    except KeyError:
        return "holder unknown"


def _signalled(holder: dict[str, Any]) -> bool:
    """Whether SIGTERM reaches the holder and stops it cleanly: a batch command, on this
    machine (the ledger may sit on a shared disk: its pid means nothing here), in a program
    that handles the signal."""
    return (
        holder.get("command") in STOPPABLE
        and holder.get("host") == socket.gethostname()
        and holder.get("stops_on_sigterm") is True
        and isinstance(holder.get("pid"), int)
    )


def _how_to_stop(holder: dict[str, Any]) -> str:
    return f" (Ctrl-C where it runs, or `kill {holder['pid']}`)" if _signalled(holder) else ""


def _stop(holder: dict[str, Any]) -> str | None:
    """Send the holder SIGTERM when it is a batch that stops cleanly on it, and describe it;
    None for another `cancel`, which is only waited for. Raises :class:`LedgerLockedError`
    for a batch that cannot be stopped from here."""
    if holder["command"] == "cancel":
        return None
    if not _signalled(holder):
        where = (
            f"on {holder['host']}"
            if holder.get("host") not in (None, socket.gethostname())
            else "in a program that does not stop on SIGTERM (a notebook, a thread)"
        )
        raise LedgerLockedError(
            f"the ledger is in use by another batchrunner ({_describe(holder)}) {where}, "
            "which cannot be stopped from here; stop it there, then try again"
        )
    logger.warning(
        "stopping the batch that holds the ledger (%s) first: it buys nothing more and keeps "
        "what it sent",
        _describe(holder),
    )
    try:
        os.kill(holder["pid"], signal.SIGTERM)
    except ProcessLookupError:
        pass  # it has just ended: the lock is free
    except PermissionError:
        raise LedgerLockedError(
            f"the ledger is in use by another batchrunner ({_describe(holder)}) of another "
            "user, which cannot be stopped from here; stop it, then try again"
        ) from None
    return _describe(holder)
