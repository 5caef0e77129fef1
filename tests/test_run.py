"""End to end: manifests run against the real simulator over real sockets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from batchrunner import batch
from batchrunner.cli import cli
from batchrunner.client import QueueClient
from batchrunner.commits import Recording
from batchrunner.errors import ManifestError, UsageError
from batchrunner.ledger import Ledger
from batchrunner.report import Summary
from batchrunner.settings import Settings
from batchrunner.simulator import Fault, SimulatorServer
from batchrunner.states import JobState
from tests.helpers import TOKEN, counters, fast_config, rows, run_args, settings_for, write_manifest

ROOT = Path(__file__).resolve().parent.parent


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def jobs(ledger_path: Path) -> list[Any]:
    with Ledger.open(ledger_path, create=False) as ledger:
        return list(ledger.jobs())


def submits_per_prompt(server: SimulatorServer) -> Counter[str]:
    return Counter(job["prompt"] for job in counters(server)["jobs"].values())


def test_24_rows_with_two_refused_prompts(sim: SimulatorServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(24, failing=(5, 17)))
    settings = settings_for(sim, tmp_path)

    summary = batch.run_manifest(manifest, settings, token=TOKEN)

    assert summary.exit_code == 1
    assert summary.counts == {"done": 22, "failed": 2}
    seen = counters(sim)
    by_state = {j.job_id: j for j in jobs(settings.ledger)}
    for job in by_state.values():
        if job.state is JobState.DONE:
            path = Path(job.output_path)
            assert path.parent == (tmp_path / "out").resolve()
            served = seen["jobs"][job.request_id]["media_sha256"]
            assert job.sha256 == served == sha256(path)
    failed = sorted(j.job_id for j in by_state.values() if j.state is JobState.FAILED)
    assert failed == ["shot-005", "shot-017"]
    for job_id in failed:
        assert "flagged by a content checker" in (by_state[job_id].error or "")
    assert len(list((tmp_path / "out").glob("*.mp4"))) == 22
    assert not list((tmp_path / "out").glob("*.part"))
    assert seen["submits"] == 24

    again = batch.run_manifest(manifest, settings, token=TOKEN)
    assert counters(sim)["submits"] == 24  # nothing submitted twice
    assert (again.exit_code, again.submitted, again.counts) == (1, 0, summary.counts)


def stops_buying(
    server: SimulatorServer, tmp_path: Path, manifest_rows: list[dict[str, Any]], **states: int
) -> tuple[Summary, Settings, Path, int]:
    """Run ``manifest_rows`` at concurrency 2 until the run stops buying (exit 69): its summary,
    settings and manifest, and how many jobs it bought: as many in each of ``states`` as it
    says (-1: the rest of those bought), the others pending."""
    manifest = write_manifest(tmp_path / "m.csv", manifest_rows)
    settings = settings_for(server, tmp_path, concurrency=2)
    stopped = batch.run_manifest(manifest, settings, token=TOKEN)
    bought = int(counters(server)["submits"])
    assert stopped.exit_code == 69 and bought < 20
    rest = bought - sum(n for n in states.values() if n > 0)
    counts = {state: rest if n < 0 else n for state, n in states.items()}
    counts["pending"] = len(manifest_rows) - bought
    assert stopped.counts == {state: n for state, n in counts.items() if n}
    return stopped, settings, manifest, bought


def test_the_first_jobs_failing_alike_stop_the_buying(sim: SimulatorServer, tmp_path: Path) -> None:
    """Every row trips the content checker (a prompt template gone wrong, a field the model no
    longer takes): the first five jobs to end fail the same way and none succeeds, so the run
    stops buying (such failures may be billed) instead of failing hundreds one by one. Once
    the rows are fixed the same command goes on; a run where some job succeeded is not
    stopped by a few alike (``test_24_rows_with_two_refused_prompts``)."""
    every = rows(40, failing=tuple(range(1, 41)))
    stopped, settings, manifest, bought = stops_buying(sim, tmp_path, every, failed=-1)
    assert bought < 10 and stopped.stopped is not None
    assert stopped.stopped.startswith("the first 5 jobs to end all failed the same way: ")
    assert "flagged by a content checker" in stopped.stopped
    assert f"({40 - bought} jobs wait;" in stopped.stopped
    fixed = write_manifest(manifest, rows(40))
    again = batch.run_manifest(fixed, settings, token=TOKEN, replace_changed=True)
    assert again.exit_code == 0 and again.counts == {"done": 40}


@pytest.mark.parametrize("fault", ["403", "503", "403:after=4"])
def test_a_media_host_out_of_reach_stops_the_buying_and_keeps_every_result(
    tmp_path: Path, fault: str
) -> None:
    """Every video URL refused (a proxy or firewall, expired signatures), its host down (503
    after every retry), or refused from the fifth on (a host that went down mid-run): the
    last 3 downloads fail alike, so the run stops buying videos nobody could fetch (exit 69,
    one line naming the host), keeping every paid result. Once the host answers, the same
    command downloads them all, buying nothing again; downloads that fail here and there
    never stop a run
    (``test_broken_downloads_end_with_their_reason_and_do_not_stop_the_others``)."""
    with SimulatorServer(fast_config(faults=[Fault.parse(f"media:{fault}")])) as server:
        fetched = 4 if "after" in fault else 0
        stopped, settings, manifest, bought = stops_buying(
            server, tmp_path, rows(40), done=fetched, completed=-1
        )
        assert stopped.stopped is not None
        assert stopped.stopped.startswith(
            "the videos cannot be fetched: the last 3 downloads all failed alike ("
        )
        cause = f"answered {fault.split(':')[0]}"
        assert cause in stopped.stopped and server.url in stopped.stopped
        waiting = f"{bought - fetched} paid videos wait to be downloaded, {40 - bought} jobs"
        assert waiting in stopped.stopped
        assert all(job.result for job in jobs(settings.ledger) if job.state != "pending")
        server.config.faults = []  # the host answers again

        again = batch.run_manifest(manifest, settings, token=TOKEN)

        assert again.exit_code == 0 and again.counts == {"done": 40}
        assert counters(server)["submits"] == 40  # each bought once


def test_old_results_whose_files_are_refused_do_not_stop_a_later_run_buying(
    tmp_path: Path,
) -> None:
    """Only this run's own results count towards "the last downloads all failed alike": a
    few old results whose files the host refuses for good end ``download_failed`` one by one,
    as before, and the nightly run still buys and fetches its new rows."""
    with SimulatorServer(fast_config(faults=[Fault("media", "403", times=3)])) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(3))
        settings = settings_for(server, tmp_path)
        first = batch.run_manifest(manifest, settings, token=TOKEN)
        assert first.exit_code == 69 and first.counts == {"completed": 3}
        # the same three files refused again (a rule of its own: the first one is spent)
        server.config.faults.append(Fault("media", "403", times=3))
        write_manifest(manifest, rows(8))

        night = batch.run_manifest(manifest, settings, token=TOKEN)

    assert night.exit_code == 1 and night.counts == {"done": 5, "download_failed": 3}
    assert night.stopped is None


def test_a_stop_for_the_media_host_leaves_each_job_its_own_error(tmp_path: Path) -> None:
    """The run stops once the media host refused three downloads alike (exit 69): each job's
    error still names its own video's URL. The jobs marked ``download_failed`` before the stop
    were put back to ``completed`` with the last failure's text, another job's URL."""
    with SimulatorServer(fast_config(faults=[Fault("media", "403", times=3)])) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(3))
        settings = settings_for(server, tmp_path, concurrency=2)
        stopped = batch.run_manifest(manifest, settings, token=TOKEN)
    assert stopped.exit_code == 69 and stopped.counts == {"completed": 3}
    refused = jobs(settings.ledger)
    urls = {job.job_id: job.video_url for job in refused}
    assert len(set(urls.values())) == 3
    for job in refused:
        assert job.error is not None and f"403 for {urls[job.job_id]}" in job.error
        others = [url for other, url in urls.items() if other != job.job_id]
        assert not any(url in job.error for url in others), (job.job_id, job.error)


def test_a_done_video_deleted_or_cut_is_fetched_again_not_bought_again(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    settings = settings_for(sim, tmp_path)
    assert batch.run_manifest(manifest, settings, token=TOKEN).counts == {"done": 3}
    done = {job.job_id: Path(job.output_path) for job in jobs(settings.ledger)}
    done["shot-001"].unlink()  # deleted by hand
    done["shot-002"].write_bytes(done["shot-002"].read_bytes()[:1000])  # cut: a full disk, say
    fetched = counters(sim)["requests"]["media"]

    again = batch.run_manifest(manifest, settings, token=TOKEN)

    seen = counters(sim)
    assert (again.counts, again.submitted, again.downloaded) == ({"done": 3}, 0, 2)
    assert seen["submits"] == 3  # bought once
    assert seen["requests"]["media"] == fetched + 2
    for job in jobs(settings.ledger):
        served = seen["jobs"][job.request_id]["media_sha256"]
        assert sha256(Path(job.output_path)) == job.sha256 == served


def test_the_ledger_follows_what_the_sheet_says_besides_the_request(
    sim: SimulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Notes added after a run, a row inserted above, an output renamed: the ledger (exports,
    the gallery, messages) follows the sheet, nothing is bought again, and a saved video keeps
    the name it has, with a warning (an editing project may point to it)."""
    manifest = write_manifest(tmp_path / "m.csv", rows(3, notes="first pass"))
    settings = settings_for(sim, tmp_path)
    assert batch.run_manifest(manifest, settings, token=TOKEN).counts == {"done": 3}
    (tmp_path / "ids.txt").write_text("shot-002\n")
    retake = ["retry", "--ledger", str(settings.ledger), "--ids", str(tmp_path / "ids.txt")]
    assert (
        CliRunner()
        .invoke(cli, [*retake, "--new-take"], env={"BATCHRUNNER_API_KEY": TOKEN})
        .exit_code
        == 0
    )
    saved = {job.job_id: job.output_path for job in jobs(settings.ledger)}
    edited = rows(3, notes="first pass")
    edited[1] |= {"notes": "approved", "output": "harbour-final"}
    extra = {**rows(4)[3], "id": "shot-000", "notes": "new"}
    write_manifest(manifest, [extra, *edited])

    again = batch.run_manifest(manifest, settings, token=TOKEN)

    assert (again.counts, again.submitted) == ({"done": 5}, 1)
    assert counters(sim)["submits"] == 5
    after = {job.job_id: job for job in jobs(settings.ledger)}
    assert {i: (j.row, j.metadata["notes"]) for i, j in after.items()} == {
        "shot-000": (1, "new"), "shot-001": (2, "first pass"), "shot-002": (3, "approved"),
        "shot-002~t2": (3, "approved"), "shot-003": (4, "first pass"),
    }  # fmt: skip
    assert after["shot-002~t2"].output_name is None  # a take keeps its own name
    assert after["shot-002"].output_name == "harbour-final.mp4"
    assert {i: after[i].output_path for i in saved} == saved  # nothing renamed
    (warning,) = [r.getMessage() for r in caplog.records if "keeps that name" in r.getMessage()]
    assert "row 3, line 4, column 'output': now 'harbour-final.mp4', but shot-002's" in warning


