"""Every error batchrunner raises, and the exit code each one ends a command with.

The tree::

    BatchrunnerError                 base; never raised itself
    ├── UsageError                   bad option, missing key, unwritable folder       (exit 2)
    │   └── ManifestError            the manifest has problems; carries every one     (exit 2)
    ├── LedgerError                  not a batchrunner ledger, newer schema, corrupt  (exit 2)
    │   └── LedgerLockedError        another runner holds the ledger                  (exit 3)
    ├── TransitionError              a job state change the state machine forbids     (bug)
    ├── ProviderError                raised by the queue client (``client.py``)
    │   ├── TransientError           retryable: 429, ingress 502/503/504, connect errors,
    │   │   │                        a 200 whose body is not JSON          (a request error)
    │   │   ├── RateLimitedError     429; carries ``retry_after`` seconds when the server said
    │   │   └── StreamNotOfferedError  the status stream answered 404/405 or not as events:
    │   │                            the job is polled instead (``streams.py``)
    │   ├── FinalError               not retryable: 404/422, content policy, an app error with
    │   │   │                        a ``detail``; the job fails with ``detail`` (a job error)
    │   │   └── ResultExpiredError   the result is gone (404 after completion): job ``expired``
    │   ├── RunError                 trouble with the whole account or network: the run stops
    │   │   │                        submitting, follows what is in flight, exits 69 (a run error)
    │   │   ├── KeyRefusedError      401/403: the API refused the key (polls stop too)
    │   │   ├── AccountLockedError   403 "User is locked" / 402: no billable calls until fixed
    │   │   ├── UnreachableError     no connection to the API for longer than a short bound,
    │   │   │                        or its TLS certificate does not verify (polls stop too)
    │   │   ├── OutputUnwritableError  the disk under --out is full or read-only
    │   │   ├── RepeatedFailureError   the first jobs to end all failed alike, none succeeding
    │   │   │                          (or the first submits were all 404: the base URL)
    │   │   └── MediaUnreachableError  the last downloads all failed alike
    │   └── AmbiguousSubmitError     a submit may have reached the server but no answer came
    │                                back; the job becomes ``unknown``, never resubmitted silently
    └── DownloadError                a video could not be fetched or verified: retried by the
                                     next run, or, when ``permanent``, job ``download_failed``

The CLI turns a :class:`BatchrunnerError` into one readable line and ``exit_code``.
Messages never contain the API token (the client never puts it in one).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class ExitCode(enum.IntEnum):
    """Process exit codes: the one home of these numbers (README lists them)."""

    OK = 0  # every job done
    JOBS_NOT_DONE = 1  # the run finished but some jobs are failed, cancelled or unknown
    USAGE = 2  # bad usage, invalid manifest, unusable ledger; nothing submitted
    LOCKED = 3  # the ledger is in use by another run
    RUN_STOPPED = 69  # key refused / account locked / API or media unreachable / disk full / ...
    NOT_FINISHED = 75  # stopped early on purpose (budget, --max-runtime); run again later
    HANGUP = 129  # SIGHUP: the terminal or ssh session closed
    INTERRUPTED = 130  # SIGINT
    TERMINATED = 143  # SIGTERM


# How a second Ctrl-C leaves a run that is stopping (:mod:`batchrunner.runtime`): the CLI sets
# ``os._exit`` (the ledger is committed, nothing to flush); a library caller keeps None and
# gets KeyboardInterrupt. Here rather than in runtime so the CLI sets it without loading a run.
leave_at_once: Callable[[int], object] | None = None


class BatchrunnerError(Exception):
    """Base of every batchrunner error."""

    exit_code: ExitCode = ExitCode.USAGE


class UsageError(BatchrunnerError):
    """The user asked for something that cannot work (raised before anything is sent)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest, located as precisely as the format allows."""

    message: str
    row: int | None = None  # 1-based data row (the header is not a row)
    line: int | None = None  # 1-based line in the file, for line-based formats
    column: str | None = None
    value: object = None
    severity: str = "error"  # "error" or "warning"
    cell: str | None = None  # a workbook's cell, as Excel names it: "D7"

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.cell is not None:
            where.append(f"cell {self.cell}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        prefix = ", ".join(where)
        value = "" if self.value is None else f" (got {_short(self.value)})"
        return f"{prefix}: {self.message}{value}" if prefix else f"{self.message}{value}"


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def counted(number: int, noun: str) -> str:
    """``1 job``, ``2 jobs``: a number and what it counts, for messages (regular plurals)."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


class ManifestError(UsageError):
    """The manifest cannot be run; ``problems`` lists every error found, not only the first.

    Its message is the :attr:`summary` line, then the first :data:`SHOWN` errors, one a line,
    as a traceback in a notebook shows it; the CLI prints every problem, then the summary."""

    SHOWN = 10

    def __init__(self, source: str, problems: Sequence[Problem]):
        self.source = source
        self.problems = list(problems)
        # what became of the jobs already bought meanwhile (batchrunner.batch.run_manifest)
        self.meanwhile: str | None = None
        errors = [p for p in self.problems if p.severity == "error"]
        self.summary = f"{source}: {counted(len(errors), 'problem')}; nothing was submitted"
        lines = [f"  {problem}" for problem in errors[: self.SHOWN]]
        if len(errors) > self.SHOWN:
            lines.append(f"  ... and {len(errors) - self.SHOWN} more (every one in .problems)")
        super().__init__("\n".join([self.summary, *lines]))


