"""How a run writes to the ledger while it goes: the transitions of many tasks in one commit
(:class:`GroupCommit`), and a big manifest's new jobs a chunk at a time while the first ones are
sent (:class:`Recording`). Both go through :meth:`Ledger.transitions` and
:meth:`Ledger.insert`; neither keeps job state of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel

from batchrunner.errors import TransitionError
from batchrunner.jobs import Job, Move, NewJob, order_key
from batchrunner.ledger import Ledger
from batchrunner.states import JobState


class GroupCommit:
    """Transitions of a run's many tasks, committed together: one transaction and one
    ``fdatasync`` for every transition asked in the same turn of the event loop, and each
    caller still returns only once its own is durable (``committed before acting``).

    The first caller leads: it lets the loop turn while other tasks keep joining its batch
    (each task joins at most once, as it then waits, so this ends), then makes the batch with
    :meth:`Ledger.transitions`; the others wait for that. Neither wait can be cancelled, as a
    plain :meth:`Ledger.transition` cannot be interrupted: a result or a request id that
    arrived is always recorded. At concurrency 200 on near-instant jobs a commit carries about
    four moves: one commit a job instead of four (and the loop stops for an ``fdatasync`` a
    quarter as often).

    A budget check counts the submit intents still gathering (:attr:`reserved_usd`), so a
    reservation holds from the moment it is asked.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._gathering: _Batch | None = None
        self.batches = 0  # commits made, for tests and figures
        self.moves = 0

    @property
    def reserved_usd(self) -> float:
        """What the submit intents waiting for the next commit reserve: spend that
        :meth:`Ledger.spend` does not count yet."""
        batch = self._gathering
        if batch is None:
            return 0.0
        return sum(
            move.fields.get("cost_usd") or 0.0
            for move in batch.moves
            if move.new is JobState.SUBMITTING
        )

    async def transition(
        self,
        job_id: str,
        new: JobState,
        *,
        detail: str | None = None,
        expect: JobState | Iterable[JobState] | None = None,
        **fields: Any,
    ) -> Job:
        """:meth:`Ledger.transition`, committed with the other moves of this turn."""
        batch = self._gathering
        lead = batch is None
        if batch is None:
            batch = self._gathering = _Batch()
        index = len(batch.moves)
        batch.moves.append(Move(job_id, new, detail, expect, fields))
        if lead:
            joined = -1
            while joined != len(batch.moves):  # while others join, let the loop turn again
                joined = len(batch.moves)
                await anyio.lowlevel.cancel_shielded_checkpoint()
            self._gathering = None
            try:
                batch.outcomes = self.ledger.transitions(batch.moves)
            except BaseException as exc:
                batch.error = exc
                raise
            finally:
                self.batches += 1
                self.moves += len(batch.moves)
                batch.done.set()
        else:
            with anyio.CancelScope(shield=True):
                await batch.done.wait()
            if batch.error is not None:
                raise batch.error  # what a plain transition of this move would have raised
        outcome = batch.outcomes[index]
        if isinstance(outcome, TransitionError):
            raise outcome
        return outcome


@dataclass
class _Batch:
    moves: list[Move] = field(default_factory=list)
    outcomes: list[Job | TransitionError] = field(default_factory=list)
    error: BaseException | None = None
    done: anyio.Event = field(default_factory=anyio.Event)


class _InManifest(Protocol):
    """What :class:`Recording` needs of a planned job to put it in manifest order."""

    @property
    def row(self) -> int | None: ...
    @property
    def variant(self) -> str: ...
    @property
    def job_id(self) -> str: ...


Planned = TypeVar("Planned", bound=_InManifest)


class Recording(Generic[Planned]):
    """New jobs written to the ledger a chunk at a time, in manifest order, while the run
    submits the ones already written: a 100,000-row manifest starts within a second of being
    validated instead of after all of it is recorded.

    Each chunk is committed (pending) before any of its jobs can be sent
    (:meth:`written`); the whole manifest was validated before the first chunk. A stop does
    not cut the writing short: a later ``resume`` finds every job of the manifest. The
    planned jobs become :class:`NewJob` (``to_job``) a chunk at a time too, as they are written.
    """

    CHUNK = 1_000  # jobs per transaction: about 15 ms, so the workers are never held up long

    def __init__(
        self, ledger: Ledger, planned: Sequence[Planned], to_job: Callable[[Planned], NewJob]
    ):
        self.ledger = ledger
        keyed = sorted((order_key(p.row, p.variant, p.job_id), p) for p in planned)
        self.keys = [key for key, _ in keyed]  # unique: they end with the job id
        self.planned = [p for _, p in keyed]
        self.to_job = to_job
        self.count = 0  # jobs committed so far
        self._more = anyio.Event()

    async def write(self) -> None:
        size = max(1, self.CHUNK // 16)  # the first submits need a few turns of the loop
        with anyio.CancelScope(shield=True):
            while self.count < len(self.planned):
                chunk = self.planned[self.count : self.count + size]
                self.ledger.insert([self.to_job(p) for p in chunk])
                self.count += len(chunk)
                self._more.set()
                self._more = anyio.Event()
                # a moment (not a bare yield) for the workers to carry their submits through
                # the several turns of the loop a request takes, before the next chunk holds it
                await anyio.sleep(0.002)
                size = min(2 * size, self.CHUNK)

    async def written(self, index: int) -> None:
        """Return once the job of ``self.keys[index]`` is committed."""
        while self.count <= index:
            await self._more.wait()
