"""Review → re-roll: retry the jobs a file lists, or buy new takes of them.

The review gallery (:mod:`batchrunner.gallery`) downloads the cards you select as a CSV with a
``job_id`` column; ``batchrunner retry --ids FILE`` reads it (or any file with one id per line):

* ``--new-take``: each listed job gets a **new job** beside it — its id, variant and output name
  with the next take number (``shot-01`` → ``shot-01~t2``, ``shot-01~16:9~t2`` →
  ``shot-01~16:9~t3``, like :mod:`batchrunner.expand` labels takes), the same input with a fresh
  seed distinct from its siblings' (when the model has a ``seed`` field), ``take_of`` naming the
  original, priced by the registry. The originals stay as they are. The plan (each new take,
  its seed and price, the total) is handed to ``announce`` before anything is recorded or sent,
  and every submit is reserved against ``--budget`` like any other.
* without it: the listed jobs that failed or were cancelled (and, with ``--unknown``, those whose
  submit got no answer) are sent again; a done job is refused, so nothing already bought is
  bought again unless ``--new-take`` says so.

Either way the run then goes on like ``resume``; the next gallery shows new takes next to the
originals (same row, the next variant).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchrunner import batch
from batchrunner.cells import decode, read_table, sniff_delimiter
from batchrunner.errors import UsageError, counted
from batchrunner.expand import take_seed
from batchrunner.export import open_existing
from batchrunner.jobs import Job, NewJob
from batchrunner.ledger import OPTIONS_FROM, Ledger
from batchrunner.models import get_model, prices_now
from batchrunner.paths import safe_name
from batchrunner.report import Summary
from batchrunner.scheduler import Observer
from batchrunner.spelling import normalized
from batchrunner.states import JobState

_TAKE = re.compile(r"^(?P<base>.*?)(?:~t(?P<take>\d+))?$", re.DOTALL)
_LABEL_TAKE = re.compile(r"(?:^|~)t\d+$")
_OUTPUT_TAKE = re.compile(r"~t\d+$")


@dataclass(frozen=True)
class Plan:
    """What ``retry --ids`` is about to do, before anything is recorded or sent."""

    new_takes: list[NewJob]  # --new-take: the jobs to add
    requeue: list[Job]  # without it: the jobs to send again
    pending: int  # jobs already pending in the ledger, which the run sends too
    pending_usd: float
    spent_usd: float  # committed in the ledger so far
    no_seed: list[str]  # endpoints whose new takes repeat the same request (no seed field)
    under_way: list[Job] = field(default_factory=list)  # --new-take: takes not yet done
    budget: float | None = None  # the --budget the ledger keeps (a retry inherits it)
    refetch: list[Job] = field(default_factory=list)  # --downloads: fetched again, not bought
    left_alone: list[Job] = field(default_factory=list)  # in the states asked, rows deleted
    rows: str | None = None  # the --rows the last run took: the others are left alone too

    @property
    def cost_usd(self) -> float:
        jobs = [j.price_usd or 0.0 for j in self.new_takes] + [
            j.price_usd or 0.0 for j in self.requeue
        ]
        return round(sum(jobs), 4)


def read_ids(path: str | Path) -> list[str]:
    """Job ids from ``path``: a CSV's ``job_id`` column (or ``id``, ``Job ID``: :func:`_id_column`),
    else the first cell of each line; or that column of a workbook or another table (an export
    filtered in Excel). Blank lines and repeats are skipped; raises UsageError for an unreadable
    or empty file."""
    path = Path(path)
    if path.suffix.lower() in TABLES:
        return _ids_from_table(path)
    try:
        text, problem = decode(path.read_bytes(), "csv")  # as a manifest: Excel's ways named
    except OSError as exc:
        raise UsageError(f"cannot read the id file {path}: {exc.strerror or exc}") from None
    if problem is not None:
        raise UsageError(f"cannot read the id file {path}: {problem}")
    assert text is not None
    reader = csv.reader(text.splitlines(), delimiter=sniff_delimiter(text))
    rows = [row for row in reader if row and row[0].strip()]
    column = _id_column(rows[0]) if rows else None
    if column is None:
        column = 0
    else:
        rows = rows[1:]
    ids = list(dict.fromkeys(row[column].strip() for row in rows if len(row) > column))
    ids = [job_id for job_id in ids if job_id]
    if not ids:
        raise UsageError(f"{path} lists no job ids (a CSV with a job_id column, or one per line)")
    return ids


_ID_HEADERS = ("job_id", "jobid", "id")  # in order of preference: an export has job_id and id


def _id_column(header: Sequence[str]) -> int | None:
    """Which of ``header``'s columns holds job ids, if it is a header: ``job_id`` as exports
    and the gallery write it, or as people type it (``Job ID``, ``job-id``), else ``id``."""
    names = [normalized(str(cell)) for cell in header]  # compared as manifest columns are
    for wanted in _ID_HEADERS:
        if wanted in names:
            return names.index(wanted)
    return None


TABLES = (".xlsx", ".parquet", ".json", ".jsonl", ".ndjson", ".tsv", ".tab")  # read as manifests


def _ids_from_table(path: Path) -> list[str]:
    """The ``job_id`` column of a table file. A workbook with hidden rows is refused: a sheet
    filtered down to the jobs to buy again still holds the others, and every one would be."""
    table = read_table(path)
    errors = [problem for problem in table.problems if problem.severity == "error"]
    if errors:
        raise UsageError(f"cannot read the id file {path}: {errors[0]}")
    if table.hidden_rows:
        raise UsageError(
            f"{path} has {counted(len(table.hidden_rows), 'hidden row')} (a filter?): their jobs "
            "would be "
            "taken too; copy the rows you see to a sheet of their own, or delete the hidden ones"
        )
    column = _id_column(table.columns)
    if column is None:
        raise UsageError(f"{path} has no job_id column (an export's or the gallery's CSV has one)")
    ids = [text for cell in table.cells(table.columns[column]) if (text := str(cell or "").strip())]
    if not ids:
        raise UsageError(f"{path} lists no job ids")
    return list(dict.fromkeys(ids))


def plan(ledger: Ledger, ids: Sequence[str], *, new_take: bool, unknown: bool = False) -> Plan:
    """Check ``ids`` against the ledger and plan what ``retry --ids`` would do (read-only)."""
    ledger.require(ids)
    jobs = [ledger.get(job_id) for job_id in ids]
    if new_take:
        under_way = _takes_under_way(ledger, jobs)
        busy = {_split(take.job_id)[0] for take in under_way}
        takes, no_seed = _new_takes(ledger, [j for j in jobs if _split(j.job_id)[0] not in busy])
        return _plan(ledger, new_takes=takes, no_seed=no_seed, under_way=under_way)
    return _plan(ledger, requeue=_requeue(jobs, unknown))


def plan_states(ledger: Ledger, states: Sequence[JobState], *, downloads: bool) -> Plan:
    """What ``retry --failed/--unknown/--cancelled/--expired/--downloads`` would do: the jobs in
    ``states`` sent again, and with ``downloads`` the ``download_failed`` ones fetched again
    (read-only)."""
    refetch = list(ledger.jobs([JobState.DOWNLOAD_FAILED])) if downloads else []
    requeue = list(ledger.in_sheet(states)) if states else []
    sent = {job.job_id for job in requeue}
    aside = [job for job in ledger.jobs(states) if job.job_id not in sent] if states else []
    return _plan(ledger, requeue=requeue, refetch=refetch, left_alone=aside)


def preview_states(ledger_path: str | Path, states: Sequence[JobState], *, downloads: bool) -> Plan:
    """:func:`plan_states` without recording or sending anything (``retry --dry-run``)."""
    with open_existing(ledger_path) as ledger:
        return plan_states(ledger, states, downloads=downloads)


def _plan(
    ledger: Ledger,
    *,
    new_takes: Sequence[NewJob] = (),
    requeue: Sequence[Job] = (),
    no_seed: Sequence[str] = (),
    under_way: Sequence[Job] = (),
    refetch: Sequence[Job] = (),
    left_alone: Sequence[Job] = (),
) -> Plan:
    """A :class:`Plan` of what is asked, with what the ledger already holds: pending jobs
    (which the run sends too), the spend so far and the budget a retry keeps."""
    pending = _priced_now(list(ledger.in_sheet([JobState.PENDING])))  # what a run sends too
    last = ledger.last_run(OPTIONS_FROM)
    return Plan(
        new_takes=list(new_takes),
        requeue=_priced_now(requeue),
        pending=len(pending),
        pending_usd=round(sum(j.price_usd or 0.0 for j in pending), 4),
        spent_usd=ledger.spend(),
        no_seed=list(no_seed),
        under_way=list(under_way),
        budget=last["options"].get("budget") if last else None,
        refetch=list(refetch),
        left_alone=list(left_alone),
        rows=ledger.rows_taken() if left_alone else None,
    )


def _priced_now(jobs: Sequence[Job]) -> list[Job]:
    """``jobs`` with the prices they are sent at (:func:`batch.reprice_pending`)."""
    prices = prices_now((job.endpoint, job.input, job.price_usd) for job in jobs)
    return [
        job if price == job.price_usd else dataclasses.replace(job, price_usd=price)
        for job, price in zip(jobs, prices, strict=True)
    ]


_UNFINISHED = (
    JobState.PENDING,
    JobState.SUBMITTING,
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.COMPLETED,
)


def _takes_under_way(ledger: Ledger, jobs: list[Job]) -> list[Job]:
    """New takes of ``jobs`` asked for before and not yet done (a `retry --new-take` killed,
    or stopped by its budget): asking again would buy one more beside each, not finish it."""
    bases = {_split(job.job_id)[0] for job in jobs}
    return [
        take
        for take in ledger.jobs(_UNFINISHED)
        if take.take_of is not None and _split(take.job_id)[0] in bases
    ]


def retry_ids(
    ledger_path: str | Path,
    ids: Sequence[str],
    *,
    new_take: bool,
    unknown: bool = False,
    budget: float | None = None,
    run_budget: float | None = None,
    max_runtime: float | None = None,
    announce: Callable[[Plan], None] | None = None,
    token: str | None = None,
    observe: Observer | None = None,
    env: dict[str, str] | None = None,
) -> Summary:
    """Plan under the ledger's lock, hand the plan to ``announce``, record it, then run."""

    preview(ledger_path, ids, new_take=new_take, unknown=unknown)  # refuse before a run starts

    def prepare(ledger: Ledger) -> None:
        planned = plan(ledger, ids, new_take=new_take, unknown=unknown)
        if announce is not None:
            announce(planned)
        ledger.add_jobs(planned.new_takes)
        for job in planned.requeue:
            ledger.transition(job.job_id, JobState.PENDING, detail="retry --ids", error=None)

    return batch.resume(
        ledger_path,
        token=token,
        observe=observe,
        env=env,
        command="retry",
        prepare=prepare,
        budget=budget,
        run_budget=run_budget,
        max_runtime=max_runtime,
    )


