"""The scheduler's ordering guarantees, against a fake queue that pauses on cue.

Each test synchronises on events the fake sets while a request is "on the wire", and reads the
ledger through a second connection (what another process, or the next run after a kill, would
see), so none depends on timing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchrunner.adaptive import AdaptiveLimit
from batchrunner.ledger import Ledger
from batchrunner.states import JobState
from tests.fake_queue import PRICE, VIDEO, FakeQueue, committed, media, new_jobs, runner

S = JobState
pytestmark = pytest.mark.anyio


async def test_the_submit_intent_and_its_price_are_committed_before_the_post(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    during_post: dict[str, Any] = {}

    async def on_submit(job_id: str) -> None:
        during_post[job_id] = committed(path, job_id)

    queue = FakeQueue(on_submit)
    with Ledger.open(path) as ledger:
        ledger.add_jobs(new_jobs(3))
        async with media() as cdn:
            await runner(ledger, queue, cdn, tmp_path / "out").run()
        assert {job.state for job in ledger.jobs()} == {S.DONE}
    assert sorted(during_post) == ["job-01", "job-02", "job-03"]
    for job in during_post.values():
        # a kill now leaves a job the next run reports `unknown`, its price counted as spent
        assert (job.state, job.cost_usd, job.submits) == (S.SUBMITTING, PRICE, 1)


async def test_a_stop_lets_the_submit_under_way_answer_and_records_it(tmp_path: Path) -> None:
    on_the_wire, answered = anyio.Event(), anyio.Event()

    async def on_submit(job_id: str) -> None:
        on_the_wire.set()
        await answered.wait()

    queue = FakeQueue(on_submit)
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        ledger.add_jobs(new_jobs(3))
        async with media() as cdn, anyio.create_task_group() as tg:
            run = runner(ledger, queue, cdn, tmp_path / "out")
            tg.start_soon(run.run)
            await on_the_wire.wait()
            run.stop("SIGINT received; state is saved")
            answered.set()  # the provider answers after the stop
        first = ledger.get("job-01")
        assert (first.state, first.request_id) == (S.QUEUED, "req-job-01")
        assert {ledger.get(j).state for j in ("job-02", "job-03")} == {S.PENDING}
    assert queue.submitted == ["job-01"]  # nothing new after the stop


async def test_the_result_is_stored_before_the_download_starts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    at_download: dict[str, Any] = {}

    def look(request: httpx.Request) -> None:
        job_id = request.url.path.removeprefix("/req-").removesuffix(".mp4")
        at_download[job_id] = committed(path, job_id)

    with Ledger.open(path) as ledger:
        ledger.add_jobs(new_jobs(2))
        async with media(look) as cdn:
            await runner(ledger, FakeQueue(), cdn, tmp_path / "out").run()
        assert {job.state for job in ledger.jobs()} == {S.DONE}
    assert sorted(at_download) == ["job-01", "job-02"]
    for job_id, job in at_download.items():
        assert job.state is S.COMPLETED
        url = f"https://cdn.test/req-{job_id}.mp4"
        assert job.result == {"video": {"url": url, "file_size": len(VIDEO)}}


def test_the_concurrency_limit_opens_two_slots_per_submit_up_to_the_ceiling() -> None:
    limit = AdaptiveLimit(6)
    opened = []
    for _ in range(10):
        opened.append(limit.current)
        limit.succeeded()
    assert opened == [1, 3, 5, 6, 6, 6, 6, 6, 6, 6]
    limit.throttled(accepted_in_flight=1)
    assert limit.current == 3  # halved
    for _ in range(50):
        limit.succeeded()
    assert (limit.current, limit.slots.total_tokens) == (6, 6)
