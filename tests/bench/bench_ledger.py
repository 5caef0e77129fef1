"""``python -m tests.bench.bench_ledger``: the ledger's CPU per job, as a run spends it.

A benchmark, not a test: it prints figures and asserts nothing about speed. A fresh ledger of
2,000 jobs (``BENCH_JOBS``) is taken through the five transitions of a job (``submitting``,
``queued``, ``running``, ``completed`` with a stored result, ``done`` with the media check's
fields) plus the two :meth:`Ledger.get` a run makes per job, in waves of 200 (``--concurrency``)
as a run interleaves them. Client CPU (user and system, ``os.times``) and wall time per job;
medians of ``BENCH_RUNS`` ledgers (default 5). Each transition is committed with
``synchronous=FULL``, so wall time is mostly the disk's ``fdatasync``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from batchrunner.jobs import NewJob, now
from batchrunner.ledger import Ledger
from batchrunner.states import JobState as S

JOBS = int(os.environ.get("BENCH_JOBS", "2000"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
CONCURRENCY = 200
RESULT = {
    "video": {"url": "https://v3.fal.media/files/a/b.mp4", "file_size": 1_234_567},
    "seed": 12345,
    "timings": {"inference": 12.3},
}
MEDIA = {"container": "mp4", "video_codec": "h264", "duration": 8.0, "width": 1280}


def one_ledger(path: Path) -> tuple[float, float, float]:
    """(user, system, wall) seconds per job of one fresh ledger."""
    with Ledger.open(path) as ledger:
        ledger.start_run("run")
        ids = [f"row{i:05d}" for i in range(JOBS)]
        ledger.add_jobs(
            NewJob(job_id=job_id, endpoint="fal-ai/x", input={"prompt": f"a cat {i}"}, row=i)
            for i, job_id in enumerate(ids)
        )
        start, clock = os.times(), time.perf_counter()
        for first in range(0, JOBS, CONCURRENCY):
            wave = ids[first : first + CONCURRENCY]
            for job_id in wave:
                job = ledger.get(job_id)
                ledger.transition(
                    job_id, S.SUBMITTING, expect=S.PENDING, submits=job.submits + 1, error=None
                )
            for job_id in wave:
                url = f"http://127.0.0.1:1/requests/{job_id}"
                ledger.transition(
                    job_id, S.QUEUED, detail="request", request_id=job_id, status_url=url,
                    response_url=url, cancel_url=url, queue_position=0, submitted_at=now(),
                )  # fmt: skip
            for job_id in wave:
                ledger.transition(job_id, S.RUNNING, started_at=now())
            for job_id in wave:
                ledger.transition(
                    job_id, S.COMPLETED, detail="result stored", result=RESULT,
                    video_url=RESULT["video"]["url"], completed_at=now(), queue_position=None,
                )  # fmt: skip
            for job_id in wave:
                job = ledger.get(job_id)
                ledger.transition(
                    job_id, S.DONE, detail="video verified", output_path=f"{job_id}.mp4",
                    sha256="ab" * 32, done_at=now(), error=None, media=MEDIA, warnings=[],
                )  # fmt: skip
        end, stop = os.times(), time.perf_counter()
    return (
        (end.user - start.user) / JOBS,
        (end.system - start.system) / JOBS,
        (stop - clock) / JOBS,
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        runs = [one_ledger(Path(folder) / f"{n}.db") for n in range(RUNS)]
    user, system, wall = (statistics.median(column) * 1e6 for column in zip(*runs, strict=True))
    print(
        f"ledger, {JOBS} jobs x (5 transitions + 2 gets), medians of {RUNS}: "
        f"CPU {user + system:.0f} us/job (user {user:.0f}, system {system:.0f}), "
        f"{(user + system) / 5:.0f} us per transition with its share of the gets; "
        f"wall {wall:.0f} us/job"
    )


if __name__ == "__main__":
    main()
