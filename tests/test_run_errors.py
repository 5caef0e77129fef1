"""Errors at the level they belong to, end to end against the simulator over real sockets.

Run errors (a refused key, a locked account, an unreachable API) stop the run with exit 69 and
one line, leave unsent jobs pending, and the same command finishes the batch once the cause is
fixed. Permanent download failures end; cancelled and expired jobs come back on request.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchrunner.cli import cli
from batchrunner.ledger import Ledger
from batchrunner.manifest import load_manifest
from batchrunner.models import DEFAULT_MODEL, get_model
from batchrunner.planner import to_jobs
from batchrunner.simulator import Fault, SimulatorServer
from batchrunner.states import JobState
from tests.helpers import TOKEN, counters, fast_config, rows, run_args, write_manifest

RIGHT = {"BATCHRUNNER_API_KEY": TOKEN}


def states(ledger: Path) -> Counter[str]:
    with Ledger.open(ledger, create=False) as opened:
        return Counter(job.state.value for job in opened.jobs())


def invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, args, env=env or RIGHT)


def once_each(server: SimulatorServer) -> bool:
    """No request body was ever submitted twice."""
    return all(n == 1 for n in counters(server)["submitted_bodies"].values())


def test_a_wrong_key_stops_the_run_and_the_same_command_finishes_after_the_fix(
    tmp_path: Path,
) -> None:
    with SimulatorServer(fast_config()) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(40))
        args = run_args(server, tmp_path, manifest, "--concurrency", "4")
        wrong = invoke(args, {"QUICKROUTER_API_KEY": "not-the-key"})
        assert wrong.exit_code == 69, wrong.output
        assert counters(server)["auth_failures"] <= 4  # at most --concurrency refusals
        stopped = [line for line in wrong.stderr.splitlines() if "refused the key" in line]
        assert len(stopped) == 1 and "check QUICKROUTER_API_KEY" in stopped[0]
        assert server.url in stopped[0] and "not-the-key" not in wrong.output
        assert states(tmp_path / "ledger.db") == {"pending": 40}
        fixed = invoke(args)
        assert fixed.exit_code == 0, fixed.output
        assert states(tmp_path / "ledger.db") == {"done": 40}
        assert counters(server)["submits"] == 40 and once_each(server)


def test_a_key_pasted_with_typographic_quotes_sends_nothing_and_marks_nothing_unknown(
    tmp_path: Path,
) -> None:
    """A word processor's “quotes” around the key: no HTTP header can carry them. Before, every
    submit failed in the HTTP library after the job was marked submitted, and each job ended
    ``unknown`` ("may have been billed") though nothing had left the machine."""
    with SimulatorServer(fast_config()) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(6))
        args = run_args(server, tmp_path, manifest, "--concurrency", "3")
        pasted = invoke(args, {"QUICKROUTER_API_KEY": f"\u201c{TOKEN}\u201d"})
        assert pasted.exit_code == 2, pasted.output
        said = pasted.stderr.strip()
        assert said == (
            "error: the API key in QUICKROUTER_API_KEY contains '\u201c' (U+201C), which no HTTP "
            "header can carry: copy the key again as plain text"
        )
        assert TOKEN not in pasted.output
        assert counters(server)["submits"] == 0
        assert not (tmp_path / "ledger.db").exists() or states(tmp_path / "ledger.db") == {
            "pending": 6
        }
        assert invoke(args).exit_code == 0 and states(tmp_path / "ledger.db") == {"done": 6}


def test_a_balance_that_runs_out_leaves_the_rest_pending_until_topped_up(
    tmp_path: Path,
) -> None:
    with SimulatorServer(fast_config(balance=5)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(12))
        args = run_args(server, tmp_path, manifest, "--concurrency", "3")
        locked = invoke(args)
        assert locked.exit_code == 69, locked.output
        assert "cannot pay for more jobs" in locked.stderr and "User is locked" in locked.stderr
        assert states(tmp_path / "ledger.db") == {"done": 5, "pending": 7}  # in flight followed
        again = invoke(args)  # the lock outlasts nothing here: still locked, still nothing lost
        assert again.exit_code == 69 and states(tmp_path / "ledger.db")["pending"] == 7
        top_up = urllib.request.Request(
            f"{server.url}/_sim/top-up", data=json.dumps({"submits": 10}).encode(), method="POST"
        )
        urllib.request.urlopen(top_up, timeout=10).close()
        finished = invoke(args)
        assert finished.exit_code == 0, finished.output
        assert states(tmp_path / "ledger.db") == {"done": 12}
        assert counters(server)["submits"] == 12 and once_each(server)


def test_an_unreachable_api_stops_within_30_s_with_one_line_and_nothing_unknown(
    tmp_path: Path,
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(10))
    args = ["run", str(manifest), "--ledger", str(tmp_path / "l.db"), "--out", str(tmp_path)]
    started = time.monotonic()
    result = invoke([*args, "--base-url", "http://127.0.0.1:9", "--concurrency", "4", "--json"])
    elapsed = time.monotonic() - started
    assert result.exit_code == 69, result.output
    assert elapsed < 30
    lines = [line for line in result.stderr.splitlines() if "cannot reach the API" in line]
    assert len(lines) == 1 and "http://127.0.0.1:9" in lines[0] and "--base-url" in lines[0]
    assert "(nothing connected for " in lines[0] and "Connection refused): check" in lines[0]
    assert "could not reach" not in lines[0]  # the cause is said once, not nested in itself
    summary = json.loads(result.stdout)
    assert summary["exit_code"] == 69 and summary["spend_usd"] == 0
    assert states(tmp_path / "l.db") == {"pending": 10}  # never sent: not unknown, no spend


def test_with_json_a_command_that_fails_early_still_prints_one_object(tmp_path: Path) -> None:
    """A nightly `run ... --json >> runs.jsonl` keeps a line for a night that failed before
    its run: a bad manifest (with its problems), a ledger in use (exit 3)."""
    from batchrunner.lock import LedgerLock

    bad = write_manifest(tmp_path / "bad.csv", [{**rows(1)[0], "duration": "9s", "notes": "x"}])
    result = invoke(["run", str(bad), "--ledger", str(tmp_path / "l.db"), "--json"])
    failure = json.loads(result.stdout)
    assert result.exit_code == failure["exit_code"] == 2
    assert failure["error"] == f"{bad}: 1 problem; nothing was submitted"
    # the one problem, and apart from it what only warns (it was counted among the problems)
    assert len(failure["problems"]) == 1 and "'4s', '6s' or '8s'" in failure["problems"][0]
    assert failure["warnings"] == [
        "column 'notes': unknown column, kept as metadata and not sent to the model"
    ]
    plan = json.loads(
        invoke(
            [
                "plan",
                str(write_manifest(tmp_path / "w.csv", [{**rows(1)[0], "notes": "x"}])),
                "--json",
            ]
        ).stdout
    )
    assert plan["warnings"] == failure["warnings"]  # `plan --json` had none of them
    good = write_manifest(tmp_path / "m.csv", rows(1))
    ledger = tmp_path / "locked.db"
    with Ledger.open(ledger):
        pass  # a ledger a run is busy with
    for command in (["run", str(good), "--out", str(tmp_path / "o")], ["resume"]):
        with LedgerLock(ledger, "run"):
            result = invoke([*command, "--ledger", str(ledger), "--json"])
        failure = json.loads(result.stdout)
        assert result.exit_code == failure["exit_code"] == 3, result.output
        assert "in use by another batchrunner" in failure["error"]


def test_a_dead_proxy_is_named_without_its_password_and_nothing_is_sent(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    dead = "http://someone:s3cret@127.0.0.1:9"  # the environment routes the API through it
    env = {"BATCHRUNNER_API_KEY": TOKEN, "HTTP_PROXY": dead, "http_proxy": dead}
    env |= {"NO_PROXY": "", "no_proxy": ""}
    result = invoke(run_args(sim, tmp_path, manifest), env=env)
    assert result.exit_code == 69, result.output
    (line,) = [line for line in result.stderr.splitlines() if "cannot reach the API" in line]
    assert f"{sim.url} through the proxy http://127.0.0.1:9 " in line and "HTTP_PROXY" in line
    assert "s3cret" not in result.output and "someone" not in result.output
    assert counters(sim)["submits"] == 0
    assert states(tmp_path / "ledger.db") == {"pending": 3}


def test_an_environment_no_request_could_go_through_is_one_line_before_anything_is_recorded(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """``SSL_CERT_FILE`` naming a missing file crashed the run with a traceback at its first
    request, leaving that job ``submitting`` (``unknown`` for the next run, as if sent); a
    proxy written without its scheme failed every job ("cannot send the request") and the
    first 5 stopped the run. Both are the environment's mistake, said before anything is
    recorded, naming the variable (never a proxy's password)."""
    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    quiet = {"NO_PROXY": "", "no_proxy": ""}
    cases = [
        ({"SSL_CERT_FILE": str(tmp_path / "gone.pem")}, "SSL_CERT_FILE=", "fix or unset it"),
        (
            {"HTTP_PROXY": "someone:s3cret@proxy.test:3128"},
            "HTTP_PROXY='proxy.test:3128' is not a proxy URL",
            "like http://proxy.test:3128",
        ),
    ]
    for env, said, then in cases:
        result = invoke(run_args(sim, tmp_path, manifest), env=RIGHT | quiet | env)
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: {said}") and then in line, line
        assert "s3cret" not in result.output and "nothing was sent" in line
        assert not (tmp_path / "ledger.db").exists()
    assert counters(sim)["requests"]["submit"] == 0


def test_broken_downloads_end_with_their_reason_and_do_not_stop_the_others(
    tmp_path: Path,
) -> None:
    with SimulatorServer(fast_config()) as server:
        batch_rows = rows(6)
        batch_rows[1]["prompt"] += " #file-url"
        batch_rows[4]["prompt"] += " #wrong-size"
        manifest = write_manifest(tmp_path / "m.csv", batch_rows)
        result = invoke(run_args(server, tmp_path, manifest))
        assert result.exit_code == 1, result.output
        assert states(tmp_path / "ledger.db") == {"done": 4, "download_failed": 2}
        with Ledger.open(tmp_path / "ledger.db", create=False) as ledger:
            broken = {job.job_id: job for job in ledger.jobs([JobState.DOWNLOAD_FAILED])}
        assert "not http(s)" in (broken["shot-002"].error or "")
        assert "again after a fresh download" in (broken["shot-005"].error or "")
        assert all("paid for" in (job.error or "") and job.result for job in broken.values())
        assert "retry --downloads" in result.stderr
        again = invoke(["retry", "--ledger", str(tmp_path / "ledger.db"), "--downloads"])
        assert again.exit_code == 1  # still broken, and nothing bought again
        assert counters(server)["submits"] == 6
        assert states(tmp_path / "ledger.db") == {"done": 4, "download_failed": 2}


def test_retry_downloads_buys_nothing_not_even_a_job_never_sent(tmp_path: Path) -> None:
    """`retry --downloads` says "nothing is submitted or paid": it ran like `resume`, which
    also sends the pending jobs (a run the media host stopped leaves some)."""
    with SimulatorServer(fast_config(faults=[Fault("media", "403", times=3)])) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(3))
        ledger = tmp_path / "ledger.db"
        first = invoke(run_args(server, tmp_path, manifest))
        assert first.exit_code == 69 and states(ledger) == {"completed": 3}, first.output
        more = write_manifest(tmp_path / "more.csv", rows(5)[3:])
        with Ledger.open(ledger, create=False) as opened:  # rows the stopped run never sent
            opened.add_jobs(to_jobs(load_manifest(more, get_model(DEFAULT_MODEL))))
        again = invoke(["retry", "--ledger", str(ledger), "--downloads"])
        assert "this run submitted 0, downloaded 3" in again.output
        assert again.exit_code == 1  # the pending ones wait for `resume`, which it names
        assert counters(server)["submits"] == 3
        assert states(ledger) == {"done": 3, "pending": 2}


