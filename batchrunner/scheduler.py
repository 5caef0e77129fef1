"""The worker pool: submit, poll, fetch results and download, under limits, from the ledger.

::

    ledger ──► feeder ──(bounded stream)──► N job workers ──(bounded stream)──► K downloaders
               in-flight jobs first,         slot (in flight at provider):       own limit;
               then pending rows             submit → poll → store result        verify, rename

* ``concurrency``: the most jobs at the provider at once (submitted, not yet completed). Each job
  worker holds a slot of an :class:`anyio.CapacityLimiter` from just before its submit until
  the result is stored.
* ``rps``: the most API requests per second overall (the queue client's rate limiter).
* Each job in flight follows its status stream (server-sent events) and its result is fetched
  the moment ``COMPLETED`` arrives. A stream that fails, stalls or is not offered falls back to
  status polling for that job, which adapts to how long jobs have been taking
  (:class:`PollClock`); :class:`~batchrunner.streams.StreamMemory` remembers per origin whether
  streams are worth opening at all.
* The ledger is the only state: workers pass job ids, read the job, act, and record the
  outcome through :meth:`Ledger.transition` before doing anything that depends on it (a job
  whose result was just stored goes to the downloaders as that transition returned it). The
  moves of the hot path (submit intent, request id, running, result, done) go through a
  :class:`~batchrunner.commits.GroupCommit`: the jobs moving in the same turn of the loop share
  one commit, and each worker still waits for it.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import stat
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from batchrunner.adaptive import AdaptiveLimit
from batchrunner.answers import QueueStatus
from batchrunner.client import QueueClient, Submitted, Wire
from batchrunner.commits import GroupCommit, Recording
from batchrunner.connect import SIMULATOR_ORIGIN
from batchrunner.downloader import MediaClient, download
from batchrunner.errors import (
    AmbiguousSubmitError,
    DownloadError,
    FinalError,
    MediaUnreachableError,
    OutputUnwritableError,
    ProviderError,
    RateLimitedError,
    RepeatedFailureError,
    RequestGoneError,
    ResultExpiredError,
    RunError,
    StreamNotOfferedError,
    TransientError,
    TransitionError,
    UsageError,
    counted,
)
from batchrunner.inspector import Inspectors, checking_processes
from batchrunner.jobs import Job, OrderKey, now
from batchrunner.ledger import Ledger
from batchrunner.manifest import LocalFile, materialize
from batchrunner.models import ModelSpec, get_model
from batchrunner.paths import output_path_in, video_name
from batchrunner.reach import Waits
from batchrunner.settings import Settings
from batchrunner.states import AT_PROVIDER, JobState
from batchrunner.streams import StreamMemory
from batchrunner.verify import UnplayableError, media_dir, poster_path

logger = logging.getLogger(__name__)
S = JobState
Item = TypeVar("Item")


SAME_FAILURES_TO_STOP = 5  # the first jobs to end failing alike, none succeeding: stop buying
NOT_SERVED = (404, 405)  # a submit answered so, before any was accepted: nothing served there
SAME_DOWNLOAD_FAILURES_TO_STOP = 3  # the same for downloads (each has had its own retries)
CANCEL_SETTLE_SECONDS = 5.0  # how long jobs asked to stop are watched, together, for their end


async def how_they_end(
    client: QueueClient, jobs: list[Job], *, seconds: float | None = None
) -> dict[str, QueueStatus]:
    """Jobs asked to stop, watched together until each ends or ``seconds`` (default
    :data:`CANCEL_SETTLE_SECONDS`) pass: job id → the status it ended with, for those that
    ended. A cancel answered ``CANCELLATION_REQUESTED`` does not say a job makes nothing: a
    running app need not heed it. Errors from the status requests are the caller's."""
    deadline = anyio.current_time() + (CANCEL_SETTLE_SECONDS if seconds is None else seconds)
    ended: dict[str, QueueStatus] = {}
    pause = 0.1
    while True:
        for job in jobs:
            if job.job_id in ended:
                continue
            assert job.request_id is not None
            status = await client.status(
                job.endpoint, job.request_id, url=job.status_url, logs=False
            )
            if status.done:
                ended[job.job_id] = status
        if len(ended) == len(jobs) or anyio.current_time() + pause > deadline:
            return ended
        await anyio.sleep(pause)
        pause = min(1.0, pause * 2)


@dataclass
class _Cap:
    """A cap on spending (``--budget``, ``--run-budget``) and what is spent against it.

    ``total`` sums the ledger (every job, or this run's), counting neither the intents still
    being committed (the caller adds them) nor anything done elsewhere meanwhile: the run holds
    the ledger. It is summed only when a job might not fit: in between, the last sum plus what
    this run reserved since is an upper bound (a price given back, a refused submit, makes it
    one), so a capped run of many jobs does not sum them all for each submit."""

    flag: str
    limit: float
    total: Callable[[], float]
    spent: float | None = None  # the last sum plus what was reserved since, or None

    def fits(self, price: float, reserved: float) -> bool:
        if self.spent is None or self.spent + price > self.limit + 1e-9:
            self.spent = self.total() + reserved
        return self.spent + price <= self.limit + 1e-9

    def take(self, price: float) -> None:
        assert self.spent is not None  # fits() came first
        self.spent += price


