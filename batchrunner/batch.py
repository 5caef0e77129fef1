"""The library's front door: run a manifest, resume, retry, cancel — each one call.

The CLI is a thin skin over these functions. Each follows the same order, so that a mistake
costs nothing: check everything the user gave (manifest, key, folders) → take the ledger lock →
record the jobs → run → summarise. Nothing is sent before the whole manifest validated.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from batchrunner.connect import SIMULATOR_ORIGIN, api_config, connect, run_info
from batchrunner.errors import (
    BatchrunnerError,
    LedgerError,
    ManifestError,
    Problem,
    TransitionError,
    UsageError,
    counted,
)
from batchrunner.expand import Expansion, Rows
from batchrunner.manifest import Manifest, ManifestRow, gc_paused, load_manifest
from batchrunner.models import ModelSpec, get_model
from batchrunner.paths import video_name
from batchrunner.planner import Decision, Plan, decide, job_maker, make_plan, refusals
from batchrunner.providers import ApiConfig
from batchrunner.settings import Settings
from batchrunner.states import AT_PROVIDER, JobState

if TYPE_CHECKING:  # the run machinery loads when a run starts: `plan` and `validate` skip it
    from batchrunner import takes
    from batchrunner.answers import QueueStatus
    from batchrunner.client import QueueClient
    from batchrunner.commits import Recording
    from batchrunner.jobs import Job
    from batchrunner.ledger import Ledger
    from batchrunner.report import Summary
    from batchrunner.scheduler import Observer

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------- commands


def load(
    manifest_path: str | Path | Any,
    settings: Settings,
    expansion: Expansion | None,
    *,
    log_warnings: bool = True,
) -> Manifest:
    """The manifest, validated and expanded; raises before anything is sent. Its warnings are
    logged unless the caller shows them itself (``plan``, ``validate``)."""
    manifest = load_manifest(
        manifest_path,
        model_of(settings),
        sheet=settings.sheet,
        expansion=expansion,
        models=lambda endpoint: model_of(settings, endpoint),
    )
    if settings.check_urls:
        from batchrunner.urlcheck import url_problems

        broken = url_problems(manifest)
        if broken:
            raise ManifestError(str(manifest.source), broken)
    if log_warnings:
        _say_warnings(manifest.source, manifest.warnings, loud=True)
    specs = {
        endpoint: manifest.specs.get(endpoint) or manifest.spec for endpoint in manifest.endpoints
    }
    if settings.price_per_job is not None and all(spec.known for spec in specs.values()):
        logger.warning(
            "--price-per-job %s is not used: every model of %s is in the registry, which "
            "prices it (`batchrunner models price ID RULE` changes a registered model's price)",
            settings.price_per_job,
            manifest.source,
        )
    unpriced = [row for row in manifest.rows if row.cost_usd is None]
    capped = "--budget" if settings.budget is not None else "--run-budget"
    if (settings.budget is not None or settings.run_budget is not None) and unpriced:
        endpoint = unpriced[0].endpoint
        if specs[endpoint].known:  # its rule leaves some of its values unpriced
            raise UsageError(
                f"{capped} needs a price for every job, and the registry's price for "
                f"{endpoint} gives none for row {unpriced[0].row}'s request: give it a rule "
                f"that does (`batchrunner models price {endpoint} RULE`)"
            )
        models = " and ".join(dict.fromkeys(row.endpoint for row in unpriced))
        raise UsageError(
            f"{capped} needs a price for every job, and {models} is not in the "
            "registry; add --price-per-job USD, or register it with `batchrunner models add`"
        )
    return manifest


def _say_warnings(source: Path, problems: Sequence[Problem], *, loud: bool) -> None:
    """Log a manifest's warnings: those of the sheet's shape (a title row skipped, a hidden
    column) as warnings when ``loud`` (something is about to be bought), else, like the
    metadata columns' notes, as info: a nightly run with nothing new stays quiet on stderr."""
    for warning in problems:
        if warning.severity == "warning":
            level = logging.WARNING if loud and not warning.column else logging.INFO
            logger.log(level, "%s: %s", source, warning)


def plan(loaded: Manifest, settings: Settings, *, replace_changed: bool = False) -> Plan:
    """What ``run`` with these settings would do with ``loaded``: the plan ``plan`` prints and
    ``batchrunner.plan()`` returns, its budgets held back as ``run`` holds them."""
    return make_plan(
        loaded,
        settings.ledger,
        replace_changed=replace_changed,
        resubmit_unknown=settings.resubmit_unknown,
        budget=settings.budget,
        run_budget=settings.run_budget,
    )