def test_set_output_sorts_the_videos_into_a_folder_per_matrix_value(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """A matrix of two aspect ratios handed to two editors: ``--set output={aspect_ratio}/{id}``
    puts each ratio's clips in a folder of its own; ``plan -o`` shows each file's name first."""
    manifest = write_manifest(tmp_path / "m.csv", rows(2))
    shape = ["--matrix", "aspect_ratio=16:9,9:16", "--set", "output={aspect_ratio}/{id}"]
    plan = CliRunner().invoke(cli, ["plan", str(manifest), *shape, "-o", str(tmp_path / "p.jsonl")])
    assert plan.exit_code == 0, plan.output
    planned = [
        json.loads(line)["output"] for line in (tmp_path / "p.jsonl").read_text().splitlines()
    ]
    assert planned == [
        "16_9/0001-shot-001~16_9.mp4", "9_16/0001-shot-001~9_16.mp4",
        "16_9/0002-shot-002~16_9.mp4", "9_16/0002-shot-002~9_16.mp4",
    ]  # fmt: skip
    result = CliRunner().invoke(
        cli, run_args(sim, tmp_path, manifest, *shape), env={"BATCHRUNNER_API_KEY": TOKEN}
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.mp4")) == sorted(planned)
    assert {job.output_path for job in jobs(tmp_path / "ledger.db")} == {
        str(out / name) for name in planned
    }


def test_ids_no_file_name_can_hold_as_they_are_still_get_their_own_video_and_poster(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    ids = ["x" * 300, "猫", "犬", "a/b", "a_b"]  # too long; both "job"; both "a_b"
    table = rows(len(ids))
    for row, job_id in zip(table, ids, strict=True):
        row["id"] = job_id
    manifest = write_manifest(tmp_path / "m.csv", table)
    settings = settings_for(sim, tmp_path)

    summary = batch.run_manifest(manifest, settings, token=TOKEN)

    assert summary.counts == {"done": len(ids)}
    done = jobs(settings.ledger)
    assert sorted(job.job_id for job in done) == sorted(ids)
    assert len({job.output_path for job in done}) == len({job.poster for job in done}) == len(ids)
    seen = counters(sim)
    for job in done:
        assert sha256(Path(job.output_path)) == seen["jobs"][job.request_id]["media_sha256"]
        assert Path(job.poster).is_file()


def test_a_second_ledger_never_buys_into_another_ledger_s_files(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(2))  # day 2's sheet, the same ids
    first = settings_for(sim, tmp_path)
    assert batch.run_manifest(manifest, first, token=TOKEN).counts == {"done": 2}
    videos = {path: sha256(path) for path in (tmp_path / "out").glob("*.mp4")}
    second = dataclasses.replace(first, ledger=tmp_path / "day2.db")

    with pytest.raises(UsageError, match=r"0001-shot-001\.mp4 and 1 more are already there"):
        batch.run_manifest(manifest, second, token=TOKEN)

    assert counters(sim)["submits"] == 2  # nothing bought by the second ledger
    assert {path: sha256(path) for path in videos} == videos
    again = batch.run_manifest(write_manifest(manifest, rows(3)), first, token=TOKEN)
    assert (again.submitted, again.counts) == (1, {"done": 3})  # a new row in its own ledger


def test_ids_in_any_script_name_their_own_files_when_rows_move(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """Ids with no ASCII letter were all ``job`` in a file name: ``0001-job.mp4`` for 狐, and
    once 狐's row was deleted, 猫 (now row 1) wanted the same name, and the nightly run was
    refused, blaming "another ledger". Letters of every script are kept; where a name still
    cannot keep two ids apart at one row (``a/b`` then ``a:b``), the refusal names this
    ledger's job, not another ledger."""
    settings = settings_for(sim, tmp_path)
    shots = [{**row, "id": name} for row, name in zip(rows(3), ["狐", "猫", "🦊"], strict=True)]
    manifest = write_manifest(tmp_path / "m.csv", shots[:1])
    assert batch.run_manifest(manifest, settings, token=TOKEN).counts == {"done": 1}
    summary = batch.run_manifest(write_manifest(manifest, shots[1:]), settings, token=TOKEN)
    assert summary.counts == {"done": 3}
    names = sorted(path.name for path in (tmp_path / "out").glob("*.mp4"))
    assert names[:2] == ["0001-狐.mp4", "0001-猫.mp4"]
    assert names[2].startswith("0002-job-") and len(names) == 3  # an emoji: its hash

    fourth, fifth = rows(5)[3:]
    write_manifest(manifest, [{**fourth, "id": "a/b"}])
    assert batch.run_manifest(manifest, settings, token=TOKEN).counts["done"] == 4
    write_manifest(manifest, [{**fifth, "id": "a:b"}])
    with pytest.raises(UsageError, match=r"0001-a_b\.mp4 is this ledger's video of job 'a/b'"):
        batch.run_manifest(manifest, settings, token=TOKEN)
    assert counters(sim)["submits"] == 4


def test_a_video_whose_folder_is_a_file_is_refused_before_it_is_bought(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """A row's ``output`` names a folder that is a file (``day2/lake`` where ``day2`` is a file
    of notes, or another row's video): the job was bought and its video could never be saved
    ("cannot write ... File exists"). Refused before anything is sent."""
    settings = settings_for(sim, tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "day2").write_text("notes")
    blocked = write_manifest(tmp_path / "m.csv", [{**rows(1)[0], "output": "day2/lake"}])
    with pytest.raises(UsageError, match=r"out/day2 is a file, where row 1's video needs a folder"):
        batch.run_manifest(blocked, settings, token=TOKEN)
    first, second = rows(2)
    clash = [{**first, "output": "a"}, {**second, "output": "0001-a.mp4/x"}]
    with pytest.raises(UsageError, match=r"which is row 1's video \(shot-001\)"):
        batch.run_manifest(write_manifest(blocked, clash), settings, token=TOKEN)
    assert counters(sim)["submits"] == 0


def test_two_ledgers_never_write_into_one_output_folder_at_once(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """Two batches with their own ledgers and one ``--out``, at the same time: each took the
    other's videos for its own or wrote over them (the same row numbers and ids name the same
    files). The second is refused (exit 3) naming the other's ledger, before anything is
    recorded or sent; once the first is done, it runs."""
    from batchrunner.lock import OutputLock

    manifest = write_manifest(tmp_path / "m.csv", rows(2))
    args = run_args(sim, tmp_path, manifest)  # --out tmp_path/out, --ledger tmp_path/ledger.db
    other = tmp_path / "other.db"
    (tmp_path / "out").mkdir()
    with OutputLock(tmp_path / "out", other, "run"):
        refused = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": TOKEN})
        assert refused.exit_code == 3, refused.output
        assert "is being written by another batchrunner" in refused.stderr
        assert f"ledger {other}" in refused.stderr
        assert counters(sim)["submits"] == 0
    ran = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": TOKEN})
    assert ran.exit_code == 0, ran.output
    assert counters(sim)["submits"] == 2


def test_token_never_reaches_foreign_or_media_origins(tmp_path: Path) -> None:
    config = fast_config()
    with SimulatorServer(config, ports=3) as server:
        api, foreign, media = server.urls
        # returned *_url fields point at `foreign`; videos live on `media`
        config.public_origin, config.media_origin = foreign, media
        manifest = write_manifest(tmp_path / "m.csv", rows(6))
        summary = batch.run_manifest(manifest, settings_for(server, tmp_path), token=TOKEN)
        hosts = counters(server)["by_host"]
    assert summary.exit_code == 0
    host = {url: url.split("://", 1)[1] for url in (api, foreign, media)}
    assert hosts[host[api]]["authorized"] > 0
    assert hosts.get(host[foreign], {"authorized": 0})["authorized"] == 0
    assert hosts[host[media]]["requests"] >= 6
    assert hosts[host[media]]["authorized"] == 0
    assert TOKEN.encode() not in (tmp_path / "ledger.db").read_bytes()


def test_a_foreign_origin_that_is_contacted_gets_no_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test above cannot see the auth guard: re-based URLs never reach the foreign host.
    Here the returned status and result URLs are used as they come, so the foreign host is
    contacted, over real sockets, and must still get no token."""
    monkeypatch.setattr(QueueClient, "rebase", lambda self, url: url)
    config = fast_config()
    with SimulatorServer(config, ports=2) as server:
        api, foreign = (url.split("://", 1)[1] for url in server.urls)
        config.public_origin = server.urls[1]
        manifest = write_manifest(tmp_path / "m.csv", rows(2))
        summary = batch.run_manifest(manifest, settings_for(server, tmp_path), token=TOKEN)
        hosts = counters(server)["by_host"]
    assert hosts[api] == {"requests": 2, "authorized": 2}  # the two submits
    assert hosts[foreign]["requests"] >= 1
    assert hosts[foreign]["authorized"] == 0
    # the foreign host wanted a key it was not given: a refused key stops the run (exit 69),
    # the jobs stay at the provider for the next run, and the key stays home
    assert summary.exit_code == 69 and "Missing Authorization header" in (summary.stopped or "")
    assert {job.state for job in jobs(tmp_path / "ledger.db")} <= {
        JobState.QUEUED,
        JobState.RUNNING,
    }


def test_concurrency_caps_jobs_in_flight_at_the_server(tmp_path: Path) -> None:
    with SimulatorServer(fast_config(run_seconds=0.4)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(16))
        settings = settings_for(server, tmp_path, concurrency=4)
        summary = batch.run_manifest(manifest, settings, token=TOKEN)
        seen = counters(server)
        with Ledger.open(settings.ledger, create=False) as ledger:
            limit = ledger.last_run()["concurrency_limit"]  # type: ignore[index]
    assert summary.exit_code == 0
    assert seen["max_in_flight"] == 4  # used fully, never exceeded
    assert limit is None  # never throttled: the limit opened to --concurrency, nothing to say


def test_ambiguous_submit_is_unknown_and_resent_only_on_request(tmp_path: Path) -> None:
    config = fast_config(faults=[Fault("submit", "drop_after_accept", times=1)])
    with SimulatorServer(config) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(5))
        settings = settings_for(server, tmp_path)

        first = batch.run_manifest(manifest, settings, token=TOKEN)
        assert (first.exit_code, first.counts) == (1, {"done": 4, "unknown": 1})
        assert counters(server)["submits"] == 5  # the lost answer's job exists at the server

        second = batch.run_manifest(manifest, settings, token=TOKEN)
        assert (second.exit_code, second.submitted) == (1, 0)
        assert counters(server)["submits"] == 5

        third = batch.retry(settings.ledger, failed=False, unknown=True, token=TOKEN)
        assert (third.exit_code, third.submitted, third.counts) == (0, 1, {"done": 5})
        assert counters(server)["submits"] == 6
        assert max(submits_per_prompt(server).values()) == 2


def test_sigkill_mid_batch_then_resume_loses_and_rebuys_nothing(tmp_path: Path) -> None:
    n = 30
    with SimulatorServer(fast_config(run_seconds=0.5, jitter=0.5)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(n))
        ledger = tmp_path / "ledger.db"
        argv = [
            sys.executable,
            "-m",
            "batchrunner",
            *run_args(server, tmp_path, manifest, "--concurrency", "6"),
        ]
        env = {**os.environ, "BATCHRUNNER_API_KEY": TOKEN}
        kills = 0
        log = open(tmp_path / "runner.log", "ab")  # noqa: SIM115
        for _ in range(3):
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
            target = counters(server)["submits"] + 4
            deadline = time.monotonic() + 30
            while counters(server)["submits"] < target and proc.poll() is None:
                assert time.monotonic() < deadline, "the runner made no progress"
                time.sleep(0.02)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=10)
        log.close()
        final = subprocess.run(
            [*argv, "--resubmit-unknown"], env=env, capture_output=True, text=True, timeout=120
        )
        assert final.returncode == 0, final.stderr
        states = {j.job_id: j.state for j in jobs(ledger)}
        assert set(states.values()) == {JobState.DONE}
        unknown_ever = {
            row[0]
            for row in sqlite3.connect(ledger).execute(
                "select distinct j.input from events e join jobs j using (job_id) "
                "where e.to_state = 'unknown'"
            )
        }
        prompts_unknown = {json.loads(text)["prompt"] for text in unknown_ever}
        for prompt, count in submits_per_prompt(server).items():
            assert count == 1 or prompt in prompts_unknown, f"{prompt!r} was bought {count} times"
        assert kills >= 1
        assert len(list((tmp_path / "out").glob("*.mp4"))) == n
        assert not list((tmp_path / "out").glob("*.part"))


def test_bad_manifest_exits_2_names_rows_and_sends_nothing(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    bad = rows(4)
    bad[1]["duration"] = "9s"
    bad[3]["generate_audio"] = "maybe"
    manifest = write_manifest(tmp_path / "m.csv", bad)
    result = CliRunner().invoke(
        cli,
        run_args(sim, tmp_path, manifest),
        env={"BATCHRUNNER_API_KEY": TOKEN},
    )
    assert result.exit_code == 2
    assert "row 2" in result.output and "duration" in result.output
    assert "row 4" in result.output and "generate_audio" in result.output
    assert "Traceback" not in result.output
    assert counters(sim)["submits"] == 0
    assert not (tmp_path / "ledger.db").exists()


def test_a_run_submits_while_its_jobs_are_still_being_recorded(
    sim: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest's jobs are written a chunk at a time while the first ones are submitted:
    a bad row still refuses the whole manifest before anything is recorded or sent, each job
    is committed pending before its submit intent, and jobs go out in the ledger's manifest
    order, new rows merged with pending ones an earlier run left (the order `plan` shows)."""
    monkeypatch.setattr(Recording, "CHUNK", 1)
    write = Recording.write

    async def late(recording: Recording) -> None:  # the run must wait for each commit
        await anyio.sleep(0.2)
        await write(recording)

    monkeypatch.setattr(Recording, "write", late)
    settings = settings_for(sim, tmp_path, concurrency=1)
    earlier = rows(4)  # recorded at rows 1-4, left pending by a budget of $0
    first = write_manifest(tmp_path / "a.csv", earlier)
    held = batch.run_manifest(first, dataclasses.replace(settings, budget=0.0), token=TOKEN)
    assert held.counts == {"pending": 4}
    new = rows(40)[4:]  # shot-005 ... shot-040
    mixed = [row for pair in zip(new, earlier, strict=False) for row in pair] + new[4:]
    bad = [*mixed[:-1], {**mixed[-1], "duration": "9s"}]
    with pytest.raises(ManifestError):
        batch.run_manifest(write_manifest(tmp_path / "bad.csv", bad), settings, token=TOKEN)
    assert counters(sim)["submits"] == 0
    assert len(jobs(settings.ledger)) == 4

    summary = batch.run_manifest(write_manifest(tmp_path / "b.csv", mixed), settings, token=TOKEN)

    assert summary.counts == {"done": 40}
    in_manifest_order = [job.job_id for job in jobs(settings.ledger)]
    events = (
        sqlite3.connect(settings.ledger)
        .execute(
            "select job_id, to_state from events where to_state in ('pending', 'submitting') "
            "and from_state is null or to_state = 'submitting' order by id"
        )
        .fetchall()
    )
    submits = [job_id for job_id, state in events if state == "submitting"]
    assert submits == in_manifest_order
    added = [job_id for job_id, state in events if state == "pending"]
    assert events.index((submits[0], "submitting")) < events.index((added[-1], "pending"))
    for job_id in added:
        assert events.index((job_id, "pending")) < events.index((job_id, "submitting"))


def test_missing_key_exits_2_before_anything(sim: SimulatorServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(2))
    result = CliRunner().invoke(cli, ["run", str(manifest), "--ledger", str(tmp_path / "l.db")])
    assert result.exit_code == 2
    assert "BATCHRUNNER_API_KEY" in result.output
    assert counters(sim)["submits"] == 0


@pytest.mark.slow
def test_demo_runs_then_repeats_as_a_no_op(tmp_path: Path) -> None:
    args = [
        "run",
        str(ROOT / "manifests" / "demo.csv"),
        "--simulate",
        "--out",
        str(tmp_path / "outputs"),
        "--ledger",
        str(tmp_path / "demo.db"),
        "--json",
    ]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert len(list((tmp_path / "outputs").glob("*.mp4"))) == 10
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout.strip().splitlines()[-1])["submitted"] == 0
    # the row with a local image: sent as a data: URI, stored as its path and sha256
    with Ledger.open(tmp_path / "demo.db", create=False) as ledger:
        (local,) = [j for j in ledger.jobs() if j.files]
    image = ROOT / "manifests" / "images" / "lighthouse.png"
    assert local.input["image_url"] == str(image)
    assert local.files["image_url"]["sha256"] == sha256(image)
    assert b";base64," not in (tmp_path / "demo.db").read_bytes()
