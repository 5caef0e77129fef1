"""One planner: what `plan` says run will do is what run then does.

A manifest meets a ledger that holds jobs in flight and pending ones, then gains edited and new
rows; the ledger is named only in `batchrunner.toml`. `plan --json` is compared with what the
following `run` actually submits, follows, holds back for --budget and refuses.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from batchrunner.cli import cli
from batchrunner.ledger import Ledger
from batchrunner.manifest import load_manifest
from batchrunner.models import DEFAULT_MODEL, get_model
from batchrunner.planner import to_jobs
from batchrunner.simulator import SimulatorServer
from batchrunner.states import JobState
from tests.helpers import TOKEN, counters, ctrl_c_after, fast_config, rows, write_manifest

ENV = {"BATCHRUNNER_API_KEY": TOKEN}


def submits(ledger: Path) -> dict[str, int]:
    with Ledger.open(ledger, create=False) as opened:
        return {job.job_id: job.submits for job in opened.jobs()}


def states(ledger: Path) -> dict[str, str]:
    with Ledger.open(ledger, create=False) as opened:
        return {job.job_id: job.state.value for job in opened.jobs()}


def by_action(plan: dict[str, Any]) -> dict[str, set[str]]:
    actions: dict[str, set[str]] = {}
    for decision in plan["decisions"]:
        actions.setdefault(decision["action"], set()).add(decision["job_id"])
    return actions


def test_plan_predicts_exactly_what_run_submits_follows_holds_and_refuses(tmp_path: Path) -> None:
    config = fast_config(run_seconds=6)  # in flight when the first run is stopped
    with SimulatorServer(config) as server:
        (tmp_path / "batchrunner.toml").write_text(
            f'ledger = "shots.db"\nout = "videos"\nbase_url = "{server.url}"\n'
            'auth_scheme = "bearer"\npoll_min = 0.02\npoll_max = 0.2\nrps = 500\n'
        )
        ledger = tmp_path / "shots.db"
        manifest = write_manifest(tmp_path / "shots.csv", rows(4))
        with ctrl_c_after(server, 2):
            first = CliRunner().invoke(cli, ["run", str(manifest), "--concurrency", "2"], env=ENV)
        assert first.exit_code == 130, first.output
        after_first = states(ledger)
        assert [after_first[f"shot-00{i}"] for i in (3, 4)] == ["pending", "pending"]
        assert {after_first["shot-001"], after_first["shot-002"]} <= {"queued", "running"}
        config.run_seconds = 0.05  # the provider catches up (the two in flight: within 6 s)

        edited = rows(6)
        edited[3]["prompt"] += ", in the rain"  # shot-004: pending, now edited
        write_manifest(manifest, edited)

        plain = CliRunner().invoke(cli, ["plan", str(manifest), "--json"])
        assert plain.exit_code == 0, plain.output  # shot-004 was never sent: nothing to refuse
        (why,) = [d["why"] for d in json.loads(plain.stdout)["decisions"] if d["changed"]]
        assert why == "edited (prompt) before it was sent: sent as edited"

        before = submits(ledger)
        options = ["--replace-changed", "--budget", "8"]  # $3.20 spent; 3 more jobs of $1.60
        shown = CliRunner().invoke(cli, ["plan", str(manifest), *options, "--json"])
        assert shown.exit_code == 0, shown.output
        plan = json.loads(shown.stdout)
        predicted = by_action(plan)
        assert predicted == {
            "follow": {"shot-001", "shot-002"},
            "submit": {"shot-003", "shot-004", "shot-005"},
            "held": {"shot-006"},
        }
        assert plan["to_submit"] == 3 and plan["to_submit_cost_usd"] == 4.80
        assert plan["spent_usd"] == 3.20  # read from the ledger the config file names

        ran = CliRunner().invoke(cli, ["run", str(manifest), *options, "--json"], env=ENV)
        assert ran.exit_code == 75, ran.output  # the budget held one back, as planned
        after = submits(ledger)
        sent = {job_id for job_id, n in after.items() if n > before.get(job_id, 0)}
        assert sent == predicted["submit"]
        final = states(ledger)
        assert {j for j, s in final.items() if s == "pending"} == predicted["held"]
        assert all(final[j] == "done" for j in predicted["follow"] | predicted["submit"])

        # the job the budget stop left pending: plan and run agree once the budget is raised
        before = submits(ledger)
        again = json.loads(
            CliRunner().invoke(cli, ["plan", str(manifest), "--budget", "20", "--json"]).stdout
        )
        assert by_action(again) == {"submit": {"shot-006"}, "skip": set(predicted["follow"]
                                    | predicted["submit"])}  # fmt: skip
        assert {d["why"] for d in again["decisions"] if d["action"] == "submit"} == {
            "pending in the ledger"
        }
        last = CliRunner().invoke(cli, ["run", str(manifest), "--budget", "20"], env=ENV)
        assert last.exit_code == 0, last.output
        after = submits(ledger)
        assert {j for j, n in after.items() if n > before.get(j, 0)} == {"shot-006"}


def test_a_row_edited_before_it_was_sent_is_sent_as_edited(tmp_path: Path) -> None:
    """A budget stop leaves rows pending; the user fixes a typo in one of them and one in a
    row already bought. The one never sent takes its new values with no flag (nothing was
    bought for the old ones, and a nightly command cannot carry --replace-changed without
    buying every edited row again); the bought one is still refused, and so, with nothing
    sent, is the whole run. A job sent once and put back by ``retry`` has been bought from
    before: an edit to it is refused too."""
    with SimulatorServer(fast_config()) as server:
        args = ["--ledger", str(tmp_path / "l.db")]
        sim = ["--base-url", server.url, "--auth-scheme", "bearer", "--out", str(tmp_path), *args]
        manifest = write_manifest(tmp_path / "m.csv", rows(3))
        stopped = CliRunner().invoke(cli, ["run", str(manifest), *sim, "--budget", "2"], env=ENV)
        assert stopped.exit_code == 75, stopped.output  # shot-001 bought, two pending
        edited = rows(3)
        edited[0]["prompt"] += ", at dawn"
        edited[2]["prompt"] += ", at dusk"
        write_manifest(manifest, edited)

        refused = CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV)
        assert refused.exit_code == 2 and counters(server)["submits"] == 1
        (problem,) = refused.stderr.splitlines()[:-1]
        assert "'shot-001' is already in the ledger" in problem, refused.stderr
        shown = CliRunner().invoke(cli, ["plan", str(manifest), *args, "--json"])
        assert by_action(json.loads(shown.stdout))["refuse"] == {"shot-001"}

        edited[0] = rows(3)[0]  # the bought row as it was
        write_manifest(manifest, edited)
        shown = CliRunner().invoke(cli, ["plan", str(manifest), *args])
        assert "edited rows, sent as edited: 1 job (shot-003)" in shown.stdout
        ran = CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV)
        assert ran.exit_code == 0, ran.output
        assert counters(server)["submits"] == 3
        with Ledger.open(tmp_path / "l.db", create=False) as opened:
            assert opened.get("shot-003").input["prompt"].endswith(", at dusk")
            assert opened.get("shot-003").submits == 1


def _a_night_with_a_refused_prompt(
    server: SimulatorServer, tmp_path: Path
) -> tuple[list[str], list[str], list[dict[str, Any]], Path]:
    """Three rows run, the second's prompt refused by the content checker (exit 1): the
    ledger option, the run's options, the rows and the manifest."""
    args = ["--ledger", str(tmp_path / "l.db")]
    sim = ["--base-url", server.url, "--auth-scheme", "bearer", "--out", str(tmp_path), *args]
    shots = rows(3)
    shots[1]["prompt"] += " #policy"
    manifest = write_manifest(tmp_path / "m.csv", shots)
    assert CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV).exit_code == 1
    return args, sim, shots, manifest