def model_of(settings: Settings, endpoint: str | None = None) -> ModelSpec:
    """The registry's spec for ``endpoint`` (default ``settings.model``); an unknown id is an
    error unless allowed."""
    return get_model(
        endpoint or settings.model,
        allow_unregistered=settings.allow_unregistered,
        price_per_job=settings.price_per_job,
    )


def run_manifest(
    manifest_path: str | Path | Any,
    settings: Settings,
    *,
    expansion: Expansion | None = None,
    replace_changed: bool = False,
    token: str | None = None,
    observe: Observer | None = None,
    env: dict[str, str] | None = None,
) -> Summary:
    """Validate ``manifest_path``, record its jobs in the ledger, and run every unfinished job."""
    from batchrunner.ledger import Ledger
    from batchrunner.lock import LedgerLock, OutputLock
    from batchrunner.runtime import execute

    try:
        manifest = load(manifest_path, settings, expansion, log_warnings=False)  # see _record
    except ManifestError as refused:
        _collect_then(refused, settings, token, env, observe)
        raise
    api = api_config(settings, token, env)
    check_writable(settings.out)
    with (
        LedgerLock(settings.ledger, "run"),
        OutputLock(settings.out, settings.ledger, "run"),
        Ledger.open(settings.ledger) as ledger,
    ):
        check_same_world(ledger, settings.simulate)
        with gc_paused():
            rows = expansion.rows if expansion else None
            try:
                recording = _record(
                    ledger, manifest, settings, api, replace_changed=replace_changed, rows=rows
                )
            except ManifestError as refused:
                refused.meanwhile = _collect(ledger, settings, api, observe)
                raise
        del manifest  # the ledger has it now (or will, as the run goes)
        return execute(ledger, settings, api, observe, recording)


TO_COLLECT = (*AT_PROVIDER, JobState.COMPLETED)  # bought, the video not yet on disk


def _collect_then(
    refused: ManifestError,
    settings: Settings,
    token: str | None,
    env: dict[str, str] | None,
    observe: Observer | None,
) -> None:
    """Before a refused manifest's error is raised: the jobs of its ledger already bought are
    followed to their videos (see :func:`_collect`), or the error says how to (no key, the
    ledger held by a batch that follows them itself)."""
    from batchrunner.errors import LedgerLockedError
    from batchrunner.ledger import Ledger
    from batchrunner.lock import LedgerLock, OutputLock
    from batchrunner.report import ledger_option

    if not settings.ledger.is_file():
        return
    try:
        with LedgerLock(settings.ledger, "run"), Ledger.open(settings.ledger) as ledger:
            try:
                api = api_config(settings, token, env)
                check_writable(settings.out)
            except UsageError as exc:  # no key, say: the jobs wait, and the user is told
                waiting = len(ledger.job_ids(TO_COLLECT))
                if waiting:
                    where = ledger_option(str(ledger.path))
                    refused.meanwhile = (
                        f"{counted(waiting, 'job')} bought before not collected ({exc}): "
                        f"`batchrunner resume{where}` collects them; the provider keeps a "
                        "result about an hour"
                    )
                return
            with OutputLock(settings.out, settings.ledger, "collect"):
                refused.meanwhile = _collect(ledger, settings, api, observe)
    except LedgerLockedError:
        return  # the batch holding the ledger (or the folder) follows them
    except BatchrunnerError as exc:
        logger.debug("not collecting beside a refused manifest: %s", exc)


def _collect(
    ledger: Ledger, settings: Settings, api: ApiConfig | None, observe: Observer | None
) -> str | None:
    """A manifest was refused: nothing new is bought, but jobs bought before and still at the
    provider, or whose result waits to be downloaded, are followed to their videos now, as a
    run of their own (``collect``): the provider keeps a result about an hour, and the sheet
    may be fixed only the next night. What happened, in a line; None when there was none."""
    from batchrunner.report import ledger_option
    from batchrunner.runtime import execute

    waiting = ledger.job_ids(TO_COLLECT)
    if not waiting:
        return None
    logger.warning(
        "%s bought before %s still to collect: following them to their videos before saying "
        "what is wrong with the manifest (Ctrl-C leaves them for `batchrunner resume`)",
        counted(len(waiting), "job"),
        "is" if len(waiting) == 1 else "are",
    )
    ledger.start_run("collect", **run_info(settings, api))
    summary = execute(ledger, settings, api, observe, sending=False)
    left = sum(summary.counts.get(state, 0) for state in TO_COLLECT)
    line = (
        f"meanwhile, the {counted(len(waiting), 'job')} bought before: "
        f"{summary.downloaded} downloaded"
    )
    if left:
        line += f", {left} not yet: `batchrunner resume{ledger_option(str(ledger.path))}`"
    return line


