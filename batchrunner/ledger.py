"""The ledger: one SQLite file that is the truth about every job of a batch.

Tables (created by the named migrations in :mod:`batchrunner.migrations`):

``jobs``
    one row per job: its input, state, ``request_id``, stored result, file and cost, and what
    the file turned out to be (``media``, ``warnings``, ``poster``; see :mod:`batchrunner.verify`).
``runs``
    one row per ``run`` / ``resume`` / ``retry``: when, which settings (never the key), outcome;
    while it goes on, the concurrency limit the provider's 429s left and whether it is waiting
    for the network (:meth:`Ledger.record_limit`, :meth:`Ledger.record_wait`).
``events``
    append-only audit: every state change of every job, with the run that made it.

Every state change goes through :meth:`Ledger.transitions` (:meth:`Ledger.transition` for one,
:class:`~batchrunner.commits.GroupCommit` for a run's many tasks at once), which checks each
move against :mod:`batchrunner.states`, writes the job and its event in one transaction and
commits before returning, so the caller can act on it (``submitting`` is committed *before* the
POST; the ``request_id`` right after the answer). The file is opened in WAL mode with
``synchronous=FULL`` and a ``busy_timeout``, so ``status`` and ``export`` can read while a run
writes. The records it reads and writes are :mod:`batchrunner.jobs`'.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from batchrunner.errors import (
    ExitCode,
    LedgerError,
    LedgerUnwritableError,
    TransitionError,
    UsageError,
)
from batchrunner.jobs import (
    JOB_SELECT,
    JSON_COLUMNS,
    STATES,
    AddResult,
    Job,
    Move,
    NewJob,
    OrderKey,
    Standing,
    as_read,
    dumps,
    loads,
    loose_hash,
    now,
    order_key,
)
from batchrunner.lean_sqlite import sqlite_utils
from batchrunner.migrations import MIGRATIONS, check_compatible
from batchrunner.spelling import hint, near_id
from batchrunner.states import JobState, can_move

BUSY_TIMEOUT_MS = 10_000


_DISK_REFUSED = {  # SQLite's primary error names: what the disk under the ledger did
    "SQLITE_FULL": "the disk holding it is full",
    "SQLITE_READONLY": "it cannot be written (read-only)",
    "SQLITE_IOERR": "the disk reported an I/O error",
    "SQLITE_CANTOPEN": "it cannot be opened for writing",
}


def unwritable(
    exc: BaseException, path: str | Path, *, mid_run: bool = False
) -> LedgerUnwritableError | None:
    """A :class:`LedgerUnwritableError` for a write the ledger's disk refused (``exc`` or, from
    a task group, the first error it holds); None for any other error."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    name = getattr(exc, "sqlite_errorname", "") or ""
    why = next((said for code, said in _DISK_REFUSED.items() if name.startswith(code)), None)
    if why is None:
        return None
    then = (
        "; the run stopped, and a job whose answer could not be recorded shows as `unknown` "
        "(`batchrunner status`)"
        if mid_run
        else "; nothing was sent"
    )
    return LedgerUnwritableError(
        f"cannot write the ledger {path}: {why} ({exc}){then}. Free some space (or give "
        "--ledger a writable place), then run the same command again"
    )


# what a job's latest send may have cost, and all its sends: Job.spent_usd
_LATEST = "max(coalesce(cost_usd, 0), coalesce(billed_usd, 0))"
_SPENT = f"{_LATEST} + coalesce(earlier_usd, 0)"
# how a run stopped by a signal ends: `resume` carries it on (Ctrl-C, SIGTERM, SIGHUP)
_STOPPED_SHORT = (ExitCode.HANGUP, ExitCode.INTERRUPTED, ExitCode.TERMINATED)
BATCHES = ("run", "resume", "retry", "collect")  # the commands that buy or fetch
# the batches whose options a later resume, retry, cancel or gallery carries on (not `collect`)
OPTIONS_FROM = ("run", "resume", "retry")