def test_a_failed_row_fixed_in_the_sheet_is_bought_as_edited(tmp_path: Path) -> None:
    """A prompt the content checker refused, fixed in the sheet: the next night refused the
    whole run ("pass --replace-changed"), though nothing was made for the old prompt, and that
    flag on a nightly command would buy every edited row again. A failed or cancelled job's
    edited row is sent as edited; a done one's is still refused."""
    with SimulatorServer(fast_config()) as server:
        args, sim, shots, manifest = _a_night_with_a_refused_prompt(server, tmp_path)
        shots[1]["prompt"] = rows(3)[1]["prompt"] + ", without the flag"
        write_manifest(manifest, shots)
        shown = CliRunner().invoke(cli, ["plan", str(manifest), *args, "--json"])
        assert shown.exit_code == 0, shown.output
        (fixed,) = [d for d in json.loads(shown.stdout)["decisions"] if d["action"] == "submit"]
        assert fixed["job_id"] == "shot-002"
        assert fixed["why"] == "edited (prompt) after it failed: sent as edited"
        ran = CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV)
        assert ran.exit_code == 0, ran.output
        assert counters(server)["submits"] == 4
        assert states(tmp_path / "l.db") == {f"shot-00{n}": "done" for n in (1, 2, 3)}
        shots[0]["prompt"] += ", at dawn"  # a done row edited: its video would be bought again
        write_manifest(manifest, shots)
        refused = CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV)
        assert refused.exit_code == 2 and "pass --replace-changed" in refused.stderr