def _record(
    ledger: Ledger,
    manifest: Manifest,
    settings: Settings,
    api: ApiConfig | None,
    *,
    replace_changed: bool,
    rows: Rows | None = None,
) -> Recording:
    """Start the run and record the manifest's jobs, or refuse its edited rows (nothing sent).
    The jobs the ledger does not have yet are written as the run starts (the recording)."""
    from batchrunner.commits import Recording
    from batchrunner.relabelled import as_recorded

    manifest = as_recorded(manifest, ledger)  # jobs held under an earlier label
    decisions = decide(
        manifest,
        ledger,
        replace_changed=replace_changed,
        resubmit_unknown=settings.resubmit_unknown,
        new_jobs=False,  # recorded below as they are
    )  # the planner `plan` prints: what it refuses, run refuses (nothing sent)
    problems = refusals(decisions, manifest)
    decided = {decision.job_id for decision in decisions}  # the others are new to the ledger
    buying = any(d.action == "submit" for d in decisions) or len(decided) < len(manifest.rows)
    _say_warnings(manifest.source, manifest.warnings, loud=buying or bool(problems))
    if problems:
        raise ManifestError(str(manifest.source), problems)
    _check_nothing_in_the_way(manifest, decisions, settings.out, ledger)
    info = run_info(settings, api)
    info["options"]["manifest_columns"] = manifest.columns  # exports keep the sheet's order
    if rows is not None:  # the other rows' jobs are left alone, and `status` says why
        info["options"]["rows"] = str(rows)
    source = manifest.source  # absolute, for what may not be written over it later
    ledger.start_run("run", manifest=str(source.resolve() if source.exists() else source), **info)
    replaced = {d.job_id for d in decisions if d.changed and d.action == "submit"}
    to_job = job_maker()
    for row in manifest.rows if replaced else ():
        if row.job_id in replaced:
            ledger.replace(to_job(row))
    before = bool(ledger.counts())  # a new ledger has none of them: nothing to look up or mark
    known = ledger.mark_seen([row.job_id for row in manifest.rows]) if before else set()
    if known:
        _follow_sheet(ledger, manifest)
    if before:
        reprice_pending(ledger, manifest.rows)
    fresh = [row for row in manifest.rows if row.job_id not in known]
    return Recording(ledger, fresh, to_job)


def _follow_sheet(ledger: Ledger, manifest: Manifest) -> None:
    """The ledger's jobs take the manifest's row numbers, output names and other columns
    (:meth:`Ledger.follow_sheet`); a done video whose output name changed keeps its file name,
    with a warning."""
    facts = ((r.job_id, r.row, r.line, r.output, r.metadata) for r in manifest.rows)
    renamed = ledger.follow_sheet(facts)
    rows = {row.job_id: row for row in manifest.rows} if renamed else {}
    for job_id, saved, output in renamed:
        row = rows[job_id]
        extension = manifest.spec_of(row).default_extension
        if video_name(job_id, row.row, output, extension) == Path(saved).name:
            continue  # named as before after all
        now = repr(output) if output else "empty"
        problem = Problem(
            f"now {now}, but {job_id}'s video was saved before as {saved} and keeps that name "
            "(a file an editing project may use is not renamed); delete it and run again to "
            "download it under the new name (free, while the provider keeps the file)",
            row=row.row,
            line=row.line,
            column="output",
            severity="warning",
        )
        logger.warning("%s: %s", manifest.source, problem)


