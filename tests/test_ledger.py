"""The ledger: migrations, refusing files it must not touch, and the one transition API."""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
import sqlite_utils
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrunner.commits import GroupCommit
from batchrunner.errors import LedgerError, LedgerLockedError, TransitionError
from batchrunner.jobs import Job, NewJob
from batchrunner.ledger import Ledger
from batchrunner.lock import LedgerLock, lock_path
from batchrunner.migrations import MIGRATION_SET
from batchrunner.states import TRANSITIONS, JobState, can_move

S = JobState
ENDPOINT = "fal-ai/veo3/image-to-video"


def job(job_id: str = "a", prompt: str = "a cat", **kw: object) -> NewJob:
    return NewJob(job_id=job_id, endpoint=ENDPOINT, input={"prompt": prompt}, row=1, **kw)  # type: ignore[arg-type]


def test_blank_file_gets_schema_wal_and_migration_record(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        assert {"jobs", "runs", "events"} <= set(ledger.db.table_names())
        assert ledger.db.journal_mode == "wal"
        applied = ledger.db.execute(
            "select name from _sqlite_migrations where migration_set = ?", [MIGRATION_SET]
        ).fetchall()
        assert applied == [
            ("m001_initial",),
            ("m002_runs_concurrency_limit",),
            ("m003_jobs_seen_run",),
            ("m004_jobs_billing",),
            ("m005_jobs_media",),
            ("m006_jobs_earlier_usd",),
            ("m007_runs_waiting",),
        ]
    # opening again applies nothing new and keeps data
    with Ledger.open(tmp_path / "l.db") as ledger:
        assert ledger.db.execute("select count(*) from _sqlite_migrations").fetchone() == (7,)


def test_refuses_a_sqlite_file_that_is_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite_utils.Database(path)["photos"].insert({"id": 1})
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="not a batchrunner ledger"):
        Ledger.open(path)
    assert path.read_bytes() == before


def test_refuses_a_ledger_from_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    Ledger.open(path).close()
    db = sqlite_utils.Database(path)
    db["_sqlite_migrations"].insert(
        {"migration_set": MIGRATION_SET, "name": "m999_future", "applied_at": "2030"}
    )
    db.close()
    with pytest.raises(LedgerError, match="newer batchrunner"):
        Ledger.open(path)