def test_a_failed_row_deleted_from_the_sheet_no_longer_fails_the_night(tmp_path: Path) -> None:
    """A prompt the content checker refused, and the user gives up on it: deletes the row.
    Every later night still exited 1 ("fix the failed rows in the sheet") and ``retry`` would
    buy it again. A job that ended short of done (failed, cancelled, expired, unknown) whose
    row the latest manifest no longer has is left alone: the run is all done (exit 0), its
    line says why, ``status`` no longer lists it among the jobs needing attention, ``retry``
    does not send it and says so; named in ``--ids``, it is sent. Its row put back, it counts
    again."""
    with SimulatorServer(fast_config()) as server:
        args, sim, shots, manifest = _a_night_with_a_refused_prompt(server, tmp_path)
        write_manifest(manifest, [shots[0], shots[2]])  # the refused row deleted

        night = CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV)
        assert night.exit_code == 0, night.output
        assert "2 done, 1 failed (1 left alone: its row was deleted)" in night.output
        assert "next:" not in night.output and counters(server)["submits"] == 3
        shown = CliRunner().invoke(cli, ["status", *args, "--json"])
        status = json.loads(shown.stdout)
        assert status["attention_total"] == 0 and status["last_run"]["exit_code"] == 0
        assert [job["job_id"] for job in status["not_in_manifest"]] == ["shot-002"]

        retried = CliRunner().invoke(cli, ["retry", *args], env=ENV)
        assert retried.exit_code == 0 and counters(server)["submits"] == 3
        assert "left alone: 1 job whose row is no longer in the sheet (shot-002)" in retried.output
        (tmp_path / "ids.txt").write_text("shot-002\n")
        named = CliRunner().invoke(
            cli, ["retry", *args, "--ids", str(tmp_path / "ids.txt")], env=ENV
        )
        assert named.exit_code == 0 and counters(server)["submits"] == 4  # refused again

        write_manifest(manifest, shots)  # put back: it needs the user again
        again = CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV)
        assert again.exit_code == 1 and "shot-002: prompt:" in again.output
        assert counters(server)["submits"] == 4


def test_an_edit_to_a_job_sent_before_is_refused_though_it_is_pending(tmp_path: Path) -> None:
    """A job sent once and put back by ``retry`` is pending again, but it was bought from
    before: an edit to it still needs --replace-changed."""
    manifest = write_manifest(tmp_path / "m.csv", rows(1))
    ledger = tmp_path / "l.db"
    with Ledger.open(ledger) as opened:
        opened.add_jobs(to_jobs(load_manifest(manifest, get_model(DEFAULT_MODEL))))
        for state in (JobState.SUBMITTING, JobState.FAILED, JobState.PENDING):  # `retry`
            opened.transition("shot-001", state, detail="a test")
    edited = rows(1)
    edited[0]["prompt"] += ", at noon"
    write_manifest(manifest, edited)
    shown = CliRunner().invoke(cli, ["plan", str(manifest), "--ledger", str(ledger)])
    assert shown.exit_code == 2, shown.output
    assert "edited (prompt); pass --replace-changed" in shown.stderr


