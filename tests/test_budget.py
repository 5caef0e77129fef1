"""Money: the budget cap under heavy concurrency, plans and dry runs that send nothing, edits."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from batchrunner import batch
from batchrunner.cli import cli
from batchrunner.jobs import Job
from batchrunner.ledger import Ledger
from batchrunner.simulator import Fault, SimulatorServer
from batchrunner.states import JobState
from tests import fake_queue
from tests.helpers import (
    TOKEN,
    counters,
    ctrl_c_after,
    fast_config,
    rows,
    run_args,
    settings_for,
    write_manifest,
)

ENV = {"BATCHRUNNER_API_KEY": TOKEN}
PRICE = 1.60  # rows() are 4 s with audio: 4 x $0.40


def test_budget_is_never_exceeded_under_concurrency_50(tmp_path: Path) -> None:
    cap = 20.0  # room for 12 jobs ($19.20), not 13
    with SimulatorServer(fast_config(run_seconds=0.3)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(40))
        settings = settings_for(server, tmp_path, concurrency=50, budget=cap)
        summary = batch.run_manifest(manifest, settings, token=TOKEN)
        seen = counters(server)
        assert summary.exit_code == 75
        assert seen["submits"] == 12
        assert summary.spend_usd <= cap
        assert summary.counts == {"done": 12, "pending": 28}
        assert summary.stopped == (
            "budget $20.00 reached: $19.20 committed, $0.80 left, the next job costs $1.60; "
            "28 jobs not submitted, estimated $44.80"
        )
        # the ledger keeps its budget: a plain resume would stop here again
        resume = f"`batchrunner resume --ledger {settings.ledger} --budget 64.00`"
        assert summary.next_command == f"{resume} to submit them all"
        with Ledger.open(settings.ledger, create=False) as ledger:
            costs = [j.cost_usd for j in ledger.jobs() if j.cost_usd]
        assert costs == [PRICE] * 12  # spend recorded per job

        # the same budget again: everything already committed counts, nothing more is sent
        again = batch.run_manifest(manifest, settings, token=TOKEN)
        assert (again.exit_code, again.submitted) == (75, 0)

        # the budget the summary named is enough to finish the batch, to the cent
        done = batch.resume(settings.ledger, token=TOKEN, budget=64.0)
        assert (done.exit_code, done.submitted) == (0, 28)
        assert counters(server)["submits"] == 40


@pytest.mark.anyio
async def test_budget_check_and_reservation_cannot_interleave(tmp_path: Path) -> None:
    """Six workers reach the budget check at the same moment; the budget has room for three.

    The test holds the six open slots until all six workers wait for one, then frees them
    together. Each submit then waits until six are in flight, or until the budget refused a
    job. Were the check and the reservation able to interleave, all six would pass the check
    before any of them reserved its price.
    """
    workers, fits = 6, 3
    budget = fits * PRICE + 0.5  # room for 3 jobs, not 4
    in_flight, settled = 0, anyio.Event()

    async def on_submit(job_id: str) -> None:
        nonlocal in_flight
        in_flight += 1
        if in_flight == workers:
            settled.set()
        await settled.wait()

    queue = fake_queue.FakeQueue(on_submit)
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        ledger.add_jobs(fake_queue.new_jobs(10))
        async with fake_queue.media() as cdn, anyio.create_task_group() as tg:
            run = fake_queue.runner(
                ledger, queue, cdn, tmp_path / "out", concurrency=workers, budget=budget
            )
            for _ in range(workers - 1):
                run.limit.succeeded()  # slow start is over: six slots
            assert run.limit.current == workers
            affordable = run._affordable

            def watched(job: Job) -> bool:
                fits_budget = affordable(job)
                if not fits_budget:
                    settled.set()
                return fits_budget

            run._affordable = watched  # type: ignore[method-assign]
            held = [object() for _ in range(workers)]
            for holder in held:
                await run.limit.slots.acquire_on_behalf_of(holder)
            tg.start_soon(run.run)
            while run.limit.slots.statistics().tasks_waiting < workers:
                await anyio.lowlevel.checkpoint()  # every worker is now queued for a slot
            for holder in held:
                run.limit.slots.release_on_behalf_of(holder)  # all six go at once
        assert len(queue.submitted) == fits
        assert ledger.spend() == pytest.approx(fits * PRICE)
        assert ledger.counts() == {JobState.DONE: fits, JobState.PENDING: 10 - fits}
        assert run.out_of_budget


@pytest.mark.anyio
async def test_a_reservation_given_back_is_spendable_again(tmp_path: Path) -> None:
    """A rejected submit gives its price back (``cost_usd`` cleared): a run that sums the spend
    only near the cap still fits as many jobs as the budget holds, no fewer."""
    from batchrunner.errors import FinalError

    async def reject_the_first(job_id: str) -> None:
        if job_id == "job-01":
            raise FinalError("422: the prompt was refused", status=422)

    queue = fake_queue.FakeQueue(reject_the_first)
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        ledger.add_jobs(fake_queue.new_jobs(6))
        async with fake_queue.media() as cdn:
            run = fake_queue.runner(
                ledger, queue, cdn, tmp_path / "out", concurrency=1, budget=3 * PRICE + 0.5
            )
            await run.run()
        assert ledger.counts() == {JobState.FAILED: 1, JobState.DONE: 3, JobState.PENDING: 2}
        assert ledger.spend() == pytest.approx(3 * PRICE)


@pytest.mark.anyio
async def test_a_budget_far_from_reached_sums_the_spend_once_not_per_submit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Summing every job's cost for each submit made a budgeted run of 100,000 rows quadratic."""
    sums = 0
    spend = Ledger.spend

    def counted(self: Ledger) -> float:
        nonlocal sums
        sums += 1
        return spend(self)

    monkeypatch.setattr(Ledger, "spend", counted)
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        ledger.add_jobs(fake_queue.new_jobs(20))
        async with fake_queue.media() as cdn:
            run = fake_queue.runner(
                ledger, fake_queue.FakeQueue(), cdn, tmp_path / "out", concurrency=4, budget=1000
            )
            await run.run()
        assert ledger.counts() == {JobState.DONE: 20}
    assert sums == 1