def _check_nothing_in_the_way(
    manifest: Manifest, decisions: list[Decision], out: Path, ledger: Ledger
) -> None:
    """Refuse (exit 2, nothing sent) when a job about to be bought would write its video where
    a file already is. A job not yet sent has never written one: it is another ledger's video
    (two ledgers sharing ``--out``, with the same ids), or one from before this ledger, which
    the download would replace. A job whose row was replaced keeps its file (moved aside).
    Nor where one job's video would need a folder that is a file: another job's video (``a``
    and ``0001-a.mp4/x``), or a file already there (``day2`` where ``day2/lake`` goes)."""
    from batchrunner.lock import OutputLock

    _check_folders(manifest, out)
    try:
        with os.scandir(out) as entries:
            if not any(entry.name != OutputLock.NAME for entry in entries):
                return  # an empty folder (a first run): nothing to look up
    except OSError:
        return  # check_writable has made it; the downloads will say what is wrong
    known = {decision.job_id: decision for decision in decisions}
    taken = []
    for row in manifest.rows:
        decision = known.get(row.job_id)  # None: new to the ledger
        if decision is None or (decision.action == "submit" and not decision.changed):
            extension = manifest.spec_of(row).default_extension
            name = video_name(row.job_id, row.row, row.output, extension)
            if os.path.lexists(out / name):
                taken.append(name)
    if taken:
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        owner = ledger.video_of(str((out / taken[0]).resolve()))
        if owner is not None:  # two ids one file name keeps apart no better (``a/b``, ``a:b``)
            raise UsageError(
                f"{out / taken[0]}{more} {'are' if more else 'is'} this ledger's video of job "
                f"{owner!r}, and a job about to be bought has the same file name there (now "
                "that it has that job's row): give one of the two rows an `output` name "
                "(nothing was sent)"
            )
        raise UsageError(
            f"{out / taken[0]}{more} {'are' if more else 'is'} already there, written by another "
            "ledger or before this one: the jobs about to be bought would write over them. Move "
            "those files or give --out a folder of its own (nothing was sent)"
        )


def resume(
    ledger_path: str | Path,
    *,
    token: str | None = None,
    observe: Observer | None = None,
    env: dict[str, str] | None = None,
    command: str = "resume",
    prepare: Callable[[Ledger], None] | None = None,
    sending: bool = True,
    **overrides: Any,
) -> Summary:
    """Carry on with the settings of the ledger's last run (the key comes from the env);
    ``sending=False`` submits nothing (see :func:`~batchrunner.runtime.execute`)."""
    from batchrunner.ledger import OPTIONS_FROM, Ledger
    from batchrunner.lock import LedgerLock, OutputLock
    from batchrunner.runtime import execute

    path = Path(ledger_path)
    if not path.exists():
        raise UsageError(f"no ledger at {path}")
    with LedgerLock(path, command), Ledger.open(path, create=False) as ledger:
        last = ledger.last_run(OPTIONS_FROM)
        if last is None:
            raise LedgerError(f"{path} has no run to resume; use `batchrunner run MANIFEST`")
        settings = Settings.from_stored(last["options"], ledger=path, **overrides)
        check_same_world(ledger, settings.simulate)
        api = api_config(settings, token, env)
        check_writable(settings.out)
        with OutputLock(settings.out, path, command):
            ledger.start_run(command, manifest=last.get("manifest"), **run_info(settings, api))
            if command == "resume":  # a run killed carries on: the night's --run-budget counts
                ledger.carried = ledger.unended_before()
            if prepare is not None:
                prepare(ledger)
            reprice_pending(ledger)  # also what `prepare` put back (`retry`)
            return execute(ledger, settings, api, observe, sending=sending)


RETRYABLE = (JobState.FAILED, JobState.UNKNOWN, JobState.CANCELLED, JobState.EXPIRED)


def retry_states(
    *, failed: bool = True, unknown: bool = False, cancelled: bool = False, expired: bool = False
) -> list[JobState]:
    """The states ``retry`` sends again, from its flags."""
    asked = (failed, unknown, cancelled, expired)
    return [state for state, yes in zip(RETRYABLE, asked, strict=True) if yes]


