"""The media check in processes of its own: :func:`batchrunner.verify.inspect` run by
``python -m batchrunner.inspector`` workers, one JSON line each way per clip.

::

    download ──► Inspectors.inspect ──► a worker, lent for one clip ──► Inspection
                   │ (at most ``size`` at once)   │ pipes: request line → answer line
                   │                               ├─ crashes: DownloadError, the file is kept
                   │                               └─ hangs past CHECK_SECONDS: killed, the same
                   └─ no worker can start here (Windows, a frozen app): in a thread

Why a process and not a thread:

* **CPU.** In a thread, decoding shares the GIL and the CPU's caches with the event loop: inside
  a run at concurrency 200 a check cost about 3 ms a clip against 1.8 ms alone, with 23–25
  context switches a job. In a worker it costs what it costs alone, on the other core. Whole
  runs of 2,000 near-instant jobs at concurrency 200, both processes counted, alternating in one
  sitting: 15.3 against 15.7 s of CPU (medians of 5; 3–10 % less in slower sittings), a third
  of the context switches, and the run's own process at 79 MB instead of 124 (a worker: 47 MB).
* **A file a server sent cannot take the run down.** FFmpeg parses it. A decoder that crashes
  or hangs on one ends its worker, not the run: that job keeps its result and its file, and
  says why (``resume`` checks it again); a fresh worker takes the next clip.

Workers are started when a run begins (:meth:`Inspectors.warm`: their imports overlap the first
submits), lent one clip at a time, kept between runs of one process, and ended when it exits
(their stdin closed, then waited for). A worker also ends by itself when the process that
started it is gone (its stdin closes), and ignores SIGINT and SIGTERM, which a terminal or a
service manager sends the whole group: the run decides how to stop.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from batchrunner import verify
from batchrunner.errors import DownloadError
from batchrunner.models import ModelSpec
from batchrunner.verify import Expected, Inspection, UnplayableError

logger = logging.getLogger(__name__)

CHECK_SECONDS = 300.0  # a check that takes longer is a decoder that hangs (a 4k clip: < 1 s)
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)
# The worker imports this very batchrunner (a scratch copy, a checkout on sys.path), and takes
# its folder off sys.path again so that nothing else is shadowed by it.
_BOOT = (
    "import sys; sys.path.insert(0, {dir!r}); import batchrunner.inspector as i; "
    "sys.path.remove({dir!r}); i.main()"
)


def checking_processes(downloads: int) -> int:
    """How many workers a run checks with: one per download at once, leaving the run's own
    process a core (a check is milliseconds; a clip takes minutes to make)."""
    return max(1, min(downloads, (os.cpu_count() or 2) - 1))


def worker_argv() -> list[str]:
    """The command a worker runs."""
    return [sys.executable, "-c", _BOOT.format(dir=_PACKAGE_DIR)]


class WorkerGone(Exception):
    """The worker ended before it answered."""


class _Worker:
    """One worker process and its two pipes, asked one clip at a time."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.process = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdin is not None and self.process.stdout is not None
        self._requests = self.process.stdin
        self._answers = self.process.stdout.fileno()
        os.set_blocking(self._answers, False)
        self._read = b""

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        try:  # a request is far smaller than the pipe, which the worker empties before answering
            self._requests.write(json.dumps(request).encode() + b"\n")
            self._requests.flush()
        except OSError as exc:  # BrokenPipeError: it has ended
            raise WorkerGone(self._how_it_ended()) from exc
        while (end := self._read.find(b"\n")) < 0:
            await anyio.wait_readable(self._answers)
            try:
                chunk = os.read(self._answers, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                raise WorkerGone(self._how_it_ended())
            self._read += chunk
        line, self._read = self._read[:end], self._read[end + 1 :]
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _how_it_ended(self) -> str:
        code = self.process.wait()
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    def close(self, *, wait: float = 5.0) -> None:
        """End it: stdin closed (it leaves when it has read everything), killed if it lingers."""
        with contextlib.suppress(OSError):
            self._requests.close()
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._close_pipes()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class _Idle:
    """Workers not lent out, shared by every run of this process (a run's limit is its own)."""

    def __init__(self) -> None:
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.warned = False  # that no worker could start

    def take(self, argv: Sequence[str]) -> _Worker | None:
        """An idle worker that runs ``argv``, else a new one (None: none can start here)."""
        gone = []
        with self._lock:
            for index in range(len(self._workers) - 1, -1, -1):
                worker = self._workers[index]
                if worker.argv != argv:
                    continue
                del self._workers[index]
                if worker.process.poll() is None:
                    return worker
                gone.append(worker)  # ended while idle (the OOM killer?): not this clip's doing
        for worker in gone:
            worker.kill()
        return self.start(argv)

    def start(self, argv: Sequence[str]) -> _Worker | None:
        """A new worker, or None where none can start: the clip is then checked in a thread."""
        if os.name == "nt" or getattr(sys, "frozen", False):
            return None  # Windows' event loops cannot wait on a pipe; a frozen app has no -c
        try:
            return _Worker(argv)
        except OSError as exc:  # tried again for the next clip: the cause may pass
            if not self.warned:
                self.warned = True
                logger.warning("media checks run in a thread: cannot start a worker (%s)", exc)
            return None

    def give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.append(worker)

    def count(self, argv: Sequence[str]) -> int:
        with self._lock:
            return sum(worker.argv == argv for worker in self._workers)

    def close_all(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()

    def forget_after_fork(self) -> None:
        """In a forked child: the workers are the parent's. Its copies of their pipes are
        closed (a worker still open in a child would not see its stdin end with the parent),
        and the lock is new (another thread may have held it at the fork)."""
        for worker in self._workers:
            worker._close_pipes()
        self._workers = []
        self._lock = threading.Lock()


_IDLE = _Idle()
atexit.register(_IDLE.close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_IDLE.forget_after_fork)


class Inspectors:
    """Checks a run's clips in workers, at most ``size`` at once (the rest wait their turn)."""

    def __init__(self, size: int, argv: Sequence[str] | None = None) -> None:
        self.size = max(1, size)
        self.argv = list(argv) if argv is not None else worker_argv()
        self._limiter: anyio.CapacityLimiter | None = None  # made in the run's event loop

    def warm(self) -> None:
        """Start a worker now if none is idle, so the first clip does not wait for its
        imports (about a quarter of a second)."""
        if _IDLE.count(self.argv) == 0 and (worker := _IDLE.start(self.argv)) is not None:
            _IDLE.give_back(worker)

    async def check(
        self, spec: ModelSpec, payload: Mapping[str, Any], path: Path, poster: Path | None
    ) -> Inspection:
        """A downloaded clip checked against its job's request (:func:`verify.expected_of`).

        Raises :class:`~batchrunner.verify.UnplayableError` after removing ``path``, so the
        next run downloads it again."""
        try:
            return await self.inspect(path, verify.expected_of(spec, payload), poster)
        except UnplayableError:
            path.unlink(missing_ok=True)
            raise

    async def inspect(self, path: Path, expected: Expected, poster: Path | None) -> Inspection:
        """:func:`batchrunner.verify.inspect` in a worker.

        Raises :class:`~batchrunner.verify.UnplayableError` as it does, and
        :class:`~batchrunner.errors.DownloadError` when the worker crashed, hung or failed on the
        file (the file is kept: nothing shows it is not the video)."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.size)
        async with self._limiter:
            worker = _IDLE.take(self.argv)
            if worker is None:
                return await anyio.to_thread.run_sync(verify.inspect, path, expected, poster)
            request = {  # absolute: the worker's folder is the one it was started in
                "path": os.path.abspath(path),
                "expected": vars(expected),  # not asdict(), which copies deeply: 6 µs, not 0.1
                "poster": None if poster is None else os.path.abspath(poster),
            }
            answered = False
            try:
                with anyio.fail_after(CHECK_SECONDS):
                    answer = await worker.ask(request)
                answered = True
            except TimeoutError:
                raise DownloadError(
                    f"the media check of {path.name} did not finish in {CHECK_SECONDS:g} s; "
                    "the file is kept"
                ) from None
            except WorkerGone as gone:
                raise DownloadError(
                    f"the media check crashed on {path.name} ({gone}); the file is kept"
                ) from None
            finally:
                if answered:
                    _IDLE.give_back(worker)
                else:  # cancelled, hung or gone: its answer may still come, to the next clip
                    worker.kill()
        for name, level, message in answer.get("logs", ()):
            logging.getLogger(name).log(level, message)
        if "unplayable" in answer:
            raise UnplayableError(answer["unplayable"])
        if "failed" in answer:
            raise DownloadError(f"the media check of {path.name} failed: {answer['failed']}")
        saved = None if answer["poster"] is None else str(poster)  # as the caller named it
        return Inspection(answer["media"], answer["warnings"], saved)


# ---------------------------------------------------------------------- the worker's side


class _Kept(logging.Handler):
    """What the check logs, sent back with the answer for the run's own log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))

    def take(self) -> list[tuple[str, int, str]]:
        records, self.records = self.records, []
        return records


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer each request line with one line, until ``requests`` ends."""
    kept = _Kept()
    checks = logging.getLogger(verify.__name__)
    checks.addHandler(kept)
    checks.setLevel(logging.INFO)
    checks.propagate = False
    for line in requests:
        ask = json.loads(line)
        poster = ask["poster"]
        answer: dict[str, Any]
        try:
            got = verify.inspect(
                Path(ask["path"]), Expected(**ask["expected"]), Path(poster) if poster else None
            )
            answer = {"media": got.media, "warnings": got.warnings, "poster": got.poster}
        except UnplayableError as exc:
            answer = {"unplayable": str(exc)}
        except Exception as exc:  # reported with the clip; the worker goes on to the next
            answer = {"failed": f"{type(exc).__name__}: {exc}"}
        answer["logs"] = kept.take()
        answers.write(json.dumps(answer).encode() + b"\n")
        answers.flush()


def main() -> None:
    """``python -m batchrunner.inspector``: requests on stdin, answers on stdout."""
    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else prints to stdout goes to stderr, not among the answers
    serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
