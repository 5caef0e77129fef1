"""Cron-safe behaviour: signals, the ledger lock, run limits, the watchdog, AIMD, disk faults."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchrunner import batch, reach, scheduler
from batchrunner.cli import cli
from batchrunner.ledger import Ledger
from batchrunner.retry import RetryPolicy
from batchrunner.simulator import SimulatorServer
from batchrunner.simulator.config import Fault
from batchrunner.states import JobState
from tests.helpers import (
    TOKEN,
    counters,
    ctrl_c_after,
    ctrl_c_when,
    fast_config,
    rows,
    run_args,
    settings_for,
    write_manifest,
)


@contextmanager
def runner_process(args: list[str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "BATCHRUNNER_API_KEY": TOKEN}
    with open(tmp_path / "runner.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchrunner", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            assert proc.stdout is not None
            proc.stdout.close()


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def stopped_in_flight(
    server: SimulatorServer, tmp_path: Path, n: int, *, running: bool = False
) -> Path:
    """The ledger of an n-row run stopped by Ctrl-C once its jobs were all sent (``running``:
    and the ledger has seen each of them running)."""
    manifest = write_manifest(tmp_path / "m.csv", rows(n))
    args = run_args(server, tmp_path, manifest)
    ledger = tmp_path / "ledger.db"

    def ready() -> bool:
        if not running:
            return counters(server)["submits"] >= n
        if not ledger.exists():
            return False
        with sqlite3.connect(ledger) as db:
            try:
                (seen,) = db.execute("select count(*) from jobs where state = 'running'").fetchone()
            except sqlite3.OperationalError:  # the file is made before its tables
                seen = 0
        db.close()
        return int(seen) == n

    with ctrl_c_when(ready):
        stopped = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": TOKEN})
    assert stopped.exit_code == 130, stopped.output
    return tmp_path / "ledger.db"


def states(ledger_path: Path) -> dict[str, JobState]:
    with Ledger.open(ledger_path, create=False) as ledger:
        return {job.job_id: job.state for job in ledger.jobs()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)]
)
def test_signal_stops_cleanly_and_the_next_run_carries_on(
    tmp_path: Path, sig: int, code: int
) -> None:
    with SimulatorServer(fast_config(run_seconds=1.0)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(20))
        args = run_args(server, tmp_path, manifest, "--concurrency", "4")
        with runner_process(args, tmp_path) as proc:
            wait_for(lambda: counters(server)["submits"] >= 4)
            proc.send_signal(sig)
            sent = time.monotonic()
            assert proc.wait(timeout=10) == code
            assert time.monotonic() - sent < 5  # "within a couple of seconds"
        stopped_at = counters(server)["submits"]
        assert stopped_at < 20  # it stopped submitting
        after = states(tmp_path / "ledger.db")
        assert JobState.SUBMITTING not in after.values()  # the in-flight submit was recorded

        result = CliRunner().invoke(
            cli,
            ["resume", "--ledger", str(tmp_path / "ledger.db")],
            env={"BATCHRUNNER_API_KEY": TOKEN},
        )
        assert result.exit_code == 0, result.output
        assert set(states(tmp_path / "ledger.db").values()) == {JobState.DONE}
        assert counters(server)["submits"] == 20  # nothing bought twice


def test_second_runner_exits_3_naming_the_holder_while_status_still_works(tmp_path: Path) -> None:
    with SimulatorServer(fast_config(run_seconds=2.0)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(4))
        with runner_process(run_args(server, tmp_path, manifest), tmp_path) as proc:
            wait_for(lambda: counters(server)["submits"] >= 1)
            second = CliRunner().invoke(
                cli, run_args(server, tmp_path, manifest), env={"BATCHRUNNER_API_KEY": TOKEN}
            )
            assert second.exit_code == 3
            assert f"pid {proc.pid}" in second.output and f"`kill {proc.pid}`" in second.output
            shown = CliRunner().invoke(
                cli, ["status", "--ledger", str(tmp_path / "ledger.db"), "--json"]
            )
            assert shown.exit_code == 0
            assert json.loads(shown.output)["total"] == 4
            exported = CliRunner().invoke(
                cli,
                ["export", "--ledger", str(tmp_path / "ledger.db"), "-o", str(tmp_path / "x.csv")],
            )
            assert exported.exit_code == 0
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        # the killed holder's lock is gone with it: the next run goes ahead
        again = CliRunner().invoke(
            cli,
            [*run_args(server, tmp_path, manifest), "--resubmit-unknown"],
            env={"BATCHRUNNER_API_KEY": TOKEN},
        )
        assert again.exit_code == 0, again.output


def test_max_runtime_stops_with_75_and_a_later_run_finishes(tmp_path: Path) -> None:
    """--max-runtime sends no job after it, and follows those sent to their videos: left at
    the provider until the next night's run, their results would have expired (kept about an
    hour). The nightly line in the README has --max-runtime 4h."""
    with SimulatorServer(fast_config(run_seconds=1.5)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(8))
        env = {"BATCHRUNNER_API_KEY": TOKEN}
        first = CliRunner().invoke(
            cli,
            run_args(server, tmp_path, manifest, "--concurrency", "2", "--max-runtime", "1s"),
            env=env,
        )
        assert first.exit_code == 75, first.output
        assert "no more jobs were sent, and those already sent were followed" in first.output
        sent = counters(server)["submits"]
        left = Counter(states(tmp_path / "ledger.db").values())
        assert left == {JobState.DONE: sent, JobState.PENDING: 8 - sent}, first.output
        assert 2 <= sent < 8
        # resume keeps the run's settings but not its --max-runtime (one invocation's choice)
        second = CliRunner().invoke(
            cli, ["resume", "--ledger", str(tmp_path / "ledger.db")], env=env
        )
        assert second.exit_code == 0, second.output
        assert counters(server)["submits"] == 8


def test_max_runtime_that_held_nothing_back_is_a_run_all_done(tmp_path: Path) -> None:
    """Every job was sent before --max-runtime came, and followed to its video after: the run
    is all done (exit 0), not "stopped early" (exit 75) with nothing left to do."""
    with SimulatorServer(fast_config(run_seconds=1.5)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(2))
        args = run_args(server, tmp_path, manifest, "--concurrency", "2", "--max-runtime", "1s")
        with_time = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": TOKEN})
        assert with_time.exit_code == 0, with_time.output
        assert "stopped early" not in with_time.output
        assert set(states(tmp_path / "ledger.db").values()) == {JobState.DONE}


def test_a_refused_nightly_sheet_still_collects_the_jobs_already_bought(tmp_path: Path) -> None:
    """A run left jobs at the provider; the next night's sheet has a bad cell in a new row. The
    run buys nothing, as before, but first follows what was bought to its videos: it stopped
    at the bad cell, and the results expired before the sheet was fixed (kept about an hour)."""
    with SimulatorServer(fast_config(run_seconds=1.5)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(4))
        env = {"BATCHRUNNER_API_KEY": TOKEN}
        ledger = tmp_path / "ledger.db"
        args = run_args(server, tmp_path, manifest, "--concurrency", "2")
        with ctrl_c_after(server, 2):
            first = CliRunner().invoke(cli, args, env=env)
        assert first.exit_code == 130, first.output
        left = Counter(states(ledger).values())
        assert left[JobState.PENDING] == 2 and left[JobState.QUEUED] + left[JobState.RUNNING] == 2
        night = rows(5)
        night[4]["duration"] = "9s"
        write_manifest(manifest, night)

        refused = CliRunner().invoke(cli, args, env=env)
        assert refused.exit_code == 2, refused.output
        assert "column 'duration': must be '4s', '6s' or '8s'" in refused.stderr
        assert "meanwhile, the 2 jobs bought before: 2 downloaded" in refused.stderr
        assert counters(server)["submits"] == 2  # nothing new bought
        assert Counter(states(ledger).values()) == {JobState.DONE: 2, JobState.PENDING: 2}


def test_a_refused_sheet_without_a_key_says_the_jobs_bought_before_wait(tmp_path: Path) -> None:
    """No key to follow them with: the refusal says they wait, and what collects them."""
    with SimulatorServer(fast_config(run_seconds=30)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(2))
        args = run_args(server, tmp_path, manifest)
        with ctrl_c_after(server, 2):
            first = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": TOKEN})
        assert first.exit_code == 130, first.output
        write_manifest(manifest, [*rows(2), {**rows(3)[2], "duration": "9s"}])
        refused = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": ""})
        assert refused.exit_code == 2, refused.output
        said = refused.stderr.splitlines()[-1]
        assert said.startswith("2 jobs bought before not collected (") and "key" in said
        assert f"`batchrunner resume --ledger {tmp_path / 'ledger.db'}` collects them" in said


def test_an_edit_to_a_row_in_flight_is_refused_until_a_run_collected_it(tmp_path: Path) -> None:
    """An edited row whose job is at the provider is refused ("let it finish first"), and the
    refusal follows it to its video: the same command the next time replaces it. Before, the
    run refused before following anything, every night, until the result expired."""
    with SimulatorServer(fast_config(run_seconds=1.5)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(1))
        env = {"BATCHRUNNER_API_KEY": TOKEN}
        args = run_args(server, tmp_path, manifest, "--replace-changed")
        with ctrl_c_after(server, 1):
            first = CliRunner().invoke(cli, args, env=env)
        assert first.exit_code == 130, first.output
        edited = rows(1)
        edited[0]["prompt"] += ", at dusk"
        write_manifest(manifest, edited)

        refused = CliRunner().invoke(cli, args, env=env)
        assert refused.exit_code == 2, refused.output
        assert "at the provider; let it finish first" in refused.stderr
        assert "meanwhile, the 1 job bought before: 1 downloaded" in refused.stderr
        replaced = CliRunner().invoke(cli, args, env=env)
        assert replaced.exit_code == 0, replaced.output
        assert counters(server)["submits"] == 2
        assert (tmp_path / "out" / "0001-shot-001@1.mp4").exists()


def test_stuck_jobs_are_cancelled_at_the_provider_and_failed(tmp_path: Path) -> None:
    with SimulatorServer(fast_config(queue_seconds=30, run_seconds=0.1)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(2))
        settings = settings_for(server, tmp_path, queue_timeout=0.5)
        summary = batch.run_manifest(manifest, settings, token=TOKEN)
        seen = counters(server)
    assert summary.counts == {"failed": 2}
    assert seen["requests"]["cancel"] == 2
    with Ledger.open(settings.ledger, create=False) as ledger:
        for job in ledger.jobs():
            assert "queued timeout" in (job.error or "")
            assert "CANCELLATION_REQUESTED" in (job.error or "")


@pytest.mark.parametrize("streams", [True, False])
def test_a_job_waiting_its_turn_in_the_queue_is_not_stuck(tmp_path: Path, streams: bool) -> None:
    """fal queues work over the account's concurrency. With room for one job at a time, the
    last of eight waits about 2 s in the queue, its place falling as the others finish: a
    queue timeout of 1 s cancelled it as stuck. The wait counts from its last move up."""
    with SimulatorServer(fast_config(queue_seconds=0, run_seconds=0.3, capacity=1)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(8))
        settings = settings_for(server, tmp_path, concurrency=8, queue_timeout=1.0, streams=streams)
        summary = batch.run_manifest(manifest, settings, token=TOKEN)
        seen = counters(server)
    assert summary.counts == {"done": 8}
    assert seen["requests"]["cancel"] == 0


def test_a_stuck_job_that_finishes_despite_its_cancel_is_fetched_not_failed(
    tmp_path: Path,
) -> None:
    """The run's own timeout cancel is not taken on trust either: the app carries on, and the
    video it makes (paid for) is fetched, not failed and bought again by ``retry``."""
    ignored = Fault.parse("cancel:ignored")
    with SimulatorServer(fast_config(queue_seconds=1.0, run_seconds=0.1, faults=[ignored])) as sim:
        manifest = write_manifest(tmp_path / "m.csv", rows(2))
        settings = settings_for(sim, tmp_path, queue_timeout=0.5)
        summary = batch.run_manifest(manifest, settings, token=TOKEN)
        seen = counters(sim)
    assert summary.counts == {"done": 2}
    assert (seen["requests"]["cancel"], seen["submits"]) == (2, 2)
    assert len(list((tmp_path / "out").glob("*.mp4"))) == 2


def test_a_stuck_job_still_going_after_its_cancel_stays_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job still queued when the watch after its cancel ends is left in flight, not failed:
    the next run follows it, and fetches what it makes."""
    monkeypatch.setattr(scheduler, "CANCEL_SETTLE_SECONDS", 0.2)
    ignored = Fault.parse("cancel:ignored")
    with SimulatorServer(fast_config(queue_seconds=2.0, run_seconds=0.1, faults=[ignored])) as sim:
        manifest = write_manifest(tmp_path / "m.csv", rows(1))
        settings = settings_for(sim, tmp_path, queue_timeout=0.3)
        first = batch.run_manifest(manifest, settings, token=TOKEN)
        assert (first.counts, first.exit_code) == ({"queued": 1}, 1)
        assert first.next_command is not None and "resume" in first.next_command
        patient = dataclasses.replace(settings, queue_timeout=60.0)
        second = batch.run_manifest(manifest, patient, token=TOKEN)
        seen = counters(sim)
    assert (second.counts, second.submitted) == ({"done": 1}, 0)
    assert (seen["requests"]["cancel"], seen["submits"]) == (1, 1)