def retry(
    ledger_path: str | Path,
    *,
    failed: bool = True,
    unknown: bool = False,
    cancelled: bool = False,
    expired: bool = False,
    downloads: bool = False,
    max_runtime: float | None = None,
    budget: float | None = None,
    run_budget: float | None = None,
    token: str | None = None,
    observe: Observer | None = None,
    env: dict[str, str] | None = None,
    announce: Callable[[takes.Plan], None] | None = None,
) -> Summary:
    """Send failed (and/or unknown, cancelled, expired) jobs again as new submits, priced
    against the budget; ``downloads`` fetches ``download_failed`` videos again without
    submitting anything. Then run like ``resume``. ``announce`` is handed what is about to be
    sent and fetched (:func:`batchrunner.takes.plan_states`) before anything is."""
    wanted = retry_states(failed=failed, unknown=unknown, cancelled=cancelled, expired=expired)

    def requeue(ledger: Ledger) -> None:
        if announce is not None:
            from batchrunner import takes

            announce(takes.plan_states(ledger, wanted, downloads=downloads))
        for job in ledger.in_sheet(wanted):  # not a job whose row was deleted: --ids sends it
            ledger.transition(job.job_id, JobState.PENDING, detail="retry requested", error=None)
        if downloads:
            for job in ledger.jobs([JobState.DOWNLOAD_FAILED]):
                ledger.transition(
                    job.job_id, JobState.COMPLETED, detail="download retry requested", error=None
                )

    return resume(
        ledger_path,
        token=token,
        observe=observe,
        env=env,
        command="retry",
        prepare=requeue,
        sending=bool(wanted),  # --downloads alone buys nothing, not even a pending job
        max_runtime=max_runtime,
        budget=budget,
        run_budget=run_budget,
    )


def reprice_pending(ledger: Ledger, rows: Sequence[ManifestRow] = ()) -> None:
    """Pending jobs take their price as it is now: their manifest row's (in ``rows``, priced
    with this run's ``--price-per-job``), else the registry's
    (:func:`~batchrunner.models.prices_now`). A job recorded before ``models price`` changed
    its model's rule (held back by a budget stop, say) was otherwise planned, reserved and
    counted against ``--budget`` at the old price. Said once per model whose jobs moved."""
    from batchrunner.models import prices_now

    pending = list(ledger.pending_prices())
    if not pending:  # a nightly re-run of a finished sheet: nothing to look up
        return
    current = {row.job_id: row.cost_usd for row in rows}
    others = [job for job in pending if job[0] not in current]
    now = prices_now((endpoint, body, price) for _, endpoint, body, price in others)
    current.update(zip((job[0] for job in others), now, strict=True))
    moved: dict[str, list[tuple[str, float | None, float | None]]] = {}
    for job_id, endpoint, _, price in pending:
        if current[job_id] != price:
            moved.setdefault(endpoint, []).append((job_id, price, current[job_id]))
    for endpoint, jobs in moved.items():
        ledger.reprice([(job_id, now_usd) for job_id, _, now_usd in jobs])
        logger.warning(
            "%s: %s priced again as its price is now: $%.2f, recorded at $%.2f",
            endpoint,
            counted(len(jobs), "pending job"),
            sum(now_usd or 0.0 for _, _, now_usd in jobs),
            sum(price or 0.0 for _, price, _ in jobs),
        )


def _check_folders(manifest: Manifest, out: Path) -> None:
    """Refuse (nothing sent) a job whose video needs a folder that is a file: one job's video
    where another's folder goes, or a file already in ``--out``. Only an ``output`` with a
    folder in it (``day2/lake``) needs one: a sheet without one costs nothing to check."""
    if not any(row.output and "/" in row.output for row in manifest.rows):
        return
    names = {
        video_name(row.job_id, row.row, row.output, manifest.spec_of(row).default_extension): row
        for row in manifest.rows
    }
    for name, row in names.items():
        if row.output is None or "/" not in row.output:
            continue
        for folder in PurePosixPath(name).parents:
            if folder == PurePosixPath("."):
                continue
            other = names.get(str(folder))
            if other is not None:
                raise UsageError(
                    f"row {row.row}'s video goes in the folder {out / folder}, which is row "
                    f"{other.row}'s video ({other.job_id}): give one of them another output "
                    "(nothing was sent)"
                )
            if (out / folder).exists() and not (out / folder).is_dir():
                raise UsageError(
                    f"{out / folder} is a file, where row {row.row}'s video needs a folder "
                    f"({out / name}): move it, or give the row another output (nothing was sent)"
                )


