"""What people see: progress bars while a run works, one summary line when it ends."""

from __future__ import annotations

import io
import os
import shlex
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from batchrunner.errors import ExitCode, counted
from batchrunner.jobs import Job, now
from batchrunner.ledger import Ledger
from batchrunner.states import NEEDS_ATTENTION, JobState

if TYPE_CHECKING:
    from batchrunner.answers import QueueStatus

DEFAULT_LEDGER = "batchrunner.db"
REASONS_SHOWN = 3


@dataclass(frozen=True)
class Summary:
    """The outcome of a command that ran jobs, and the exit code it implies."""

    total: int
    counts: dict[str, int]
    spend_usd: float
    billed_usd: float = 0.0  # what the provider reported billing (x-fal-billable-units)
    billed_jobs: int = 0
    submitted: int = 0  # submits this run sent (those whose answer was lost too)
    unanswered: int = 0  # of them, the ones left unknown
    downloaded: int = 0
    run_spend_usd: float = 0.0  # what this run committed (its submits' estimated cost)
    exit_code: int = 0
    stopped: str | None = None  # why the run stopped early, when it did
    exit_reason: str = "all done"  # one phrase: what the exit code means this time
    reasons: list[str] = field(default_factory=list)  # the first few distinct job errors
    next_command: str | None = None  # what to type next, when something is left to do
    ledger: str = DEFAULT_LEDGER
    run_id: int | None = None
    finished_at: str = ""
    gallery: str | None = None  # the review page written at the end (batchrunner.gallery)
    # by state: jobs the latest manifest no longer has, never sent or ended short of done
    left_alone: dict[str, int] = field(default_factory=dict)
    rows: str | None = None  # the rows the last run's manifest was cut to (--rows): the others

    @classmethod
    def from_ledger(
        cls,
        ledger: Ledger,
        *,
        submitted: int = 0,
        unanswered: int = 0,
        downloaded: int = 0,
        stopped: tuple[ExitCode, str] | None = None,
        next_command: str | None = None,
        unsent: Counter[str] | None = None,
    ) -> Summary:
        counts = {state.value: n for state, n in ledger.counts().items()}
        total = sum(counts.values())
        left_alone = {state.value: n for state, n in ledger.left_alone().items()}
        if stopped is not None:
            code = stopped[0]
        elif counts.get(JobState.DONE.value, 0) + sum(left_alone.values()) == total:
            code = ExitCode.OK
        else:
            code = ExitCode.JOBS_NOT_DONE
        errors: dict[str, list[str]] = {}  # the reason -> its jobs
        refused = True  # every failed job's request was refused a field of its own input
        for job in ledger.in_sheet(NEEDS_ATTENTION):
            if job.error:
                errors.setdefault(job.error, []).append(job.job_id)
            if job.state is JobState.FAILED:
                refused = refused and _refused_field(job)
        by_jobs = sorted(errors.items(), key=lambda item: -len(item[1]))  # most common first
        billed, billed_jobs = ledger.billed()
        path = str(ledger.path)
        return cls(
            total=total,
            counts=counts,
            spend_usd=ledger.spend(),
            billed_usd=billed,
            billed_jobs=billed_jobs,
            submitted=submitted,
            unanswered=unanswered,
            downloaded=downloaded,
            run_spend_usd=ledger.run_spend() if submitted else 0.0,
            exit_code=int(code),
            stopped=stopped[1] if stopped else None,
            exit_reason=_exit_reason(code, _minus(counts, left_alone)),
            reasons=[
                *(
                    f"{n} x not sent: {why}" if n > 1 else f"not sent: {why}"
                    for why, n in (unsent or Counter()).most_common()
                ),
                *(_whose(error, jobs) for error, jobs in by_jobs),
            ][:REASONS_SHOWN],
            next_command=next_command
            or (
                _UNSENT_NEXT
                if unsent
                else _next_command(code, _minus(counts, left_alone), path, refused)
            ),
            ledger=path,
            left_alone=left_alone,
            rows=ledger.rows_taken() if left_alone else None,
            run_id=ledger.run_id,
            finished_at=now(),
        )

    def line(self) -> str:
        order = [s.value for s in JobState]
        parts = [f"{self.counts[s]} {s}{self._aside(s)}" for s in order if self.counts.get(s)]
        line = (
            f"{counted(self.total, 'job')}: {', '.join(parts) or 'none'}; "
            f"this run submitted {self.submitted}{self._committed()}, "
            f"downloaded {self.downloaded}; "
            f"estimated spend ${self.spend_usd:,.2f}"
        )
        if self.billed_jobs:
            line += (
                f", billed ${self.billed_usd:,.2f} ({counted(self.billed_jobs, 'job')} reported)"
            )
        if self.gallery:
            line += f"\nreview: {self.gallery}"
        return line if self.stopped is None else f"stopped early: {self.stopped}\n{line}"

    def _aside(self, state: str) -> str:
        """`` (3 left alone: their rows were deleted, never sent)`` after a state's count."""
        n = self.left_alone.get(state, 0)
        if not n:
            return ""
        if self.rows:
            why = f"outside --rows {self.rows}"
        else:
            why = "its row was deleted" if n == 1 else "their rows were deleted"
        return f" ({n} left alone: {why}{', never sent' if state == 'pending' else ''})"

    def attention(self) -> str:
        """For stderr when the run is not all done: what happened, why, and what to type."""
        lines = [self.line(), *(f"  {reason}" for reason in self.reasons)]
        if self.next_command:
            lines.append(f"next: {self.next_command}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _committed(self) -> str:
        lost = f"{self.unanswered} of them unknown: the answer was lost" if self.unanswered else ""
        said = [f"${self.run_spend_usd:,.2f}" if self.run_spend_usd else "", lost]
        return f" ({'; '.join(part for part in said if part)})" if any(said) else ""


def _minus(counts: dict[str, int], left_alone: dict[str, int]) -> dict[str, int]:
    """``counts`` without the jobs left alone: what still needs the user."""
    return {s: n - left_alone.get(s, 0) for s, n in counts.items() if n > left_alone.get(s, 0)}


def _whose(error: str, jobs: list[str], named: int = 3) -> str:
    """A reason with the jobs it ended: ``shot-03: prompt: …``, ``4 x prompt: … (shot-01,
    shot-04, shot-09 and 1 more)``, so the morning mail says which rows to look at."""
    if len(jobs) == 1:
        return f"{jobs[0]}: {error}"
    more = f" and {len(jobs) - named} more" if len(jobs) > named else ""
    return f"{len(jobs)} x {error} ({', '.join(jobs[:named])}{more})"


def _exit_reason(code: ExitCode, counts: dict[str, int]) -> str:
    if code == ExitCode.OK:
        return "all done"
    if code != ExitCode.JOBS_NOT_DONE:
        return {
            ExitCode.NOT_FINISHED: "stopped early (budget or --max-runtime)",
            ExitCode.INTERRUPTED: "interrupted (SIGINT)",
            ExitCode.TERMINATED: "stopped (SIGTERM)",
            ExitCode.HANGUP: "stopped (SIGHUP: its terminal closed)",
            ExitCode.RUN_STOPPED: "stopped: the API refused the key, the account is locked, "
            "the API is unreachable, a disk is full, or the first jobs all failed alike",
        }.get(code, f"stopped ({code.name.lower()})")
    waiting = [s for s in counts if s not in (JobState.DONE, *NEEDS_ATTENTION) and counts[s]]
    needs = [s for s in NEEDS_ATTENTION if counts.get(s)]
    return "jobs need attention: " + ", ".join(f"{counts[s]} {s}" for s in [*needs, *waiting])


_UNSENT_NEXT = (
    "put the input files back as they were checked (or run the manifest again), then the same "
    "command: the jobs kept pending are sent then"
)


def ledger_option(path: str) -> str:
    """`` --ledger PATH`` unless PATH is the default ledger in the current folder."""
    return "" if path == DEFAULT_LEDGER else f" --ledger {shlex.quote(path)}"


def _refused_field(job: Job) -> bool:
    """Whether the provider refused one of the job's own fields (``prompt: ... flagged by a
    content checker``, ``image_url: ...``): the same request fails again; its row needs an
    edit, not a retry."""
    field, colon, _ = (job.error or "").partition(":")
    return bool(colon) and field.split(".")[0] in job.input


def _next_command(
    code: ExitCode, counts: dict[str, int], path: str, refused: bool = False
) -> str | None:
    """What to type next; ``refused``: every failed job's request was refused a field of its
    own (:func:`_refused_field`)."""
    if code == ExitCode.OK:
        return None
    where = ledger_option(path)
    if code == ExitCode.RUN_STOPPED:
        return None  # the stop line says what to fix and to run the same command again
    if code == ExitCode.JOBS_NOT_DONE:
        if counts.get(JobState.UNKNOWN):
            return (
                f"check your provider's dashboard, then `batchrunner retry --unknown{where}` "
                f"(or `batchrunner cancel{where} JOB_ID`)"
            )
        if counts.get(JobState.DOWNLOAD_FAILED):
            return f"`batchrunner retry --downloads{where}` (fetches again; buys nothing)"
        if counts.get(JobState.FAILED) and refused:
            return (
                "fix the failed rows in the sheet (the provider refused what they ask: "
                f"`batchrunner status{where}`), then run the same command: a fixed row is sent "
                "as edited"
            )
        if counts.get(JobState.FAILED):
            return f"`batchrunner status{where}` to see why, then `batchrunner retry{where}`"
        if counts.get(JobState.EXPIRED):
            return f"`batchrunner retry --expired{where}` to buy them again"
        if counts.get(JobState.CANCELLED):
            return f"`batchrunner retry --cancelled{where}` to submit them again"
    # not "or the same run command": a run starts its --run-budget afresh, resume counts on
    return (
        f"`batchrunner resume{where}` to carry on (the same run command does too, as a new "
        "run: a --run-budget starts again)"
    )


class Progress:
    """Three tqdm bars on stderr (submitted / completed / downloaded), only on a terminal. The
    "submitted" one ends with what this run has committed (``$24.00``), the "completed" one
    with what the provider says of the jobs in flight (their status streams and polls): how
    many wait in its queue and the first one's place, how many run, and the latest log line
    of a job: ``queued 12 (next at position 3), running 8: …``."""

    STAGES = ("submitted", "completed", "downloaded")
    SAID_EVERY = 0.5  # seconds: the provider's word is redrawn at most this often
    LOG_CHARS = 40  # of the latest log line

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.bars: dict[str, tqdm[Any]] = {}
        # job in flight → (waiting in the queue, its place there when the provider says)
        self._places: dict[str, tuple[bool, int | None]] = {}
        self._log = ""
        self._said_at = 0.0

    def start(self, total: int) -> None:
        if not self.enabled or not total:
            return
        # a terminal that says it is 0 × 0 (a container's before it is sized, some editors'
        # shells) would get no bars at all: 80 × 24 instead
        unsized = _columns(self.stream) == 0
        width, height = (80, 24) if unsized else (None, None)
        for position, stage in enumerate(self.STAGES):
            self.bars[stage] = tqdm(
                total=total,
                desc=f"{stage:>10}",
                unit=" jobs",
                ncols=width,
                nrows=height,
                position=position,
                file=self.stream,
                leave=True,
            )

    def __call__(self, stage: str) -> None:
        bar = self.bars.get(stage)
        if bar is not None:
            bar.update(1)

    def spent(self, usd: float) -> None:
        """What this run has committed so far (:class:`~batchrunner.scheduler.SpendObserver`)."""
        bar = self.bars.get("submitted")
        if bar is not None:
            bar.set_postfix_str(f"${usd:,.2f}", refresh=False)

    def status(self, job_id: str, status: QueueStatus) -> None:
        """A job's status, as its stream or a poll gave it (:class:`~batchrunner.scheduler.
        StatusObserver`)."""
        bar = self.bars.get("completed")
        if bar is None:
            return
        if status.status == "COMPLETED":
            self._places.pop(job_id, None)
        else:
            self._places[job_id] = (status.status == "IN_QUEUE", status.queue_position)
        for entry in reversed(status.logs or ()):
            message = str(entry.get("message") or "").strip()
            if message:
                self._log = message.splitlines()[0]
                break
        moment = time.monotonic()
        if moment - self._said_at >= self.SAID_EVERY or not self._places:
            self._said_at = moment
            bar.set_postfix_str(self.said(), refresh=True)

    def said(self) -> str:
        """``queued 12 (next at position 3), running 8: Rendering…``"""
        queued = [place for waiting, place in self._places.values() if waiting]
        running = len(self._places) - len(queued)
        known = [place for place in queued if place is not None]
        nearest = ""
        if known:  # fal counts from 0: the job that starts next
            nearest = " (next in line)" if min(known) == 0 else f" (next at position {min(known)})"
        parts = [f"queued {len(queued)}{nearest}"] if queued else []
        parts += [f"running {running}"] if running else []
        text = ", ".join(parts)
        if self._log and self._places:
            log = self._log
            log = log if len(log) <= self.LOG_CHARS else log[: self.LOG_CHARS - 1] + "…"
            text += f": {log}"
        return text

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _columns(stream: TextIO) -> int | None:
    """How wide the terminal ``stream`` writes to says it is; None when it is no terminal."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None