def test_cancelled_and_expired_jobs_come_back_on_request(tmp_path: Path) -> None:
    config = fast_config(result_ttl=0.0)
    with SimulatorServer(config) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(3))
        ledger = tmp_path / "ledger.db"
        first = invoke(run_args(server, tmp_path, manifest))
        assert first.exit_code == 1 and states(ledger) == {"expired": 3}
        assert "retry --expired" in first.stderr
        config.result_ttl = None  # results are kept again
        refused = invoke(["retry", "--ledger", str(ledger), "--expired", "--budget", "1"])
        assert refused.exit_code == 75  # priced against --budget: $4.80 spent, $1.60 each
        back = invoke(["retry", "--ledger", str(ledger), "--expired", "--budget", "20"])
        assert back.exit_code == 0, back.output
        assert states(ledger) == {"done": 3} and counters(server)["submits"] == 6

        more = write_manifest(tmp_path / "more.csv", rows(2))
        never = run_args(  # a ledger of its own, so videos of their own too
            server, tmp_path, more, "--ledger", str(tmp_path / "c.db"), "--out", str(tmp_path / "c")
        )
        held = invoke(never, {"BATCHRUNNER_API_KEY": "wrong"})
        assert held.exit_code == 69
        cancel = invoke(["cancel", "--ledger", str(tmp_path / "c.db"), "--all"])
        assert cancel.output.count("it was never sent") == 2
        assert states(tmp_path / "c.db") == {"cancelled": 2}
        revived = invoke(["retry", "--ledger", str(tmp_path / "c.db"), "--cancelled"])
        assert revived.exit_code == 0, revived.output
        assert states(tmp_path / "c.db") == {"done": 2}
        idle = invoke(["cancel", "--ledger", str(tmp_path / "c.db"), "--all"])  # said, not silent
        assert (idle.exit_code, idle.output) == (
            0,
            f"nothing to cancel: no job of {tmp_path / 'c.db'} is pending or at the provider\n",
        )