def check_same_world(ledger: Ledger, simulate: bool) -> None:
    """Refuse to mix simulated and bought jobs in one ledger (nothing is sent): a real run on a
    ledger rehearsed with ``--simulate`` would take the simulator's clips as bought and buy
    nothing for their rows, and a ``--simulate`` run on a real ledger would finish its pending
    jobs with simulated clips."""
    origins = ledger.origins()
    simulated = origins.pop(SIMULATOR_ORIGIN, 0)
    if simulate and origins:
        bought = sum(origins.values())
        raise UsageError(
            f"{ledger.path} holds {counted(bought, 'job')} bought from {', '.join(origins)}: "
            "a --simulate run would finish its jobs with simulated clips. Rehearse with a "
            "ledger and folder of its own (--ledger rehearsal.db --out rehearsal)"
        )
    if not simulate and simulated:
        raise UsageError(
            f"{ledger.path} holds {counted(simulated, 'job')} made by the simulator (a "
            "--simulate rehearsal): a real run would take them as done and buy nothing for "
            "their rows. Give the real run a ledger and folder of its own (--ledger and --out), "
            f"or delete {ledger.path.name} and the rehearsal's videos first"
        )


def check_writable(folder: Path) -> None:
    """Fail before anything is sent if videos could not be written to ``folder``."""
    for there in (folder, *folder.parents):  # said plainly, not "File exists"
        if there.exists():
            if not there.is_dir():
                raise UsageError(
                    f"cannot use {folder} as the output folder: {there} is a file; give the "
                    "videos a folder (--out, out=), made when missing"
                )
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".batchrunner-probe-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"cannot write to the output folder {folder}: {exc.strerror or exc}"
        ) from exc


def _cancel_beside(
    path: Path, job_ids: Sequence[str], holder: str, token: str | None, env: dict[str, str] | None
) -> Cancelled:
    """Cancel jobs of the ledger that a running batch (``holder``) holds, and leave it
    running. Pending and unknown jobs are cancelled in the ledger, each move made only if
    the job is still in the state it was read in (the batch's submit intent is made the same
    way, so of a cancel and a submit exactly one wins: the batch skips a job cancelled before
    it sent it); a job being submitted is waited for until it is at the provider. Jobs at
    the provider are cancelled there, and the batch, which follows them, records how each ends
    (``cancelled``, or its result when it finished first), which is waited for here, up to
    :data:`CANCEL_RECORD_SECONDS`."""
    import anyio

    from batchrunner.ledger import OPTIONS_FROM, Ledger
    from batchrunner.runtime import run_loop

    with Ledger.open(path, create=False) as ledger:
        ledger.require(job_ids)
        last = ledger.last_run(OPTIONS_FROM)
        settings = Settings.from_stored(last["options"] if last else {}, ledger=path)
        try:  # before anything moves: a job at the provider cannot be cancelled without it
            api, keyless = api_config(settings, token, env), None
        except UsageError as exc:
            sent = (*AT_PROVIDER, JobState.SUBMITTING)
            if any(JobState(state) in sent for state in ledger.states(list(job_ids)).values()):
                raise
            api, keyless = None, exc  # only the ledger is needed, unless the batch sends one
        ledger.start_run("cancel", **run_info(settings, api))
        outcome: dict[str, str] = {}
        answers: dict[str, str] = {}
        ended = 1
        try:
            targets = _cancel_in_ledger(ledger, job_ids, outcome)
            if keyless is not None:
                for job in targets:  # sent by the batch while this looked
                    outcome[job.job_id] = (
                        "left alone: the running batch has just sent it, and cancelling it at "
                        f"the provider needs the API key ({keyless})"
                    )
                targets = []
            if targets:

                async def main() -> None:
                    async with connect(settings, api) as (client, origin):
                        answers.update(await _ask_to_cancel(client, origin, targets, outcome))
                    waiting = [j for j in answers if answers[j] == "CANCELLATION_REQUESTED"]
                    deadline = anyio.current_time() + CANCEL_RECORD_SECONDS
                    while waiting and anyio.current_time() < deadline:
                        await anyio.sleep(0.1)
                        states = ledger.states(waiting)
                        waiting = [j for j in waiting if JobState(states[j]) in AT_PROVIDER]

                run_loop(main)
            states = ledger.states(list(answers))
            for job_id, answer in answers.items():
                outcome[job_id] = _seen_by_the_batch(JobState(states[job_id]), answer)
            ended = 0
        finally:  # what was moved in the ledger is recorded, even when the provider failed
            ledger.finish_run(ended, {"cancel": outcome, "beside": holder})
    logger.info("cancelled beside the batch that holds the ledger (%s)", holder)
    return Cancelled({j: outcome[j] for j in job_ids}, running=holder)