@pytest.mark.parametrize(("budget", "jobs"), [("3.20", 2), ("4.80", 3)])
def test_a_budget_that_is_an_exact_multiple_of_the_price_buys_exactly_that_many(
    sim: SimulatorServer, tmp_path: Path, budget: str, jobs: int
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(5))
    result = CliRunner().invoke(cli, run_args(sim, tmp_path, manifest, "--budget", budget), env=ENV)
    assert result.exit_code == 75, result.output
    assert counters(sim)["submits"] == jobs
    waiting = 5 - jobs
    assert (
        f"budget ${budget} reached: ${budget} committed, $0.00 left, the next job costs $1.60; "
        f"{waiting} jobs not submitted"
    ) in result.output


def test_budget_through_the_cli_reports_spend_and_remainder(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(5))
    args = run_args(sim, tmp_path, manifest, "--budget", "5")
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 75
    assert (
        "budget $5.00 reached: $4.80 committed, $0.20 left, the next job costs $1.60; 2 jobs not "
        "submitted, "
        "estimated $3.20\n" in result.output
    )
    assert "next: `batchrunner resume --ledger " in result.output
    assert " --budget 8.00` to submit them all" in result.output
    status = json.loads(
        CliRunner()
        .invoke(cli, ["status", "--ledger", str(tmp_path / "ledger.db"), "--json"])
        .output
    )
    assert status["spend_usd"] == 4.8


def test_budget_needs_prices(sim: SimulatorServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", [{"prompt": "x"}])
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(manifest),
            "--ledger",
            str(tmp_path / "l.db"),
            "--base-url",
            sim.url,
            "--model",
            "acme/other/v1",
            "--allow-unregistered",
            "--budget",
            "10",
        ],
        env=ENV,
    )
    assert result.exit_code == 2 and "needs a price" in result.output
    assert "--price-per-job" in result.output
    assert counters(sim)["submits"] == 0


