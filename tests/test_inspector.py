"""The media check runs in worker processes: the same answers as in-process, and a decoder that
crashes or hangs on a file costs that clip's check, never the run.

Workers here are real processes: the real one (``python -m batchrunner.inspector``), and small
stand-ins that crash or hang on purpose, given to :class:`Inspectors` as its ``argv``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from batchrunner import inspector
from batchrunner.cli import cli
from batchrunner.errors import DownloadError
from batchrunner.inspector import Inspectors
from batchrunner.ledger import Ledger
from batchrunner.simulator import SimulatorServer
from batchrunner.simulator.clips import MediaShape, clip_bytes
from batchrunner.verify import Expected, UnplayableError, inspect
from tests.helpers import IMAGE, TOKEN, counters, fast_config, run_args, write_manifest

pytestmark = pytest.mark.anyio
ENV = {"BATCHRUNNER_API_KEY": TOKEN}


def stand_in(code: str) -> list[str]:
    """A worker that reads one request, then does ``code``."""
    return [sys.executable, "-c", f"import os, signal, sys, time; sys.stdin.readline(); {code}"]


CRASHES = stand_in("os.kill(os.getpid(), signal.SIGSEGV)")
HANGS = stand_in("time.sleep(600)")
# The real worker, with a decoder that crashes on any file whose name says "crash".
CRASHES_ON_CRASH = [
    sys.executable,
    "-c",
    f"import os, signal, sys\nsys.path.insert(0, {inspector._PACKAGE_DIR!r})\n"
    "from batchrunner import inspector\n"
    "real = inspector.verify.inspect\n"
    "def inspect(path, *args):\n"
    "    if 'crash' in path.name:\n"
    "        os.kill(os.getpid(), signal.SIGSEGV)\n"
    "    return real(path, *args)\n"
    "inspector.verify.inspect = inspect\n"
    "inspector.main()\n",
]


def idle_workers(argv: list[str]) -> list[inspector._Worker]:
    return [worker for worker in inspector._IDLE._workers if worker.argv == argv]


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "c.mp4"
    path.write_bytes(clip_bytes(MediaShape("9:16", 2.0, False, "720p")))
    return path


async def test_a_worker_answers_as_the_check_does_in_process(tmp_path: Path, clip: Path) -> None:
    asked = Expected(8.0, "16:9", "1080p", True)
    mine = inspect(clip, asked, tmp_path / "mine.jpg")
    checks = Inspectors(1)
    theirs = await checks.inspect(clip, asked, tmp_path / "theirs.jpg")
    assert (theirs.media, theirs.warnings) == (mine.media, mine.warnings)
    assert len(theirs.warnings) == 4
    assert theirs.poster == str(tmp_path / "theirs.jpg")
    assert (tmp_path / "theirs.jpg").read_bytes() == (tmp_path / "mine.jpg").read_bytes()

    kept = idle_workers(checks.argv)  # kept for the next clip, in this run or the next
    assert kept
    again = await Inspectors(1).inspect(clip, Expected(), None)
    assert again.media == mine.media and again.poster is None
    assert idle_workers(checks.argv) == kept  # the same processes, lent and given back
    assert all(worker.process.poll() is None for worker in kept)


async def test_a_worker_that_ended_while_idle_is_not_lent(clip: Path) -> None:
    checks = Inspectors(1)
    checks.warm()
    for worker in idle_workers(checks.argv):
        worker.process.kill()
        worker.process.wait()
    got = await checks.inspect(clip, Expected(), None)  # a fresh worker, not a failed check
    assert got.media["frames"] == 16
    assert all(worker.process.poll() is None for worker in idle_workers(checks.argv))


async def test_relative_paths_are_the_run_s_not_the_worker_s(
    tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = Inspectors(1)
    checks.warm()  # started here, in the folder the tests run from
    monkeypatch.chdir(tmp_path)  # then the run's process moves (a library caller may)
    got = await checks.inspect(Path(clip.name), Expected(), Path("media") / "p.jpg")
    assert got.poster == str(Path("media") / "p.jpg")  # as named, as in-process
    assert (tmp_path / "media" / "p.jpg").read_bytes()[:3] == b"\xff\xd8\xff"


async def test_a_file_that_is_not_a_video_is_unplayable_in_a_worker_too(tmp_path: Path) -> None:
    page = tmp_path / "c.mp4"
    page.write_bytes(b"<html><body>Access denied</body></html>\n" * 50)
    with pytest.raises(UnplayableError) as in_process:
        inspect(page, Expected())
    with pytest.raises(UnplayableError) as in_worker:
        await Inspectors(1).inspect(page, Expected(), None)
    assert str(in_worker.value) == str(in_process.value)


async def test_what_the_check_logs_reaches_the_run_s_log(
    tmp_path: Path, clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "taken").write_text("a file where the poster folder would be")
    with caplog.at_level(logging.WARNING):
        got = await Inspectors(1).inspect(clip, Expected(), tmp_path / "taken" / "p.jpg")
    assert got.poster is None
    assert [r.name for r in caplog.records] == ["batchrunner.verify"]
    assert caplog.records[0].getMessage().startswith("cannot save posters in ")


async def test_a_worker_that_crashes_costs_the_check_not_the_run(clip: Path) -> None:
    checks = Inspectors(1, CRASHES)
    with pytest.raises(DownloadError, match=r"media check crashed on c\.mp4 \(killed by SIGSEGV"):
        await checks.inspect(clip, Expected(), None)
    assert clip.exists()  # nothing shows it is not the video: kept for `resume` to check
    assert idle_workers(CRASHES) == []
    with pytest.raises(DownloadError, match="crashed"):  # a fresh worker for the next clip
        await checks.inspect(clip, Expected(), None)


async def test_a_worker_that_hangs_is_killed_and_the_check_fails(
    clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inspector, "CHECK_SECONDS", 0.5)
    checks = Inspectors(1, HANGS)
    checks.warm()
    (worker,) = idle_workers(HANGS)
    with pytest.raises(DownloadError, match=r"did not finish in 0\.5 s"):
        await checks.inspect(clip, Expected(), None)
    assert worker.process.returncode is not None  # killed and waited for
    assert idle_workers(HANGS) == []


async def test_a_check_cancelled_midway_never_lends_its_worker_again(clip: Path) -> None:
    checks = Inspectors(1, HANGS)
    checks.warm()
    (worker,) = idle_workers(HANGS)
    with anyio.move_on_after(0.3) as scope:  # the run stopped while the worker still reads
        await checks.inspect(clip, Expected(), None)
    assert scope.cancelled_caught
    assert worker.process.returncode is not None  # its answer would go to the next clip
    assert idle_workers(HANGS) == []


async def test_where_no_worker_can_start_the_check_runs_in_a_thread(
    tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(inspector._IDLE, "warned", False)
    checks = Inspectors(1, [str(tmp_path / "no-such-python")])
    checks.warm()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            got = await checks.inspect(clip, Expected(), tmp_path / "p.jpg")
    assert got.media == inspect(clip, Expected()).media
    assert got.poster == str(tmp_path / "p.jpg")
    assert [r.getMessage()[:46] for r in caplog.records] == [
        "media checks run in a thread: cannot start a w"
    ]  # said once, not once a clip


def test_a_run_outlives_a_decoder_that_crashes_and_resume_finishes_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"id": name, "prompt": f"A harbour at dawn, {name}", "image_url": IMAGE, "duration": "4s"}
        for name in ("calm-1", "crash", "calm-2")
    ]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    real = inspector.worker_argv
    with SimulatorServer(fast_config()) as server:
        args = run_args(server, tmp_path, manifest, "--json")
        monkeypatch.setattr(inspector, "worker_argv", lambda: CRASHES_ON_CRASH)
        first = CliRunner().invoke(cli, args, env=ENV)
        assert first.exit_code == 1, first.output  # one job is not done
        with Ledger.open(tmp_path / "ledger.db", create=False) as ledger:
            jobs = {job.job_id: job for job in ledger.jobs()}
        assert {name: job.state.value for name, job in jobs.items()} == {
            "calm-1": "done", "crash": "completed", "calm-2": "done",
        }  # fmt: skip
        assert "media check crashed on" in (jobs["crash"].error or "")
        assert "killed by SIGSEGV" in (jobs["crash"].error or "")
        kept = [p for p in (tmp_path / "out").iterdir() if "crash" in p.name]
        assert len(kept) == 1  # the paid-for file stays where it is

        monkeypatch.setattr(inspector, "worker_argv", real)
        again = CliRunner().invoke(cli, args, env=ENV)
        assert again.exit_code == 0, again.output
        summary = json.loads(again.stdout.strip().splitlines()[-1])
        assert summary["counts"] == {"done": 3}
        seen = counters(server)
        assert seen["submits"] == 3  # nothing bought twice
        assert seen["requests"]["media"] == 3  # the kept file was checked, not fetched again


def test_at_exit_every_idle_worker_leaves_by_itself_and_is_waited_for() -> None:
    Inspectors(1).warm()
    workers = list(inspector._IDLE._workers)
    assert workers
    inspector._IDLE.close_all()  # what the process does at exit (atexit)
    assert [worker.process.returncode for worker in workers] == [0] * len(workers)
    assert inspector._IDLE._workers == []


def test_a_forked_child_leaves_the_parent_s_workers_alone() -> None:
    Inspectors(1).warm()
    argv = inspector.worker_argv()
    worker = idle_workers(argv)[-1]
    pid = os.fork()
    if pid == 0:  # the child: no workers of its own, none of the parent's pipes open
        ok = False
        try:
            ok = inspector._IDLE._workers == [] and worker.process.stdin.closed
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert worker in idle_workers(argv) and worker.process.poll() is None
    inspector._IDLE.close_all()  # its stdin closed here is its last: it leaves at once
    assert worker.process.returncode == 0