def test_refuses_a_corrupt_file_and_leaves_it(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(LedgerError, match="not a usable SQLite ledger"):
        Ledger.open(path)
    assert path.read_bytes() == b"this is not sqlite at all" * 100


def test_missing_ledger_when_not_creating(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger"):
        Ledger.open(tmp_path / "nope.db", create=False)
    assert not (tmp_path / "nope.db").exists()


@pytest.mark.parametrize("create", [True, False])
def test_a_folder_is_no_ledger_and_says_so(tmp_path: Path, create: bool) -> None:
    """The Python API's ledger= is no click.Path: SQLite said "unable to open database file"."""
    with pytest.raises(LedgerError, match=r"is a folder; a ledger is a file, e\.g\. .*shots\.db"):
        Ledger.open(tmp_path, create=create)


def test_an_empty_file_is_no_ledger_to_read_and_is_left_empty(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    path.touch()
    with pytest.raises(LedgerError, match=r"no ledger at .*typo\.db \(the file is empty\)"):
        Ledger.open(path, create=False)
    assert path.stat().st_size == 0  # `status` and `export` read; they never make a ledger


def test_add_jobs_is_idempotent_and_edits_are_detectable(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        assert ledger.add_jobs([job("a"), job("b")]).added == 2
        edited = [job("a"), job("b", prompt="edited"), job("c")]
        stored = ledger.input_hashes([j.job_id for j in edited])
        assert [j.job_id for j in edited if stored.get(j.job_id, j.input_hash) != j.input_hash] == [
            "b"
        ]
        again = ledger.add_jobs(edited)
        assert (again.added, again.existing) == (1, 2)
        assert ledger.get("b").input == {"prompt": "a cat"}  # existing jobs untouched


def test_transition_commits_state_fields_and_event(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger.open(path) as ledger:
        ledger.start_run("run")
        ledger.add_jobs([job()])
        ledger.transition("a", S.SUBMITTING, submits=1, cost_usd=1.6)
        ledger.transition("a", S.QUEUED, request_id="r-1", result={"x": 1})
    # a second connection (another process) sees it: it was committed
    with Ledger.open(path) as other:
        stored = other.get("a")
        assert (stored.state, stored.request_id, stored.submits) == (S.QUEUED, "r-1", 1)
        assert other.spend() == 1.6
        moves = [(e["from_state"], e["to_state"]) for e in other.events("a")]
        assert moves == [(None, "pending"), ("pending", "submitting"), ("submitting", "queued")]


def test_a_job_read_is_the_frozen_dataclass_its_fields_make(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.add_jobs([job(metadata={"note": "x"})])
        stored = ledger.transition("a", S.SUBMITTING, submits=1, cost_usd=1.6)
        assert stored == ledger.get("a") == dataclasses.replace(stored)
        assert stored == Job.from_row(next(ledger.db.table("jobs").rows))
        assert (stored.metadata, stored.warnings, stored.result) == ({"note": "x"}, [], None)
        with pytest.raises(dataclasses.FrozenInstanceError):
            stored.state = S.DONE  # type: ignore[misc]


def test_warned_reads_only_the_done_jobs_with_warnings_in_manifest_order(tmp_path: Path) -> None:
    """What ``status`` lists under warnings, read without the other done jobs."""
    with Ledger.open(tmp_path / "l.db") as ledger:
        jobs = [dataclasses.replace(job(name), row=row) for row, name in enumerate("dcbae", 1)]
        ledger.add_jobs(jobs)
        states = {
            "d": ("done", '["short"]'), "c": ("done", "[]"), "b": ("failed", '["x"]'),
            "a": ("done", '["turned", "silent"]'), "e": ("done", None),  # before m005: NULL
        }  # fmt: skip
        for name, (state, warnings) in states.items():
            ledger.db.table("jobs").update(name, {"state": state, "warnings": warnings})
        assert [(j.job_id, j.warnings) for j in ledger.warned()] == [
            ("d", ["short"]),
            ("a", ["turned", "silent"]),
        ]


def test_forbidden_transition_changes_nothing(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.add_jobs([job()])
        with pytest.raises(TransitionError, match="not an allowed transition"):
            ledger.transition("a", S.DONE, sha256="x")
        with pytest.raises(TransitionError, match="expected"):
            ledger.transition("a", S.SUBMITTING, expect=S.QUEUED)
        stored = ledger.get("a")
        assert (stored.state, stored.sha256) == (S.PENDING, None)
        assert len(ledger.events("a")) == 1


def test_transition_of_an_unknown_job_is_refused(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        with pytest.raises(TransitionError, match="no job 'nope' in the ledger"):
            ledger.transition("nope", S.SUBMITTING)
        assert ledger.events() == []
        ledger.add_jobs([job()])  # the refused move left no transaction open
        assert ledger.transition("a", S.SUBMITTING).state is S.SUBMITTING


def test_a_transition_inside_another_transaction_is_refused(tmp_path: Path) -> None:
    """It could not be committed before returning; the open transaction is left as it was."""
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.add_jobs([job()])
        with ledger.db.atomic():
            ledger.db.execute("update jobs set error = 'kept' where job_id = 'a'")
            with pytest.raises(TransitionError, match="inside another transaction"):
                ledger.transition("a", S.SUBMITTING)
        stored = ledger.get("a")
        assert (stored.state, stored.error) == (S.PENDING, "kept")
        assert len(ledger.events("a")) == 1


def _submitted(ledger: Ledger, n: int) -> list[str]:
    ids = [f"j{i:02d}" for i in range(n)]
    ledger.add_jobs([job(i, prompt=i) for i in ids])
    for job_id in ids:
        ledger.transition(job_id, S.SUBMITTING)
    return ids


def test_a_group_commit_makes_many_tasks_moves_in_one_commit_each_durable_on_return(
    tmp_path: Path,
) -> None:
    """Forty tasks moving at once share one transaction; a refused move fails its own caller
    only; and every caller that returns finds its move committed (read from another
    connection, as another process would)."""
    path = tmp_path / "l.db"
    with Ledger.open(path) as ledger:
        ledger.start_run("run")
        ids = _submitted(ledger, 40)
        commits = GroupCommit(ledger)
        seen: dict[str, str] = {}
        refused: list[str] = []
        reader = sqlite3.connect(path)

        async def move(job_id: str) -> None:
            new = S.DONE if job_id == "j07" else S.QUEUED  # submitting -> done is not allowed
            try:
                await commits.transition(job_id, new, request_id=f"r-{job_id}")
            except TransitionError as exc:
                refused.append(str(exc))
                return
            (seen[job_id],) = reader.execute(
                "select state from jobs where job_id = ?", [job_id]
            ).fetchone()

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                for job_id in ids:
                    tg.start_soon(move, job_id)

        anyio.run(main)
        assert (commits.batches, commits.moves) == (1, 40)
        assert refused == ["job j07: submitting → done is not an allowed transition"]
        assert seen == {job_id: "queued" for job_id in ids if job_id != "j07"}
        assert ledger.get("j07").state is S.SUBMITTING
        assert len(ledger.events("j07")) == 2


def test_a_group_commit_is_not_cut_short_by_a_stop_and_a_failed_commit_fails_every_caller(
    tmp_path: Path,
) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.start_run("run")
        ids = _submitted(ledger, 10)
        commits = GroupCommit(ledger)
        errors: list[BaseException] = []

        async def move(job_id: str, **fields: object) -> None:
            try:
                await commits.transition(job_id, S.QUEUED, **fields)
            except sqlite3.OperationalError as exc:
                errors.append(exc)

        async def stopped_at_once() -> None:
            async with anyio.create_task_group() as tg:
                for job_id in ids[:5]:
                    tg.start_soon(move, job_id)
                await anyio.lowlevel.checkpoint()  # they are all waiting for the commit now
                tg.cancel_scope.cancel()

        anyio.run(stopped_at_once)
        assert [ledger.get(i).state for i in ids[:5]] == [S.QUEUED] * 5  # recorded all the same

        async def one_bad_move() -> None:
            async with anyio.create_task_group() as tg:
                for job_id in ids[6:]:
                    tg.start_soon(move, job_id)
                tg.start_soon(functools.partial(move, ids[5], no_such_column=1))

        anyio.run(one_bad_move)
        assert len(errors) == 5 and all("no_such_column" in str(e) for e in errors)
        assert [ledger.get(i).state for i in ids[5:]] == [S.SUBMITTING] * 5  # rolled back


def test_every_move_is_made_or_refused_as_the_state_machine_says(tmp_path: Path) -> None:
    """From each state to each state: the job moves and logs it, or nothing changes and the
    error names the move; a wrong ``expect`` is named first."""
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.add_jobs([job()])
        for old in JobState:
            for new in JobState:
                ledger.db.execute("update jobs set state = ? where job_id = 'a'", [old.value])
                logged = len(ledger.events("a"))
                if can_move(old, new):
                    moved = ledger.transition("a", new, expect=(s for s in [old]), error="x")
                    assert (moved.state, moved.error) == (new, "x") == (ledger.get("a").state, "x")
                    last = ledger.events("a")[-1]
                    assert (last["from_state"], last["to_state"]) == (old.value, new.value)
                    assert len(ledger.events("a")) == logged + 1
                    ledger.db.execute("update jobs set error = null where job_id = 'a'")
                    continue
                with pytest.raises(TransitionError) as refused:
                    ledger.transition("a", new, error="x")
                assert str(refused.value) == f"job a: {old} → {new} is not an allowed transition"
                others = [s for s in JobState if s is not old]
                with pytest.raises(TransitionError) as refused:
                    ledger.transition("a", new, expect=others, error="x")
                assert str(refused.value) == f"job a is {old}, expected {sorted(others)}"
                assert (ledger.get("a").state, ledger.get("a").error) == (old, None)
                assert len(ledger.events("a")) == logged


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=30, deadline=None)  # a ledger each: opening one is most of the time
@given(value=st.dictionaries(st.text(), _JSON, max_size=4), spaced=st.booleans())
def test_json_columns_read_back_as_json_loads_reads_them(
    tmp_path_factory: pytest.TempPathFactory, value: dict[str, object], spaced: bool
) -> None:
    """Whatever JSON a column holds (ours, or another tool's with spaces) reads as json.loads
    reads it, and each job gets its own copy of an empty value."""
    text = json.dumps(value, indent=1 if spaced else None)
    with Ledger.open(tmp_path_factory.mktemp("l") / "l.db") as ledger:
        ledger.add_jobs([job("a"), job("b")])
        ledger.transition("a", S.SUBMITTING, metadata=f" {text} " if spaced else text)
        assert ledger.get("a").metadata == json.loads(text)
        first, second = ledger.get("b"), ledger.get("b")
        assert first.files == {} and first.files is not second.files


@given(st.lists(st.sampled_from(list(JobState)), max_size=12))
def test_state_machine_walks_match_the_table(path: list[JobState]) -> None:
    """Any walk is accepted exactly when each step is in TRANSITIONS."""
    state = S.PENDING
    for target in path:
        assert can_move(state, target) == (target in TRANSITIONS[state])
        if can_move(state, target):
            state = target


def test_every_state_can_be_left_or_is_done() -> None:
    assert all(TRANSITIONS[s] for s in JobState)  # even done can go back to fetch a lost file
    assert S.PENDING not in TRANSITIONS[S.QUEUED]  # a submitted job is never silently resent


def test_second_lock_holder_is_refused_with_pid(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with LedgerLock(path, "run"), pytest.raises(LedgerLockedError, match=r"pid \d+"):
        LedgerLock(path, "resume").acquire()
    with LedgerLock(path, "resume"):  # released: free again
        pass


def test_a_ledger_reached_through_a_link_has_the_same_lock(tmp_path: Path) -> None:
    """``--ledger dl/x.db`` and ``--ledger xl.db`` (a link to it) each took a lock of their own
    name: two runs shared the ledger, and one died with a traceback."""
    (tmp_path / "dl").mkdir()
    real = tmp_path / "dl" / "x.db"
    (tmp_path / "xl.db").symlink_to(real)
    (tmp_path / "alias").symlink_to(tmp_path / "dl")
    with LedgerLock(real, "run"):
        for other in (tmp_path / "xl.db", tmp_path / "alias" / "x.db"):
            with pytest.raises(LedgerLockedError, match=r"pid \d+"):
                LedgerLock(other, "resume").acquire()


def test_a_lock_holder_sigterm_would_not_stop_cleanly_is_never_signalled(tmp_path: Path) -> None:
    """`cancel` stops a batch holding the ledger with SIGTERM, but only one whose program
    handles it: a run on a thread (a notebook's) would die with the whole program, and a pid
    recorded on another machine (a ledger on a shared disk) names some process here."""
    path = tmp_path / "l.db"
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with LedgerLock(path, "run"):
            held.set()
            done.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(LedgerLockedError, match="does not stop on SIGTERM"):
            LedgerLock(path, "cancel", stop_holder=True).acquire()  # SIGTERM would end pytest
    finally:
        done.set()
        thread.join()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with open(lock_path(path), "w") as elsewhere:
            fcntl.flock(elsewhere, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder = {"pid": bystander.pid, "command": "run", "host": "render-02"}
            holder |= {"started_at": "2026-12-02T01:00:00", "stops_on_sigterm": True}
            elsewhere.write(json.dumps(holder))
            elsewhere.flush()
            with pytest.raises(LedgerLockedError, match=r"on render-02, which cannot be stopped"):
                LedgerLock(path, "cancel", stop_holder=True).acquire()
        assert bystander.poll() is None  # not signalled
    finally:
        bystander.kill()
        bystander.wait()
    with LedgerLock(path, "cancel", stop_holder=True) as lock:  # free: nothing to stop
        assert lock.stopped is None


def test_sqlite_error_mid_open_is_a_ledger_error(tmp_path: Path) -> None:
    folder = tmp_path / "is-a-dir.db"
    folder.mkdir()
    with pytest.raises(LedgerError):
        Ledger.open(folder)