def preview(ledger_path: str | Path, ids: Sequence[str], *, new_take: bool, unknown: bool) -> Plan:
    """The plan without recording or sending anything (``--dry-run``)."""
    with open_existing(ledger_path) as ledger:
        return plan(ledger, ids, new_take=new_take, unknown=unknown)


def _requeue(jobs: list[Job], unknown: bool) -> list[Job]:
    again = {JobState.FAILED, JobState.CANCELLED} | ({JobState.UNKNOWN} if unknown else set())
    paid = (JobState.DONE, JobState.COMPLETED, JobState.DOWNLOAD_FAILED, JobState.EXPIRED)
    bought = [j.job_id for j in jobs if j.state in paid]
    if bought:
        raise UsageError(
            f"already bought: {', '.join(bought)}; add --new-take to buy a new take of each "
            "(a new job with a fresh seed), or leave them out of the file (`retry --downloads` "
            "fetches download_failed videos again, `retry --expired` buys expired ones again)"
        )
    stuck = [j.job_id for j in jobs if j.state is JobState.UNKNOWN and not unknown]
    if stuck:
        raise UsageError(
            f"{', '.join(stuck)}: the submit got no answer, so the provider may have made (and "
            "billed) it; check your dashboard, then add --unknown to send it again"
        )
    return [j for j in jobs if j.state in again]