def test_a_stop_while_submits_wait_to_retry_a_connection_leaves_them_pending(
    tmp_path: Path,
) -> None:
    """--max-runtime stops the run well before the unreachable bound: the submits were only
    waiting to retry a connection that never opened, so none is `unknown` or spent."""
    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    args = ["run", str(manifest), "--ledger", str(tmp_path / "l.db"), "--out", str(tmp_path)]
    result = invoke([*args, "--base-url", "http://127.0.0.1:9", "--max-runtime", "1s"])
    assert result.exit_code == 75, result.output
    assert states(tmp_path / "l.db") == {"pending": 3}
    with Ledger.open(tmp_path / "l.db", create=False) as ledger:
        assert ledger.spend() == 0


def test_a_base_url_with_a_wrong_path_stops_at_the_first_submits_and_marks_nothing_failed(
    tmp_path: Path,
) -> None:
    """A reseller's address with a wrong path (`/api/v1` where the queue is served at the
    root): every submit is a 404. The run named the first five jobs failed "not found at the
    provider" and told the user to fix the manifest's rows or the model's fields, then
    `retry` them. It stops after those five submits with one line naming the base URL and
    where each submit went; nothing was bought, so every job stays pending, and the same
    command with the right address does them all."""
    with SimulatorServer(fast_config()) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(30))
        args = run_args(server, tmp_path, manifest, "--concurrency", "4")
        wrong_base = f"{server.url}/api/v1"
        wrong = invoke([wrong_base if arg == server.url else arg for arg in args])
        assert wrong.exit_code == 69, wrong.output
        (line,) = [line for line in wrong.stderr.splitlines() if "answered 404" in line]
        assert line.startswith(f"stopped early: the API at {wrong_base} answered 404 (not found) ")
        assert "to the first 5 submits, none accepted" in line
        went = f"{wrong_base}/{DEFAULT_MODEL}"
        assert f"check the base URL (--base-url; each submit went to {went})" in line
        assert "nothing was bought and no job is marked failed" in line
        assert "(30 jobs wait, nothing was lost)" in line
        assert TOKEN not in wrong.output and "Traceback" not in wrong.output
        assert states(tmp_path / "ledger.db") == {"pending": 30}
        seen = counters(server)
        assert (seen["submits"], seen["requests"]["submit"]) == (0, 5)  # 5 tried, none more
        fixed = invoke(args)
        assert fixed.exit_code == 0, fixed.output
        assert states(tmp_path / "ledger.db") == {"done": 30}
        assert counters(server)["submits"] == 30 and once_each(server)


