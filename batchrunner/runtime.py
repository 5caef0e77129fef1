"""A run while it runs: the worker pool under its watchers, and why it stopped.

:func:`execute` runs the ledger's unfinished jobs with a :class:`~batchrunner.scheduler.Runner`
and the watchers that stop it early — SIGINT/SIGTERM, ``--max-runtime`` — then turns the outcome
into a :class:`~batchrunner.report.Summary`. Every stop reason is decided here, in one place:
a run error (exit 69), a signal (130/143), ``--max-runtime`` or ``--budget`` (75).

Library code never ends the process: a second Ctrl-C calls :data:`batchrunner.errors.leave_at_once`
if the CLI set it (``os._exit``: the ledger is committed, nothing to flush), else raises
KeyboardInterrupt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import signal
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from importlib.util import find_spec
from typing import TypeVar

import anyio

from batchrunner import errors
from batchrunner.commits import Recording
from batchrunner.connect import connect
from batchrunner.downloader import MediaClient
from batchrunner.errors import (
    AccountLockedError,
    ExitCode,
    KeyRefusedError,
    MediaUnreachableError,
    OutputUnwritableError,
    RedirectedError,
    RepeatedFailureError,
    RunError,
    counted,
)
from batchrunner.gallery import write_after_run
from batchrunner.ledger import Ledger, unwritable
from batchrunner.pricing import cents_up
from batchrunner.providers import ApiConfig
from batchrunner.report import Summary, ledger_option
from batchrunner.scheduler import Observer, Runner
from batchrunner.settings import Settings
from batchrunner.states import AT_PROVIDER, JobState
from batchrunner.transport import proxy_shown

T = TypeVar("T")
logger = logging.getLogger(__name__)


class Interrupt:
    """A Ctrl-C the thread waiting for a batch beside its event loop received (a notebook's
    "interrupt the kernel"): signals reach only the main thread, so the batch's own loop, on a
    worker thread, hears of it through here and stops as it does on SIGINT (exit 130)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], object]] = []
        self.received = False

    def listen(self, hook: Callable[[], object]) -> Callable[[], None]:
        """Call ``hook`` on the interrupt (at once if it came already); returns the undoing."""
        with self._lock:
            self._hooks.append(hook)
            came = self.received
        if came:
            hook()
        return lambda: self._forget(hook)

    def _forget(self, hook: Callable[[], object]) -> None:
        with self._lock:
            self._hooks.remove(hook)

    def fire(self) -> None:
        with self._lock:
            self.received = True
            hooks = list(self._hooks)
        for hook in hooks:
            hook()


# the interrupt of the thread a batch runs beside (None on the main thread: signals come in)
INTERRUPT: contextvars.ContextVar[Interrupt | None] = contextvars.ContextVar(
    "batchrunner_interrupt", default=None
)