class LedgerError(BatchrunnerError):
    """The ledger file cannot be used as it is; it is never overwritten."""


class LedgerLockedError(LedgerError):
    """Another batchrunner process is running on this ledger."""

    exit_code = ExitCode.LOCKED


class LedgerUnwritableError(LedgerError):
    """The ledger's disk refuses writes (full, read-only, failing). Nothing may be done that
    the ledger cannot record, so the run stops at once."""

    exit_code = ExitCode.RUN_STOPPED


class TransitionError(BatchrunnerError):
    """A job was asked to move between states the state machine does not connect (a bug), or
    from a state it is no longer in (another process moved it: ``cancel`` beside a run)."""


class ProviderError(BatchrunnerError):
    """Raised by the queue client; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class TransientError(ProviderError):
    """Worth retrying after a pause: throttling, ingress failures, dropped connections."""


class RateLimitedError(TransientError):
    """The provider answered 429; ``retry_after`` is its Retry-After in seconds, if given."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message, status=429)
        self.retry_after = retry_after


class StreamNotOfferedError(TransientError):
    """The status stream is not served here (404/405, or an answer that is not events)."""


class FinalError(ProviderError):
    """Retrying cannot help; the job fails with this message (the server's ``detail``)."""


class ResultExpiredError(FinalError):
    """The provider no longer holds the result (about an hour after completion)."""


class RequestGoneError(FinalError):
    """The provider no longer knows an accepted request (its records are kept a while): it may
    have been made, and billed, without its result ever being fetched."""


class RunError(ProviderError):
    """No job can go on: the key, the account or the network. The run stops submitting.

    ``follow_in_flight``: whether jobs already at the provider can still be polled and fetched
    (a locked fal account still answers status and result calls).
    """

    follow_in_flight = False
    exit_code = ExitCode.RUN_STOPPED


class KeyRefusedError(RunError):
    """The API answered 401/403 to the key itself."""


class AccountLockedError(RunError):
    """The account may not start billable work: locked, out of balance (403/402)."""

    follow_in_flight = True


class UnreachableError(RunError):
    """The API could not be reached for longer than the bound (or TLS would not verify)."""


class RedirectedError(RunError):
    """The API answered with a redirect, which is never followed (the key would go with it):
    a base URL that is not the API's own (``http`` where it serves ``https``, a moved path, a
    web site). No job can go on; a submit redirected made no job there, and the jobs at the
    provider are followed by the run after the fix."""


class OutputUnwritableError(RunError):
    """The videos' folder takes no more: its disk is full, or it became read-only or not ours
    to write. Every later download would fail the same way, so no more jobs are bought; those
    at the provider are still followed and their results stored, to download next run."""

    follow_in_flight = True


class RepeatedFailureError(RunError):
    """The first jobs to end all failed the same way, none succeeding: a cause of the run (the
    manifest, the model's entry, the account), not of each job. No more are bought (a failure
    may be billed: content-policy refusals can be); those at the provider are followed.

    ``submits_not_found``: the failures were the run's first submits, all answered 404 with
    none accepted: the base URL (a wrong path), or a model the provider does not serve. No
    job was created, so none is failed: they stay pending for the run after the fix."""

    follow_in_flight = True

    def __init__(self, message: str, *, submits_not_found: bool = False):
        super().__init__(message, status=404 if submits_not_found else None)
        self.submits_not_found = submits_not_found


class MediaUnreachableError(RunError):
    """The last downloads of a run all failed the same way, none succeeding since: the media
    host is out of reach (a firewall, a proxy, DNS) or refuses every file. The jobs are paid
    for and their results kept; no more are bought, those at the provider are followed."""

    follow_in_flight = True


class AmbiguousSubmitError(ProviderError):
    """The submit may have created a paid job, but its answer never arrived (the message says
    how; the run adds what it may mean and what sends it again)."""


class DownloadError(BatchrunnerError):
    """A video could not be downloaded or did not verify; the result stays for a later try.

    ``permanent``: trying again cannot help (not an http(s) URL, gone from the media host, a
    size that disagrees again after a fresh download): the job ends ``download_failed``.
    """

    def __init__(
        self, message: str, *, permanent: bool = False, disk: bool = False, cause: str = ""
    ):
        super().__init__(message)
        self.permanent = permanent
        self.disk = disk  # the device is full or read-only: a cause of the run, not the job
        # what failed, the same for every file that fails alike: "<host>: ConnectError",
        # "<host>: answered 403" ("" when the file itself is the trouble: gone, cut, unplayable)
        self.cause = cause
