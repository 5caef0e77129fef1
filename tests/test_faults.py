"""The fault matrix: one provider misbehaviour per test, against the simulator's fault knobs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from batchrunner import batch
from batchrunner.ledger import Ledger
from batchrunner.retry import RetryPolicy
from batchrunner.simulator import Fault, SimulatorServer
from batchrunner.states import JobState
from tests.helpers import TOKEN, counters, fast_config, rows, settings_for, write_manifest


def run(
    tmp_path: Path, faults: list[Fault], n: int = 3, **changes: object
) -> tuple[batch.Summary, dict, list]:
    with SimulatorServer(fast_config(faults=faults)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(n))
        settings = settings_for(server, tmp_path, **changes)
        summary = batch.run_manifest(manifest, settings, token=TOKEN)
        seen = counters(server)
    with Ledger.open(settings.ledger, create=False) as ledger:
        jobs = list(ledger.jobs())
    return summary, seen, jobs


def test_429_with_retry_after_waits_at_least_that_long(tmp_path: Path) -> None:
    honours_retry_after = RetryPolicy(base_delay=0.01, max_delay=0.05, jitter=False)
    summary, seen, (job,) = run(
        tmp_path, [Fault("submit", "429", times=1, retry_after=1.0)], n=1, retry=honours_retry_after
    )
    assert summary.exit_code == 0
    assert seen["rate_limited"] == 1 and seen["submits"] == 1
    with Ledger.open(tmp_path / "ledger.db", create=False) as ledger:
        moves = [(e["to_state"], e["at"]) for e in ledger.events(job.job_id)]
    states = [state for state, _ in moves]
    assert states[:5] == ["pending", "submitting", "pending", "submitting", "queued"]
    (_, refused), (_, again) = moves[2], moves[3]  # the 429, then the submit after the wait
    waited = datetime.fromisoformat(again) - datetime.fromisoformat(refused)
    assert waited.total_seconds() >= 0.999  # the ledger's stamps are to the millisecond


def test_429_without_retry_after_backs_off_and_succeeds(tmp_path: Path) -> None:
    summary, seen, _ = run(tmp_path, [Fault("any", "429", times=4)])
    assert summary.exit_code == 0
    assert seen["faults"]["429"] == 4 and seen["submits"] == 3


@pytest.mark.parametrize("kind", ["502", "503", "504"])
def test_ingress_errors_are_retried(tmp_path: Path, kind: str) -> None:
    faults = [Fault("submit", kind, times=2), Fault("result", kind, times=2)]
    summary, seen, _ = run(tmp_path, faults, n=4)
    assert summary.exit_code == 0
    assert seen["faults"][kind] == 4
    assert seen["submits"] == 4  # retried submits never duplicated a job


def test_app_500_with_detail_fails_the_job_with_that_text(tmp_path: Path) -> None:
    summary, seen, jobs = run(tmp_path, [Fault("result", "500")], n=2)
    assert summary.exit_code == 1
    assert {j.state for j in jobs} == {JobState.FAILED}
    assert all("simulated application failure" in (j.error or "") for j in jobs)
    assert seen["requests"]["result"] == 2  # final: not retried


@pytest.mark.parametrize("route", ["status", "result"])
def test_dropped_connections_on_polls_are_retried(tmp_path: Path, route: str) -> None:
    summary, seen, _ = run(tmp_path, [Fault(route, "drop", probability=0.5, times=6)], n=4)
    assert summary.exit_code == 0
    assert seen["faults"]["drop"] > 0


def test_lost_submit_answer_becomes_unknown_and_is_not_resent(tmp_path: Path) -> None:
    summary, seen, jobs = run(tmp_path, [Fault("submit", "drop_after_accept", times=1)])
    assert summary.counts == {"done": 2, "unknown": 1}
    assert seen["submits"] == 3
    # the count agrees with the money: the unknown job's price is committed, so it is counted
    assert (summary.submitted, summary.unanswered) == (3, 1)
    assert f"this run submitted 3 (${summary.run_spend_usd:,.2f}; 1 of them unknown: the " in (
        summary.line()
    )
    (unknown,) = [j for j in jobs if j.state is JobState.UNKNOWN]
    assert unknown.error is not None and unknown.error.startswith(
        "the submit was sent but its answer was lost ("
    )
    assert unknown.error.count("may have") == 1 and "retry --unknown" in unknown.error  # once


def test_download_cut_halfway_is_resumed_and_verified(tmp_path: Path) -> None:
    summary, seen, jobs = run(tmp_path, [Fault("media", "cut", times=2)])
    assert summary.exit_code == 0
    assert seen["faults"]["cut"] == 2
    for job in jobs:
        assert job.sha256 == seen["jobs"][job.request_id]["media_sha256"]
    assert not list((tmp_path / "out").glob("*.part"))


def test_expired_result_fails_clearly_and_never_loops(tmp_path: Path) -> None:
    with SimulatorServer(fast_config(result_ttl=0.0)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(2))
        summary = batch.run_manifest(manifest, settings_for(server, tmp_path), token=TOKEN)
        seen = counters(server)
    assert summary.counts == {"expired": 2} and summary.exit_code == 1
    assert "retry --expired" in (summary.next_command or "")
    with Ledger.open(tmp_path / "ledger.db", create=False) as ledger:
        assert all("result expired" in (j.error or "") for j in ledger.jobs())
    assert seen["requests"]["result"] <= 2


@pytest.mark.parametrize("kind", ["html_200", "invalid_json"])
def test_unreadable_200_is_retried_then_fails_with_the_body(tmp_path: Path, kind: str) -> None:
    summary, seen, jobs = run(
        tmp_path, [Fault("result", kind)], n=1, retry=RetryPolicy.fast(attempts=3)
    )
    assert seen["requests"]["result"] == 3  # the retry budget, and no more
    assert summary.exit_code == 1
    assert jobs[0].state is JobState.FAILED
    assert "not JSON" in (jobs[0].error or "")
    assert ("<html" if kind == "html_200" else "{") in (jobs[0].error or "")