def completed_at_the_provider(ledger_path: Path, deadline: float = 20.0) -> None:
    """Wait until the simulator says every job of the ledger has completed."""
    with Ledger.open(ledger_path, create=False) as ledger:
        urls = [job.status_url for job in ledger.jobs()]
    waiting, until = set(urls), time.monotonic() + deadline
    while waiting and time.monotonic() < until:
        for url in sorted(waiting):
            asked = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(asked, timeout=10) as answer:
                if json.loads(answer.read())["status"] == "COMPLETED":
                    waiting.discard(url)
    assert not waiting, f"{len(waiting)} jobs still going at the provider"


def test_a_run_resumed_long_after_it_stopped_fetches_what_finished_meanwhile(
    tmp_path: Path,
) -> None:
    """Jobs sent before a laptop was closed for the night are past their timeouts by the clock
    when the run resumes: each is asked first, and what finished is fetched, not cancelled
    unseen and failed (a paid video lost, and bought again by ``retry``). The streams are slow
    to say anything here, as over a real network: judged by them, each job was overdue."""
    slow_streams = Fault.parse("stream:silent")
    with SimulatorServer(fast_config(run_seconds=0.8, faults=[slow_streams])) as server:
        ledger = stopped_in_flight(server, tmp_path, 3)
        assert set(states(ledger).values()) <= {JobState.QUEUED, JobState.RUNNING}
        completed_at_the_provider(ledger)
        last_night = "2026-01-01T00:00:00.000+00:00"
        with sqlite3.connect(ledger) as db:
            db.execute("UPDATE jobs SET submitted_at = ?, started_at = ?", (last_night,) * 2)
        db.close()
        streams = counters(server)["requests"]["stream"]
        resumed = CliRunner().invoke(
            cli, ["resume", "--ledger", str(ledger)], env={"BATCHRUNNER_API_KEY": TOKEN}
        )
        seen = counters(server)
    assert resumed.exit_code == 0, resumed.output
    assert set(states(ledger).values()) == {JobState.DONE}
    assert (seen["requests"]["cancel"], seen["submits"]) == (0, 3)
    # asked with a status straight away: no stream opened only to reach its timeout at once
    assert seen["requests"]["stream"] == streams