def _cancel_in_ledger(ledger: Ledger, job_ids: Sequence[str], outcome: dict[str, str]) -> list[Job]:
    """Beside a running batch: cancel in the ledger what was never sent or has no request id
    (:func:`_cancelled_unsent`), say why the finished are left alone, and return the jobs
    to cancel at the provider. A job the batch is submitting is looked at again until it has
    an answer (up to :data:`CANCEL_RECORD_SECONDS`), and so is one it moved meanwhile."""
    deadline = time.monotonic() + CANCEL_RECORD_SECONDS
    remote: list[Job] = []
    left = list(job_ids)
    while left:
        again = []
        for job_id in left:
            job = ledger.get(job_id)
            if job.state is JobState.SUBMITTING and time.monotonic() < deadline:
                again.append(job_id)
            elif job.state in (JobState.PENDING, JobState.UNKNOWN):
                moved = _cancelled_unsent(ledger, job, outcome)
                if not moved:
                    again.append(job_id)  # the batch moved it first: what is it now?
            elif job.state in AT_PROVIDER:
                remote.append(job)
            elif job.state is JobState.SUBMITTING:
                outcome[job_id] = (
                    "left alone: the running batch is still submitting it; cancel it again "
                    "once it is queued"
                )
            else:
                outcome[job_id] = _left_alone(job.state)
        left = again
        if left:
            time.sleep(0.05)
    return remote


def _cancelled_unsent(ledger: Ledger, job: Job, outcome: dict[str, str]) -> bool:
    """Cancel a pending or unknown ``job`` in the ledger, if it still is what it was read as
    (False when it moved on meanwhile)."""
    try:
        ledger.transition(
            job.job_id, JobState.CANCELLED, expect=job.state, detail="cancelled by the user"
        )
    except TransitionError:
        return False
    outcome[job.job_id] = (
        "cancelled in the ledger (it was never sent)"
        if job.state is JobState.PENDING
        else "marked cancelled in the ledger; its submit got no answer, so a job may exist "
        "(and be billed) at the provider: check your dashboard"
    )
    return True


def _left_alone(state: JobState) -> str:
    if state in (JobState.COMPLETED, JobState.DONE):
        return f"left alone: it is {state} (its video is paid for)"
    return f"left alone: it is {state}"


def _seen_by_the_batch(state: JobState, answer: str) -> str:
    """What became of a job cancelled at the provider beside a running batch: its state in
    the ledger, as the batch recorded it, after the provider's ``answer``."""
    if state is JobState.CANCELLED:
        return "cancelled at the provider; the running batch recorded it"
    if answer == "NOT_FOUND":
        return "unknown at the provider (404); the running batch records what it finds"
    if answer == "ALREADY_COMPLETED" or state in (JobState.COMPLETED, JobState.DONE):
        return (
            "too late: it finished before the cancel took effect; the running batch fetches "
            "it (it is paid for)"
        )
    if state in AT_PROVIDER:
        return (
            "cancel requested, but it is still at the provider: the running batch follows it "
            "to its end (a video it still makes is paid for, and fetched)"
        )
    return f"it ended {state} before the cancel took effect"


CANCEL_RECORD_SECONDS = 10.0  # how long a cancel waits for the running batch to record it


async def _ask_to_cancel(
    client: QueueClient, origin: str, jobs: list[Job], outcome: dict[str, str]
) -> dict[str, str]:
    """The provider's answer to a cancel of each of ``jobs`` submitted to ``origin``; the
    others are said to be skipped in ``outcome``."""
    answers: dict[str, str] = {}
    for job in jobs:
        if job.origin != origin:
            outcome[job.job_id] = f"skipped: submitted to {job.origin}"
            continue
        assert job.request_id is not None
        url = job.cancel_url
        answers[job.job_id] = await client.cancel(job.endpoint, job.request_id, url=url)
    return answers


async def _how_they_ended(client: QueueClient, jobs: list[Job]) -> dict[str, str]:
    """Jobs whose cancel was accepted, watched together (:func:`scheduler.how_they_end`): job
    id → ``CANCELLATION_REQUESTED`` once it ends cancelled, ``ALREADY_COMPLETED`` when it ends
    otherwise (it made its video after all: paid for, so ``resume`` fetches it),
    ``STILL_RUNNING`` while it has not ended."""
    from batchrunner.scheduler import how_they_end

    ended = await how_they_end(client, jobs)

    def answer(status: QueueStatus | None) -> str:
        if status is None:
            return "STILL_RUNNING"
        cancelled = status.error_type == "request_cancelled"
        return "CANCELLATION_REQUESTED" if cancelled else "ALREADY_COMPLETED"

    return {job.job_id: answer(ended.get(job.job_id)) for job in jobs}