def test_many_rows_refused_for_one_cause_are_said_in_one_line(tmp_path: Path) -> None:
    """A changed --prompt-template edits every row: 500 lines of "already in the ledger with
    different content" in a cron mail. Past five rows of one cause, one line says how many,
    which, one row's reason, and the likely cause; a few are still said row by row."""
    manifest = write_manifest(tmp_path / "m.csv", rows(8))
    ledger = tmp_path / "l.db"
    with Ledger.open(ledger) as opened:
        opened.add_jobs(to_jobs(load_manifest(manifest, get_model(DEFAULT_MODEL))))
        for job_id in opened.job_ids([JobState.PENDING]):
            opened.transition(job_id, JobState.SUBMITTING, detail="sent")  # bought, maybe
            opened.transition(job_id, JobState.UNKNOWN, detail="no answer")
    args = ["plan", str(manifest), "--ledger", str(ledger)]
    for edited, lines in ((8, 1), (3, 3)):
        shots = rows(8)
        for row in shots[:edited]:
            row["prompt"] += ", cinematic"
        write_manifest(manifest, shots)
        shown = CliRunner().invoke(cli, args)
        assert shown.exit_code == 2, shown.output
        said = [line for line in shown.stderr.splitlines() if "different content" in line]
        assert len(said) == lines, shown.stderr
    one = CliRunner().invoke(cli, [*args, "--prompt-template", "{prompt}, cinematic"])
    assert one.exit_code == 2
    assert "8 rows (1, 2, 3, 4, 5 and 3 more) are already in the ledger with different " in (
        one.stderr
    )
    assert "(a --prompt-template, --set or --matrix changed since the last run?)" in one.stderr
    assert "each as row 1 (job 'shot-001'): edited (prompt); pass --replace-changed" in one.stderr


def test_an_edited_row_whose_model_changed_says_so(tmp_path: Path) -> None:
    """Only the endpoint differs: the refusal named no field at all ("edited (its files)")."""
    manifest = write_manifest(tmp_path / "m.csv", rows(1))
    ledger = tmp_path / "l.db"
    with Ledger.open(ledger) as opened:
        opened.add_jobs(to_jobs(load_manifest(manifest, get_model(DEFAULT_MODEL))))
        opened.transition("shot-001", JobState.SUBMITTING, detail="sent")  # bought, maybe
        opened.transition("shot-001", JobState.UNKNOWN, detail="no answer")
    other = "fal-ai/veo3.1/image-to-video"
    shown = CliRunner().invoke(
        cli, ["plan", str(manifest), "--ledger", str(ledger), "--model", other]
    )
    assert shown.exit_code == 2, shown.output
    assert f"edited (model {DEFAULT_MODEL} → {other}); pass --replace-changed" in shown.stderr


def test_a_row_whose_id_changed_is_not_bought_again_under_the_new_id(tmp_path: Path) -> None:
    """The same request under a new id, while the job that bought it is no longer named: an
    id renamed in the sheet, or one a spreadsheet now writes another way (``001`` in a CSV
    saved from Excel, ``1`` in the workbook). The same video twice, unless the user says so.
    A row copied under a new id beside its original is a choice, as within one manifest."""
    with SimulatorServer(fast_config()) as server:
        args = ["--ledger", str(tmp_path / "l.db")]
        sim = ["--base-url", server.url, "--auth-scheme", "bearer", "--out", str(tmp_path), *args]
        manifest = write_manifest(tmp_path / "m.csv", rows(3))
        assert CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV).exit_code == 0
        edited = rows(3)
        edited[1]["id"] = "shot-002-final"
        write_manifest(manifest, [*edited, {**edited[0], "id": "shot-001-copy"}])

        shown = CliRunner().invoke(cli, ["plan", str(manifest), *args, "--json"])
        assert shown.exit_code == 2
        assert by_action(json.loads(shown.stdout))["refuse"] == {"shot-002-final"}
        assert "was the id changed from 'shot-002'? It would be" in shown.stderr
        refused = CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV)
        assert refused.exit_code == 2 and counters(server)["submits"] == 3
        assert "nothing was submitted" in refused.stderr

        agreed = CliRunner().invoke(cli, ["run", str(manifest), *sim, "--replace-changed"], env=ENV)
        assert agreed.exit_code == 0, agreed.output
        assert counters(server)["submits"] == 5