class PollClock:
    """Status-poll intervals that follow how long jobs are taking.

    Until a job has run about as long as finished jobs typically took, it is checked rarely
    (a fraction of the time left); after that, often (a fraction of its age), within
    ``[poll_min, poll_max]``. Typical = an exponentially weighted mean of observed durations.
    """

    def __init__(self, poll_min: float, poll_max: float):
        self.poll_min, self.poll_max = poll_min, poll_max
        self.typical: float | None = None

    def observe(self, seconds: float) -> None:
        self.typical = seconds if self.typical is None else 0.8 * self.typical + 0.2 * seconds

    def interval(self, age: float) -> float:
        if self.typical is not None and age < self.typical:
            wanted = (self.typical - age) / 2
        else:
            wanted = max(age, 1.0) / 10
        return min(self.poll_max, max(self.poll_min, wanted))


@dataclass
class Tally:
    """What this run did (for the summary and tests); the ledger holds the states."""

    submitted: int = 0  # answered with a request id
    unanswered: int = 0  # sent, and their answer lost: unknown (their price is committed)
    submitted_usd: float = 0.0  # the estimated price of the jobs this run submitted
    downloaded: int = 0
    unsent: Counter[str] = field(default_factory=Counter)  # why jobs were kept pending: count


class Observer(Protocol):
    """Watches a run: ``start(total)`` once, then a call per ``submitted`` / ``completed`` /
    ``downloaded`` event (the progress bars are one)."""

    def start(self, total: int) -> None: ...

    def __call__(self, stage: str) -> None: ...


class StatusObserver(Observer, Protocol):
    """An observer that also wants each status a job reports (queue position, logs)."""

    def status(self, job_id: str, status: QueueStatus) -> None: ...


class SpendObserver(Observer, Protocol):
    """An observer that also wants what this run has committed, after each submit."""

    def spent(self, usd: float) -> None: ...


class _Nobody:
    def start(self, total: int) -> None:
        pass

    def __call__(self, stage: str) -> None:
        pass