def test_a_404_for_one_model_the_provider_does_not_serve_fails_only_its_jobs(
    tmp_path: Path,
) -> None:
    """The base URL is not blamed for a 404 that is one model's: the first rows' model is not
    served, and once a submit of another model is accepted the address is known good, so
    those rows fail on their own (as before) and the others are done."""
    gone = "acme/gone/v1"
    sheet = [{**row, "model": gone if n < 3 else DEFAULT_MODEL} for n, row in enumerate(rows(8))]
    with SimulatorServer(fast_config()) as server:
        manifest = write_manifest(tmp_path / "m.csv", sheet)
        args = run_args(server, tmp_path, manifest, "--concurrency", "1", "--allow-unregistered")
        result = invoke(args)
        assert result.exit_code == 1, result.output
        assert states(tmp_path / "ledger.db") == {"failed": 3, "done": 5}
        with Ledger.open(tmp_path / "ledger.db", create=False) as ledger:
            errors = {job.error for job in ledger.jobs() if job.state is JobState.FAILED}
        assert errors == {f"not found at the provider (404): Application '{gone}' not found"}


def test_a_first_try_of_a_few_rows_at_a_wrong_path_marks_nothing_failed(tmp_path: Path) -> None:
    """The README's first try, a few rows, at an address with a wrong path: fewer submits
    than the five that stop a run, so each was marked failed ("not found at the provider"),
    the same command did nothing after the fix, and `retry` offered to buy them. Every submit
    of the run answered 404, none accepted: the same verdict, exit 69, all pending."""
    with SimulatorServer(fast_config()) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(3))
        args = run_args(server, tmp_path, manifest)
        wrong_base = f"{server.url}/v1"
        wrong = invoke([wrong_base if arg == server.url else arg for arg in args])
        assert wrong.exit_code == 69, wrong.output
        assert f"the API at {wrong_base} answered 404 (not found) to all 3 submits" in wrong.stderr
        assert states(tmp_path / "ledger.db") == {"pending": 3}
        fixed = invoke(args)
        assert fixed.exit_code == 0 and states(tmp_path / "ledger.db") == {"done": 3}
        assert counters(server)["submits"] == 3


