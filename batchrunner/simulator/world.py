"""The simulated queue: jobs and how they move through time.

A job waits ``IN_QUEUE`` for its queue time, runs ``IN_PROGRESS`` for its run time, and ends
``COMPLETED`` — successfully, or carrying an ``error_type`` (there is no FAILED status). With a
``capacity``, at most that many jobs run at once; a job whose queue time is over waits for a free
slot, and free slots go to the earliest-submitted waiting job (FIFO).

Nothing runs in the background: :meth:`World.advance` replays every start, finish and timeout
that happened up to "now" in time order, so each request sees a consistent queue computed from
the monotonic clock, and the in-flight/running peaks are exact. :class:`World` is not
thread-safe; :class:`~batchrunner.simulator.state.Simulator` holds the lock around it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from .clips import MediaShape

IN_QUEUE = "IN_QUEUE"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"

# error_type values a job can end with (None: success)
CONTENT_POLICY = "content_policy_violation"
CANCELLED = "request_cancelled"
TIMED_OUT = "request_timeout"

# Logged at these fractions of a job's run (the message shows the percentage).
_PROGRESS_MARKS = (0.25, 0.5, 0.75)


@dataclass(eq=False)
class Job:
    """One submitted request. Times are on the monotonic clock of the running process."""

    request_id: str
    endpoint_id: str
    body: dict[str, Any]
    seq: int  # submit order: FIFO key
    submitted_at: float
    ready_at: float  # end of its queue time; it starts then or when a slot frees up
    run_seconds: float
    policy_violation: bool = False  # decided at submit (prompt marker), revealed at the end
    deadline: float | None = None  # X-Fal-Request-Timeout: must have started by then
    started_at: float | None = None
    ended_at: float | None = None
    error_type: str | None = None
    shape: MediaShape = field(default_factory=MediaShape)  # its video (decided at submit)

    @property
    def status(self) -> str:
        if self.ended_at is not None:
            return COMPLETED
        return IN_QUEUE if self.started_at is None else IN_PROGRESS

    @property
    def owner_app(self) -> str:
        """``fal-ai/veo3`` for ``fal-ai/veo3/image-to-video``: the prefix of request URLs."""
        return "/".join(self.endpoint_id.split("/")[:2])

    @property
    def prompt(self) -> str | None:
        prompt = self.body.get("prompt")
        return prompt if isinstance(prompt, str) else None

    @property
    def succeeded(self) -> bool:
        return self.ended_at is not None and self.error_type is None

    def log_events(self, now: float) -> list[tuple[float, str, str]]:
        """``(time, level, message)`` for what the job has logged by ``now``."""
        if self.started_at is None:
            if self.error_type is None:
                return []
            return [(self.ended_at or now, "ERROR", _ERROR_MESSAGES[self.error_type])]
        events = [(self.started_at, "INFO", "Starting video generation")]
        end = self.ended_at if self.ended_at is not None else now
        for mark in _PROGRESS_MARKS:
            at = self.started_at + mark * self.run_seconds
            if at <= end and (self.ended_at is None or at < self.ended_at):
                events.append((at, "INFO", f"Generating video: {round(mark * 100)}%"))
        if self.ended_at is not None:
            if self.error_type is None:
                events.append((self.ended_at, "INFO", "Video generation finished"))
            else:
                events.append((self.ended_at, "ERROR", _ERROR_MESSAGES[self.error_type]))
        return events


_ERROR_MESSAGES = {
    CONTENT_POLICY: (
        "The content could not be processed because it contained material flagged by a "
        "content checker."
    ),
    CANCELLED: "Request was cancelled",
    TIMED_OUT: "Request timed out before it started (X-Fal-Request-Timeout)",
}


def error_message(error_type: str) -> str:
    return _ERROR_MESSAGES[error_type]


def _past(job: Job, ttl: float | None, now: float) -> bool:
    return ttl is not None and job.ended_at is not None and now >= job.ended_at + ttl


@dataclass
class World:
    """Every job this simulator knows, and the queue discipline that moves them."""

    capacity: int | None = None
    result_ttl: float | None = None  # the result answers 404 this long after completion
    status_ttl: float | None = None  # the whole request is forgotten this long after completion
    jobs: dict[str, Job] = field(default_factory=dict)
    cursor: float = -math.inf  # everything up to here has been replayed
    max_in_flight: int = 0
    max_running: int = 0
    changed: set[str] = field(default_factory=set)  # ids to persist since the last flush
    _waiting: list[Job] = field(default_factory=list)  # IN_QUEUE, by seq
    _running: list[Job] = field(default_factory=list)

    def load(self, jobs: list[Job], cursor: float) -> None:
        """Adopt jobs from an earlier run (see :mod:`.store`); their clock is already ours."""
        for job in sorted(jobs, key=lambda j: j.seq):
            self.jobs[job.request_id] = job
            if job.ended_at is None:
                (self._waiting if job.started_at is None else self._running).append(job)
        self.cursor = cursor
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_running = max(self.max_running, self.running)

    @property
    def next_seq(self) -> int:
        return max((job.seq for job in self.jobs.values()), default=0) + 1

    @property
    def in_flight(self) -> int:
        return len(self._waiting) + len(self._running)

    @property
    def running(self) -> int:
        return len(self._running)

    def add(self, job: Job, now: float) -> None:
        """Accept a submitted job (call :meth:`advance` to ``now`` first)."""
        self.jobs[job.request_id] = job
        self._waiting.append(job)
        self.changed.add(job.request_id)
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.advance(now)  # a job with no queue time starts at once

    def get(self, request_id: str, now: float) -> Job | None:
        """The job, or None when unknown or forgotten (``status_ttl`` after completion)."""
        job = self.jobs.get(request_id)
        if job is None or _past(job, self.status_ttl, now):
            return None
        return job

    def result_expired(self, job: Job, now: float) -> bool:
        """Whether the result is gone (``result_ttl`` after completion); media stays."""
        return _past(job, self.result_ttl, now) or _past(job, self.status_ttl, now)

    def queue_position(self, job: Job) -> int | None:
        """0-based place among the jobs still waiting, in submit order; None once started."""
        if job.status != IN_QUEUE:
            return None
        return next(i for i, waiting in enumerate(self._waiting) if waiting is job)

    def waiting_ahead(self) -> int:
        """The queue position a job submitted now gets."""
        return len(self._waiting)

    def cancel(self, job: Job, now: float) -> bool:
        """End an unfinished job now with ``request_cancelled``; False if it already ended."""
        if job.ended_at is not None:
            return False
        self._end(job, now, CANCELLED)
        return True

    def advance(self, now: float) -> None:
        """Replay, in time order, every start/finish/timeout due up to ``now``."""
        while True:
            finish_at, finishing = math.inf, cast(Job | None, None)
            for job in self._running:
                assert job.started_at is not None
                if job.started_at + job.run_seconds < finish_at:
                    finish_at, finishing = job.started_at + job.run_seconds, job
            start_at = math.inf
            if self._waiting and (self.capacity is None or len(self._running) < self.capacity):
                start_at = max(self.cursor, min(job.ready_at for job in self._waiting))
            timeout_at, timing_out = math.inf, cast(Job | None, None)
            for job in self._waiting:
                if job.deadline is not None and job.deadline < timeout_at:
                    timeout_at, timing_out = job.deadline, job
            at = min(finish_at, start_at, timeout_at)
            if at > now:
                break
            self.cursor = max(self.cursor, at)
            if finishing is not None and finish_at == at:
                error = CONTENT_POLICY if finishing.policy_violation else None
                self._end(finishing, at, error)
            elif start_at == at:
                ready = next(j for j in self._waiting if j.ready_at <= at)
                self._start(ready, at)
            elif timing_out is not None:
                self._end(timing_out, at, TIMED_OUT)
        self.cursor = max(self.cursor, now)

    def _start(self, job: Job, at: float) -> None:
        self._waiting.remove(job)
        job.started_at = at
        self._running.append(job)
        self.max_running = max(self.max_running, len(self._running))
        self.changed.add(job.request_id)

    def _end(self, job: Job, at: float, error_type: str | None) -> None:
        if job in self._waiting:
            self._waiting.remove(job)
        if job in self._running:
            self._running.remove(job)
        job.ended_at = at
        job.error_type = error_type
        self.changed.add(job.request_id)

    def __iter__(self) -> Iterator[Job]:
        return iter(sorted(self.jobs.values(), key=lambda j: j.seq))