def beside_a_loop(fn: Callable[[], T]) -> T:
    """``fn()``, on a thread of its own when this thread runs an event loop (a notebook's: a
    batch's own loop cannot start inside it, and blocking it is the caller's choice).

    Ctrl-C while it waits stops the batch as Ctrl-C stops one on the main thread, and
    ``fn``'s answer (the run's summary, exit 130) is returned; a second one leaves at once. It
    comes as a KeyboardInterrupt (a notebook's "interrupt the kernel"), or as the cancelling
    of the task this is called in (``asyncio.run``'s own SIGINT handler). The whole batch ran
    to its end before either was heard."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    task = asyncio.current_task()
    interrupt, context = _heard_through()
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batchrunner")
    try:
        future = pool.submit(context.run, fn)
        while True:
            try:
                # a task's cancel is only seen by looking: now and then, while it waits
                concurrent.futures.wait([future], timeout=None if task is None else 0.1)
                if future.done():
                    return future.result()
                if task is not None and task.cancelling() and not interrupt.received:
                    interrupt.fire()
            except KeyboardInterrupt:
                if interrupt.received:
                    raise  # the second: the batch, stopping already, ends on its own
                interrupt.fire()
    finally:
        pool.shutdown(wait=False)


async def on_a_thread(fn: Callable[[], T]) -> T:
    """``fn()`` awaited: it runs on a worker thread (a batch's own event loop) while the
    caller's loop goes on serving its other tasks; what it raises is raised here as it is.

    Cancelling the task that awaits it stops the batch as Ctrl-C does (nothing more is sent,
    what is in flight stays recorded for ``resume``); the cancellation goes on once the batch
    has stopped, so its ledger is never left mid-write. (anyio's shielded scopes do not hold
    back ``Task.cancel()``, hence the asyncio future, which does.)"""
    interrupt, context = _heard_through()
    batch = asyncio.get_running_loop().run_in_executor(None, context.run, fn)
    try:
        return await asyncio.shield(batch)
    except asyncio.CancelledError:
        interrupt.fire()
        with anyio.CancelScope(shield=True):  # anyio stops re-sending its cancel meanwhile
            while not batch.done():
                with contextlib.suppress(asyncio.CancelledError):  # again: it is stopping
                    await asyncio.wait({batch})
        if not batch.cancelled():
            batch.exception()  # what it raised while stopping is in its ledger
        raise


def _heard_through() -> tuple[Interrupt, contextvars.Context]:
    """An interrupt, and a context in which the batch hears of it (:data:`INTERRUPT`)."""
    interrupt = Interrupt()
    context = contextvars.copy_context()
    context.run(INTERRUPT.set, interrupt)
    return interrupt, context


def run_loop(main: Callable[[], Awaitable[T]]) -> T:
    """``anyio.run(main)`` on uvloop where it is installed (a dependency except on Windows):
    its event loop and sockets are C, which takes about a tenth off the CPU of a large run."""
    return anyio.run(main, backend_options={"use_uvloop": find_spec("uvloop") is not None})


def execute(
    ledger: Ledger,
    settings: Settings,
    api: ApiConfig | None,
    observe: Observer | None,
    recording: Recording | None = None,
    *,
    sending: bool = True,
) -> Summary:
    """Run the ledger's unfinished jobs (and those ``recording`` adds) and finish the run;
    ``sending=False`` sends none: only what was bought is followed, fetched and downloaded."""
    stopped: list[ExitCode] = []  # filled by the watchers that stop a run early

    async def main() -> Summary:
        async with connect(settings, api) as (client, origin), MediaClient() as media:
            runner = Runner(
                ledger,
                client,
                media,
                settings.out,
                origin=origin,
                options=settings,
                observe=observe,
                sending=sending,
            )
            async with anyio.create_task_group() as watchers:
                watchers.start_soon(_stop_on_signals, runner, stopped)
                if settings.max_runtime is not None:
                    watchers.start_soon(_stop_after, runner, settings.max_runtime, stopped)
                tally = await runner.run(recording)
                watchers.cancel_scope.cancel()
        why: tuple[ExitCode, str] | None
        then = None
        if runner.run_error is not None:
            why = (ExitCode.RUN_STOPPED, _run_error_line(runner.run_error, api, ledger))
        elif stopped and (runner.stopped or ledger.waiting()[0]):  # not: held nothing back
            why = (stopped[-1], runner.stopped or runner.closed or "")  # Ctrl-C the last word
        else:
            why, then = _budget_stop(runner, ledger) or (None, None)
        return Summary.from_ledger(
            ledger,
            submitted=tally.submitted + tally.unanswered,
            unanswered=tally.unanswered,
            downloaded=tally.downloaded,
            stopped=why,
            next_command=then,
            unsent=tally.unsent,
        )

    try:
        summary = run_loop(main)
    except (sqlite3.DatabaseError, BaseExceptionGroup) as exc:
        refused = unwritable(exc, ledger.path, mid_run=True)
        if refused is None:
            raise
        raise refused from exc  # nothing more may be done that the ledger cannot record
    ledger.finish_run(summary.exit_code, summary.as_dict())
    _past_a_cap(summary, settings)
    gallery = write_after_run(ledger, settings.out)
    return replace(summary, gallery=str(gallery) if gallery else None)


def _past_a_cap(summary: Summary, settings: Settings) -> None:
    """Say so when what the provider billed took the spend past a cap: each job is reserved
    at its estimate before it is sent, and a price raised since the registry was written is
    known only from the bills of jobs already sent (all of them, at high concurrency)."""
    for flag, cap, spent in (
        ("--budget", settings.budget, summary.spend_usd),
        ("--run-budget", settings.run_budget, summary.run_spend_usd),
    ):
        if cap is not None and spent > cap + 0.005 and summary.billed_jobs:
            logger.warning(
                "the provider billed past %s $%.2f: $%.2f committed, its bills counted (jobs "
                "are reserved at the registry's estimate before they are sent; billed $%.2f "
                "for %s): correct the model's price with `batchrunner models price`",
                flag,
                cap,
                spent,
                summary.billed_usd,
                counted(summary.billed_jobs, "job"),
            )


def _run_error_line(error: RunError, api: ApiConfig | None, ledger: Ledger) -> str:
    """One line: what stopped the run and what to do, naming the origin and the key's source."""
    origin = api.origin if api else "the simulator"
    key = api.key_source if api else "the key"
    counts = ledger.counts()
    waiting = counts.get(JobState.PENDING, 0)
    then = f"then run the same command again ({_waiting(waiting)}, nothing was lost)"
    unsaved = (  # paid videos not yet on disk, and the jobs not yet sent
        f"then run the same command again ({counts.get(JobState.COMPLETED, 0)} paid videos wait "
        f"to be downloaded, {counted(waiting, 'job')} to be sent; nothing was lost)"
    )
    if isinstance(error, KeyRefusedError):
        return f"the API refused the key for {origin} ({error}): check {key}, {then}"
    if isinstance(error, OutputUnwritableError):
        return (
            f"the videos cannot be saved: {error}; no more jobs were bought, and those already "
            f"submitted were followed. Free some space (or fix the folder), {unsaved}"
        )
    if isinstance(error, MediaUnreachableError):
        return (
            f"the videos cannot be fetched: {error}. No more jobs were bought, and those already "
            f"submitted were followed. Check the network, a proxy or a firewall for that host, "
            f"{unsaved}"
        )
    if isinstance(error, RedirectedError):
        followed = sum(counts.get(state, 0) for state in (*AT_PROVIDER, JobState.COMPLETED))
        return (
            f"{error}; no job is marked failed: run the same command again once it is right "
            f"({_waiting(waiting)}, {followed} at the provider to follow; nothing was lost)"
        )
    if isinstance(error, RepeatedFailureError) and error.submits_not_found:
        return f"{error}; nothing was bought and no job is marked failed, {then}"
    if isinstance(error, RepeatedFailureError):
        return (
            f"{error}, and none succeeded: no more jobs were bought (those already sent were "
            f"followed). Fix the cause (the manifest's rows, the model's fields), then run the "
            f"same command again ({_waiting(waiting)}; the failed ones: `batchrunner retry`)"
        )
    if isinstance(error, AccountLockedError):
        return (
            f"the account at {origin} cannot pay for more jobs ({error}); jobs already "
            f"submitted were followed; top up or unlock the account, {then}"
        )
    proxy = proxy_shown(api.origin) if api else None
    if proxy is not None:
        return (
            f"cannot reach the API at {origin} through the proxy {proxy} ({error}): check "
            f"--base-url, the proxy the environment sets (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) "
            f"and the network, {then}"
        )
    return f"cannot reach the API at {origin} ({error}): check --base-url and the network, {then}"


def _waiting(jobs: int) -> str:
    return f"{counted(jobs, 'job')} {'waits' if jobs == 1 else 'wait'}"


def _budget_stop(runner: Runner, ledger: Ledger) -> tuple[tuple[ExitCode, str], str] | None:
    """Exit 75 when a cap held jobs back: the spend, what is left and what the waiting jobs
    would cost, and the command that goes on. For ``--budget``, one that submits them all
    (the ledger keeps its budget, so a plain ``resume`` would stop at the same place); for
    ``--run-budget``, the next run, which may commit as much again."""
    flag = runner.out_of_budget
    if flag is None:
        return None
    waiting, price = ledger.waiting()
    held = f"{counted(waiting, 'job')} not submitted, estimated ${price:,.2f}"
    where = ledger_option(str(ledger.path))
    if flag == "--run-budget":
        cap = runner.options.run_budget
        assert cap is not None
        spent = ledger.night_spend()
        if not spent and runner.unaffordable_usd > cap:  # every run would stop here
            line = (
                f"--run-budget ${cap:,.2f} is less than the next job's "
                f"${runner.unaffordable_usd:,.2f}: no run can send it; {held}"
            )
            return (ExitCode.NOT_FINISHED, line), (
                f"raise --run-budget to at least {cents_up(runner.unaffordable_usd):.2f}"
            )
        resumed = ", #".join(str(run) for run in reversed(ledger.carried))
        by = (
            f"this run and run #{resumed}, stopped short, that it resumes"
            if resumed
            else "this run"
        )
        line = (
            f"--run-budget ${cap:,.2f}{_kept(ledger, 'run_budget')} reached: ${spent:,.2f} "
            f"committed by {by}, the next job costs ${runner.unaffordable_usd:,.2f}; {held}"
        )
        return (ExitCode.NOT_FINISHED, line), (
            f"`batchrunner resume{where}` (or the same run command, the next night) to commit "
            f"up to ${cap:,.2f} more"
        )
    budget = runner.options.budget
    assert budget is not None
    spent = ledger.spend()
    left = max(0.0, budget - spent)
    enough = cents_up(spent + price)
    line = (
        f"budget ${budget:,.2f}{_kept(ledger, 'budget')} reached: ${spent:,.2f} committed, "
        f"${left:,.2f} left, the next job costs ${runner.unaffordable_usd:,.2f}; {held}"
    )
    then = f"`batchrunner resume{where} --budget {enough:.2f}`"
    return (ExitCode.NOT_FINISHED, line), f"{then} to submit them all"


def _kept(ledger: Ledger, option: str) -> str:
    """`` (kept from run #4: give --run-budget to change it)`` for a cap this run did not
    set itself, else ""."""
    setter = ledger.kept_from(option)
    flag = "--" + option.replace("_", "-")
    return "" if setter is None else f" (kept from run #{setter}: give {flag} to change it)"


async def _stop_on_signals(runner: Runner, stopped: list[ExitCode]) -> None:
    """First SIGINT/SIGTERM/SIGHUP: stop cleanly (exit 130/143/129). Second: leave at once — through
    :data:`batchrunner.errors.leave_at_once` when the CLI set it, else by raising
    KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        # signals reach only the main thread: a caller waiting there passes its Ctrl-C on
        interrupt = INTERRUPT.get()
        if interrupt is not None:
            await _stop_on_interrupt(interrupt, runner, stopped)
        return  # else the embedding app decides
    codes = {signal.SIGINT: ExitCode.INTERRUPTED, signal.SIGTERM: ExitCode.TERMINATED}
    if hasattr(signal, "SIGHUP"):  # a terminal or ssh session closed: not on Windows
        codes[signal.SIGHUP] = ExitCode.HANGUP
    with anyio.open_signal_receiver(*codes) as signals:
        async for received in signals:
            if runner.stopped is not None:
                if errors.leave_at_once is not None:  # the CLI: the ledger is committed
                    errors.leave_at_once(codes[received])
                raise KeyboardInterrupt  # a library caller's program decides
            stopped.append(codes[received])
            runner.stop(f"{signal.Signals(received).name} received; state is saved")


async def _stop_on_interrupt(interrupt: Interrupt, runner: Runner, stopped: list[ExitCode]) -> None:
    """A batch beside a caller's event loop: stop it as on SIGINT when the caller's thread is
    interrupted (:func:`beside_a_loop`)."""
    loop, heard = asyncio.get_running_loop(), asyncio.Event()  # the batch's loop is asyncio's
    forget = interrupt.listen(lambda: loop.call_soon_threadsafe(heard.set))
    try:
        await heard.wait()
    finally:
        forget()
    if runner.stopped is None:
        stopped.append(ExitCode.INTERRUPTED)
        runner.stop("interrupted (KeyboardInterrupt); state is saved")


async def _stop_after(runner: Runner, seconds: float, stopped: list[ExitCode]) -> None:
    """``--max-runtime``: no job is sent after ``seconds``; those already sent are followed to
    their videos (their results would expire before the next run), within ``--queue-timeout``
    and ``--run-timeout``. Ctrl-C or SIGTERM leaves them at once."""
    await anyio.sleep(seconds)
    stopped.append(ExitCode.NOT_FINISHED)
    runner.close(
        f"--max-runtime of {seconds:g} s reached: no more jobs were sent, and those already "
        "sent were followed to their videos"
    )