def test_an_id_less_sheet_sent_to_another_model_is_not_bought_again(tmp_path: Path) -> None:
    """Without an id column a job's id is its request's hash, model included: a nightly
    command that lost its ``--model`` made every row a new job and bought the whole sheet
    again on the default model, without a word. Refused as an edited row with an id is; a
    row that made no video (failed) and a genuinely new row are sent; --replace-changed buys
    the rest on the new model; after that only the row never bought on the old model is
    refused there."""
    other = "fal-ai/veo3.1/image-to-video"
    with SimulatorServer(fast_config()) as server:
        args = ["--ledger", str(tmp_path / "l.db")]
        sim = ["--base-url", server.url, "--auth-scheme", "bearer", "--out", str(tmp_path), *args]
        shots = [{k: v for k, v in row.items() if k != "id"} for row in rows(3)]
        manifest = write_manifest(tmp_path / "m.csv", shots)
        first = CliRunner().invoke(cli, ["run", str(manifest), *sim, "--model", other], env=ENV)
        assert first.exit_code == 0, first.output
        with Ledger.open(tmp_path / "l.db") as opened:  # the third made no video
            (third,) = [job.job_id for job in opened.jobs() if job.row == 3]
            opened.db.conn.execute("update jobs set state = 'failed' where job_id = ?", [third])
            opened.db.conn.commit()
        fresh = {**shots[0], "prompt": "a new shot, never bought"}
        write_manifest(manifest, [*shots, fresh])

        shown = CliRunner().invoke(cli, ["plan", str(manifest), *args, "--json"])
        assert shown.exit_code == 2
        plan = json.loads(shown.stdout)
        refused = {d["row"] for d in plan["decisions"] if d["action"] == "refuse"}
        assert refused == {1, 2}
        assert {d["row"] for d in plan["decisions"] if d["action"] == "submit"} == {3, 4}
        assert (
            f"row 1, line 2: asks what job '{plan['decisions'][0]['job_id']}'" not in shown.stderr
        )  # the old job's id is named, not the new row's hash
        assert f"(done) asked of {other}, now of {DEFAULT_MODEL}, so it would be bought " in (
            shown.stderr
        )
        assert f"put {other} back (a --model left out?" in shown.stderr
        lost = CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV)
        assert lost.exit_code == 2 and "nothing was submitted" in lost.stderr
        assert counters(server)["submits"] == 3

        agreed = CliRunner().invoke(cli, ["run", str(manifest), *sim, "--replace-changed"], env=ENV)
        assert agreed.exit_code == 0, agreed.output
        assert counters(server)["submits"] == 7
        again = CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV)
        assert again.exit_code == 0 and counters(server)["submits"] == 7, again.output
        back = CliRunner().invoke(cli, ["run", str(manifest), *sim, "--model", other], env=ENV)
        assert back.exit_code == 2 and counters(server)["submits"] == 7  # row 4: never on it
        assert "row 4, line 5: asks what job" in back.stderr and "row 1," not in back.stderr


def test_a_sheet_saved_another_way_is_not_bought_again(tmp_path: Path) -> None:
    """The same sheet, converted to CRLF line ends (a prompt on two lines in one cell keeps
    the ``\r``) or saved by a tool that decomposes accents (NFD): nothing a user can see
    changed, yet every such id-less row was a new job, bought again with exit 0, and a row
    with an id was refused as "edited (prompt)". Both say what changed; nothing is sent."""
    with SimulatorServer(fast_config()) as server:
        args = ["--ledger", str(tmp_path / "l.db")]
        sim = ["--base-url", server.url, "--auth-scheme", "bearer", "--out", str(tmp_path), *args]
        shots = [{k: v for k, v in row.items() if k != "id"} for row in rows(3)]
        shots[0]["prompt"] = "a fox\nin the snow"
        shots[1]["prompt"] = "crème brûlée, café"
        shots[2] = {**rows(3)[2], "prompt": "a hen\non a fence"}  # with an id
        manifest = tmp_path / "m.csv"
        write_manifest(manifest, shots)
        assert CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV).exit_code == 0
        text = manifest.read_text(encoding="utf-8")
        saved = unicodedata.normalize("NFD", text).replace("\n", "\r\n")
        manifest.write_bytes(saved.encode())

        again = CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV)
        assert again.exit_code == 2 and counters(server)["submits"] == 3
        assert again.stderr.count("written another way (line breaks or accents") == 2
        assert "edited (prompt: only its line breaks or accents" in again.stderr
        agreed = CliRunner().invoke(cli, ["run", str(manifest), *sim, "--replace-changed"], env=ENV)
        assert agreed.exit_code == 0 and counters(server)["submits"] == 6


