"""``retry --ids FILE [--new-take]``: which jobs, which new ids, seeds and prices, and refusals.

Planning is read-only and needs no network; the end-to-end loop (gallery CSV → new takes bought
once → shown beside the originals) is in ``test_gallery_browser.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from batchrunner.cli import cli
from batchrunner.errors import UsageError
from batchrunner.jobs import NewJob
from batchrunner.ledger import Ledger
from batchrunner.states import JobState
from batchrunner.takes import plan, read_ids
from tests.helpers import IMAGE

VEO3 = "fal-ai/veo3/image-to-video"
KLING = "fal-ai/kling-video/v2.5-turbo/pro/image-to-video"


def job(job_id: str, *, variant: str = "", output: str | None = None, **body: object) -> NewJob:
    payload = {
        "prompt": "A fox at dusk",
        "image_url": IMAGE,
        "duration": "8s",
        "generate_audio": True,
        **body,
    }
    return NewJob(
        job_id=job_id, endpoint=VEO3, input=payload, row=3, line=4, variant=variant,
        output_name=output, metadata={"scene": "forest"}, price_usd=3.20,
    )  # fmt: skip


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    opened = Ledger.open(tmp_path / "l.db")
    opened.add_jobs(
        [
            job("fox", output="fox.mp4"),
            job("owl~16:9~t1", variant="16:9~t1", seed=7),
            job("owl~16:9~t2", variant="16:9~t2", seed=8),
            job("hen"),
        ]
    )
    opened.transition("hen", JobState.FAILED, error="boom")
    return opened


def test_ids_come_from_the_gallery_csv_or_one_per_line(tmp_path: Path) -> None:
    gallery = tmp_path / "selected.csv"
    gallery.write_text(
        'job_id,row,variant,state\r\nfox,3,,done\r\n"a,b",4,,failed\r\nfox,3,,done\r\n'
    )
    assert read_ids(gallery) == ["fox", "a,b"]
    plain = tmp_path / "ids.txt"
    plain.write_text("\ufefffox\n\n  owl~16:9~t2 \n")
    assert read_ids(plain) == ["fox", "owl~16:9~t2"]
    for header in ("id", "Job ID", "job-id"):  # a list typed by hand, headed as people head it
        typed = tmp_path / "typed.csv"
        typed.write_text(f"{header}\nfox\nowl~16:9~t2\n")
        assert read_ids(typed) == ["fox", "owl~16:9~t2"]
    both = tmp_path / "export.csv"  # an export: the manifest's id and the job's; the job's wins
    both.write_text("id,job_id,state\nowl,owl~16:9~t2,done\n")
    assert read_ids(both) == ["owl~16:9~t2"]
    empty = tmp_path / "empty.csv"
    empty.write_text("job_id\n")
    with pytest.raises(UsageError, match="lists no job ids"):
        read_ids(empty)


def test_an_id_file_saved_again_by_excel_reads_or_says_how_to_save_it(tmp_path: Path) -> None:
    european = tmp_path / "selected.csv"  # Excel's CSV where the decimal mark is a comma
    european.write_bytes("\ufeffjob_id;row;prompt\r\nfox;3;a fox, at dawn\r\nowl;4;x\r\n".encode())
    assert read_ids(european) == ["fox", "owl"]
    unicode_text = tmp_path / "selected.txt"  # Excel's "Unicode Text"
    unicode_text.write_bytes("job_id\tprompt\r\nfox\tx\r\n".encode("utf-16"))
    with pytest.raises(
        UsageError, match=r"selected\.txt: the file is UTF-16 .* save it as 'CSV UTF-8'"
    ):
        read_ids(unicode_text)


def test_ids_come_from_an_export_filtered_in_excel_but_not_from_hidden_rows(
    tmp_path: Path,
) -> None:
    """`export -o jobs.xlsx`, rows deleted in Excel, saved: its job_id column is the list. A
    sheet filtered instead still holds the filtered-out rows, hidden: refused, not bought."""
    import openpyxl

    book = tmp_path / "jobs.xlsx"
    workbook = openpyxl.Workbook()
    for values in (["job_id", "state"], ["fox", "done"], ["owl~16:9~t2", "failed"], [7, "done"]):
        workbook.active.append(values)
    workbook.save(book)
    assert read_ids(book) == ["fox", "owl~16:9~t2", "7"]
    workbook.active["A1"] = "Job ID"
    workbook.save(book)
    assert read_ids(book) == ["fox", "owl~16:9~t2", "7"]
    workbook.active.row_dimensions[3].hidden = True  # owl, filtered out
    workbook.save(book)
    with pytest.raises(UsageError, match=r"has 1 hidden row \(a filter\?\).* copy the rows you"):
        read_ids(book)
    other = tmp_path / "other.xlsx"
    openpyxl.Workbook().save(other)
    with pytest.raises(UsageError, match=r"cannot read the id file .*other\.xlsx: the manifest is"):
        read_ids(other)


def test_a_new_take_is_a_new_job_beside_the_original(ledger: Ledger) -> None:
    planned = plan(ledger, ["fox", "owl~16:9~t1", "owl~16:9~t2"], new_take=True)
    takes = {t.job_id: t for t in planned.new_takes}
    assert list(takes) == ["fox~t2", "owl~16:9~t3", "owl~16:9~t4"]
    fox = takes["fox~t2"]
    assert (fox.row, fox.variant, fox.output_name, fox.take_of) == (3, "t2", "fox~t2.mp4", "fox")
    assert fox.metadata == {"scene": "forest"} and fox.price_usd == pytest.approx(3.20)
    owl = takes["owl~16:9~t4"]
    assert (owl.variant, owl.output_name, owl.take_of) == ("16:9~t4", None, "owl~16:9~t2")
    seeds = [t.input["seed"] for t in planned.new_takes] + [7, 8]
    assert len(set(seeds)) == len(seeds)  # fresh and distinct from every sibling's
    assert {k: v for k, v in owl.input.items() if k != "seed"} == {
        k: v for k, v in ledger.get("owl~16:9~t2").input.items() if k != "seed"
    }
    assert planned.cost_usd == pytest.approx(3 * 3.20) and planned.spent_usd == 0
    assert not ledger.has("fox~t2")  # planning records nothing


def test_nothing_bought_is_bought_again_without_new_take(ledger: Ledger) -> None:
    ledger.transition("fox", JobState.SUBMITTING, cost_usd=3.20)
    ledger.transition("fox", JobState.QUEUED)
    ledger.transition("fox", JobState.COMPLETED)
    ledger.transition("fox", JobState.DONE)
    with pytest.raises(UsageError, match="already bought: fox; add --new-take"):
        plan(ledger, ["fox", "hen"], new_take=False)
    assert [j.job_id for j in plan(ledger, ["hen"], new_take=False).requeue] == ["hen"]
    with pytest.raises(UsageError, match=r"no such job in .*: ghost$"):
        plan(ledger, ["hen", "ghost"], new_take=False)
    # an export's `id` column (the row's id) where its `job_id` was meant
    with pytest.raises(
        UsageError, match=r": owl \(a row's id: its jobs are owl~16:9~t1, owl~16:9~t2\)$"
    ):
        plan(ledger, ["owl"], new_take=True)


def test_an_id_that_is_no_job_names_the_job_it_nearly_is_and_nothing_moves(
    ledger: Ledger, tmp_path: Path
) -> None:
    """A mistyped id in ``retry --ids`` or ``cancel`` is refused with the id it nearly is, for
    every command that takes ids, before anything is sent or moved."""
    near = r"no such job in .*: Hen \(did you mean 'hen'\?\), owl~16:9~t3 \(did you mean "
    with pytest.raises(UsageError, match=near):
        plan(ledger, ["Hen", "owl~16:9~t3", "fox"], new_take=True)
    ledger.close()
    db = str(tmp_path / "l.db")
    cancelled = CliRunner().invoke(cli, ["cancel", "--ledger", db, "Fox", "ghost"])
    assert cancelled.exit_code == 2
    assert cancelled.stderr.strip().endswith("Fox (did you mean 'fox'?), ghost"), cancelled.stderr
    with Ledger.open(tmp_path / "l.db") as again:
        assert again.get("fox").state is JobState.PENDING  # nothing cancelled, not even fox


def test_the_cli_prints_what_it_would_buy_and_a_dry_run_records_nothing(
    ledger: Ledger, tmp_path: Path
) -> None:
    ledger.start_run("run", options={"out": str(tmp_path / "out"), "simulate": True})
    ledger.close()
    ids = tmp_path / "ids.txt"
    ids.write_text("fox\nhen\n")
    args = ["retry", "--ledger", str(tmp_path / "l.db"), "--ids", str(ids), "--new-take"]
    result = CliRunner().invoke(cli, [*args, "--dry-run", "--budget", "10", "--run-budget", "4"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "new takes to submit: 2, $6.40",
        f"  fox~t2  row 3  new take of fox, seed {result.stderr.split('seed ')[1].split(':')[0]}"
        ": $3.20",
        f"  hen~t2  row 3  new take of hen, seed {result.stderr.split('seed ')[2].split(':')[0]}"
        ": $3.20",
        "also pending in the ledger: 3 jobs, $9.60",
        "spent so far: $0.00; --budget $10.00 leaves $10.00; --run-budget $4.00 caps this run",
        "not all of it fits: $16.00 is asked for (pending jobs included); the jobs past "
        "--budget $10.00 stay pending (exit 75); --budget 16.00 buys it all",
        "dry run: nothing was recorded or sent",
    ]
    with Ledger.open(tmp_path / "l.db", create=False) as reopened:
        assert not reopened.has("fox~t2")
    refused = CliRunner().invoke(cli, ["retry", "--ledger", str(tmp_path / "l.db"), "--new-take"])
    assert refused.exit_code == 2 and "--new-take needs --ids FILE" in refused.output


def test_retry_dry_run_without_ids_lists_what_it_would_send_and_sends_nothing(
    ledger: Ledger, tmp_path: Path
) -> None:
    """`retry --dry-run` (no --ids) was taken and ignored: it bought the failed jobs again.
    Now it lists them (and the videos `--downloads` would fetch again) and sends nothing."""
    ledger.transition("fox", JobState.SUBMITTING, cost_usd=3.20)
    ledger.transition("fox", JobState.QUEUED, request_id="r-1")
    ledger.transition("fox", JobState.COMPLETED, result={"video": {"url": "https://x/v.mp4"}})
    ledger.transition("fox", JobState.DOWNLOAD_FAILED, error="the media host said 403")
    ledger.start_run("run", options={"out": str(tmp_path / "out"), "budget": 5.0})
    ledger.close()
    db = str(tmp_path / "l.db")
    result = CliRunner().invoke(cli, ["retry", "--ledger", db, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "jobs to send again: 1, $3.20",
        "  hen  row 3  (failed): $3.20",
        "also pending in the ledger: 2 jobs, $6.40",
        "spent so far: $3.20; --budget $5.00 (kept from the last run) leaves $1.80",
        "not all of it fits: $9.60 is asked for (pending jobs included); the jobs past "
        "--budget $5.00 stay pending (exit 75); --budget 12.80 buys it all",
        "dry run: nothing was recorded or sent",
    ]
    fetch = CliRunner().invoke(cli, ["retry", "--ledger", db, "--downloads", "--dry-run"])
    assert fetch.exit_code == 0, fetch.output
    assert fetch.stderr.splitlines()[:2] == [
        "videos to fetch again: 1 (stored results: nothing is bought)",
        "  fox  row 3  (download_failed)",
    ]
    with Ledger.open(db, create=False) as reopened:
        assert reopened.get("hen").state is JobState.FAILED
        assert reopened.get("fox").state is JobState.DOWNLOAD_FAILED
        assert [run["command"] for run in reopened.db.table("runs").rows] == ["run"]


def test_a_long_retry_lists_twenty_jobs_and_counts_the_rest(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as opened:
        opened.add_jobs([job(f"j{n:02d}") for n in range(25)])
        for n in range(25):
            opened.transition(f"j{n:02d}", JobState.FAILED, error="boom")
    said = CliRunner().invoke(cli, ["retry", "--ledger", str(tmp_path / "l.db"), "--dry-run"])
    lines = said.stderr.splitlines()
    assert lines[0] == "jobs to send again: 25, $80.00" and lines[20].startswith("  j19  row 3")
    assert lines[21] == "  ... and 5 more (`batchrunner status --all` lists them)"


def test_a_take_not_yet_done_is_finished_not_bought_again(ledger: Ledger, tmp_path: Path) -> None:
    """`retry --ids --new-take` killed once its take was sent, then asked again: the take in
    flight is finished by the run, and no third take is bought beside it (it offered
    ``fox~t3`` without a word). The ledger's --budget, which the retry inherits, is shown."""
    ledger.start_run("run", options={"out": str(tmp_path / "out"), "budget": 10.0})
    ledger.add_jobs(plan(ledger, ["fox"], new_take=True).new_takes)
    ledger.transition("fox~t2", JobState.SUBMITTING, cost_usd=3.20)
    ledger.transition("fox~t2", JobState.QUEUED, request_id="r-1")
    ledger.close()
    ids = tmp_path / "ids.txt"
    ids.write_text("fox\nhen\n")
    args = ["retry", "--ledger", str(tmp_path / "l.db"), "--ids", str(ids), "--new-take"]
    result = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "new takes to submit: 1, $3.20"
    assert lines[1].startswith("  hen~t2  row 3  new take of hen, seed ")
    assert lines[2] == (
        "  fox: its new take fox~t2 is not done yet (queued): this run finishes it, and buys "
        "no other"
    )
    assert "spent so far: $3.20; --budget $10.00 (kept from the last run) leaves $6.80" in lines


def test_an_export_says_which_job_each_new_take_re_rolls(ledger: Ledger) -> None:
    """The gallery shows "re-roll of fox"; the export had no column saying so."""
    from batchrunner.export import rows

    ledger.add_jobs(plan(ledger, ["fox"], new_take=True).new_takes)
    exported = {record["job_id"]: record for record in rows(ledger)}
    assert exported["fox~t2"]["take_of"] == "fox" and exported["fox"]["take_of"] is None


def test_a_model_without_a_seed_field_repeats_the_request_and_says_so(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.add_jobs(
            [NewJob(job_id="k", endpoint=KLING, input={"prompt": "x", "image_url": IMAGE})]
        )
        planned = plan(ledger, ["k"], new_take=True)
    (take,) = planned.new_takes
    assert take.input == {"prompt": "x", "image_url": IMAGE} and planned.no_seed == [KLING]