class Ledger:
    """The batch's SQLite file. Open with :meth:`open`; use as a context manager."""

    def __init__(self, db: sqlite_utils.Database, path: Path):
        self.db = db
        self.path = path
        self.run_id: int | None = None
        self.carried: tuple[int, ...] = ()  # runs this one carries on (a resume after a kill)

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> Ledger:
        """Open (and migrate) the ledger at ``path``.

        Raises :class:`LedgerError` for a missing file when ``create`` is false, a file that is
        not SQLite or is corrupt, a SQLite file that is not a batchrunner ledger, or one written
        by a newer batchrunner. The file is never overwritten.
        """
        path = Path(path)
        if path.is_dir():
            raise LedgerError(f"{path} is a folder; a ledger is a file, e.g. {path / 'shots.db'}")
        if not create and path.is_file() and path.stat().st_size == 0:
            # SQLite would take an empty file for an empty database, and write one into it
            raise LedgerError(f"no ledger at {path} (the file is empty)")
        if not path.exists():
            if not create:
                raise LedgerError(f"no ledger at {path}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LedgerError(f"cannot create the ledger folder {path.parent}: {exc}") from exc
        try:
            db = sqlite_utils.Database(sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000))
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            check_compatible(db, path)
            if db.journal_mode != "wal":
                db.enable_wal()
            db.execute("PRAGMA synchronous = FULL")
            MIGRATIONS.apply(db)
        except sqlite3.DatabaseError as exc:
            refused = unwritable(exc, path)
            if refused is not None:
                raise refused from exc
            raise LedgerError(
                f"{path} is not a usable SQLite ledger ({exc}); it was left untouched"
            ) from exc
        except OSError as exc:
            raise LedgerError(f"cannot open the ledger {path}: {exc}") from exc
        return cls(db, path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------- runs

    def manifest_columns(self) -> list[str]:
        """The column order of the last manifest a run read (exports follow it)."""
        for row in self.db.query(
            "select options from runs where command = 'run' order by id desc limit 1"
        ):
            columns = json.loads(row["options"] or "{}").get("manifest_columns")
            return [str(c) for c in columns] if isinstance(columns, list) else []
        return []

    def start_run(self, command: str, **info: Any) -> int:
        """Record a run (never its API key) and make it the one events are attributed to."""
        options = info.pop("options", {})
        table = self.db.table("runs")
        table.insert(
            {
                "started_at": now(),
                "command": command,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "options": json.dumps(options, sort_keys=True, default=str),
                **info,
            }
        )
        self.run_id = table.last_pk
        return int(self.run_id)  # type: ignore[arg-type]

    def finish_run(self, exit_code: int, summary: Mapping[str, Any]) -> None:
        if self.run_id is None:
            return
        ended = {"finished_at": now(), "exit_code": exit_code, "summary": json.dumps(summary)}
        waits = {"waiting_since": None, "waiting_for": None}  # an ended run waits for nothing
        self.db.table("runs").update(self.run_id, ended | waits)

    def record_limit(self, limit: int) -> None:
        """The concurrency limit in force now that the provider throttled (AIMD), for
        ``status`` to show; None while it never has."""
        if self.run_id is not None:
            self.db.table("runs").update(self.run_id, {"concurrency_limit": limit})

    def record_wait(self, since: str | None, hosts: str | None) -> None:
        """The run is waiting for the network since ``since`` (UTC ISO-8601): ``hosts`` do
        not answer (:class:`batchrunner.reach.Waits`); None and None once they do."""
        if self.run_id is not None:
            self.db.table("runs").update(
                self.run_id, {"waiting_since": since, "waiting_for": hosts}
            )

    def last_run(self, commands: Sequence[str] = ("run",)) -> dict[str, Any] | None:
        placeholders = ", ".join("?" for _ in commands)
        rows = list(
            self.db.table("runs").rows_where(
                f"command in ({placeholders})", list(commands), order_by="id desc", limit=1
            )
        )
        if not rows:
            return None
        run = dict(rows[0])
        run["options"] = json.loads(run["options"] or "{}")
        return run

    def kept_from(self, option: str) -> int | None:
        """The earlier run whose value of ``option`` this run keeps (a ``resume`` or ``retry``
        carries on with the options of the runs before it, back to the ``run`` that was given
        them); None when this run was given it."""
        marks = ", ".join("?" for _ in OPTIONS_FROM)
        found = self.db.execute(
            f"select id, command, options from runs where id <= ? and command in ({marks}) "
            "order by id desc",
            [self.run_id, *OPTIONS_FROM],
        )
        mine, setter = None, None
        for run, command, options in found:
            value = json.loads(options or "{}").get(option)
            if run == self.run_id:
                if command == "run":
                    return None  # a run's options are its own command line's
                mine = value
                continue
            if value != mine:
                break
            setter = int(run)
            if command == "run":
                break
        return setter

    def inputs(self) -> list[tuple[Path, str]]:
        """The files this ledger was made from, which no output may be written over: itself
        and each manifest a run read (:func:`batchrunner.paths.not_over_an_input`)."""
        sql = "select distinct manifest from runs where manifest is not null and manifest <> ''"
        manifests = [Path(name) for (name,) in self.db.conn.execute(sql)]
        return [
            (self.path, "this ledger"),
            *((path, "a manifest this ledger was run from") for path in manifests),
        ]

    # ---------------------------------------------------------------- jobs

    def add_jobs(self, jobs: Iterable[NewJob]) -> AddResult:
        """Insert jobs the ledger does not have; leave existing ones untouched (compare
        :meth:`input_hashes` first to find edited rows). One transaction."""
        jobs = list(jobs)
        with self.db.atomic():
            known = self.mark_seen([job.job_id for job in jobs])
            fresh = [job for job in jobs if job.job_id not in known]
            self.insert(fresh)
        return AddResult(added=len(fresh), existing=len(jobs) - len(fresh))

    def mark_seen(self, job_ids: Sequence[str]) -> set[str]:
        """Record that this run's manifest has ``job_ids`` (``status`` lists the jobs whose row
        was removed): those the ledger has are marked and returned; the others are new, to
        :meth:`insert`."""
        stored = list(self.input_hashes(job_ids))
        if self.run_id is not None:
            for chunk, marks in _in_chunks(stored):
                self.db.execute(
                    f"update jobs set seen_run = ? where job_id in ({marks})",
                    [self.run_id, *chunk],
                )
        return set(stored)

    def follow_sheet(
        self, rows: Iterable[tuple[str, int | None, int | None, str | None, dict[str, Any]]]
    ) -> list[tuple[str, str, str | None]]:
        """Bring the jobs a manifest names up to what it now says besides the request: row,
        line, output name and other columns, from ``(job id, row, line, output, metadata)``.
        Exports, the gallery and messages follow the sheet (notes added after a run, rows moved);
        the request itself changes only by ``--replace-changed``. Returns ``(job id, saved path,
        new output)`` of each done job whose output changed: its video keeps the name it was
        saved with (a file an editing project may point to is never renamed).

        A new take of a row (``retry --new-take``) follows its row's number and columns too;
        its output name stays its own.

        Compared here, not in SQL: encoding every row's columns to compare them as stored text
        cost 1.2 s for 100,000 rows; reading and comparing costs half that (0.56 s), and only
        the jobs that changed are written."""
        sheet = {facts[0]: facts for facts in rows}
        changed: list[tuple[Any, ...]] = []
        renamed: list[tuple[str, str, str | None]] = []
        sql = (
            "select job_id, row, line, output_name, metadata, state, output_path, take_of from jobs"
        )
        stored = self.db.conn.execute(sql).fetchall()
        take_of = {found[0]: found[7] for found in stored if found[7] is not None}
        for job_id, row, line, output, metadata, state, saved, _ in stored:
            now = sheet.get(job_id)
            origin = take_of.get(job_id)
            for _ in range(100):  # a take (of a take...) of a row
                if now is not None or origin is None:
                    break
                if origin in sheet:
                    now = (*sheet[origin][:3], output, sheet[origin][4])  # its own name kept
                origin = take_of.get(origin)
            if now is None or (
                row == now[1] and line == now[2] and output == now[3] and loads(metadata) == now[4]
            ):
                continue
            changed.append((now[1], now[2], now[3], dumps(now[4]), job_id))
            if state == JobState.DONE.value and saved and output != now[3]:
                renamed.append((job_id, saved, now[3]))
        if changed:
            with self.db.atomic():
                self.db.conn.executemany(
                    "update jobs set row = ?, line = ?, output_name = ?, metadata = ? "
                    "where job_id = ?",
                    changed,
                )
        return renamed

    def insert(self, jobs: Sequence[NewJob]) -> None:
        """Record new jobs as pending, seen by this run, in one transaction with one statement
        per table (100,000 jobs take about a second)."""
        stamp = now()
        pending = JobState.PENDING.value
        with self.db.atomic():
            self.db.conn.executemany(
                _INSERT_JOB,
                (
                    (
                        job.job_id, job.row, job.line, job.variant, job.endpoint,
                        dumps(job.input), job.input_hash, dumps(job.files), job.output_name,
                        dumps(job.metadata), job.price_usd, job.take_of, pending, stamp, stamp,
                        self.run_id,
                    )
                    for job in jobs
                ),
            )  # fmt: skip
            self.db.conn.executemany(
                _INSERT_EVENT,
                (
                    (job.job_id, self.run_id, stamp, None, pending, "added from the manifest")
                    for job in jobs
                ),
            )

    def replace(self, job: NewJob) -> None:
        """Give an existing job id the edited row's input (``--replace-changed``).

        A job not yet at the provider takes the new input in place. A done job is retired
        under ``<id>@<n>`` (its record, file and cost are kept) and the id starts afresh. A job
        in flight cannot be replaced: its paid result is still coming.
        """
        current = self.get(job.job_id)
        fields: dict[str, Any] = {
            "input": dumps(job.input),
            "input_hash": job.input_hash,
            "files": dumps(job.files),
            "output_name": job.output_name,
            "metadata": dumps(job.metadata),
            "price_usd": job.price_usd,
            "row": job.row,
            "line": job.line,
            "variant": job.variant,
        }
        if current.state in (
            JobState.PENDING,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.UNKNOWN,
        ):
            self.transition(
                job.job_id, JobState.PENDING, detail="input replaced", error=None, **fields
            )
        elif current.state is JobState.DONE:
            (retired,) = self.db.execute(
                "select count(*) from jobs where job_id like ?", [f"{job.job_id}@%"]
            ).fetchone()
            archive = f"{job.job_id}@{retired + 1}"
            # The edited row's video will be written where this one is: the kept video (and its
            # poster) get a name of their own first, a second link to the same file, so that
            # the ledger names a path that holds it whenever a crash comes.
            files = {"output_path": current.output_path, "poster": current.poster}
            kept = {column: _link_aside(path, f"@{retired + 1}") for column, path in files.items()}
            with self.db.atomic():
                self.db.execute(
                    "update jobs set job_id = ?, output_path = ?, poster = ? where job_id = ?",
                    [
                        archive,
                        kept["output_path"] or files["output_path"],
                        kept["poster"] or files["poster"],
                        job.job_id,
                    ],
                )
                self.db.execute(
                    "update events set job_id = ? where job_id = ?", [archive, job.job_id]
                )
                self.db.table("events").insert(
                    {
                        "job_id": archive,
                        "run_id": self.run_id,
                        "at": now(),
                        "from_state": "done",
                        "to_state": "done",
                        "detail": f"retired: {job.job_id} was replaced by an edited row",
                    }
                )
            for column, path in files.items():
                if kept[column] and path:  # the old name is the edited row's to take
                    Path(path).unlink(missing_ok=True)
        else:
            raise TransitionError(
                f"job {job.job_id} is {current.state} at the provider; let it finish "
                "(batchrunner resume) before replacing it"
            )

    def standings(self, job_ids: Sequence[str]) -> dict[str, Standing]:
        """job id → :class:`Standing`, for the ids the ledger has (a re-run of 20,000 done rows
        reads these five columns, not 20,000 whole jobs)."""
        found: dict[str, Standing] = {}
        for chunk, marks in _in_chunks(job_ids):
            sql = (
                "select job_id, row, state, input_hash, price_usd from jobs "
                f"where job_id in ({marks})"
            )
            for job_id, row, state, input_hash, price in self.db.conn.execute(sql, chunk):
                found[job_id] = Standing(job_id, row, STATES[state], input_hash, price)
        return found

    def input_hashes(self, job_ids: Sequence[str]) -> dict[str, str]:
        """job id → stored input hash, for the ids the ledger has."""
        return self._lookup("input_hash", job_ids)

    def requests_not_named(
        self, named: Collection[str], states: Sequence[str]
    ) -> dict[str, tuple[str, str]]:
        """input hash → (job id, state) of the jobs in ``states`` whose id is not in ``named``
        (a manifest's jobs): what a renamed row would buy again."""
        marks = ", ".join("?" for _ in states)
        sql = f"select input_hash, job_id, state from jobs where state in ({marks})"
        return {
            digest: (job_id, state)
            for digest, job_id, state in self.db.conn.execute(sql, list(states))
            if job_id not in named
        }

    def requests_as_read(
        self, named: Collection[str], states: Sequence[str], prompts: Collection[Any]
    ) -> dict[str, tuple[str, str, str]]:
        """:func:`~batchrunner.jobs.loose_hash` → (job id, state, model) of the jobs in
        ``states`` whose id is not in ``named``: what a row sent to another model, or read from
        its file saved another way, would buy again (an id-less sheet's job id changes with
        either), among those whose prompt reads as one of ``prompts`` (None: one that is not
        text). Only those
        jobs' requests are read: a nightly sheet that keeps its rows reads none."""
        marks = ", ".join("?" for _ in states)
        sql = f"select job_id from jobs where state in ({marks})"
        unnamed = [i for (i,) in self.db.conn.execute(sql, list(states)) if i not in named]
        found = {}
        for chunk, marks in _in_chunks(unnamed):
            sql = (
                f"select job_id, state, endpoint, input, files from jobs where job_id in ({marks})"
            )
            for job_id, state, endpoint, payload, files in self.db.conn.execute(sql, chunk):
                asked = loads(payload)
                prompt = asked.get("prompt")
                if (as_read(prompt) if isinstance(prompt, str) else None) in prompts:
                    digest = loose_hash(asked, loads(files) if files else {})
                    found[digest] = (job_id, state, endpoint)
        return found

    def video_of(self, path: str) -> str | None:
        """The job whose video is saved at ``path`` (as the run stored it), or None."""
        sql = "select job_id from jobs where output_path = ? limit 1"
        found = self.db.conn.execute(sql, [path]).fetchone()
        return None if found is None else str(found[0])

    def find(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """job id → :class:`Job`, for the ids the ledger has."""
        found: dict[str, Job] = {}
        for chunk, marks in _in_chunks(job_ids):
            for job in self._read(f"job_id in ({marks})", chunk):
                found[job.job_id] = job
        return found

    def has_labels(self) -> bool:
        """Whether any job has a variant label or is a re-roll (``retry --new-take``)."""
        sql = "select 1 from jobs where variant <> '' or take_of is not null limit 1"
        return self.db.conn.execute(sql).fetchone() is not None

    def labels(self) -> dict[str, tuple[str, str | None]]:
        """job id → (variant label, the job it is a new take of) for every job."""
        sql = "select job_id, coalesce(variant, ''), take_of from jobs"
        return {
            job_id: (variant, take_of) for job_id, variant, take_of in self.db.conn.execute(sql)
        }

    def states(self, job_ids: Sequence[str]) -> dict[str, str]:
        """job id → state, for the ids the ledger has."""
        return self._lookup("state", job_ids)

    def _lookup(self, column: str, job_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk, marks in _in_chunks(job_ids):
            sql = f"select job_id, {column} from jobs where job_id in ({marks})"
            found.update(dict(self.db.execute(sql, chunk).fetchall()))
        return found

    def has(self, job_id: str) -> bool:
        return (
            self.db.execute("select 1 from jobs where job_id = ?", [job_id]).fetchone() is not None
        )

    def require(self, job_ids: Iterable[str]) -> None:
        """Raise :class:`UsageError` naming the ids among ``job_ids`` that are no job of this
        ledger (the first ten), each with the id it nearly is (``shot-7``: ``shot-07``)."""
        missing = [job_id for job_id in job_ids if not self.has(job_id)]
        if not missing:
            return
        known = [row[0] for row in self.db.conn.execute("select job_id from jobs")]
        shown = ", ".join(_what_it_is(job_id, known) for job_id in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise UsageError(f"no such job in {self.path}: {shown}{more}")

    def get(self, job_id: str) -> Job:
        found = self.db.conn.execute(_SELECT_JOB, [job_id]).fetchone()
        if found is None:
            raise KeyError(job_id)
        return Job.from_values(found)

    def jobs(self, states: Iterable[JobState] | None = None) -> Iterator[Job]:
        """Jobs in manifest order (row, then variant), optionally only in ``states``."""
        where, args = _in_states(states)
        yield from self._read(where, args, order_by=_MANIFEST_ORDER)

    def warned(self) -> Iterator[Job]:
        """Done jobs whose file differs from the request (``warnings``), in manifest order,
        without reading the others: ``status`` of 100,000 done jobs read each (2.9 s)."""
        where = "state = ? and warnings is not null and warnings <> '[]'"
        yield from self._read(where, [JobState.DONE.value], order_by=_MANIFEST_ORDER)

    def _read(
        self, where: str | None, args: Sequence[Any], order_by: str | None = None
    ) -> Iterator[Job]:
        """The jobs ``where`` selects, read a row at a time."""
        sql = f"select {JOB_SELECT} from jobs"
        if where is not None:
            sql += f" where {where}"
        if order_by is not None:
            sql += f" order by {order_by}"
        for found in self.db.conn.execute(sql, args):
            yield Job.from_values(found)

    def done_files(self) -> list[tuple[str, str, int | None]]:
        """(job id, output path, bytes) of each done job with a file, without reading the jobs
        (every run looks for the done videos that went missing)."""
        sql = "select job_id, output_path, bytes from jobs where state = ? and output_path <> ''"
        return self.db.conn.execute(sql, [JobState.DONE.value]).fetchall()

    def job_ids(self, states: Iterable[JobState]) -> list[str]:
        """The ids of :meth:`jobs` in ``states``, in the same order, without reading the jobs
        (a run's work list of 100,000 pending jobs)."""
        return [key[-1] for key in self.job_keys(states)]

    def never_sent(self, job_ids: Sequence[str]) -> set[str]:
        """Those of ``job_ids`` pending ever since their rows were read (not sent, not put back
        by ``retry``, not a new take): what a manifest without their rows leaves alone."""
        found: set[str] = set()
        for chunk, marks in _in_chunks(job_ids):
            sql = (
                f"select job_id from jobs where job_id in ({marks}) and state = ? "
                f"and {_NEVER_LEFT_PENDING}"
            )
            found.update(i for (i,) in self.db.execute(sql, [*chunk, JobState.PENDING.value]))
        return found

    def left_alone(self) -> dict[JobState, int]:
        """Jobs left alone because the latest `run`'s manifest no longer has their rows, by
        state: pending ones never sent (:meth:`sendable_keys`), and ones that ended short of
        done (:data:`SET_ASIDE`: a refused prompt deleted from the sheet), which a run no
        longer waits for and ``retry`` does not send (:meth:`in_sheet`)."""
        aside, args = _in_states(SET_ASIDE)
        sql = (
            f"select state, count(*) from jobs where (state = ? and {_DROPPED}) "
            f"or ({aside} and {_GONE}) group by state"
        )
        found = self.db.execute(sql, [JobState.PENDING.value, *args]).fetchall()
        return {JobState(state): int(n) for state, n in found}

    def pending_prices(self) -> Iterator[tuple[str, str, dict[str, Any], float | None]]:
        """``(job id, endpoint, input, price)`` of each pending job: what :meth:`reprice`
        compares with the registry's price now."""
        sql = "select job_id, endpoint, input, price_usd from jobs where state = ?"
        for job_id, endpoint, body, price in self.db.execute(sql, [JobState.PENDING.value]):
            yield job_id, endpoint, json.loads(body), price

    def reprice(self, prices: Sequence[tuple[str, float | None]]) -> None:
        """Give pending jobs new estimated prices, ``(job id, price)``, in one transaction
        (a job sent meanwhile keeps the price it was reserved at)."""
        with self.db.atomic():
            self.db.conn.executemany(
                "update jobs set price_usd = ? where job_id = ? and state = ?",
                [(price, job_id, JobState.PENDING.value) for job_id, price in prices],
            )

    def in_sheet(self, states: Iterable[JobState]) -> Iterator[Job]:
        """:meth:`jobs` in ``states`` but not those :meth:`left_alone`: what ``retry`` sends
        again and what a run still counts as needing the user."""
        where, args = _in_states(states)
        aside, more = _in_states(SET_ASIDE)
        sql = f"{where} and not ({aside} and {_GONE}) and not (state = ? and {_DROPPED})"
        yield from self._read(sql, [*args, *more, JobState.PENDING.value], _MANIFEST_ORDER)

    def sendable_keys(self) -> list[OrderKey]:
        """The :func:`order_key` of each pending job a run sends, in manifest order: not one
        never sent whose row the latest ``run``'s manifest no longer has (deleted from the
        sheet to save its cost: left alone, as ``status`` lists it). New takes and jobs sent
        before (put back by ``retry``) are sent."""
        sql = (
            f"select row, variant, job_id from jobs where state = ? and not ({_DROPPED}) "
            f"order by {_MANIFEST_ORDER}"
        )
        found = self.db.execute(sql, [JobState.PENDING.value]).fetchall()
        return [order_key(*key) for key in found]

    def job_keys(self, states: Iterable[JobState]) -> list[OrderKey]:
        """The :func:`order_key` of each job in ``states``, in manifest order."""
        where, args = _in_states(states)
        sql = f"select row, variant, job_id from jobs where {where} order by {_MANIFEST_ORDER}"
        return [order_key(*found) for found in self.db.execute(sql, args).fetchall()]

    def not_in_last_manifest(self) -> list[Job]:
        """Jobs the latest `run`'s manifest no longer had (its row was removed); left alone.
        New takes (``retry --new-take``) never were in a manifest and are not listed."""
        last = self.last_run(("run",))
        if last is None:
            return []
        where = "(seen_run is null or seen_run < ?) and take_of is null"
        return list(self._read(where, [last["id"]], order_by=_MANIFEST_ORDER))

    def origins(self) -> dict[str, int]:
        """Where the ledger's jobs were submitted (an API origin, or ``simulator``): how many
        jobs each."""
        found = self.db.execute(
            "select origin, count(*) from jobs where origin is not null group by origin"
        ).fetchall()
        return {origin: int(n) for origin, n in found}

    def counts(self) -> dict[JobState, int]:
        rows = self.db.execute("select state, count(*) from jobs group by state").fetchall()
        return {JobState(state): n for state, n in rows}

    def by_model(self) -> dict[str, dict[str, Any]]:
        """Each model's jobs by state and its :meth:`spend`, the model with most jobs first."""
        found: dict[str, dict[str, Any]] = {}
        for endpoint, state, jobs, spent in self.db.execute(
            f"select endpoint, state, count(*), coalesce(sum({_SPENT}), 0) from jobs "
            "group by endpoint, state order by endpoint, state"
        ):
            model = found.setdefault(endpoint, {"jobs": 0, "counts": {}, "spend_usd": 0.0})
            model["jobs"] += jobs
            model["counts"][state] = jobs
            model["spend_usd"] = round(model["spend_usd"] + float(spent), 4)
        return dict(sorted(found.items(), key=lambda item: -item[1]["jobs"]))

    def spend(self) -> float:
        """Estimated money committed so far: every send that may have been billed."""
        (total,) = self.db.execute(f"select coalesce(sum({_SPENT}), 0) from jobs").fetchone()
        return round(float(total), 4)

    def rows_taken(self) -> str | None:
        """The ``--rows`` the latest `run` cut its manifest to (its other rows' jobs are left
        alone, not deleted), or None."""
        last = self.last_run(("run",))
        return last["options"].get("rows") if last else None

    def spend_by_run(self) -> dict[int, float]:
        """:meth:`run_spend` of every run that submitted, in one pass over the events."""
        found = self.db.execute(
            f"select submits.run_id, coalesce(sum({_LATEST}), 0) from "
            "(select distinct run_id, job_id from events where to_state = ?) as submits "
            "join jobs on jobs.job_id = submits.job_id group by submits.run_id",
            [JobState.SUBMITTING.value],
        ).fetchall()
        return {run: round(float(total), 4) for run, total in found}

    def moves_by_run(self) -> dict[int, tuple[int, int]]:
        """What each run submitted and downloaded, counted from its events as the run counts
        them while it goes (its summary says so at its end; a killed run never did): the
        submits the provider took (``submitting`` → ``queued``) and the videos it saved
        (``completed`` → ``done``)."""
        found = self.db.execute(
            "select run_id, sum(from_state = ? and to_state = ?), "
            "sum(from_state = ? and to_state = ?) from events where run_id is not null "
            "group by run_id",
            [
                JobState.SUBMITTING.value,
                JobState.QUEUED.value,
                JobState.COMPLETED.value,
                JobState.DONE.value,
            ],
        ).fetchall()
        return {run: (int(submitted), int(downloaded)) for run, submitted, downloaded in found}

    def unended_before(self) -> tuple[int, ...]:
        """The batch runs just before this one that were stopped short: never ended (killed,
        crashed, their machine gone) or stopped by Ctrl-C or SIGTERM, whose line says `resume`
        carries on. Latest first: what a ``resume`` carries on, the same night."""
        marks = ", ".join("?" for _ in BATCHES)
        found = self.db.execute(
            f"select id, finished_at, exit_code from runs where id < ? and command in ({marks}) "
            "order by id desc",
            [self.run_id, *BATCHES],
        )
        carried = []
        for run, finished, code in found:
            if finished is not None and code not in _STOPPED_SHORT:
                break
            carried.append(int(run))
        return tuple(carried)

    def night_spend(self) -> float:
        """What this run and the runs it carries on (:attr:`carried`) committed: what
        ``--run-budget`` caps."""
        return round(sum(self.run_spend(run) for run in (self.run_id, *self.carried)), 4)

    def run_spend(self, run_id: int | None = None) -> float:
        """What a run (this one by default) committed: the spend of the jobs it submitted (a
        price given back, a refused submit, is not counted, and a job submitted twice counts
        once). Of an earlier run, a job bought again since counts at its latest price."""
        (total,) = self.db.execute(
            f"select coalesce(sum({_LATEST}), 0) from jobs where job_id in "
            "(select job_id from events where run_id = ? and to_state = ?)",
            [self.run_id if run_id is None else run_id, JobState.SUBMITTING.value],
        ).fetchone()
        return round(float(total), 4)

    def waiting(self) -> tuple[int, float]:
        """The pending jobs (never submitted, or to be submitted again) and what their
        submits are estimated to cost."""
        count, price = self.db.execute(
            "select count(*), coalesce(sum(price_usd), 0) from jobs where state = ? "
            f"and not ({_DROPPED})",
            [JobState.PENDING.value],
        ).fetchone()
        return int(count), round(float(price), 4)

    def billed(self) -> tuple[float, int]:
        """What the provider reported billing (USD), and for how many jobs it did."""
        total, jobs = self.db.execute(
            "select coalesce(sum(billed_usd), 0), count(billed_usd) from jobs"
        ).fetchone()
        return round(float(total), 4), int(jobs)

    def events(self, job_id: str | None = None) -> list[dict[str, Any]]:
        where, args = (None, []) if job_id is None else ("job_id = ?", [job_id])
        return [dict(r) for r in self.db.table("events").rows_where(where, args, order_by="id")]

    # ---------------------------------------------------------------- the one way to change state

    def transition(
        self,
        job_id: str,
        new: JobState,
        *,
        detail: str | None = None,
        expect: JobState | Iterable[JobState] | None = None,
        **fields: Any,
    ) -> Job:
        """Move ``job_id`` to ``new``, set ``fields``, log the event, commit, return the job.

        ``expect`` names the state(s) the caller believes the job is in; a mismatch raises
        :class:`TransitionError`, as does a move the state machine forbids, and a call inside
        an open transaction (``db.atomic()``), which could not commit before returning.
        """
        (outcome,) = self.transitions([Move(job_id, new, detail, expect, fields)])
        if isinstance(outcome, TransitionError):
            raise outcome
        return outcome

    def transitions(self, moves: Sequence[Move]) -> list[Job | TransitionError]:
        """Make every move of ``moves`` in one transaction and one durable commit: each checked
        and written as :meth:`transition` does, in order. A refused move writes nothing and
        comes back as its :class:`TransitionError`, the others are made; any other error rolls
        them all back and is raised. :class:`GroupCommit` gathers the moves of many tasks."""
        conn = self.db.conn
        if conn.in_transaction:
            raise TransitionError(
                "a transition commits, so it cannot be made inside another transaction "
                "(it would be committed, or rolled back, with that one)"
            )
        # The connection itself, not sqlite-utils' atomic(): the write lock is taken at BEGIN,
        # so what is checked is what is written.
        conn.execute("begin immediate")
        try:
            outcomes = [self._apply(conn, move) for move in moves]
            conn.execute("commit")
        except BaseException:
            if conn.in_transaction:
                conn.execute("rollback")
            raise
        return outcomes

    def _apply(self, conn: sqlite3.Connection, move: Move) -> Job | TransitionError:
        """One move inside :meth:`transitions`' transaction: two statements."""
        fields = dict(move.fields)
        for name in JSON_COLUMNS:
            if name in fields and not isinstance(fields[name], str | None):
                fields[name] = dumps(fields[name])
        stamp = now()
        values = {**fields, "state": move.new.value, "updated_at": stamp}
        allowed = _expected(move.expect)
        check, sources = _move_check(move.new, allowed)
        # The event is written only if the job is in a state it may move from: its from_state
        # is the job's state as read by this same statement.
        logged = conn.execute(
            check, [self.run_id, stamp, move.new.value, move.detail, move.job_id, *sources]
        )
        if not logged.rowcount:
            return self._refusal(move.job_id, move.new, allowed)
        found = conn.execute(_update_job(tuple(values)), [*values.values(), move.job_id])
        return Job.from_values(found.fetchone())

    def _refusal(
        self, job_id: str, new: JobState, allowed: frozenset[JobState] | None
    ) -> TransitionError:
        """Why ``job_id`` cannot move to ``new`` (from one of the ``allowed`` states): the error
        :meth:`transition` raises."""
        row = self.db.conn.execute("select state from jobs where job_id = ?", [job_id]).fetchone()
        if row is None:
            return TransitionError(f"no job {job_id!r} in the ledger")
        old = JobState(row[0])
        if allowed is not None and old not in allowed:
            return TransitionError(f"job {job_id} is {old}, expected {sorted(allowed)}")
        return TransitionError(f"job {job_id}: {old} → {new} is not an allowed transition")


def _what_it_is(name: str, known: Sequence[str]) -> str:
    """``name`` as :meth:`Ledger.require` lists it: with the jobs of the row whose id it is
    (an export's ``id`` column, not its ``job_id``: ``owl`` → ``owl~16:9``, ``owl~9:16``), else
    the id it nearly is."""
    jobs = [job_id for job_id in known if job_id.startswith(name + "~")]
    if not jobs:
        return name + hint(near_id(name, known))
    listed = ", ".join(jobs[:4]) + (f" and {len(jobs) - 4} more" if len(jobs) > 4 else "")
    return f"{name} (a row's id: its jobs are {listed})"


def _link_aside(path: str | None, mark: str) -> str | None:
    """A second name for the file at ``path``, its stem marked (``0001-a.mp4`` → ``0001-a@1.mp4``):
    a hard link, else a copy where the disk has no links; None when there is no file."""
    if not path or not os.path.isfile(path):
        return None
    source = Path(path)
    aside = source.with_name(f"{source.stem}{mark}{source.suffix}")
    try:
        os.link(source, aside)
    except FileExistsError:  # made by a run that stopped before it committed, or not ours
        if not os.path.samefile(source, aside):
            raise LedgerError(
                f"{aside} is in the way of keeping the replaced job's {source.name}: move it, "
                "then run again"
            ) from None
    except OSError:  # a disk without hard links
        shutil.copy2(source, aside)
    return str(aside)


def _expected(expect: JobState | Iterable[JobState] | None) -> frozenset[JobState] | None:
    if expect is None:
        return None
    return frozenset({JobState(expect)} if isinstance(expect, str) else expect)


def _move_check(new: JobState, allowed: frozenset[JobState] | None) -> tuple[str, tuple[str, ...]]:
    """The statement that logs a move to ``new`` only if the job is in a state it may move
    from (by the state machine, and among the ``allowed`` ones), and those states: built once
    for each pair."""
    key = (new, allowed)
    found = _MOVE_CHECKS.get(key)
    if found is None:
        sources = tuple(
            old.value
            for old in JobState
            if can_move(old, new) and (allowed is None or old in allowed)
        )
        marks = ", ".join("?" for _ in sources)
        found = _MOVE_CHECKS[key] = (_INSERT_MOVE.format(sources=marks), sources)
    return found


_MOVE_CHECKS: dict[tuple[JobState, frozenset[JobState] | None], tuple[str, tuple[str, ...]]] = {}

_INSERT_MOVE = (
    "insert into events (job_id, run_id, at, from_state, to_state, detail) "
    "select job_id, ?, ?, state, ?, ? from jobs where job_id = ? and state in ({sources})"
)


@functools.lru_cache(maxsize=256)
def _update_job(names: tuple[str, ...]) -> str:
    """``update jobs`` setting ``names`` of one job, returning it as :meth:`Job.from_values`
    reads it (the SQL of each call site's set of fields, built once)."""
    assignments = ", ".join(f"[{name}] = ?" for name in names)
    return f"update jobs set {assignments} where job_id = ? returning {JOB_SELECT}"


_MANIFEST_ORDER = "row, variant, job_id"
_SELECT_JOB = f"select {JOB_SELECT} from jobs where job_id = ?"


# pending since it was added from a manifest: never sent, never put back by `retry`
_NEVER_LEFT_PENDING = (
    "take_of is null and not exists "
    "(select 1 from events where events.job_id = jobs.job_id and events.to_state <> 'pending')"
)
# its row is not in the latest `run`'s manifest (deleted from the sheet, or outside its --rows);
# a new take never was in one
_GONE = (
    "seen_run is not null and seen_run < "
    "coalesce((select max(id) from runs where command = 'run'), 0) and take_of is null"
)
# ... and never sent (tested first: it rules out most jobs)
_DROPPED = f"{_GONE} and {_NEVER_LEFT_PENDING}"
# ended short of done: left alone once the sheet no longer has the row (nothing is waiting to
# be fetched; a download_failed job's video is paid for and stays the user's to fetch)
SET_ASIDE = (JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED, JobState.UNKNOWN)


def _in_chunks(job_ids: Sequence[str], size: int = 500) -> Iterator[tuple[list[str], str]]:
    """``job_ids`` ``size`` at a time (under SQLite's bound on a statement's parameters), each
    chunk with its ``?, ?, ...``."""
    for start in range(0, len(job_ids), size):
        chunk = list(job_ids[start : start + size])
        yield chunk, ", ".join("?" for _ in chunk)


def _in_states(states: Iterable[JobState] | None) -> tuple[str | None, list[str]]:
    """A where clause (and its arguments) for jobs in ``states``; None: every job."""
    if states is None:
        return None, []
    wanted = [JobState(s).value for s in states]
    return "state in ({})".format(", ".join("?" for _ in wanted)), wanted


_INSERT_JOB = (
    "insert into jobs (job_id, row, line, variant, endpoint, input, input_hash, files, "
    "output_name, metadata, price_usd, take_of, state, created_at, updated_at, seen_run) "
    "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EVENT = (
    "insert into events (job_id, run_id, at, from_state, to_state, detail) "
    "values (?, ?, ?, ?, ?, ?)"
)