def _new_takes(ledger: Ledger, jobs: list[Job]) -> tuple[list[NewJob], list[str]]:
    taken = [row[0] for row in ledger.db.execute("select job_id from jobs").fetchall()]
    seeds: dict[str, set[Any]] = {}
    for job_id, text in ledger.db.execute("select job_id, input from jobs").fetchall():
        base = _split(job_id)[0]
        seeds.setdefault(base, set()).add(json.loads(text).get("seed"))
    top: dict[str, int] = {}  # base id -> highest take it has
    for job_id in taken:
        base, take = _split(job_id)
        top[base] = max(top.get(base, 1), take)
    made: list[NewJob] = []
    no_seed: list[str] = []
    for job in jobs:
        base, _ = _split(job.job_id)
        take = top[base] = top.get(base, 1) + 1
        new_id = f"{base}~t{take}"
        spec = get_model(job.endpoint, allow_unregistered=True)
        body = dict(job.input)
        if "seed" in spec.fields:
            used = seeds.setdefault(base, set())
            body["seed"] = _fresh_seed(base, body, take, used)
            used.add(body["seed"])
        elif job.endpoint not in no_seed:
            no_seed.append(job.endpoint)
        made.append(
            NewJob(
                job_id=new_id,
                endpoint=job.endpoint,
                input=body,
                row=job.row,
                line=job.line,
                variant=_with_take(job.variant, take),
                files=job.files,
                output_name=_output_with_take(job.output_name, take),
                metadata=job.metadata,
                price_usd=spec.cost(body) if spec.known else job.price_usd,
                take_of=job.job_id,
            )
        )
    return made, no_seed


def _split(job_id: str) -> tuple[str, int]:
    """``shot-01~16:9~t3`` → ``("shot-01~16:9", 3)``; an id without a take is take 1."""
    match = _TAKE.match(job_id)
    assert match is not None  # the pattern matches any text
    return match.group("base"), int(match.group("take") or 1)


def _fresh_seed(base: str, body: dict[str, Any], take: int, used: set[Any]) -> int:
    basis = json.dumps({**body, "seed": None, "job": base}, sort_keys=True, default=str)
    for attempt in range(1000):
        seed = take_seed(None, basis if not attempt else f"{basis}#{attempt}", take)
        if seed not in used:
            return seed
    return int(hashlib.sha256(basis.encode()).hexdigest()[:8], 16) % 2**31  # pragma: no cover


def _with_take(variant: str, take: int) -> str:
    stem = _LABEL_TAKE.sub("", variant or "")
    return f"{stem}~t{take}" if stem else f"t{take}"


def _output_with_take(name: str | None, take: int) -> str | None:
    if not name:
        return None
    stem, dot, suffix = name.rpartition(".")
    if not dot or "/" in suffix:
        stem, dot, suffix = name, "", ""
    return f"{_OUTPUT_TAKE.sub('', stem)}~{safe_name(f't{take}')}{dot}{suffix}"