@dataclass(frozen=True)
class Cancelled:
    """What :func:`cancel` did."""

    jobs: dict[str, str]  # job id → what happened to it
    stopped: str | None = None  # the batch that held the ledger, stopped first, described
    unfinished: int = 0  # jobs left to send, follow or fetch: what `resume` carries on with
    running: str | None = None  # the batch that holds the ledger, left running, described


def cancel(
    ledger_path: str | Path,
    job_ids: Sequence[str] | None = None,
    *,
    token: str | None = None,
    env: dict[str, str] | None = None,
) -> Cancelled:
    """Cancel the given jobs (``None``: every unfinished one).

    Jobs at the provider get a cancel request; pending and unknown ones are cancelled in the
    ledger only. Completed and done jobs are left alone (their video is already paid for).
    Cancelling everything stops a ``run``, ``resume`` or ``retry`` holding the ledger first
    (by SIGTERM, which it stops on as on Ctrl-C): the user asked for the spending to stop.
    Jobs named are cancelled beside it, and it goes on with the others
    (:func:`_cancel_beside`).
    """
    from batchrunner.ledger import OPTIONS_FROM, Ledger
    from batchrunner.lock import LedgerLock, batch_holding

    path = Path(ledger_path)
    if not path.exists():
        raise UsageError(f"no ledger at {path}")
    holder = batch_holding(path) if job_ids is not None else None
    if holder is not None and job_ids is not None:
        return _cancel_beside(path, job_ids, holder, token, env)
    cancellable = (JobState.PENDING, JobState.UNKNOWN, JobState.QUEUED, JobState.RUNNING)
    lock = LedgerLock(path, "cancel", stop_holder=True)
    with lock, Ledger.open(path, create=False) as ledger:
        if job_ids is None:
            targets = list(ledger.jobs(cancellable))
        else:
            ledger.require(job_ids)
            targets = [ledger.get(j) for j in job_ids]
        last = ledger.last_run(OPTIONS_FROM)
        settings = Settings.from_stored(last["options"] if last else {}, ledger=path)
        remote = [j for j in targets if j.state in AT_PROVIDER]
        api = api_config(settings, token, env) if remote else None
        ledger.start_run("cancel", **run_info(settings, api))
        outcome: dict[str, str] = {}

        async def main() -> None:
            async with connect(settings, api) as (client, origin):
                answers = await _ask_to_cancel(client, origin, remote, outcome)
                accepted = [j for j in remote if answers.get(j.job_id) == "CANCELLATION_REQUESTED"]
                answers |= await _how_they_ended(client, accepted) if accepted else {}
                for job in remote:
                    answer = answers.get(job.job_id)
                    if answer is None:
                        continue  # submitted elsewhere: said above
                    if answer == "ALREADY_COMPLETED":
                        outcome[job.job_id] = "too late: it already completed; `resume` fetches it"
                        continue
                    if answer == "STILL_RUNNING":
                        outcome[job.job_id] = (
                            "cancel requested, but it is still running at the provider: "
                            "`resume` follows it to its end (a video it still makes is paid for, "
                            "and fetched)"
                        )
                        continue
                    ledger.transition(job.job_id, JobState.CANCELLED, detail=f"cancel: {answer}")
                    outcome[job.job_id] = (
                        "unknown at the provider (404); marked cancelled in the ledger"
                        if answer == "NOT_FOUND"
                        else "cancelled at the provider"
                    )

        if remote:
            from batchrunner.runtime import run_loop

            run_loop(main)
        for job in targets:
            if job.state in (JobState.PENDING, JobState.UNKNOWN):
                _cancelled_unsent(ledger, job, outcome)  # the ledger is held: nothing moves it
            elif job.job_id not in outcome:
                outcome[job.job_id] = _left_alone(job.state)
        ledger.finish_run(0, {"cancel": outcome, "stopped": lock.stopped})
        counts = ledger.counts()
        unfinished = sum(counts.get(state, 0) for state in (*AT_PROVIDER, JobState.PENDING))
        unfinished += counts.get(JobState.COMPLETED, 0)
        return Cancelled(outcome, lock.stopped, unfinished)