def test_a_registered_model_without_a_price_names_the_fix_and_price_per_job_says_it_is_unused(
    tmp_path: Path,
) -> None:
    """A model file of one's own without a price, and a ``--budget``: the error said the model
    "is not in the registry; add --price-per-job", which does nothing for a registered model
    (it was ignored in silence): the error names ``models price``, and a ``--price-per-job``
    that prices nothing says so."""
    from batchrunner import models

    shipped = json.loads(
        (Path(models.__file__).parent / "catalog" / "fal-ai__veo3__image-to-video.json").read_text()
    )
    mine = {"endpoint_id": "acme/mine/v1", "input": shipped["input"]}  # no "price"
    models.user_dir().mkdir(parents=True, exist_ok=True)
    (models.user_dir() / "acme__mine__v1.json").write_text(json.dumps(mine))
    manifest = write_manifest(tmp_path / "m.csv", rows(1))
    args = ["plan", str(manifest), "--ledger", str(tmp_path / "l.db"), "--model", "acme/mine/v1"]
    refused = CliRunner().invoke(cli, [*args, "--budget", "10"])
    assert refused.exit_code == 2
    assert "the registry's price for acme/mine/v1 gives none for row 1's request" in refused.output
    assert "`batchrunner models price acme/mine/v1 RULE`" in refused.output
    registered = [*args[:-1], "fal-ai/veo3/image-to-video", "--price-per-job", "0.1"]
    unused = CliRunner().invoke(cli, registered)
    assert unused.exit_code == 0 and "--price-per-job 0.1 is not used" in unused.output