def test_throttling_reseller_is_driven_at_its_cap_without_a_429_storm(tmp_path: Path) -> None:
    n = 36
    with SimulatorServer(fast_config(run_seconds=0.4, max_in_flight=6)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(n))
        backoff = RetryPolicy(base_delay=0.05, max_delay=0.5)
        settings = settings_for(server, tmp_path, concurrency=20, retry=backoff)
        summary = batch.run_manifest(manifest, settings, token=TOKEN)
        seen = counters(server)
        with Ledger.open(settings.ledger, create=False) as ledger:
            limit = ledger.last_run()["concurrency_limit"]  # type: ignore[index]
    assert summary.exit_code == 0
    assert seen["max_in_flight"] == 6
    assert seen["submits"] == n
    # AIMD: a handful of 429s to find the cap, not one per job
    assert seen["rate_limited"] <= n // 3, seen["rate_limited"]
    assert 1 <= limit < 20
    shown = CliRunner().invoke(cli, ["status", "--ledger", str(settings.ledger)]).output
    assert f"the provider throttled it (429): concurrency limit {limit} of 20" in shown


def test_rerun_after_the_manifest_gained_rows_submits_only_the_new_ones(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    settings = settings_for(sim, tmp_path)
    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    assert batch.run_manifest(manifest, settings, token=TOKEN).exit_code == 0
    write_manifest(manifest, rows(5))
    summary = batch.run_manifest(manifest, settings, token=TOKEN)
    assert (summary.exit_code, summary.submitted) == (0, 2)
    assert counters(sim)["submits"] == 5


def test_unwritable_output_keeps_results_and_resume_downloads(
    sim: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder the videos go in turns out to be a file when they arrive (made after the run
    checked, which now refuses one there from the start): the results are kept, and resume
    downloads them once it is a folder again."""
    monkeypatch.setattr(batch, "_check_folders", lambda manifest, out: None)  # made after it
    out = tmp_path / "out"
    settings = settings_for(sim, tmp_path, out=out)
    named = [{**row, "output": f"clips/x{i}.mp4"} for i, row in enumerate(rows(2))]
    manifest = write_manifest(tmp_path / "m.csv", named)
    out.mkdir()
    (out / "clips").write_text("a file where a folder should be")
    summary = batch.run_manifest(manifest, settings, token=TOKEN)
    assert summary.counts == {"completed": 2}
    with Ledger.open(settings.ledger, create=False) as ledger:
        for job in ledger.jobs():
            assert job.result is not None
            assert "download failed" in (job.error or "") and "cannot write" in (job.error or "")
    (out / "clips").unlink()
    again = batch.resume(settings.ledger, token=TOKEN)
    assert (again.exit_code, again.submitted, again.downloaded) == (0, 0, 2)


def test_a_full_disk_stops_buying_and_keeps_every_paid_result(
    sim: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk under --out fills up (the first video's file is opened on /dev/full: a real
    ENOSPC from the kernel). Every later download would fail the same way, so the run stops
    buying, follows what it sent, and says once what to do; freed, the same command fetches
    what was paid for."""
    from batchrunner import downloader

    out = tmp_path / "out"
    out.mkdir()
    opened = downloader.open_to_write

    def full_disk(path: Path, *, append: bool = False) -> Any:
        if path.name == "0001-shot-001.mp4.part":
            return open("/dev/full", "ab" if append else "wb")
        return opened(path, append=append)

    monkeypatch.setattr(downloader, "open_to_write", full_disk)
    settings = settings_for(sim, tmp_path, out=out, concurrency=2)
    manifest = write_manifest(tmp_path / "m.csv", rows(20))
    full = batch.run_manifest(manifest, settings, token=TOKEN)
    assert full.exit_code == 69
    assert full.stopped is not None and "no space left on the device holding" in full.stopped
    assert "no more jobs were bought" in full.stopped and "nothing was lost" in full.stopped
    bought = counters(sim)["submits"]
    assert bought < 20 and full.counts["pending"] == 20 - bought
    with Ledger.open(settings.ledger, create=False) as ledger:
        assert all(job.result is not None for job in ledger.jobs([JobState.COMPLETED]))
    monkeypatch.undo()  # space freed
    again = batch.run_manifest(manifest, settings, token=TOKEN)
    assert (again.exit_code, again.counts) == (0, {"done": 20})
    assert counters(sim)["submits"] == 20  # nothing bought twice
    assert (out / "0001-shot-001.mp4").stat().st_size > 0


def test_a_ledger_whose_disk_fills_stops_the_run_with_one_line(
    sim: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk under the ledger fills mid-run (SQLite's own SQLITE_FULL, from a page limit set
    on the run's connection): nothing may be done that the ledger cannot record, so the run
    stops with one line and exit 69, not a traceback; with room again, the same command
    finishes, and a job whose answer was lost is ``unknown``, never bought twice unasked."""
    opened = Ledger.open.__func__  # type: ignore[attr-defined]

    def cramped(cls: type[Ledger], path: Path, **kwargs: Any) -> Ledger:
        ledger = opened(cls, path, **kwargs)
        (pages,) = ledger.db.execute("pragma page_count").fetchone()
        ledger.db.execute(f"pragma max_page_count = {pages + 6}")
        return ledger

    monkeypatch.setattr(Ledger, "open", classmethod(cramped))
    manifest = write_manifest(tmp_path / "m.csv", rows(200))
    args = run_args(sim, tmp_path, manifest)
    full = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": TOKEN})
    assert full.exit_code == 69, full.output
    assert full.stderr.startswith("error: cannot write the ledger ")
    assert "the disk holding it is full" in full.stderr and "Traceback" not in full.output
    monkeypatch.undo()  # room again
    again = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": TOKEN})
    ended = Counter(states(tmp_path / "ledger.db").values())
    assert set(ended) <= {JobState.DONE, JobState.UNKNOWN}, again.output
    assert counters(sim)["submits"] == 200 and ended[JobState.DONE] >= 200 - 8


def test_jobs_whose_image_went_away_stay_pending_with_one_reason(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """The images folder is moved between two runs: the waiting jobs are not failed one by one
    ("28 failed", then `retry`); they stay pending, the summary names the cause once, and the
    same command sends them once the files are back."""
    images = tmp_path / "shots" / "images"
    images.mkdir(parents=True)
    shutil.copy(Path(__file__).parent.parent / "manifests/images/lighthouse.png", images / "a.png")
    named = [{**row, "image_url": "images/a.png"} for row in rows(12)]
    manifest = write_manifest(tmp_path / "shots" / "m.csv", named)
    settings = settings_for(sim, tmp_path, concurrency=1, max_runtime=0.3)
    assert batch.run_manifest(manifest, settings, token=TOKEN).exit_code == 75
    images.rename(tmp_path / "shots" / "moved")

    held = batch.resume(settings.ledger, token=TOKEN, max_runtime=None)

    waiting = held.counts["pending"]
    assert waiting > 0 and held.submitted == 0 and "failed" not in held.counts
    assert held.reasons[0] == (
        f"{waiting} x not sent: the image {images / 'a.png'} is gone since the manifest was "
        "checked; put it back"
    )
    assert held.next_command is not None and "put the input files back" in held.next_command
    shown = CliRunner().invoke(cli, ["status", "--ledger", str(settings.ledger)]).output
    assert f"\n  {held.reasons[0]}\n  next: {held.next_command}\n" in shown  # said next morning
    (tmp_path / "shots" / "moved").rename(images)
    done = batch.resume(settings.ledger, token=TOKEN, max_runtime=None)
    assert (done.exit_code, done.counts) == (0, {"done": 12})
    assert counters(sim)["submits"] == 12


def test_resume_from_another_folder_writes_where_the_run_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run --out videos`` in the project folder, stopped; ``resume --ledger proj/shots.db``
    from the folder above: the run stored ``videos`` as typed, so resume downloaded into
    ``./videos`` there (and a later run of the other ledger's batch into it would meet them).
    The absolute folder is stored too, and resume and report use it."""
    project = tmp_path / "proj"
    project.mkdir()
    with SimulatorServer(fast_config(run_seconds=1)) as server:
        monkeypatch.chdir(project)
        write_manifest(project / "shots.csv", rows(3))
        args = ["--base-url", server.url, "--auth-scheme", "bearer"]
        with ctrl_c_after(server, 2):
            first = CliRunner().invoke(
                cli,
                ["run", "shots.csv", "--out", "videos", "--ledger", "shots.db", *args],
                env={"BATCHRUNNER_API_KEY": TOKEN},
            )
        assert first.exit_code == 130, first.output
        monkeypatch.chdir(tmp_path)
        again = CliRunner().invoke(
            cli, ["resume", "--ledger", "proj/shots.db"], env={"BATCHRUNNER_API_KEY": TOKEN}
        )
        assert again.exit_code == 0, again.output
    assert len(list((project / "videos").glob("*.mp4"))) == 3
    assert not (tmp_path / "videos").exists()
    shown = CliRunner().invoke(cli, ["report", "--ledger", "proj/shots.db"])
    assert shown.exit_code == 0 and not (tmp_path / "videos").exists()
    assert (project / "videos" / "report.html").stat().st_mtime > 0


def test_resume_never_takes_or_overwrites_videos_another_batch_saved_meanwhile(
    tmp_path: Path,
) -> None:
    """Batch B is stopped with its jobs in flight; batch A (its own ledger, the same ids)
    runs into the same folder meanwhile, its lock free. ``resume`` of B wrote B's videos over
    A's (or, of the same size, recorded A's as its own). Now A's files stay, B's jobs keep
    their results and say why; with A's videos moved aside, resume fetches B's."""
    out = tmp_path / "videos"
    with SimulatorServer(fast_config(run_seconds=1)) as server:
        args = ["--base-url", server.url, "--auth-scheme", "bearer", "--out", str(out)]
        b_sheet = write_manifest(tmp_path / "b.csv", rows(2))
        a_sheet = write_manifest(tmp_path / "a.csv", [{**r, "prompt": "A: " + r["prompt"]}
                                                      for r in rows(2)])  # fmt: skip
        env = {"BATCHRUNNER_API_KEY": TOKEN}
        with ctrl_c_after(server, 2):
            b = CliRunner().invoke(
                cli, ["run", str(b_sheet), *args, "--ledger", str(tmp_path / "b.db")], env=env
            )
        assert b.exit_code == 130, b.output
        a = CliRunner().invoke(
            cli, ["run", str(a_sheet), *args, "--ledger", str(tmp_path / "a.db")], env=env
        )
        assert a.exit_code == 0, a.output
        a_videos = {path: path.read_bytes() for path in out.glob("*.mp4")}
        assert len(a_videos) == 2
        resumed = CliRunner().invoke(cli, ["resume", "--ledger", str(tmp_path / "b.db")], env=env)
        assert resumed.exit_code == 1, resumed.output
        assert {path: path.read_bytes() for path in out.glob("*.mp4")} == a_videos
        assert "is already there and is another video" in resumed.output
        with Ledger.open(tmp_path / "b.db", create=False) as ledger:
            assert {job.state for job in ledger.jobs()} == {JobState.COMPLETED}
        aside = tmp_path / "a-videos"
        aside.mkdir()
        for path in a_videos:
            path.rename(aside / path.name)
        again = CliRunner().invoke(cli, ["resume", "--ledger", str(tmp_path / "b.db")], env=env)
        assert again.exit_code == 0, again.output
        seen = counters(server)
        assert seen["submits"] == 4  # nothing bought twice
        with Ledger.open(tmp_path / "b.db", create=False) as ledger:
            for job in ledger.jobs():
                assert job.sha256 == seen["jobs"][job.request_id]["media_sha256"]


def test_jobs_the_provider_forgot_are_expired_not_failed(tmp_path: Path) -> None:
    """Stopped with jobs in flight, resumed after the provider forgot them (it keeps a
    request's records a while): they were marked failed, with `retry` offered as for a
    refused prompt. They were accepted and maybe made and billed: expired, with that said,
    and `retry --expired` to buy them again."""
    config = fast_config(run_seconds=0.3, result_ttl=0.1, status_ttl=0.2)
    with SimulatorServer(config) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(2))
        args = run_args(server, tmp_path, manifest)
        with ctrl_c_after(server, 2):
            first = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": TOKEN})
        assert first.exit_code == 130, first.output
        with Ledger.open(tmp_path / "ledger.db", create=False) as ledger:
            urls = [job.status_url for job in ledger.jobs()]
        deadline = time.monotonic() + 20
        while any(_answers(url) != 404 for url in urls):  # forgotten: what resume meets
            assert time.monotonic() < deadline
            time.sleep(0.05)
        again = CliRunner().invoke(
            cli, ["resume", "--ledger", str(tmp_path / "ledger.db"), "--json"],
            env={"BATCHRUNNER_API_KEY": TOKEN},
        )  # fmt: skip
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["counts"] == {"expired": 2}
    assert "retry --expired" in (summary["next_command"] or "")
    assert any("may have been made and billed" in reason for reason in summary["reasons"])


def _answers(url: str | None) -> int:
    request = urllib.request.Request(str(url), headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_an_output_folder_replaced_by_a_file_stops_buying(
    sim: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The videos' folder is moved away mid-run and a file takes its name: every download
    failed ("File exists", "Not a directory") while every remaining job was bought. Like a
    full disk: the run stops buying, keeps every result, says what to do; the same command
    fetches them once the folder is back."""
    from batchrunner import downloader

    out = tmp_path / "out"
    out.mkdir()
    opened = downloader.open_to_write

    def swapped(path: Path, *, append: bool = False) -> Any:
        if path.name == "0001-shot-001.mp4.part" and out.is_dir():
            out.rename(tmp_path / "moved")
            out.write_text("notes")  # a file where the folder was: the real open fails
        return opened(path, append=append)

    monkeypatch.setattr(downloader, "open_to_write", swapped)
    settings = settings_for(sim, tmp_path, out=out, concurrency=2)
    manifest = write_manifest(tmp_path / "m.csv", rows(20))
    stopped = batch.run_manifest(manifest, settings, token=TOKEN)
    assert stopped.exit_code == 69
    assert (
        stopped.stopped is not None and "is a file now, not the videos' folder" in stopped.stopped
    )
    bought = counters(sim)["submits"]
    assert bought < 20 and stopped.counts["pending"] == 20 - bought
    monkeypatch.undo()
    out.unlink()
    (tmp_path / "moved").rename(out)
    again = batch.run_manifest(manifest, settings, token=TOKEN)
    assert (again.exit_code, again.counts) == (0, {"done": 20})
    assert counters(sim)["submits"] == 20


def test_unwritable_out_folder_is_refused_before_anything_is_sent(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    manifest = write_manifest(tmp_path / "m.csv", rows(2))
    args = [
        "run",
        str(manifest),
        "--ledger",
        str(tmp_path / "l.db"),
        "--out",
        str(blocker / "out"),
        "--base-url",
        sim.url,
        "--auth-scheme",
        "bearer",
    ]
    result = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": TOKEN})
    assert result.exit_code == 2
    assert (
        f"cannot use {blocker / 'out'} as the output folder: {blocker} is a file" in result.output
    )
    assert counters(sim)["submits"] == 0


@pytest.mark.parametrize("ledger", ["blocker/ledger.db", "blocker/deeper/ledger.db"])
def test_a_ledger_that_cannot_be_written_there_exits_2_in_one_line_and_sends_nothing(
    sim: SimulatorServer, tmp_path: Path, ledger: str
) -> None:
    (tmp_path / "blocker").write_text("a file where the ledger's folder should be")
    manifest = write_manifest(tmp_path / "m.csv", rows(2))
    args = [
        "run", str(manifest), "--ledger", str(tmp_path / ledger), "--out", str(tmp_path / "out"),
        "--base-url", sim.url, "--auth-scheme", "bearer",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": TOKEN})
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert f"{tmp_path / 'blocker'} is a file, not a folder" in result.output
    assert counters(sim)["submits"] == 0


@pytest.mark.parametrize("content", [b"garbage, not sqlite" * 50, None])
def test_unusable_ledger_exits_2_and_is_left_alone(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "ledger.db"
    if content is None:
        sqlite3.connect(path).execute("create table photos (id integer)").connection.commit()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    result = CliRunner().invoke(cli, ["status", "--ledger", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert path.read_bytes() == before


def test_a_damaged_ledger_is_called_damaged_not_someone_else_s(tmp_path: Path) -> None:
    """A ledger whose record of its schema cannot be read (a damaged page) was called "a SQLite
    database but not a batchrunner ledger (it has tables _sqlite_migrations, events, jobs,
    runs)", its own tables listed: it says it looks damaged, how to check, and leaves it."""
    path = tmp_path / "ledger.db"
    with Ledger.open(path):
        pass
    db = sqlite3.connect(path)
    db.execute("delete from _sqlite_migrations")  # as a damaged page reads: nothing
    db.commit()
    db.close()
    before = path.read_bytes()
    result = CliRunner().invoke(cli, ["status", "--ledger", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "has a batchrunner ledger's tables but no readable record of its schema" in (
        result.output
    )
    assert "it looks damaged" in result.output and "pragma integrity_check" in result.output
    assert path.read_bytes() == before


def test_status_tells_a_run_going_on_from_one_that_was_killed(tmp_path: Path) -> None:
    """A run killed with SIGKILL never records its end: ``status`` said "running" for it
    forever. It asks the ledger's lock: held, the run is going on (and by whom); free, the
    run never ended, and ``resume`` carries on."""
    with SimulatorServer(fast_config(run_seconds=30)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(2))
        ledger = tmp_path / "ledger.db"
        with runner_process(run_args(server, tmp_path, manifest), tmp_path) as proc:
            wait_for(lambda: counters(server)["submits"] == 2)
            going = CliRunner().invoke(cli, ["status", "--ledger", str(ledger)])
            proc.kill()
        assert going.exit_code == 0, going.output
        assert f"last run: run #1 (running: pid {proc.pid}, `run` started at" in going.output
        killed = CliRunner().invoke(cli, ["status", "--ledger", str(ledger)])
        assert "last run: run #1 (never ended)" in killed.output
        assert f"`batchrunner resume --ledger {ledger}` carries on" in killed.output
        as_json = CliRunner().invoke(cli, ["status", "--ledger", str(ledger), "--json"])
        last = json.loads(as_json.output)["last_run"]
        assert (last["held_by"], last["never_ended"]) == (None, True)


def test_status_runs_shows_a_killed_run_never_ended_with_what_it_committed(
    tmp_path: Path,
) -> None:
    """``status --runs`` listed a SIGKILLed run as "running", with no figures, for ever after:
    the runs' committed amounts did not add up to the ledger's spend. Only the run whose batch
    holds the ledger now is running; a killed one never ended, and what it submitted,
    downloaded and committed is counted from the ledger."""
    with SimulatorServer(fast_config(run_seconds=8)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(4))
        ledger = tmp_path / "ledger.db"
        history = ["status", "--ledger", str(ledger), "--runs"]
        args = run_args(server, tmp_path, manifest, "--concurrency", "2")
        with runner_process(args, tmp_path) as proc:
            wait_for(lambda: counters(server)["submits"] == 2)
            # both submits recorded: the two slots are taken for the jobs' 8 s
            sent = (JobState.QUEUED, JobState.RUNNING)
            wait_for(lambda: sum(state in sent for state in states(ledger).values()) == 2)
            going = CliRunner().invoke(cli, [*history, "--json"])
            proc.kill()
        (run,) = json.loads(going.output)["runs"]
        assert run["held_by"].startswith(f"pid {proc.pid}, `run` started at")
        assert not run["never_ended"]
        # the next night's run: both slots still taken past its --max-runtime, it buys
        # nothing, follows the two to their videos and stops
        night = ["resume", "--ledger", str(ledger), "--max-runtime", "1s"]
        assert CliRunner().invoke(cli, night, env={"BATCHRUNNER_API_KEY": TOKEN}).exit_code == 75

        shown = CliRunner().invoke(cli, history)
        as_json = json.loads(CliRunner().invoke(cli, [*history, "--json"]).output)
    assert re.search(
        r"#1 +run +\S+ \S+ +never ended +submitted +2 +downloaded +0 +committed \$3\.20\n",
        shown.output,
    ), shown.output
    said = [
        (r["command"], r["never_ended"], r["held_by"], r["submitted"], r["run_spend_usd"])
        for r in as_json["runs"]
    ]
    assert said == [("run", True, None, 2, 3.2), ("resume", False, None, 0, 0.0)]
    assert sum(r["run_spend_usd"] for r in as_json["runs"]) == as_json["spend_usd"]


def test_cancel_all_cancels_in_flight_jobs_at_the_provider(tmp_path: Path) -> None:
    with SimulatorServer(fast_config(run_seconds=30)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(5))
        env = {"BATCHRUNNER_API_KEY": TOKEN}
        with ctrl_c_after(server, 3):
            first = CliRunner().invoke(
                cli, run_args(server, tmp_path, manifest, "--concurrency", "3"), env=env
            )
        assert first.exit_code == 130, first.output
        cancelled = CliRunner().invoke(
            cli, ["cancel", "--ledger", str(tmp_path / "ledger.db"), "--all"], env=env
        )
        assert cancelled.exit_code == 0, cancelled.output
        assert cancelled.output.count(": cancelled at the provider\n") == 3
        assert cancelled.output.count("cancelled in the ledger (it was never sent)") == 2
        assert counters(server)["requests"]["cancel"] == 3
        assert set(states(tmp_path / "ledger.db").values()) == {JobState.CANCELLED}
        shown = CliRunner().invoke(cli, ["status", "--ledger", str(tmp_path / "ledger.db")])
        assert "last run: run #1 (exit 130)" in shown.output
        assert "resume" not in shown.output  # it said "next: resume ... to carry on"
        again = CliRunner().invoke(
            cli, ["resume", "--ledger", str(tmp_path / "ledger.db")], env=env
        )
        assert again.exit_code == 1  # nothing left to do, and not every job is done
        assert counters(server)["submits"] == 3


def test_cancel_stops_the_batch_that_holds_the_ledger_then_cancels(tmp_path: Path) -> None:
    """A nightly run in the background holds the ledger; `cancel --all` from another terminal
    stops it as Ctrl-C would (nothing more bought, what it sent recorded), then cancels what
    it had sent at the provider and the rest in the ledger."""
    with SimulatorServer(fast_config(run_seconds=30)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(6))
        ledger = tmp_path / "ledger.db"
        args = run_args(server, tmp_path, manifest, "--concurrency", "3")
        with runner_process(args, tmp_path) as proc:
            wait_for(lambda: counters(server)["submits"] == 3)
            cancelled = CliRunner().invoke(
                cli,
                ["cancel", "--ledger", str(ledger), "--all"],
                env={"BATCHRUNNER_API_KEY": TOKEN},
            )
            assert proc.wait(timeout=10) == 143  # stopped as by SIGTERM, state saved
        assert cancelled.exit_code == 0, cancelled.output
        assert cancelled.stdout.count(": cancelled at the provider\n") == 3
        assert cancelled.stdout.count(": cancelled in the ledger (it was never sent)\n") == 3
        assert (
            f"stopping the batch that holds the ledger (pid {proc.pid}, `run`" in cancelled.stderr
        )
        assert "carries on" not in cancelled.stderr  # nothing is left to carry on with
        assert set(states(ledger).values()) == {JobState.CANCELLED}
        assert counters(server)["submits"] == 3 and counters(server)["requests"]["cancel"] == 3


def test_cancelling_jobs_not_sent_yet_leaves_the_batch_running_without_them(
    tmp_path: Path,
) -> None:
    """A nightly batch runs in the background; a row turns out wrong. ``cancel`` from another
    terminal takes it out of the batch without stopping it: the job is cancelled in the ledger
    and the batch never sends it. A job already done is left alone, and that stops nothing
    either."""
    # the first two jobs run 5 s: shot-004 and shot-005 are still pending when cancelled
    with SimulatorServer(fast_config(run_seconds=5)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(5))
        ledger = tmp_path / "ledger.db"
        env = {"BATCHRUNNER_API_KEY": TOKEN}
        args = run_args(server, tmp_path, manifest, "--concurrency", "2")
        with runner_process(args, tmp_path) as proc:
            wait_for(lambda: counters(server)["submits"] == 2)
            cancelled = CliRunner().invoke(
                cli, ["cancel", "--ledger", str(ledger), "shot-004", "shot-005"], env=env
            )
            assert cancelled.exit_code == 0, cancelled.output
            assert proc.poll() is None  # still running
            again = CliRunner().invoke(
                cli, ["cancel", "--ledger", str(ledger), "shot-004"], env=env
            )
            assert proc.wait(timeout=30) == 1  # not stopped: three done, two cancelled
        assert cancelled.stdout == (
            "shot-004: cancelled in the ledger (it was never sent)\n"
            "shot-005: cancelled in the ledger (it was never sent)\n"
        )
        assert "keeps running with the others" in cancelled.stderr
        assert again.stdout == "shot-004: left alone: it is cancelled\n"
        assert Counter(states(ledger).values()) == {JobState.DONE: 3, JobState.CANCELLED: 2}
        assert counters(server)["submits"] == 3  # the cancelled rows were never sent
        with Ledger.open(ledger, create=False) as opened:
            assert [run["command"] for run in opened.db.table("runs").rows] == [
                "run", "cancel", "cancel"
            ]  # fmt: skip


def test_without_a_key_cancel_beside_a_batch_moves_nothing_it_cannot_finish(
    tmp_path: Path,
) -> None:
    """The key is needed only for a job at the provider: a row not sent yet is cancelled in
    the ledger without one; naming a job at the provider too fails before anything moves
    (it had cancelled the pending row and then said only "no API key")."""
    with SimulatorServer(fast_config(run_seconds=5)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(4))
        ledger = tmp_path / "ledger.db"
        keyless = {"BATCHRUNNER_API_KEY": None, "QUICKROUTER_API_KEY": None, "FAL_KEY": None}
        args = run_args(server, tmp_path, manifest, "--concurrency", "2")
        with runner_process(args, tmp_path) as proc:
            wait_for(lambda: counters(server)["submits"] == 2)  # the ledger exists by now
            wait_for(lambda: states(ledger).get(JOB_ID) in (JobState.QUEUED, JobState.RUNNING))
            both = ["cancel", "--ledger", str(ledger), JOB_ID, "shot-004"]
            refused = CliRunner().invoke(cli, both, env=keyless)
            assert states(ledger)["shot-004"] is JobState.PENDING  # nothing moved
            pending = ["cancel", "--ledger", str(ledger), "shot-004"]
            cancelled = CliRunner().invoke(cli, pending, env=keyless)
            assert proc.wait(timeout=30) == 1  # three done, one cancelled
        assert refused.exit_code == 2 and "no API key" in refused.output
        assert cancelled.exit_code == 0, cancelled.output
        assert cancelled.stdout == "shot-004: cancelled in the ledger (it was never sent)\n"
        assert Counter(states(ledger).values()) == {JobState.DONE: 3, JobState.CANCELLED: 1}


def test_a_job_cancelled_as_the_batch_was_about_to_send_it_is_not_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of a cancel from another process and the batch's submit, exactly one wins: the submit
    intent is made only from ``pending``. Here the cancel lands between the batch reading the
    job and asking for its intent; the batch skips it and goes on."""
    affordable = scheduler.Runner._affordable

    def cancel_first(self: scheduler.Runner, job: Any) -> bool:
        if job.job_id == JOB_ID:
            with Ledger.open(self.ledger.path, create=False) as other:
                other.transition(JOB_ID, JobState.CANCELLED, expect=JobState.PENDING)
        return affordable(self, job)

    monkeypatch.setattr(scheduler.Runner, "_affordable", cancel_first)
    with SimulatorServer(fast_config()) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(3))
        result = CliRunner().invoke(
            cli, run_args(server, tmp_path, manifest), env={"BATCHRUNNER_API_KEY": TOKEN}
        )
        assert result.exit_code == 1, result.output  # two done, one cancelled
        assert "Traceback" not in result.output
        ledger = tmp_path / "ledger.db"
        assert Counter(states(ledger).values()) == {JobState.DONE: 2, JobState.CANCELLED: 1}
        assert states(ledger)[JOB_ID] is JobState.CANCELLED
        assert counters(server)["submits"] == 2


def test_a_cancel_that_read_a_job_before_the_batch_sent_it_moves_nothing(tmp_path: Path) -> None:
    """The other half of the race: ``cancel`` read the job pending, then the batch made its
    submit intent. The cancel's move is refused (a job being sent is not cancelled in the
    ledger behind the batch's back: its answer would have nowhere to go) and it looks again."""
    from batchrunner.jobs import NewJob

    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.add_jobs([NewJob(job_id=JOB_ID, endpoint="fal-ai/veo3", input={}, row=1)])
        read = ledger.get(JOB_ID)
        ledger.transition(JOB_ID, JobState.SUBMITTING, expect=JobState.PENDING)
        outcome: dict[str, str] = {}
        assert batch._cancelled_unsent(ledger, read, outcome) is False
        assert ledger.get(JOB_ID).state is JobState.SUBMITTING and outcome == {}


def test_cancelling_a_job_in_flight_leaves_the_batch_running(tmp_path: Path) -> None:
    """A job the running batch follows is cancelled at the provider from another terminal; the
    batch is not stopped: it sees the job end, records it cancelled, and finishes the others."""
    with SimulatorServer(fast_config(run_seconds=3)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(4))
        ledger = tmp_path / "ledger.db"
        args = run_args(server, tmp_path, manifest, "--concurrency", "2")
        with runner_process(args, tmp_path) as proc:
            wait_for(lambda: counters(server)["submits"] == 2)  # the ledger exists by now
            wait_for(lambda: states(ledger).get(JOB_ID) in (JobState.QUEUED, JobState.RUNNING))
            cancelled = CliRunner().invoke(
                cli, ["cancel", "--ledger", str(ledger), JOB_ID], env={"BATCHRUNNER_API_KEY": TOKEN}
            )
            assert proc.wait(timeout=30) == 1  # not stopped: three done, one cancelled
        assert cancelled.exit_code == 0, cancelled.output
        assert (
            cancelled.stdout
            == f"{JOB_ID}: cancelled at the provider; the running batch recorded it\n"
        )
        assert f"(pid {proc.pid}, `run` started at" in cancelled.stderr
        assert "keeps running with the others" in cancelled.stderr
        assert Counter(states(ledger).values()) == {JobState.DONE: 3, JobState.CANCELLED: 1}
        assert states(ledger)[JOB_ID] is JobState.CANCELLED
        assert counters(server)["submits"] == 4 and counters(server)["requests"]["cancel"] == 1
        with Ledger.open(ledger, create=False) as opened:
            assert [run["command"] for run in opened.db.table("runs").rows] == ["run", "cancel"]


def test_a_cancel_a_job_in_flight_does_not_heed_is_fetched_by_the_running_batch(
    tmp_path: Path,
) -> None:
    ignored = Fault.parse("cancel:ignored")
    with SimulatorServer(fast_config(run_seconds=2, faults=[ignored])) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(2))
        ledger = tmp_path / "ledger.db"
        with runner_process(run_args(server, tmp_path, manifest), tmp_path) as proc:
            wait_for(lambda: counters(server)["submits"] == 2)
            wait_for(lambda: states(ledger).get(JOB_ID) in (JobState.QUEUED, JobState.RUNNING))
            cancelled = CliRunner().invoke(
                cli, ["cancel", "--ledger", str(ledger), JOB_ID], env={"BATCHRUNNER_API_KEY": TOKEN}
            )
            assert proc.wait(timeout=30) == 0
        assert cancelled.exit_code == 0, cancelled.output
        assert cancelled.stdout == (
            f"{JOB_ID}: too late: it finished before the cancel took effect; the running batch "
            "fetches it (it is paid for)\n"
        )
        assert set(states(ledger).values()) == {JobState.DONE}
        assert counters(server)["submits"] == 2


JOB_ID = "shot-001"


def test_a_cancel_the_running_job_does_not_heed_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel answered CANCELLATION_REQUESTED does not say the job makes nothing: a running
    app may finish anyway, and that video is paid for. ``cancel`` watches each job end: one
    still running stays followed, and ``resume`` fetches what it made; nothing is bought
    again."""
    monkeypatch.setattr(scheduler, "CANCEL_SETTLE_SECONDS", 0.3)
    ignored = Fault.parse("cancel:ignored:times=2")  # two of three, watched together
    with SimulatorServer(fast_config(run_seconds=4, faults=[ignored])) as server:
        ledger = stopped_in_flight(server, tmp_path, 3, running=True)
        env = {"BATCHRUNNER_API_KEY": TOKEN}
        assert sorted(states(ledger).values()) == [JobState.RUNNING] * 3
        cancelled = CliRunner().invoke(cli, ["cancel", "--ledger", str(ledger), "--all"], env=env)
        assert cancelled.exit_code == 0, cancelled.output
        assert cancelled.output.count(": cancelled at the provider\n") == 1
        assert cancelled.output.count(": cancel requested, but it is still running") == 2
        assert sorted(states(ledger).values()) == [JobState.CANCELLED] + [JobState.RUNNING] * 2
        resumed = CliRunner().invoke(cli, ["resume", "--ledger", str(ledger)], env=env)
        assert resumed.exit_code == 1, resumed.output  # two done, one cancelled
        assert sorted(states(ledger).values()) == [JobState.CANCELLED] + [JobState.DONE] * 2
        assert len(list((tmp_path / "out").glob("*.mp4"))) == 2
        assert counters(server)["submits"] == 3


@contextmanager
def silent_api() -> Iterator[tuple[str, threading.Event]]:
    """An API origin that reads each request and never answers: a submit that hangs.

    Yields its base URL and an event set once a request's head has arrived.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    heard, closing = threading.Event(), threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not closing.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and (chunk := conn.recv(65536)):
                head += chunk
            heard.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", heard
    finally:
        closing.set()
        thread.join(timeout=10)
        for conn in held:
            conn.close()
        listener.close()


def test_a_second_ctrl_c_leaves_at_once(sim: SimulatorServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    ledger, log = tmp_path / "ledger.db", tmp_path / "runner.log"
    with silent_api() as (url, heard):
        args = [
            "-v", "run", str(manifest), "--ledger", str(ledger), "--out", str(tmp_path / "out"),
            "--base-url", url, "--auth-scheme", "bearer",
        ]  # fmt: skip
        with runner_process(args, tmp_path) as proc:
            assert heard.wait(timeout=30), "the first submit never arrived"
            proc.send_signal(signal.SIGINT)  # stop: the unanswered submit gets 3 s to answer
            wait_for(lambda: b"stopping: SIGINT received" in log.read_bytes())
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 130
    # it left without waiting out the submit's grace: the submit is still `submitting`
    assert states(ledger) == {
        "shot-001": JobState.SUBMITTING,
        "shot-002": JobState.PENDING,
        "shot-003": JobState.PENDING,
    }

    # a resume (here against a provider that answers) goes on: the cut-off submit is `unknown`
    resumed = batch.resume(ledger, token=TOKEN, base_url=sim.url)
    assert (resumed.exit_code, resumed.counts) == (1, {"done": 2, "unknown": 1})
    with Ledger.open(ledger, create=False) as opened:
        assert "the run stopped while submitting" in (opened.get("shot-001").error or "")
    # ... and once the user has checked, sending it again finishes the batch
    final = batch.retry(ledger, failed=False, unknown=True, token=TOKEN)
    assert (final.exit_code, final.counts) == (0, {"done": 3})
    assert counters(sim)["submits"] == 3


def test_a_network_that_drops_mid_run_is_waited_for_and_the_run_finishes(tmp_path: Path) -> None:
    """The provider (API and media host both) stops answering for longer than the 10 s a run
    gives an address that never answered, then comes back: the run waits for it, each request
    without using up its retries, and finishes; nothing is bought twice, and the log says once
    that it waited and once that the API came back."""
    state = str(tmp_path / "sim-state.db")
    manifest = write_manifest(tmp_path / "m.csv", rows(8))
    ledger = tmp_path / "ledger.db"
    first = SimulatorServer(fast_config(run_seconds=1.0, state_path=state)).start()
    port = int(first.url.rsplit(":", 1)[1])
    try:
        args = run_args(first, tmp_path, manifest, "--concurrency", "3", "-v")
        with runner_process(args, tmp_path) as proc:
            wait_for(lambda: counters(first)["submits"] >= 1)  # the ledger is there
            wait_for(lambda: JobState.DONE in states(ledger).values())  # the media host answered
            wait_for(lambda: JobState.RUNNING in states(ledger).values())
            first.stop()
            submitted = first.counters()["submits"]  # read in-process: every submit it took
            time.sleep(12)  # the outage: longer than an address that never answered is given
            assert proc.poll() is None  # still waiting for the network
            with SimulatorServer(fast_config(run_seconds=1.0, state_path=state), port=port) as back:
                assert proc.wait(timeout=60) == 0
                submitted += counters(back)["submits"]
    finally:
        first.stop()
    assert set(states(ledger).values()) == {JobState.DONE}
    assert submitted == 8  # none twice
    log = (tmp_path / "runner.log").read_text()
    api = f"the API at http://127.0.0.1:{port}"
    assert len(re.findall(rf"{api} stopped answering \d+ s ago; waiting up to 300 s", log)) == 1
    assert log.count(f"{api} answers again, after ") == 1


def test_status_shows_a_run_waiting_for_the_network_and_since_when(tmp_path: Path) -> None:
    """While a run waits for the network, `status` from another terminal says so: since when
    and which host does not answer, on the run's line of `status --runs` too; once the API
    answers again (the run still going on) it says so no more, and the run finishes."""
    state = str(tmp_path / "sim-state.db")
    manifest = write_manifest(tmp_path / "m.csv", rows(8))
    ledger = tmp_path / "ledger.db"

    def status(*extra: str) -> str:
        result = CliRunner().invoke(cli, ["status", "--ledger", str(ledger), *extra])
        assert result.exit_code == 0, result.output
        return result.stdout

    def waiting() -> Any:
        return json.loads(status("--json"))["last_run"]["waiting_for_network"]

    first = SimulatorServer(fast_config(run_seconds=2.0, state_path=state)).start()
    port = int(first.url.rsplit(":", 1)[1])
    host = f"127.0.0.1:{port}"
    try:
        args = run_args(first, tmp_path, manifest, "--concurrency", "2")
        with runner_process(args, tmp_path) as proc:
            wait_for(lambda: counters(first)["submits"] >= 1)  # the ledger is there
            wait_for(lambda: JobState.RUNNING in states(ledger).values())  # the API answered
            assert "running" in status() and "waiting" not in status("--runs")
            stopped_at = time.time()
            first.stop()
            wait_for(lambda: waiting() is not None)
            said = waiting()
            assert said["hosts"] == [host]
            since = datetime.datetime.fromisoformat(said["since"])
            assert stopped_at - 5 <= since.timestamp() <= time.time()
            shown = since.astimezone().strftime("%H:%M")
            line = f"waiting for the network since {shown} ({host} unreachable)"
            assert f"\n  {line}\n" in status()
            (held,) = [r for r in status("--runs").splitlines() if r.startswith("  #1 ")]
            assert "running" in held and held.endswith(f"  {line}")
            with SimulatorServer(fast_config(run_seconds=2.0, state_path=state), port=port):
                wait_for(lambda: waiting() is None or proc.poll() is not None)
                assert proc.poll() is None  # cleared while the run goes on, not by its end
                assert "waiting for the network" not in status() + status("--runs")
                assert proc.wait(timeout=60) == 0
    finally:
        first.stop()
    assert "waiting for the network" not in status() + status("--runs")
    assert set(states(ledger).values()) == {JobState.DONE}
    with sqlite3.connect(ledger) as db:  # an ended run waits for nothing; no key in the row
        assert db.execute("select waiting_since, waiting_for from runs").fetchall() == [
            (None, None)
        ]
        assert TOKEN not in repr(db.execute("select * from runs").fetchall())


def test_a_network_that_stays_down_ends_the_run_once_the_patience_is_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait is bounded: a provider that does not come back within the patience stops the
    run as an unreachable one does (exit 69, one line), and the jobs it had sent stay in
    flight in the ledger for the next run to follow."""
    monkeypatch.setattr(reach, "PATIENCE", 4.0)
    server = SimulatorServer(fast_config(run_seconds=30)).start()
    manifest = write_manifest(tmp_path / "m.csv", rows(6))
    settings = settings_for(server, tmp_path, concurrency=3)
    outcome: list[Any] = []
    worker = threading.Thread(
        target=lambda: outcome.append(batch.run_manifest(manifest, settings, token=TOKEN))
    )
    try:
        worker.start()
        wait_for(lambda: counters(server)["submits"] == 3)  # the ledger is there
        wait_for(lambda: Counter(states(settings.ledger).values())[JobState.RUNNING] == 3)
        started = time.monotonic()
        server.stop()
        worker.join(timeout=60)
    finally:
        server.stop()
    (summary,) = outcome
    assert summary.exit_code == 69
    assert 4 <= time.monotonic() - started < 30
    assert "cannot reach the API" in summary.stopped and "nothing connected for " in summary.stopped
    assert Counter(states(settings.ledger).values()) == {JobState.RUNNING: 3, JobState.PENDING: 3}
