"""The ledger's schema, as named, append-only migrations (never edit one that has shipped).

Applied in order when a ledger opens (``sqlite_utils.Migrations`` records them in
``_sqlite_migrations``). A ledger that has a migration this version does not know was written by
a newer batchrunner and is refused rather than misread.
"""

from __future__ import annotations

from pathlib import Path

from batchrunner.errors import LedgerError
from batchrunner.lean_sqlite import Migrations, sqlite_utils

MIGRATION_SET = "batchrunner"
MIGRATIONS = Migrations(MIGRATION_SET)


@MIGRATIONS(name="m001_initial")
def m001_initial(db: sqlite_utils.Database) -> None:
    db.table("jobs").create(
        {
            "job_id": str,
            "row": int,
            "line": int,
            "variant": str,
            "endpoint": str,
            "input": str,  # JSON: the request body; local files as paths (never base64)
            "input_hash": str,
            "files": str,  # JSON: field -> {path, sha256, size, mime}
            "output_name": str,
            "metadata": str,  # JSON: the manifest's other columns
            "state": str,
            "request_id": str,
            "origin": str,  # API origin the job was submitted to
            "status_url": str,
            "response_url": str,
            "cancel_url": str,
            "queue_position": int,
            "result": str,  # JSON: the provider's result, stored the moment it arrives
            "video_url": str,
            "file_size": int,
            "output_path": str,
            "bytes": int,
            "sha256": str,
            "error": str,
            "price_usd": float,  # estimated price of the job
            "cost_usd": float,  # money committed: set when the job may have been billed
            "submits": int,  # submit attempts that may have reached the provider
            "created_at": str,
            "submitted_at": str,
            "started_at": str,
            "completed_at": str,
            "done_at": str,
            "updated_at": str,
        },
        pk="job_id",
        not_null={"endpoint", "input", "input_hash", "state"},
        defaults={"submits": 0, "variant": ""},
    )
    db.table("jobs").create_index(["state"])
    db.table("jobs").create_index(["row", "variant"])
    db.table("jobs").create_index(["request_id"])
    db.table("runs").create(
        {
            "id": int,
            "command": str,
            "started_at": str,
            "finished_at": str,
            "pid": int,
            "host": str,
            "manifest": str,
            "endpoint": str,
            "provider": str,
            "origin": str,
            "options": str,  # JSON, never the API key
            "exit_code": int,
            "summary": str,
        },
        pk="id",
    )
    db.table("events").create(
        {
            "id": int,
            "job_id": str,
            "run_id": int,
            "at": str,
            "from_state": str,
            "to_state": str,
            "detail": str,
        },
        pk="id",
        foreign_keys=[("job_id", "jobs", "job_id")],
    )
    db.table("events").create_index(["job_id"])


@MIGRATIONS(name="m002_runs_concurrency_limit")
def m002_runs_concurrency_limit(db: sqlite_utils.Database) -> None:
    db.table("runs").add_column("concurrency_limit", int)


@MIGRATIONS(name="m003_jobs_seen_run")
def m003_jobs_seen_run(db: sqlite_utils.Database) -> None:
    """The last `run` whose manifest had the job: `status` lists jobs whose row disappeared."""
    db.table("jobs").add_column("seen_run", int)


@MIGRATIONS(name="m004_jobs_billing")
def m004_jobs_billing(db: sqlite_utils.Database) -> None:
    """What the provider billed: ``x-fal-billable-units`` and those units priced in USD."""
    db.table("jobs").add_column("billable_units", float)
    db.table("jobs").add_column("billed_usd", float)


@MIGRATIONS(name="m005_jobs_media")
def m005_jobs_media(db: sqlite_utils.Database) -> None:
    """What the downloaded file turned out to be, checked against the request (PyAV):
    ``media`` (JSON: container, codecs, duration, frame size, audio), ``warnings`` (JSON list of
    mismatches; the job is still done), ``poster`` (a JPEG beside the ledger), and ``take_of``
    (the job a re-roll, ``retry --new-take``, was made from)."""
    db.table("jobs").add_column("media", str)
    db.table("jobs").add_column("warnings", str)
    db.table("jobs").add_column("poster", str)
    db.table("jobs").add_column("take_of", str)


@MIGRATIONS(name="m006_jobs_earlier_usd")
def m006_jobs_earlier_usd(db: sqlite_utils.Database) -> None:
    """What earlier sends of a job sent again may have cost (an answer lost, a result expired,
    a cancel that came too late): counted in the spend and the budget, never given back."""
    db.table("jobs").add_column("earlier_usd", float)


@MIGRATIONS(name="m007_runs_waiting")
def m007_runs_waiting(db: sqlite_utils.Database) -> None:
    """What a run going on is waiting for: the network, since ``waiting_since`` (UTC), to the
    hosts ``waiting_for`` (``"api.quickrouter.ai"``); both null when it waits for nothing.
    ``status`` shows it (:mod:`batchrunner.reach`)."""
    db.table("runs").add_column("waiting_since", str)
    db.table("runs").add_column("waiting_for", str)


KNOWN = {m.name for m in MIGRATIONS._migrations}


def check_compatible(db: sqlite_utils.Database, path: Path) -> None:
    """Refuse a SQLite file that is not a batchrunner ledger or comes from a newer version."""
    tables = set(db.table_names())
    if not tables:
        return  # a new, empty file: the migrations will create the schema
    applied = {m.name for m in MIGRATIONS.applied(db)}
    if not applied and {"jobs", "runs", "events"} <= tables:  # ours, its history unreadable
        raise LedgerError(
            f"{path} has a batchrunner ledger's tables but no readable record of its schema: "
            f"it looks damaged (`sqlite3 {path} 'pragma integrity_check'` says where); it was "
            "left untouched: restore it from a copy, or give --ledger another path"
        )
    if not applied:
        raise LedgerError(
            f"{path} is a SQLite database but not a batchrunner ledger "
            f"(it has tables {', '.join(sorted(tables)[:5])}); choose another --ledger path"
        )
    newer = applied - KNOWN
    if newer:
        raise LedgerError(
            f"{path} was written by a newer batchrunner (schema {', '.join(sorted(newer))}); "
            "upgrade batchrunner to use it"
        )