def test_plan_and_dry_run_send_nothing_and_write_no_ledger(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    ledger = tmp_path / "l.db"
    shown = CliRunner().invoke(
        cli,
        [
            "plan",
            str(manifest),
            "--ledger",
            str(ledger),
            "--count",
            "2",
            "--json",
            "-o",
            str(tmp_path / "plans" / "plan.jsonl"),  # its folder made, as export's is
        ],
    )
    assert shown.exit_code == 0, shown.output
    plan = json.loads(shown.stdout)
    assert (plan["rows"], plan["jobs"], plan["cost_usd"]) == (3, 6, 9.6)
    written = (tmp_path / "plans" / "plan.jsonl").read_text()
    bodies = [json.loads(line) for line in written.splitlines()]
    assert [b["job_id"] for b in bodies] == [f"shot-00{i}~t{t}" for i in (1, 2, 3) for t in (1, 2)]
    assert all(b["input"]["duration"] == "4s" and "seed" in b["input"] for b in bodies)
    assert f"wrote the request bodies of 6 jobs to {tmp_path / 'plans'}" in shown.stderr
    dry = CliRunner().invoke(
        cli,
        ["run", str(manifest), "--ledger", str(ledger), "--base-url", sim.url, "--dry-run"],
        env=ENV,
    )
    assert dry.exit_code == 0 and "3 rows -> 3 jobs" in dry.output
    assert dry.stdout.endswith("dry run: nothing was recorded or sent\n")
    assert counters(sim)["requests"].get("submit", 0) == 0
    assert not ledger.exists()


def test_plan_skips_what_the_ledger_already_has(sim: SimulatorServer, tmp_path: Path) -> None:
    settings = settings_for(sim, tmp_path)
    manifest = write_manifest(tmp_path / "m.csv", rows(2))
    batch.run_manifest(manifest, settings, token=TOKEN)
    write_manifest(manifest, rows(5))
    shown = CliRunner().invoke(cli, ["plan", str(manifest), "--ledger", str(settings.ledger)])
    assert "already in the ledger: 2 done" in shown.output
    assert "run will skip 2 (done, or left for retry)" in shown.output
    assert "to submit: 3 jobs, $4.80; spent so far in the ledger: $3.20" in shown.output


def test_replace_changed_and_rows_that_disappeared(sim: SimulatorServer, tmp_path: Path) -> None:
    settings = settings_for(sim, tmp_path)
    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    assert batch.run_manifest(manifest, settings, token=TOKEN).exit_code == 0
    edited = rows(3)
    edited[0]["prompt"] = "a new take on shot one"
    del edited[2]  # row 3 disappears
    write_manifest(manifest, edited)
    summary = batch.run_manifest(manifest, settings, token=TOKEN, replace_changed=True)
    assert (summary.exit_code, summary.submitted) == (0, 1)
    with Ledger.open(settings.ledger, create=False) as ledger:
        new, kept = ledger.get("shot-001"), ledger.get("shot-001@1")
    assert new.input["prompt"] == "a new take on shot one"
    assert kept.state.value == "done"  # the paid original is kept, and so is its video
    served = counters(sim)["jobs"]
    for job in (new, kept):
        video = Path(job.output_path)
        assert hashlib.sha256(video.read_bytes()).hexdigest() == job.sha256
        assert job.sha256 == served[job.request_id]["media_sha256"]
    assert Path(new.output_path).name == "0001-shot-001.mp4"
    assert Path(kept.output_path).name == "0001-shot-001@1.mp4"
    assert kept.poster != new.poster and Path(kept.poster).is_file()
    shown = CliRunner().invoke(cli, ["status", "--ledger", str(settings.ledger)])
    assert "jobs are no longer in the manifest (left alone): " in shown.output
    assert "shot-003" in shown.output


def test_config_file_beside_the_manifest_applies_and_the_command_line_wins(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    manifest = write_manifest(
        tmp_path / "m.csv", [{k: v for k, v in r.items() if k != "duration"} for r in rows(2)]
    )
    (tmp_path / "batchrunner.toml").write_text(
        'count = 2\nledger = "shots.db"\n[defaults]\nduration = "6s"\n'
        '[matrix]\naspect_ratio = ["16:9", "9:16"]\n'
    )
    shown = CliRunner().invoke(cli, ["plan", str(manifest), "--json"])
    assert shown.exit_code == 0, shown.output
    plan = json.loads(shown.stdout)
    assert plan["jobs"] == 2 * 2 * 2
    assert plan["cost_usd"] == pytest.approx(8 * 6 * 0.4)
    overridden = json.loads(
        CliRunner().invoke(cli, ["plan", str(manifest), "--json", "--count", "1"]).stdout
    )
    assert overridden["jobs"] == 4
    (tmp_path / "batchrunner.toml").write_text("colour = 'red'\n")
    bad = CliRunner().invoke(cli, ["plan", str(manifest)])
    assert bad.exit_code == 2 and "unknown setting 'colour'" in bad.output
    (tmp_path / "batchrunner.toml").write_text("concurency = 5\n")
    misspelt = CliRunner().invoke(cli, ["plan", str(manifest)])
    assert misspelt.exit_code == 2
    assert "unknown setting 'concurency' (did you mean 'concurrency'?)" in misspelt.output
    for key in ("api_key", "QUICKROUTER_API_KEY", "token"):  # said: where a key goes instead
        (tmp_path / "batchrunner.toml").write_text(f"{key} = 'sk-secret'\n")
        keyed = CliRunner().invoke(cli, ["plan", str(manifest)])
        assert keyed.exit_code == 2 and "the API key is never read from a file" in keyed.output
        assert "sk-secret" not in keyed.output


def test_a_job_bought_again_keeps_what_its_first_send_cost_in_the_budget(
    tmp_path: Path,
) -> None:
    """Two submit answers lost: those jobs exist (and are billed) at the provider. Sending them
    again (`retry --unknown`) buys them twice: the spend counts both sends, so a budget that
    the sheet's next row would pass holds it back. The second send's price replaced the
    first's: the spend stayed at the five rows' price and the budget let the provider take
    $12.80 against a $12 cap."""
    config = fast_config(faults=[Fault("submit", "drop_after_accept", times=2)])
    with SimulatorServer(config) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(5))
        settings = settings_for(server, tmp_path, budget=12.0)
        first = batch.run_manifest(manifest, settings, token=TOKEN)
        assert first.counts == {"done": 3, "unknown": 2}
        assert first.spend_usd == pytest.approx(5 * PRICE)  # the two lost answers included

        again = batch.retry(settings.ledger, failed=False, unknown=True, token=TOKEN)
        assert (again.submitted, again.counts) == (2, {"done": 5})
        assert counters(server)["submits"] == 7
        assert again.spend_usd == pytest.approx(7 * PRICE)  # every send the provider took
        with Ledger.open(settings.ledger, create=False) as ledger:
            twice = {job.job_id: job.spent_usd for job in ledger.jobs() if job.submits == 2}
            assert ledger.spend() == pytest.approx(7 * PRICE)
        assert list(twice.values()) == [pytest.approx(2 * PRICE)] * 2

        write_manifest(manifest, rows(6))  # one more row: $11.20 + $1.60 is past $12
        held = batch.run_manifest(manifest, settings, token=TOKEN)
        assert (held.exit_code, held.submitted) == (75, 0)
        assert counters(server)["submits"] == 7
    exported = tmp_path / "e.csv"
    assert (
        CliRunner()
        .invoke(cli, ["export", "--ledger", str(settings.ledger), "-o", str(exported)])
        .exit_code
        == 0
    )
    with exported.open() as table:
        costs = [row["cost_usd"] for row in csv.DictReader(table)]
    assert sorted(costs) == ["", "1.6", "1.6", "1.6", "3.2", "3.2"]  # the held row: nothing


@pytest.mark.parametrize("cap", ["budget", "run_budget"])
def test_what_the_provider_billed_above_the_estimate_counts_against_the_budget(
    tmp_path: Path, cap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A price raised since the registry was written: each job is billed $2.40, estimated
    $1.60. Once a result says so, the budget counts what was billed; it counted the estimate
    and let five jobs ($12.00 billed) through a $8 cap."""
    with SimulatorServer(fast_config(billing_factor=1.5)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(6))
        # one at a time: each result (and its bill) is in before the next submit
        settings = settings_for(server, tmp_path, concurrency=1, **{cap: 8.0})
        summary = batch.run_manifest(manifest, settings, token=TOKEN)
        assert counters(server)["submits"] == 3  # $7.20 billed; a fourth would make $9.60
    assert (summary.exit_code, summary.counts) == (75, {"done": 3, "pending": 3})
    assert summary.spend_usd == pytest.approx(7.20) and summary.billed_usd == pytest.approx(7.20)
    with Ledger.open(settings.ledger, create=False) as ledger:
        assert ledger.spend() == pytest.approx(7.20)
        assert list(ledger.spend_by_run().values()) == [pytest.approx(7.20)]  # --run-budget
        assert [job.spent_usd for job in ledger.jobs() if job.submits] == [2.40] * 3
    # said once, with what to do: the registry's price is stale
    (said,) = [r.getMessage() for r in caplog.records if "looks out of date" in r.getMessage()]
    assert said.startswith("fal-ai/veo3/image-to-video was billed $2.40 for job shot-001, ")
    assert "`batchrunner models price fal-ai/veo3/image-to-video RULE` sets it" in said


def test_a_budget_passed_by_what_the_provider_billed_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three jobs sent at once, each reserved at its $1.60 estimate ($4.80 within a $5 cap),
    each billed $2.40 (a price raised since the registry was written): $7.20 was spent past
    the cap, exit 0, and nothing said it. The cap cannot hold against bills that arrive after
    the jobs are sent, but the run says the spend went past it, and what corrects the price."""
    # each job runs 1.5 s: all three are sent long before the first bill arrives
    with SimulatorServer(fast_config(billing_factor=1.5, run_seconds=1.5)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(3))
        settings = settings_for(server, tmp_path, concurrency=3, budget=5.0)
        summary = batch.run_manifest(manifest, settings, token=TOKEN)
    assert summary.counts == {"done": 3} and summary.spend_usd == pytest.approx(7.20)
    (said,) = [r.getMessage() for r in caplog.records if "billed past" in r.getMessage()]
    assert said.startswith("the provider billed past --budget $5.00: $7.20 committed")
    assert "`batchrunner models price`" in said


@pytest.mark.parametrize("then", ["run", "resume"])
def test_jobs_recorded_before_models_price_changed_are_bought_at_the_new_price(
    tmp_path: Path, then: str
) -> None:
    """A budget stop holds two jobs back at $1.60; the user fixes the price, as the
    billed-above-estimate warning says to (``models price``), to $1.00 a second ($4.00 a
    job). The held jobs kept $1.60: ``plan`` quoted $3.20 to submit beside $12.00 for the
    sheet, and ``--budget 5`` let $9.20 through, exit 0. They are priced as the rule is now:
    the plan agrees with itself and the budget holds."""
    args = ["--ledger", str(tmp_path / "l.db")]
    with SimulatorServer(fast_config()) as server:
        sim = ["--base-url", server.url, "--auth-scheme", "bearer", "--out", str(tmp_path), *args]
        manifest = write_manifest(tmp_path / "m.csv", rows(3))
        first = CliRunner().invoke(cli, ["run", str(manifest), *sim, "--budget", "2"], env=ENV)
        assert first.exit_code == 75 and counters(server)["submits"] == 1
        priced = CliRunner().invoke(cli, ["models", "price", "fal-ai/veo3/image-to-video", "1/s"])
        assert priced.exit_code == 0, priced.output

        shown = CliRunner().invoke(cli, ["plan", str(manifest), *args, "--json", "--budget", "20"])
        plan = json.loads(shown.stdout)
        submit = [d for d in plan["decisions"] if d["action"] == "submit"]
        assert [d["cost_usd"] for d in submit] == [4.0, 4.0]  # not the $1.60 recorded

        again = ["run", str(manifest), *sim] if then == "run" else ["resume", *args]
        ran = CliRunner().invoke(cli, [*again, "--budget", "5"], env=ENV)
        assert ran.exit_code == 75, ran.output
        assert counters(server)["submits"] == 1  # $1.60 spent; the next job costs $4.00
        assert "2 pending jobs priced again as its price is now: $8.00, recorded at $3.20" in (
            ran.output
        )
        assert "the next job costs $4.00" in ran.output
        ran = CliRunner().invoke(cli, [*again, "--budget", "9.60"], env=ENV)
        assert ran.exit_code == 0 and counters(server)["submits"] == 3
    with Ledger.open(tmp_path / "l.db", create=False) as ledger:
        assert ledger.spend() == pytest.approx(9.60)


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_a_resume_after_a_kill_counts_the_killed_runs_spend_against_the_run_budget(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """A nightly run capped at $5 (three jobs) is killed (or stopped by Ctrl-C or SIGTERM,
    whose line says `resume` carries on) after two submits; `resume` carries that night on, so
    the cap holds for both: one more job, not three (it started the count from nothing: $8.00
    in one night against $5; after Ctrl-C or SIGTERM it still did)."""
    with SimulatorServer(fast_config(run_seconds=2)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(8))
        args = run_args(server, tmp_path, manifest, "--concurrency", "2", "--run-budget", "5")
        env = {**os.environ, "BATCHRUNNER_API_KEY": TOKEN}
        night = subprocess.Popen(
            [sys.executable, "-m", "batchrunner", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while counters(server)["submits"] < 2:
            assert night.poll() is None and time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        night.send_signal(stop)
        night.wait(30)

        resumed = CliRunner().invoke(
            cli, ["resume", "--ledger", str(tmp_path / "ledger.db")], env=ENV
        )
        assert resumed.exit_code == 75, resumed.output
        assert counters(server)["submits"] == 3, resumed.output
        assert (
            "--run-budget $5.00 (kept from run #1: give --run-budget to change it) reached: "
            "$4.80 committed by this run and run #1, stopped short, that it resumes, the next "
            "job costs $1.60" in resumed.output
        )
        nightly = CliRunner().invoke(cli, args, env=ENV)  # the next night: a cap of its own
        assert nightly.exit_code == 75, nightly.output
        assert counters(server)["submits"] == 6


def test_a_cap_a_resume_keeps_from_an_earlier_run_says_where_it_came_from(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """`resume` keeps the caps of the run it carries on: a stop by one the user did not type
    said only `--run-budget $1.60 reached`, with no word of where it came from."""
    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    args = run_args(sim, tmp_path, manifest, "--run-budget", "1.60")
    first = CliRunner().invoke(cli, args, env=ENV)
    assert first.exit_code == 75 and "--run-budget $1.60 reached" in first.output
    resumed = CliRunner().invoke(cli, ["resume", "--ledger", str(tmp_path / "ledger.db")], env=ENV)
    assert resumed.exit_code == 75, resumed.output
    assert (
        "--run-budget $1.60 (kept from run #1: give --run-budget to change it) reached"
        in resumed.output
    )


def test_a_run_budget_smaller_than_the_next_job_says_no_night_will_send_it(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """A nightly --run-budget below the price of the next job: every night would stop there,
    having bought nothing, with "reached" and the same advice; the line says so, and how much
    would do."""
    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    args = run_args(sim, tmp_path, manifest, "--run-budget", "1.50")
    result = CliRunner().invoke(cli, args, env=ENV)
    assert result.exit_code == 75, result.output
    assert counters(sim)["submits"] == 0
    assert (
        "--run-budget $1.50 is less than the next job's $1.60: no run can send it; 3 jobs not "
        "submitted, estimated $4.80\n" in result.output
    )
    assert "next: raise --run-budget to at least 1.60" in result.output


def test_a_run_budget_caps_each_night_and_the_ledger_budget_the_whole(tmp_path: Path) -> None:
    """The nightly cron runs the same command every night: `--run-budget` caps what one run
    commits (earlier nights not counted), so each night buys up to the cap, under concurrency
    50; `--budget` still caps the ledger's whole spend, and the stricter of the two holds."""
    with SimulatorServer(fast_config(run_seconds=0.2)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(12))
        ledger = tmp_path / "ledger.db"
        nightly = [*run_args(server, tmp_path, manifest, "--concurrency", "50"), "--json"]
        nightly += ["--run-budget", "5", "--budget", "12"]  # $1.60 a job: 3 a night, 7 in all
        plan = CliRunner().invoke(cli, ["plan", str(manifest), "--ledger", str(ledger),
                                        "--run-budget", "5"])  # fmt: skip
        assert "held back by --run-budget: 9 jobs, $14.40\nto submit: 3 jobs, $4.80" in plan.output
        whole = CliRunner().invoke(cli, ["plan", str(manifest), "--budget", "12"])
        assert "held back by --budget: 5 jobs, $8.00 (--budget 19.20 submits them all)" in (
            whole.output
        )
        for bought in (3, 6):  # two nights
            result = CliRunner().invoke(cli, nightly, env=ENV)
            summary = json.loads(result.stdout)
            assert (result.exit_code, summary["submitted"]) == (75, 3), result.output
            assert counters(server)["submits"] == bought
            assert summary["stopped"] == (
                "--run-budget $5.00 reached: $4.80 committed by this run, the next job costs "
                f"$1.60; {12 - bought} jobs "
                f"not submitted, estimated ${(12 - bought) * PRICE:.2f}"
            )
            assert summary["next_command"] == (
                f"`batchrunner resume --ledger {ledger}` (or the same run command, the next "
                "night) to commit up to $5.00 more"
            )
        third = json.loads(CliRunner().invoke(cli, nightly, env=ENV).stdout)
        assert third["submitted"] == 1  # $11.20 in the ledger: one more fits $12, not two
        assert third["stopped"].startswith("budget $12.00 reached: $11.20 committed, $0.80 left")
        with Ledger.open(ledger, create=False) as book:
            assert book.spend() == pytest.approx(7 * PRICE)
        # what each night committed, for the morning after
        history = ["status", "--ledger", str(ledger), "--runs"]
        runs = json.loads(CliRunner().invoke(cli, [*history, "--json"]).output)["runs"]
        said = [(r["command"], r["exit_code"], r["submitted"], r["run_spend_usd"]) for r in runs]
        assert said == [("run", 75, 3, 4.8), ("run", 75, 3, 4.8), ("run", 75, 1, 1.6)]
        shown = CliRunner().invoke(cli, history).output
        assert re.search(r"#3 +run +\S+ \S+ +\d+m\d\ds +exit 75 +submitted +1 +downloaded +1 +"
                         r"committed \$1\.60\n", shown), shown  # fmt: skip


def test_an_interrupted_run_points_to_resume_for_its_run_budget(tmp_path: Path) -> None:
    """Stopped by Ctrl-C with --run-budget 8 and $3.20 committed, the next command offered
    "resume (or the same run command)" as equals: resume counts the $3.20, while the same
    run command is a new run with $8 of its own ($11.20 within minutes). It says so."""
    with SimulatorServer(fast_config(run_seconds=6)) as server:
        sim = ["--base-url", server.url, "--auth-scheme", "bearer", "--out", str(tmp_path)]
        manifest = write_manifest(tmp_path / "m.csv", rows(6))
        args = ["run", str(manifest), *sim, "--ledger", str(tmp_path / "l.db"), "--json"]
        with ctrl_c_after(server, 2):
            stopped = CliRunner().invoke(
                cli, [*args, "--concurrency", "2", "--run-budget", "8"], env=ENV
            )
    assert stopped.exit_code == 130, stopped.output
    shown = json.loads(stopped.stdout)["next_command"]
    assert shown.startswith("`batchrunner resume --ledger ")
    assert "the same run command does too, as a new run: a --run-budget starts again" in shown