def test_a_base_url_that_answers_a_web_page_stops_the_run_and_spends_nothing(
    tmp_path: Path,
) -> None:
    """A base URL that is a web site (or a sign-in page) answers every submit 200 with HTML.
    Each was an answer lost ("unknown", its price committed), all twenty were sent, and a
    `--budget` was used up by them. A page answering the first submits of a run, none
    accepted, is no queue API: the run stops after five, and they are pending, unspent."""
    config = fast_config(faults=[Fault("submit", "html_200")])
    with SimulatorServer(config) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(20))
        args = run_args(server, tmp_path, manifest, "--concurrency", "2", "--budget", "8")
        wrong = invoke(args)
        assert wrong.exit_code == 69, wrong.output
        assert "answered 200 with a page that is not JSON to the first 5 submits" in wrong.stderr
        assert counters(server)["requests"]["submit"] == 5
    assert states(tmp_path / "ledger.db") == {"pending": 20}
    with Ledger.open(tmp_path / "ledger.db", create=False) as ledger:
        assert ledger.spend() == 0  # the --budget is whole for the run after the fix


@pytest.mark.parametrize("route", ["submit", "status", "result"])
def test_a_redirect_stops_the_run_and_fails_no_job(tmp_path: Path, route: str) -> None:
    """A server that redirects (http to https, a moved path) answered 301 on status or
    result, and the jobs it had made, paid for, were marked failed and offered to `retry`
    to buy again. A redirect (never followed: the key would go with it) is the base URL's
    trouble: the run stops (exit 69), a redirected submit stays pending, a job at the
    provider is followed by the same command once the address is right."""
    config = fast_config(faults=[Fault(route, "redirect", times=1)])
    with SimulatorServer(config) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(1))
        args = run_args(server, tmp_path, manifest)
        stopped = invoke(args)
        assert stopped.exit_code == 69, stopped.output
        assert "answered 301 with a redirect to https://127.0.0.1" in stopped.stderr
        assert "check the API base URL (--base-url)" in stopped.stderr
        assert not {"failed", "unknown"} & set(states(tmp_path / "ledger.db"))
        again = invoke(args)
        assert again.exit_code == 0, again.output
        assert states(tmp_path / "ledger.db") == {"done": 1}
        assert counters(server)["submits"] == 1


def test_an_empty_base_url_is_refused_not_taken_for_the_real_api(tmp_path: Path) -> None:
    """``--base-url "$STAGING_URL"`` with the variable unset was the real provider's address,
    with the real key: refused, nothing sent."""
    manifest = write_manifest(tmp_path / "m.csv", rows(1))
    args = ["run", str(manifest), "--ledger", str(tmp_path / "l.db"), "--out", str(tmp_path)]
    refused = invoke([*args, "--base-url", ""])
    assert refused.exit_code == 2, refused.output
    assert "the API base URL is empty" in refused.stderr
    assert "https://api.quickrouter.ai" in refused.stderr  # what leaving it out means
    assert not (tmp_path / "l.db").exists() or states(tmp_path / "l.db") == {}


def test_a_rehearsal_says_it_does_not_use_the_base_url_and_never_stores_its_password(
    tmp_path: Path,
) -> None:
    """``--simulate`` left ``--base-url`` (one from the config file, say) unused without a word,
    and stored it in the ledger as written, a password in it too, where a real run refuses
    that address: the same check, and a warning that it is not used."""
    manifest = write_manifest(tmp_path / "m.csv", rows(1))
    args = ["run", str(manifest), "--simulate", "--ledger", str(tmp_path / "l.db")]
    args += ["--out", str(tmp_path / "out")]
    secret = invoke([*args, "--base-url", "https://user:s3cret@api.example.com"])
    assert secret.exit_code == 2 and "must not contain a user name or password" in secret.stderr
    assert not (tmp_path / "l.db").exists()
    unused = invoke([*args, "--base-url", "https://api.example.com/v1"])
    assert unused.exit_code == 0, unused.output
    assert "--simulate: the API base URL https://api.example.com/v1 is not used" in unused.stderr