def test_text_as_read_ignores_only_how_it_was_written() -> None:
    """What :func:`as_read` treats as one text: line ends, Unicode composition, and a
    workbook's ``_x000D_`` stored before batchrunner decoded it; nothing a reader sees."""
    from batchrunner.jobs import as_read

    same = ["a\nb", "a\r\nb", "a\rb", "a_x000D_\nb"]
    assert {as_read(text) for text in same} == {"a\nb"}
    assert as_read({"p": ["cafe\u0301"]}) == {"p": ["café"]}
    assert len({as_read(text) for text in ["a b", "a  b", "A b", "a\tb", "a_b"]}) == 5


def test_ids_added_to_a_sheet_already_run_say_so(tmp_path: Path) -> None:
    """Rows bought without ids, then given ids: each was refused as "was the id changed from
    'j8fbd1a82752cec33'?", an id the user never typed. It says the row had none."""
    shots = [{k: v for k, v in row.items() if k != "id"} for row in rows(2)]
    manifest = write_manifest(tmp_path / "m.csv", shots)
    ledger = tmp_path / "l.db"
    with Ledger.open(ledger) as opened:
        opened.add_jobs(to_jobs(load_manifest(manifest, get_model(DEFAULT_MODEL))))
        for job_id in opened.job_ids([JobState.PENDING]):
            opened.transition(job_id, JobState.SUBMITTING, detail="sent")
    write_manifest(manifest, rows(2))
    shown = CliRunner().invoke(cli, ["plan", str(manifest), "--ledger", str(ledger)])
    assert shown.exit_code == 2
    assert shown.stderr.count("bought when the row had no id: was an id column added?") == 2
    assert "was the id changed" not in shown.stderr


def test_rows_deleted_before_they_were_sent_are_not_bought(tmp_path: Path) -> None:
    """A run stopped by its budget; the user deletes the rows not yet sent, to save their cost,
    and runs the shorter sheet: those jobs were bought anyway ("pending in the ledger"). They
    are left alone by run and resume alike, the run is all done, and a row put back, or a job
    asked for by name (``retry``), is sent."""
    with SimulatorServer(fast_config()) as server:
        args = ["--ledger", str(tmp_path / "l.db")]
        sim = ["--base-url", server.url, "--auth-scheme", "bearer", "--out", str(tmp_path), *args]
        manifest = write_manifest(tmp_path / "m.csv", rows(5))
        first = CliRunner().invoke(cli, ["run", str(manifest), *sim, "--budget", "2"], env=ENV)
        assert first.exit_code == 75 and counters(server)["submits"] == 1
        write_manifest(manifest, rows(2))  # rows 3 to 5 deleted

        shown = CliRunner().invoke(cli, ["plan", str(manifest), *args, "--json"])
        decided = {d["job_id"]: d for d in json.loads(shown.stdout)["decisions"]}
        assert by_action(json.loads(shown.stdout))["submit"] == {"shot-002"}
        assert decided["shot-005"]["why"] == "no longer in the manifest, never sent: left alone"
        shorter = CliRunner().invoke(cli, ["run", str(manifest), *sim, "--budget", "100"], env=ENV)
        assert shorter.exit_code == 0, shorter.output
        assert "3 pending (3 left alone: their rows were deleted, never sent)" in shorter.output
        resumed = CliRunner().invoke(cli, ["resume", *args], env=ENV)
        assert resumed.exit_code == 0 and counters(server)["submits"] == 2
        # cancelled, it is still left alone by `retry --cancelled`; asked for by name, it is sent
        assert CliRunner().invoke(cli, ["cancel", *args, "shot-005"], env=ENV).exit_code == 0
        retried = CliRunner().invoke(cli, ["retry", *args, "--cancelled"], env=ENV)
        assert retried.exit_code == 0 and counters(server)["submits"] == 2
        assert "left alone: 1 job whose row is no longer in the sheet (shot-005)" in retried.output
        assert "also pending" not in retried.output  # shot-003 and 4: a run does not send them
        (tmp_path / "ids.txt").write_text("shot-005\n")
        named = ["retry", *args, "--cancelled", "--ids", str(tmp_path / "ids.txt")]
        retried = CliRunner().invoke(cli, named, env=ENV)
        assert retried.exit_code == 0 and counters(server)["submits"] == 3

        write_manifest(manifest, rows(5))  # put back
        again = CliRunner().invoke(cli, ["run", str(manifest), *sim], env=ENV)
        assert again.exit_code == 0 and counters(server)["submits"] == 5