class Runner:
    """Runs every unfinished job in the ledger to ``done`` (or a final state)."""

    def __init__(
        self,
        ledger: Ledger,
        client: QueueClient,
        media: MediaClient,
        out_dir: Path,
        *,
        origin: str,
        options: Settings | None = None,
        observe: Observer | None = None,
        sending: bool = True,
    ):
        self.ledger = ledger
        self.sending = sending  # False: only follow, fetch and download what was bought
        self.commits = GroupCommit(ledger)  # the hot path's transitions share their commits
        self.client = client
        self.media = media
        self.out_dir = out_dir
        self._root = out_dir.resolve()  # where videos go, resolved once
        self._media = media_dir(ledger.path).resolve()  # posters beside the ledger
        self.origin = origin  # recorded per job: in-flight jobs are only polled where submitted
        self.options = options or Settings()
        self.inspectors = Inspectors(checking_processes(self.options.download_concurrency))
        self._specs: dict[str, ModelSpec] = {}
        self.limit = AdaptiveLimit(self.options.concurrency, on_change=ledger.record_limit)
        # a network that dropped is waited for: the run's row says so while it lasts (`status`)
        self.waits = Waits(ledger.record_wait)
        client.reach.listener = self.waits
        media.listen(self.waits)
        self.at_provider = 0  # our jobs the provider has accepted and not yet finished
        self.clock = PollClock(self.options.poll_min, self.options.poll_max)
        self.streams = StreamMemory(enabled=self.options.streams)
        self.tally = Tally()
        self._observe: Observer = observe or _Nobody()
        self._status_seen = getattr(self._observe, "status", None)
        self._spend_seen = getattr(self._observe, "spent", None)
        self.stopped: str | None = None  # why the run was stopped early, if it was
        self.closed: str | None = None  # why it sends no more jobs (it follows those sent)
        self._caps: list[_Cap] = []  # out_of_budget: the flag of the one a submit would pass
        if self.options.budget is not None:
            self._caps.append(_Cap("--budget", self.options.budget, ledger.spend))
        if self.options.run_budget is not None:  # a resume after a kill: that run's spend too
            self._caps.append(_Cap("--run-budget", self.options.run_budget, ledger.night_spend))
        self.out_of_budget: str | None = None
        self.unaffordable_usd = 0.0  # the price of the job that did not fit
        self.run_error: RunError | None = None  # the key, the account or the network failed
        self._scope: anyio.CancelScope | None = None
        self._submits: set[anyio.CancelScope] = set()
        self._succeeded = False  # a job of this run has had its result stored
        self._priced_low: set[str] = set()  # models billed above their estimate, said once
        # job id → (its queue place, when it last fell): moving up the queue is not being stuck
        self._places: dict[str, tuple[int, float | None]] = {}
        self._failures: Counter[str] = Counter()  # provider failures before any success
        self._accepted = False  # a submit of this run was accepted: the base URL serves it
        # job id → (endpoint, answer) of each submit answered as no queue API answers (404,
        # 405, a page that is not JSON) before any was accepted: _not_the_api
        self._not_found: dict[str, tuple[str, ProviderError]] = {}
        # cause → each job that failed so, with its own failure, since a download succeeded
        self._download_failures: dict[str, list[tuple[str, DownloadError]]] = {}
        self._fetched: set[str] = set()  # jobs whose result this run fetched

    def stop(self, reason: str) -> None:
        """Stop early: no new submits; a submit under way gets ``stop_grace`` to answer (so its
        request id is recorded); polls and downloads end; the ledger keeps everything."""
        if self.stopped is not None:
            return
        self.stopped = reason
        logger.info("stopping: %s", reason)  # the summary tells the user
        self._cut_submits()
        if self._scope is not None:
            self._scope.cancel()

    def close(self, reason: str) -> None:
        """No more submits; jobs already sent are followed to their videos, and the run ends
        when they are (``--max-runtime``: a result left at the provider expires in about an
        hour, before the next run comes). ``reason`` is the run's stop line."""
        if self.closed is None:
            self.closed = reason
            logger.info("sending no more jobs: %s", reason)
            self._cut_submits()

    def _cut_submits(self) -> None:
        """A submit under way gets ``stop_grace`` to answer (so its request id is recorded),
        then is cut off: ambiguous if its POST was out, provably not sent if it was waiting to
        retry a connection that never opened."""
        deadline = anyio.current_time() + self.options.stop_grace
        for scope in self._submits:
            scope.deadline = min(scope.deadline, deadline)

    def halt(self, error: RunError) -> None:
        """A run error: no more submits. Jobs at the provider are still followed when it still
        answers them (a locked account); otherwise the run stops like :meth:`stop`."""
        if self.run_error is None:
            self.run_error = error
            logger.info("run stopped submitting: %s", error)  # the summary says it once
        if not error.follow_in_flight:
            self.stop(str(error))

    # ------------------------------------------------------------------ the whole run

    async def run(self, recording: Recording | None = None) -> Tally:
        """Run every unfinished job, and those ``recording`` writes meanwhile."""
        self.recover()
        in_flight, pending = self._work_list()
        recorded = recording.keys if recording else []
        downloads = self.ledger.job_ids([S.COMPLETED])
        self._observe.start(len(in_flight) + len(pending) + len(recorded) + len(downloads))
        if in_flight or pending or recorded or downloads:
            self.inspectors.warm()
        workers = max(1, self.options.concurrency)
        job_send, job_receive = anyio.create_memory_object_stream[str](workers)
        dl_send, dl_receive = anyio.create_memory_object_stream[Job](
            self.options.download_concurrency
        )
        async with anyio.create_task_group() as tg:
            self._scope = tg.cancel_scope
            for _ in range(self.options.download_concurrency):
                tg.start_soon(self._download_worker, dl_receive.clone())
            for _ in range(workers):
                tg.start_soon(self._job_worker, job_receive.clone(), dl_send.clone())
            job_receive.close()
            dl_receive.close()
            tg.start_soon(_feed, dl_send, self._stored(downloads))
            if recording is not None:
                tg.start_soon(recording.write)
            tg.start_soon(_feed, job_send, _work(in_flight, pending, recording))
        self.settle()
        return self.tally

    def recover(self) -> None:
        """Settle what a previous run left mid-way, before any new work."""
        for job in self.ledger.jobs([S.SUBMITTING]):
            self.ledger.transition(
                job.job_id,
                S.UNKNOWN,
                detail="the previous run stopped during this job's submit",
                error="the run stopped while submitting; the provider may have created (and "
                "billed) this job. Check your provider dashboard, then `retry --unknown` "
                "to submit it again or `cancel` it",
                cost_usd=job.price_usd,
            )
        if self.options.resubmit_unknown:
            for job in self.ledger.jobs([S.UNKNOWN]):
                self.ledger.transition(
                    job.job_id, S.PENDING, detail="resubmit requested by the user", error=None
                )
        for job_id, output_path, size in self.ledger.done_files():
            if not _file_ok(Path(output_path), size):
                self.ledger.transition(
                    job_id, S.COMPLETED, detail="the video file is missing; fetching again"
                )

    def _work_list(self) -> tuple[list[str], list[OrderKey]]:
        """In-flight jobs first (they hold money), then pending rows in manifest order."""
        ids = []
        for job in self.ledger.jobs(AT_PROVIDER):
            if job.origin != self.origin:
                logger.warning(
                    "job %s was submitted to %s, not %s: run with that provider to finish it",
                    job.job_id,
                    job.origin,
                    self.origin,
                )
                continue
            ids.append(job.job_id)
        return ids, self.ledger.sendable_keys() if self.sending else []

    # ------------------------------------------------------------------ job workers

    async def _job_worker(
        self, jobs: ObjectReceiveStream[str], downloads: ObjectSendStream[Job]
    ) -> None:
        async with jobs, downloads:
            async for job_id in jobs:
                job = await self._through_provider(self.ledger.get(job_id))
                if job.state is S.COMPLETED:
                    await downloads.send(job)  # as its result was just stored

    async def _through_provider(self, job: Job) -> Job:
        """Submit (if pending) and see the job to completion, holding a slot meanwhile.

        A 429 on submit gives the slot back, lowers the limit, and waits outside the slot
        before trying again, so a throttled job never blocks others; the number of such waits
        per job is bounded by the retry policy's ``attempts`` (times four).
        """
        policy = self.client.retry
        for attempt in range(1, 4 * policy.attempts + 1):
            error: RateLimitedError | None = None
            async with self.limit.slots:
                if job.state is S.PENDING:
                    try:
                        job = await self._submit(job)
                    except RateLimitedError as throttle:
                        job, error = self.ledger.get(job.job_id), throttle
                        self.limit.throttled(self.at_provider)
                if job.state in AT_PROVIDER:
                    self.at_provider += 1
                    try:
                        job = await self._until_completed(job)
                    finally:
                        self.at_provider -= 1
            if job.state is not S.PENDING or error is None:
                return job
            await anyio.sleep(policy.delay(attempt, error))
        logger.warning("job %s: still throttled after %d tries; left pending", job.job_id, attempt)
        return job

    async def _submit(self, job: Job) -> Job:
        if self.run_error is not None or self.closed is not None:
            return job  # stays pending for the run after the cause is fixed
        try:
            body = materialize(job.input, {k: LocalFile(**v) for k, v in job.files.items()})
        except UsageError as exc:  # a file gone or changed since the manifest was checked
            self.tally.unsent[str(exc)] += 1  # one cause (a folder moved): said once
            logger.info("job %s: not sent: %s", job.job_id, exc)
            return job  # stays pending: the next run sends it once the file is right
        if not self._affordable(job):
            return job
        try:
            job = await self.commits.transition(
                job.job_id,
                S.SUBMITTING,
                expect=S.PENDING,
                detail="submit intent",
                submits=job.submits + 1,
                cost_usd=job.price_usd,  # reserved: from here on the job may be billed
                # a pending job with a cost was sent before and may have been billed for it
                earlier_usd=job.spent_usd,
                billed_usd=None,  # what was billed for an earlier send is in earlier_usd now
                billable_units=None,
                error=None,
            )
        except TransitionError:  # `cancel JOB_ID` beside this run got to it first
            job = self.ledger.get(job.job_id)
            logger.info("job %s: not sent: it is %s", job.job_id, job.state)
            return job
        try:
            answer = await self._submit_shielded(job, body)
        except AmbiguousSubmitError as exc:
            self.tally.unanswered += 1
            unknown = self.ledger.transition(
                job.job_id,
                S.UNKNOWN,
                detail="submit answer lost",
                error=f"{exc}; the provider may have created (and billed) this job. "
                "It will not be resubmitted unless you run `retry --unknown` "
                "(or `run --resubmit-unknown`)",
            )
            if exc.status is not None and 200 <= exc.status < 300 and not self._answered:
                return self._not_the_api(unknown, exc)  # a web page answered: no queue API
            return unknown
        except FinalError as exc:
            if exc.status in NOT_SERVED and not self._answered:
                failed = self.ledger.transition(
                    job.job_id, S.FAILED, detail="submit rejected", error=str(exc), cost_usd=None
                )
                return self._not_the_api(failed, exc)
            self._failed_alike(str(exc))
            return self.ledger.transition(
                job.job_id, S.FAILED, detail="submit rejected", error=str(exc), cost_usd=None
            )
        except RunError as exc:  # refused before any job was made: nothing spent
            self.halt(exc)
            return self.ledger.transition(
                job.job_id, S.PENDING, detail="submit refused", error=None, cost_usd=None
            )
        except TransientError as exc:
            if not isinstance(exc, RateLimitedError):
                logger.warning("job %s: submit gave up for this run: %s", job.job_id, exc)
            self.ledger.transition(
                job.job_id,
                S.PENDING,
                detail="submit not sent",
                error=f"not submitted yet: {exc}",
                cost_usd=None,
            )
            if isinstance(exc, RateLimitedError):
                raise
            return self.ledger.get(job.job_id)
        self.tally.submitted += 1
        self.tally.submitted_usd += job.price_usd or 0.0
        self._accepted = True
        self.limit.succeeded()
        self._observe("submitted")
        if self._spend_seen is not None:
            self._spend_seen(self.tally.submitted_usd)
        return await self.commits.transition(
            job.job_id,
            S.QUEUED,
            detail=f"request {answer.request_id}",
            request_id=answer.request_id,
            origin=self.origin,
            status_url=answer.status_url,
            response_url=answer.response_url,
            cancel_url=answer.cancel_url,
            queue_position=answer.queue_position,
            submitted_at=now(),
        )

    def _affordable(self, job: Job) -> bool:
        """Whether submitting ``job`` keeps the spend within ``--budget`` (the ledger's) and
        ``--run-budget`` (this run's).

        Called right before the submit intent is asked of the group commit, with no ``await``
        in between, so the check and the reservation (``cost_usd`` set with the intent) cannot
        interleave with another worker's: the caps hold at any concurrency. Once a job does
        not fit, no further job is submitted in this run (in-flight ones finish).
        """
        if not self._caps:
            return True
        if self.out_of_budget is not None:
            return False
        price = job.price_usd or 0.0
        reserved = self.commits.reserved_usd
        for cap in self._caps:
            if not cap.fits(price, reserved):
                self.out_of_budget, self.unaffordable_usd = cap.flag, price
                logger.info("%s reached: $%.2f spent of $%.2f", cap.flag, cap.spent, cap.limit)
                return False
        for cap in self._caps:
            cap.take(price)
        return True

    async def _submit_shielded(self, job: Job, body: dict[str, Any]) -> Submitted:
        """A stop does not interrupt a POST under way (so its answer gets recorded: the
        ledger write after it cannot be cancelled either), except after ``stop_grace``
        seconds; a submit cut off then is ambiguous if its POST was out, and provably not sent
        if it was not (it was waiting to retry a connection that never opened)."""
        wire = Wire()
        with anyio.CancelScope(shield=True), anyio.CancelScope() as grace:
            if self.stopped is not None:
                grace.deadline = anyio.current_time() + self.options.stop_grace
            self._submits.add(grace)
            try:
                return await self.client.submit(
                    job.endpoint, body, retry_throttled=False, wire=wire
                )
            finally:
                self._submits.discard(grace)
        if not wire.busy:
            raise TransientError("the run stopped before this submit was sent")
        raise AmbiguousSubmitError("the run stopped while this submit awaited its answer")

    async def _until_completed(self, job: Job) -> Job:
        """Follow the job until it completes (then fetch its result), fails or is overdue.

        First by its status stream, when the origin is worth trying; if the stream fails,
        stalls or is not offered, by polling: at once (the job may have completed meanwhile),
        then at :class:`PollClock` intervals. A job already overdue when it is taken up is
        polled at once, not cancelled unseen. Every state change goes through the ledger.
        """
        assert job.request_id is not None
        if self.stopped is not None:
            return job  # a stop ends following jobs; the next run polls this one again
        poll_now, verdict_pending = False, False
        if self._overdue(job):
            # overdue as it is taken up: a run resumed long after the job was sent (a laptop
            # closed, a process killed). It has most likely finished: ask once before judging it
            poll_now = True
        elif self.streams.worth_trying(self.origin):
            job, status, why = await self._watch_stream(job)
            if status is not None:
                self.streams.completed(self.origin)
                self.clock.observe(_seconds_since(job.submitted_at))
                return await self._fetch_result(job, status)
            if job.state not in AT_PROVIDER or (self.run_error and not self._following()):
                return job  # failed, halted, or the run is stopping
            if why == "not offered":
                verdict_pending = True  # a poll that answers proves the stream is the problem
            elif why not in ("stopped", "overdue") and self.client.reach.failing_since is None:
                self.streams.failed(self.origin, why)  # not while nothing connects: an outage
            # a fresh status before anything else, an overdue job's too: it may have finished
            # unseen (a laptop asleep wakes to its timers before the events it missed)
            poll_now = True
        while True:
            if not poll_now:
                await anyio.sleep(self.clock.interval(_seconds_since(job.submitted_at)))
            poll_now = False
            assert job.request_id is not None
            try:
                status = await self.client.status(job.endpoint, job.request_id, url=job.status_url)
            except RequestGoneError as exc:  # accepted, maybe made and billed: not "failed"
                return self._expired(job, exc, "unknown at the provider", "may have been made and")
            except FinalError as exc:
                return self._fail(job, job.state, str(exc))
            except TransientError as exc:
                return self._unreachable(job, exc)
            except RunError as exc:
                self.halt(exc)
                return job  # still at the provider: the next run follows it
            if verdict_pending:
                self.streams.not_offered(self.origin)
                verdict_pending = False
            job = await self._saw(job, status)
            if status.status == "COMPLETED":
                self.clock.observe(_seconds_since(job.submitted_at))
                return await self._fetch_result(job, status)
            overdue = self._overdue(job)
            if overdue:
                return await self._give_up(job, overdue)

    def _following(self) -> bool:
        return self.run_error is not None and self.run_error.follow_in_flight

    async def _saw(self, job: Job, status: QueueStatus) -> Job:
        """Record what a status says about the job (it started running, it moved up the queue)
        and show it."""
        place = status.queue_position
        if status.status == "IN_QUEUE" and place is not None:
            before = self._places.get(job.job_id)
            moved = time.time() if before is not None and place < before[0] else None
            self._places[job.job_id] = (place, moved or (before[1] if before else None))
        elif status.status != "IN_QUEUE":
            self._places.pop(job.job_id, None)
        if status.status == "IN_PROGRESS" and job.state is S.QUEUED:
            job = await self.commits.transition(job.job_id, S.RUNNING, started_at=now())
        if self._status_seen is not None:
            self._status_seen(job.job_id, status)
        return job

    async def _watch_stream(self, job: Job) -> tuple[Job, QueueStatus | None, str]:
        """Follow the job's status stream: ``(job, the COMPLETED status, "")``, or ``(job,
        None, why)`` when the stream did not get that far — ``"not offered"``, ``"overdue"``
        (the queue or run timeout passed while streaming), ``"stopped"`` (a run error), or
        what went wrong with it. Transitions seen on the way are recorded as they arrive."""
        assert job.request_id is not None
        with anyio.move_on_after(self._until_overdue(job)) as timer:
            try:
                async with self.client.status_stream(
                    job.endpoint,
                    job.request_id,
                    url=job.status_url,
                    stall=self.options.stream_stall,
                ) as events:
                    first = anyio.current_time() + self.options.stream_stall
                    async for status in events:
                        if status is None:
                            if anyio.current_time() > first:  # comments, but never a status
                                return job, None, "the stream sent no status"
                            continue
                        first = math.inf
                        job = await self._saw(job, status)
                        # running now (the run timeout applies), or moved up the queue
                        timer.deadline = anyio.current_time() + self._until_overdue(job)
                        if status.status == "COMPLETED":
                            return job, status, ""
                return job, None, "the stream ended before COMPLETED"
            except StreamNotOfferedError:
                return job, None, "not offered"
            except (TransientError, FinalError) as exc:
                logger.info("job %s: status stream failed (%s); polling", job.job_id, exc)
                return job, None, str(exc)
            except RunError as exc:
                self.halt(exc)
                return job, None, "stopped"
        return job, None, "overdue"

    def _until_overdue(self, job: Job) -> float:
        """Seconds until :meth:`_overdue` would fire for the job as it is now (a moment after)."""
        if job.state is S.QUEUED:
            left = self.options.queue_timeout - self._queued_still(job)
        else:
            left = self.options.run_timeout - _seconds_since(job.started_at)
        return max(0.0, left) + 0.01

    def _queued_still(self, job: Job) -> float:
        """Seconds the job has waited in the queue without moving up: since it was sent, or
        since its place last fell (seen by this run). A job waiting its turn behind the
        account's others (fal queues work over the account's concurrency) is not stuck."""
        waited = _seconds_since(job.submitted_at)
        moved = self._places.get(job.job_id, (0, None))[1]
        return waited if moved is None else min(waited, time.time() - moved)

    def _overdue(self, job: Job) -> str | None:
        if job.state is S.QUEUED:
            waited, limit, what = (
                self._queued_still(job),
                self.options.queue_timeout,
                "queued",
            )
        else:
            waited, limit, what = (
                _seconds_since(job.started_at),
                self.options.run_timeout,
                "running",
            )
        if waited <= limit:
            return None
        still = " without moving up" if what == "queued" else ""
        return f"{what} for {waited:.0f} s{still}, longer than the {what} timeout of {limit:.0f} s"

    async def _give_up(self, job: Job, reason: str) -> Job:
        """Cancel a stuck job at the provider and watch how it ends (:func:`how_they_end`): a
        running app need not heed a cancel, and a video it still makes is paid for. Failed with
        the reason once the provider says it is cancelled; its result fetched when it completed
        anyway; left in flight, for the next run to follow, while it is still going."""
        assert job.request_id is not None
        try:
            answer = await self.client.cancel(job.endpoint, job.request_id, url=job.cancel_url)
            if answer == "NOT_FOUND":
                return self._fail(job, job.state, f"{reason}; unknown at the provider (404)")
            ended = (await how_they_end(self.client, [job])).get(job.job_id)
        except FinalError as exc:
            return self._fail(job, job.state, f"{reason}; cancel failed: {exc}")
        except TransientError as exc:
            logger.warning(
                "job %s: %s; could not cancel it (%s): it stays %s",
                job.job_id,
                reason,
                exc,
                job.state,
            )
            return job
        except RunError as exc:
            self.halt(exc)
            return job
        if ended is None:
            logger.warning(
                "job %s: %s; cancel requested, but it is still %s at the provider: the next "
                "run follows it to its end",
                job.job_id,
                reason,
                job.state,
            )
            return job
        if ended.error_type == "request_cancelled":
            return self._fail(job, job.state, f"{reason}; cancelled at the provider ({answer})")
        logger.warning(
            "job %s: %s, but it completed before the cancel took effect: its result is fetched "
            "(it is paid for)",
            job.job_id,
            reason,
        )
        return await self._fetch_result(job, ended)

    def _expired(self, job: Job, exc: FinalError, detail: str, billed: str) -> Job:
        """``job`` gone from the provider after it was accepted (its result, or the request
        itself): ``expired``, saying it ``billed`` ("was probably") billed, and how to buy it
        again."""
        logger.warning("job %s: %s", job.job_id, exc)
        return self.ledger.transition(
            job.job_id,
            S.EXPIRED,
            expect=job.state,
            detail=detail,
            error=f"{exc}. It {billed} billed; `batchrunner retry --expired` buys it again",
        )

    async def _fetch_result(self, job: Job, status: QueueStatus) -> Job:
        assert job.request_id is not None
        try:
            answer = await self.client.result(job.endpoint, job.request_id, url=job.response_url)
        except RunError as exc:
            self.halt(exc)
            return job  # completed at the provider: the next run fetches the result
        except ResultExpiredError as exc:
            return self._expired(job, exc, "result expired", "was probably")
        except FinalError as exc:
            reason = str(exc)
            if status.error and status.error not in reason:
                reason = f"{status.error}: {reason}"
            if status.error_type == "request_cancelled":
                return self.ledger.transition(
                    job.job_id, S.CANCELLED, detail="cancelled at the provider", error=reason
                )
            return self._fail(job, job.state, reason)
        except TransientError as exc:
            return self._unreachable(job, exc)
        spec = self._spec(job.endpoint)
        result, units = answer.output, answer.billable_units
        billing: dict[str, Any] = {}
        if units is not None:
            billing["billable_units"] = units
            billing["billed_usd"] = spec.price.billed(job.input, units) if spec.price else None
        above = (billing.get("billed_usd") or 0.0) - (job.cost_usd or 0.0)
        if above >= 0.005 and job.endpoint not in self._priced_low:
            self._priced_low.add(job.endpoint)
            logger.warning(
                "%s was billed $%.2f for job %s, estimated at $%.2f: the registry's price for "
                "it looks out of date (`batchrunner models price %s RULE` sets it); budgets "
                "count what is billed, but later jobs are still reserved at the estimate",
                job.endpoint,
                billing["billed_usd"],
                job.job_id,
                job.cost_usd or 0.0,
                job.endpoint,
            )
        media = result.get(spec.output_field)
        if not isinstance(media, dict) or not media.get("url"):
            reason = status.error or f"the result has no {spec.output_field}.url"
            failed = self._fail(job, job.state, reason, result=result, **billing)
            self._billed_above(above)
            return failed
        self._observe("completed")
        self._succeeded = True
        self._fetched.add(job.job_id)
        size = media.get("file_size")
        stored = {
            "detail": "result stored",
            "result": result,
            **billing,
            "video_url": media["url"],
            "file_size": size if isinstance(size, int) else None,
            "completed_at": now(),
            "queue_position": None,
        }
        if above > 0:  # committed at once, for the next submit's budget check to count it
            completed = self.ledger.transition(job.job_id, S.COMPLETED, **stored)
            self._billed_above(above)
            return completed
        return await self.commits.transition(job.job_id, S.COMPLETED, **stored)

    def _billed_above(self, usd: float) -> None:
        """The provider billed a job ``usd`` more than its estimate (committed already): the
        budget caps' running sums count it, as the ledger's spend now does."""
        if usd > 0:
            for cap in self._caps:
                if cap.spent is not None:
                    cap.spent += usd

    def _unreachable(self, job: Job, exc: TransientError) -> Job:
        """The retry budget ran out while polling. A server that keeps answering 200 with an
        unreadable body fails the job (with those bytes in the reason); a network or gateway
        outage leaves it in flight for the next run, which polls it again."""
        if exc.status is not None and 200 <= exc.status < 300:
            return self._fail(job, job.state, str(exc))
        logger.warning("job %s: provider unreachable (%s); it stays %s", job.job_id, exc, job.state)
        return job

    def _fail(self, job: Job, expect: JobState, reason: str, **fields: Any) -> Job:
        logger.info("job %s failed: %s", job.job_id, reason)
        self._failed_alike(reason)
        return self.ledger.transition(
            job.job_id, S.FAILED, expect=expect, detail="failed", error=reason, **fields
        )

    def _failed_alike(self, reason: str) -> None:
        """The provider failed a job. When the first :data:`SAME_FAILURES_TO_STOP` jobs to end
        all failed with this very reason and none succeeded, the cause is the run's (a field the
        model no longer takes, a prompt template that trips its checker every time): no more
        jobs are bought, rather than hundreds failed one by one."""
        if self._succeeded:
            return
        self._failures[reason] += 1
        if self._failures[reason] >= SAME_FAILURES_TO_STOP:
            shown = f"the first {self._failures[reason]} jobs to end all failed the same way"
            self.halt(RepeatedFailureError(f"{shown}: {reason}"))

    @property
    def _answered(self) -> bool:
        """Whether the API has answered this run as a queue API does: a submit accepted, or a
        result stored."""
        return self._accepted or self._succeeded

    def _not_the_api(self, job: Job, exc: ProviderError) -> Job:
        """A submit answered as no queue API answers, before any was accepted: 404 or 405
        (nothing served at that path: a reseller's path mistyped, or a model the provider does
        not serve), or a page that is not JSON (a web site's address, a sign-in page). When the
        first :data:`SAME_FAILURES_TO_STOP` submits were all answered so (or every submit of a
        smaller batch: :meth:`settle`), the cause is the base URL's: no more are sent, and
        those answered so go back to ``pending``, as do any answered so after; no queue
        created a job for them. ``job`` is as it was recorded (failed, or unknown)."""
        halted = self.run_error
        if isinstance(halted, RepeatedFailureError) and halted.submits_not_found:
            return self._not_served_after_all(job)
        self._not_found[job.job_id] = (job.endpoint, exc)
        if len(self._not_found) < SAME_FAILURES_TO_STOP:
            return job
        self._stop_not_served(job.endpoint)
        return self.ledger.get(job.job_id)

    def settle(self) -> None:
        """At the end of a run: every submit it sent was answered as no queue API answers,
        but fewer than :data:`SAME_FAILURES_TO_STOP` (a first try with ``--rows 1``): the same
        verdict as when that many were (:meth:`_not_the_api`)."""
        ended = self.run_error is None and self.stopped is None and self.closed is None
        if self._not_found and not self._answered and ended:
            self._stop_not_served(next(reversed(self._not_found.values()))[0])

    def _stop_not_served(self, endpoint: str) -> None:
        answers = [exc for _, exc in self._not_found.values()]
        codes = sorted({exc.status for exc in answers if exc.status is not None})
        said = {404: "404 (not found)", 405: "405 (method not allowed)"}
        how = " or ".join(said.get(code, f"{code} with a page that is not JSON") for code in codes)
        endpoints = sorted({endpoint for endpoint, _ in self._not_found.values()})
        served = f" and that the provider serves {endpoints[0]}" if len(endpoints) == 1 else ""
        first = "the first " if len(self._not_found) >= SAME_FAILURES_TO_STOP else "all "
        error = RepeatedFailureError(
            f"the API at {self.client.api.base_url} answered {how} to {first}"
            f"{counted(len(self._not_found), 'submit')}, none accepted ({answers[-1]}): "
            f"check the base URL (--base-url; each submit went to "
            f"{self.client.submit_url(endpoint)}){served}",
            submits_not_found=True,
        )
        self.halt(error)
        if self.run_error is not error:
            return  # another cause stopped the run first: these failures stand
        for earlier in self._not_found:
            self._not_served_after_all(self.ledger.get(earlier))

    def _not_served_after_all(self, job: Job) -> Job:
        """``job``, answered as no queue API answers, back to ``pending``: nothing was made."""
        if job.state is S.UNKNOWN:
            self.tally.unanswered -= 1
        return self.ledger.transition(
            job.job_id,
            S.PENDING,
            expect=job.state,
            detail="submit not served: the base URL's trouble, not the job's",
            error=None,
            cost_usd=None,
        )

    def _downloads_failed_alike(self, job_id: str, exc: DownloadError) -> None:
        """A download failed (after its own retries). When the last
        :data:`SAME_DOWNLOAD_FAILURES_TO_STOP` downloads of this run's results all failed for
        one cause, none succeeding since, the media host is out of reach or refuses every file
        (from the start, or since it went down): no more jobs are bought (each a video nobody
        could fetch), and no more downloads tried. The cause is the run's, not the files':
        those it marked ``download_failed`` are put back to ``completed``, so that the same
        command fetches every one once the host answers. Only results fetched by this run
        count: a few old ones whose files are lost for good must not stop every later run
        from buying."""
        if isinstance(self.run_error, MediaUnreachableError) or job_id not in self._fetched:
            return
        alike = self._download_failures.setdefault(exc.cause, [])
        alike.append((job_id, exc))
        if len(alike) < SAME_DOWNLOAD_FAILURES_TO_STOP:
            return
        self.halt(
            MediaUnreachableError(f"the last {len(alike)} downloads all failed alike ({exc})")
        )
        for earlier, failed in alike[:-1] if exc.permanent else ():
            self.ledger.transition(
                earlier,
                S.COMPLETED,
                expect=S.DOWNLOAD_FAILED,
                detail="download failed: the media host's trouble, not the file's",
                # its own failure, naming its own URL: the cause alone is shared
                error=f"download failed (the result is kept; `resume` retries): {failed}",
            )

    # ------------------------------------------------------------------ downloads

    def _spec(self, endpoint: str) -> ModelSpec:
        """The endpoint's registry entry, looked up once a run (a lookup scans the user's model
        folder)."""
        spec = self._specs.get(endpoint)
        if spec is None:
            spec = self._specs[endpoint] = get_model(endpoint, allow_unregistered=True)
        return spec

    async def _download_worker(self, downloads: ObjectReceiveStream[Job]) -> None:
        async with downloads:
            async for job in downloads:
                await self._download(job)

    async def _stored(self, job_ids: list[str]) -> AsyncIterator[Job]:
        """The jobs of ``job_ids``, each read when it is its turn."""
        for job_id in job_ids:
            yield self.ledger.get(job_id)

    def _unplayable(self, job_id: str) -> bool:
        """Whether ``job_id``'s file did not decode as a video :data:`UNPLAYABLE_TRIES` times
        now (this one too): a download that would fail every run, kept ``completed`` for
        ``resume`` to fetch again each time, and exit 1 every night, ends as
        ``download_failed``."""
        earlier = sum(e["detail"] == NOT_A_VIDEO for e in self.ledger.events(job_id))
        return earlier + 1 >= UNPLAYABLE_TRIES

    async def _download(self, job: Job) -> None:
        assert job.video_url is not None
        if isinstance(self.run_error, OutputUnwritableError | MediaUnreachableError):
            return  # stays completed, its result stored: the summary says why, once
        spec = self._spec(job.endpoint)
        name = video_name(job.job_id, job.row, job.output_name, spec.default_extension)
        saved: Path | None = None  # where the download put the file, before its check
        try:
            path = output_path_in(self._root, name)
            url = job.video_url
            if self.origin == SIMULATOR_ORIGIN:  # a simulator of an earlier run had another port
                url = self.client.rebase(url)
            mine = job.output_path == str(path)  # saved by this job: cut or emptied since
            got = await download(self.media, url, path, expected_size=job.file_size, mine=mine)
            saved = got.path
            poster = poster_path(self._media, job.job_id)
            checked = await self.inspectors.check(spec, job.input, got.path, poster)
        except (DownloadError, ValueError) as exc:  # UnplayableError too: the file is removed
            if isinstance(exc, DownloadError) and exc.disk:
                self.halt(OutputUnwritableError(str(exc)))  # every later download would fail
            elif isinstance(exc, DownloadError) and _not_a_folder(self._root):
                self.halt(  # moved away and a file put in its place: so would every other
                    OutputUnwritableError(
                        f"{self._root} is a file now, not the videos' folder: move it away "
                        "(the results are kept; the same command downloads them)"
                    )
                )
            else:
                logger.warning("job %s: %s", job.job_id, exc)
                if isinstance(exc, DownloadError) and exc.cause:
                    self._downloads_failed_alike(job.job_id, exc)
            out_of_reach = isinstance(self.run_error, MediaUnreachableError)
            if isinstance(exc, UnplayableError) and self._unplayable(job.job_id):
                exc.permanent = True  # the same bytes, fetch after fetch: not a video, for good
            if isinstance(exc, DownloadError) and exc.permanent and not out_of_reach:
                self.ledger.transition(
                    job.job_id,
                    S.DOWNLOAD_FAILED,
                    detail="download failed for good",
                    error=f"the video was paid for but cannot be downloaded: {exc} (the result "
                    "is kept; `batchrunner retry --downloads` tries again without buying it again)",
                )
                return
            kept: dict[str, Any] = {}
            if saved is not None and saved.exists():  # its check crashed: the next run checks it
                kept["output_path"] = str(saved)
            self.ledger.transition(
                job.job_id,
                S.COMPLETED,
                detail=NOT_A_VIDEO if isinstance(exc, UnplayableError) else "download failed",
                error=f"download failed (the result is kept; `resume` retries): {exc}",
                **kept,
            )
            return
        self.tally.downloaded += 1
        self._download_failures.clear()  # the host answers: a streak of failures ends
        self._observe("downloaded")
        await self.commits.transition(
            job.job_id,
            S.DONE,
            detail="video verified" if got.fetched else "verified file already present",
            output_path=str(got.path),
            bytes=got.bytes,
            sha256=got.sha256,
            done_at=now(),
            error=None,
            **checked.fields(),
        )
        for warning in checked.warnings:
            logger.warning("job %s: the video differs from the request: %s", job.job_id, warning)


