"""Jobs kept in a sqlite file, so a restarted simulator still knows earlier request ids.

Times are stored on the wall clock (epoch seconds) and converted from/to the monotonic clock of
the running process on the way in and out. The replay cursor is stored too, so the queue keeps
moving across a restart as if the simulator had been up all along: a job that was due to finish
while it was down is ``COMPLETED`` when asked about after the restart. Each job's
:class:`~.clips.MediaShape` is stored with it, so a restarted simulator serves the same bytes; a
file from before shapes were stored loads with the default shape.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import asdict, fields

from .clips import MediaShape
from .world import Job

SCHEMA_VERSION = 1
_TIME_FIELDS = ("submitted_at", "ready_at", "deadline", "started_at", "ended_at")
_JOB_FIELDS = {f.name for f in fields(Job)}
_SHAPE_FIELDS = {f.name for f in fields(MediaShape)}


class JobStore:
    """A sqlite file of jobs. Not thread-safe by itself: the simulator's lock guards it."""

    def __init__(self, path: str):
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False)
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self._db.close()
            raise ValueError(f"{path}: simulator state from a newer batchrunner (v{version})")
        with self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS jobs ("
                "request_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, data TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def load(self, to_monotonic: Callable[[float], float]) -> tuple[list[Job], float | None]:
        """Every stored job, and the stored replay cursor (None for a new file)."""
        jobs = []
        for (data,) in self._db.execute("SELECT data FROM jobs ORDER BY seq"):
            record = json.loads(data)
            for name in _TIME_FIELDS:
                if record.get(name) is not None:
                    record[name] = to_monotonic(record[name])
            shape = record.pop("shape", None)
            if isinstance(shape, dict):
                record["shape"] = MediaShape(
                    **{k: v for k, v in shape.items() if k in _SHAPE_FIELDS}
                )
            jobs.append(Job(**{k: v for k, v in record.items() if k in _JOB_FIELDS}))
        row = self._db.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()
        cursor = to_monotonic(float(row[0])) if row else None
        return jobs, cursor

    def save(self, jobs: Iterable[Job], cursor: float, to_wall: Callable[[float], float]) -> None:
        """Write ``jobs`` (new or changed) and the cursor in one transaction."""
        rows = []
        for job in jobs:
            record = asdict(job)
            for name in _TIME_FIELDS:
                if record[name] is not None:
                    record[name] = to_wall(record[name])
            rows.append((job.request_id, job.seq, json.dumps(record)))
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO jobs (request_id, seq, data) VALUES (?, ?, ?)", rows
            )
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('cursor', ?)",
                (repr(to_wall(cursor)),),
            )

    def close(self) -> None:
        self._db.close()