async def _feed(send: ObjectSendStream[Item], items: AsyncIterator[Item]) -> None:
    async with send:
        async for item in items:
            await send.send(item)


async def _work(
    in_flight: list[str], pending: list[OrderKey], recording: Recording | None
) -> AsyncIterator[str]:
    """The jobs to run: in flight first, then pending ones in manifest order, counting those
    ``recording`` writes, each only once it is committed."""
    for job_id in in_flight:
        yield job_id
    recorded = recording.keys if recording else []
    stored = ((key, -1) for key in pending)
    for key, index in heapq.merge(stored, ((key, i) for i, key in enumerate(recorded))):
        if recording is not None and index >= 0:
            await recording.written(index)
        yield key[-1]


def _seconds_since(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    then = datetime.fromisoformat(stamp)
    return max(0.0, (datetime.now(then.tzinfo) - then).total_seconds())


def _file_ok(path: Path, size: int | None) -> bool:
    try:
        found = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(found.st_mode) and (size is None or found.st_size == size)


NOT_A_VIDEO = "not a video"  # the event of a download whose file does not decode
UNPLAYABLE_TRIES = 3  # downloads of a file that does not decode before it is given up


def _not_a_folder(path: Path) -> bool:
    """Whether ``path`` (or a folder above it) is something other than a folder now."""
    for part in (path, *path.parents):
        if part.exists():
            return not part.is_dir()
    return False
