"""The command line: exit codes, one-line errors, exports, logs; against a live simulator."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from batchrunner.answers import QueueStatus
from batchrunner.cli import cli
from batchrunner.models import MAX_IMAGE_BYTES
from batchrunner.report import Progress
from batchrunner.simulator import SimulatorServer
from tests.helpers import IMAGE, TOKEN, counters, fast_config, rows, run_args, write_manifest
from tests.test_manifest import BAD, CORPUS

ENV = {"BATCHRUNNER_API_KEY": TOKEN}


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(fast_config(extra_endpoints=("acme/vidgen/v2",))) as server:
        yield server


@pytest.mark.parametrize(("name", "row", "line", "column", "words"), CORPUS)
def test_every_bad_manifest_exits_2_with_its_row_and_sends_nothing(
    shared_sim: SimulatorServer,
    tmp_path: Path,
    name: str,
    row: int | None,
    line: int | None,
    column: str | None,
    words: str,
) -> None:
    shutil.copytree(BAD, tmp_path / "m", dirs_exist_ok=True)
    with (tmp_path / "m" / "images" / "big.png").open("wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.truncate(MAX_IMAGE_BYTES + 1)
    before = counters(shared_sim)["submits"]
    result = CliRunner().invoke(cli, run_args(shared_sim, tmp_path, tmp_path / "m" / name), env=ENV)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    if row is not None:
        assert f"row {row}" in result.output
    if line is not None:
        assert f"line {line}" in result.output
    assert words in result.output
    assert counters(shared_sim)["submits"] == before
    assert not (tmp_path / "ledger.db").exists()


def test_no_output_is_written_over_the_manifest_or_the_ledger(
    shared_sim: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``export -o shots.csv`` replaced the sheet the nightly run reads with the export. The
    manifests a ledger ran, and the ledger, are never written over, by any name for them; any
    other file is (a nightly re-export)."""
    manifest = write_manifest(tmp_path / "shots.csv", rows(2))
    assert CliRunner().invoke(cli, run_args(shared_sim, tmp_path, manifest), env=ENV).exit_code == 0
    sheet = manifest.read_bytes()
    monkeypatch.chdir(tmp_path)
    ledger = ["--ledger", "ledger.db"]
    for argv in (
        ["export", *ledger, "-o", "shots.csv"],
        ["export", *ledger, "-o", "./sub/../shots.csv"],
        ["report", *ledger, "-o", "shots.csv"],
        ["plan", "shots.csv", "-o", "shots.csv"],
    ):
        refused = CliRunner().invoke(cli, argv)
        assert refused.exit_code == 2, (argv, refused.output)
        assert "writing over it would lose it; give another name, e.g. " in refused.stderr, argv
        assert manifest.read_bytes() == sheet
    (tmp_path / "sub").mkdir()
    for _ in range(2):
        again = CliRunner().invoke(cli, ["export", *ledger, "-o", "results.csv"])
        assert again.exit_code == 0, again.output
    # nor a paid video of the batch, or an image, whatever ledger or manifest it belongs to
    video = tmp_path / "out" / "0001-shot-001.mp4"
    paid = video.read_bytes()
    (tmp_path / "lighthouse.png").write_bytes(b"an input image")
    for argv in (
        ["report", *ledger, "-o", str(video)],
        ["plan", "shots.csv", "-o", "lighthouse.png"],
        ["report", *ledger, "-o", "out/0002-shot-002.MP4"],
    ):
        refused = CliRunner().invoke(cli, argv)
        assert refused.exit_code == 2, (argv, refused.output)
        assert "is named like a" in refused.stderr and "Traceback" not in refused.output, argv
    assert video.read_bytes() == paid
    assert (tmp_path / "lighthouse.png").read_bytes() == b"an input image"


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".xlsx", ".json", ".jsonl", ".parquet"])
def test_an_export_that_fails_halfway_leaves_the_last_one_whole(
    shared_sim: SimulatorServer, tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills during a re-export (its file written through /dev/full: the kernel's
    own ENOSPC): one line, exit 2, and last night's export is still there, whole."""
    manifest = write_manifest(tmp_path / "m.csv", rows(2))
    assert CliRunner().invoke(cli, run_args(shared_sim, tmp_path, manifest), env=ENV).exit_code == 0
    target = tmp_path / f"results{suffix}"
    export = ["export", "--ledger", str(tmp_path / "ledger.db"), "-o", str(target)]
    assert CliRunner().invoke(cli, export).exit_code == 0
    last_night = target.read_bytes()
    import os
    import secrets

    monkeypatch.setattr(secrets, "token_hex", lambda size: "feed")  # the part's name known
    part = tmp_path / f".results.{os.getpid()}-feed.part{suffix}"
    part.symlink_to("/dev/full")
    full = CliRunner().invoke(cli, export)
    assert full.exit_code == 2
    assert full.stderr.startswith(f"error: cannot write {target}: ")
    assert "No space left on device" in full.stderr and "Exception ignored" not in full.stderr
    assert target.read_bytes() == last_night
    assert not part.exists()  # nothing left behind


def test_export_has_the_contract_columns_then_the_manifest_columns(
    shared_sim: SimulatorServer, tmp_path: Path
) -> None:
    extra = [{**row, "notes": f"take {i}", "client": "acme"} for i, row in enumerate(rows(3))]
    manifest = write_manifest(tmp_path / "m.csv", extra)
    assert CliRunner().invoke(cli, run_args(shared_sim, tmp_path, manifest), env=ENV).exit_code == 0
    contract = [
        "job_id",
        "id",
        "variant",
        "take",
        "seed",
        "row",
        "state",
        "request_id",
        "output_path",
        "sha256",
        "error",
        "cost_usd",
    ]
    for suffix in (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".xlsx"):
        target = tmp_path / f"export{suffix}"
        result = CliRunner().invoke(
            cli, ["export", "--ledger", str(tmp_path / "ledger.db"), "-o", str(target)]
        )
        assert result.exit_code == 0, result.output
        frame = {
            ".csv": pd.read_csv,
            ".tsv": lambda p: pd.read_csv(p, sep="\t"),
            ".json": pd.read_json,
            ".jsonl": lambda p: pd.read_json(p, lines=True),
            ".parquet": pd.read_parquet,
            ".xlsx": pd.read_excel,
        }[suffix](target)
        assert list(frame.columns[: len(contract)]) == contract
        assert {"prompt", "image_url", "duration", "notes", "client"} <= set(frame.columns)
        assert list(frame["row"]) == [1, 2, 3]
        assert set(frame["state"]) == {"done"}
        assert list(frame["notes"]) == ["take 0", "take 1", "take 2"]
        assert list(frame["cost_usd"]) == [1.6, 1.6, 1.6]  # 4 s with audio at $0.40/s
        assert list(frame["id"]) == ["shot-001", "shot-002", "shot-003"]
        if suffix != ".xlsx":  # a zip: the token test reads the text formats
            assert TOKEN not in target.read_bytes().decode("utf-8", "replace")
    bad = CliRunner().invoke(
        cli, ["export", "--ledger", str(tmp_path / "ledger.db"), "-o", str(tmp_path / "x.xls")]
    )
    assert bad.exit_code == 2 and ".csv, .json, .jsonl, .parquet, .tsv, .xlsx" in bad.output


def test_an_unregistered_model_runs_only_when_allowed(
    shared_sim: SimulatorServer, tmp_path: Path
) -> None:
    manifest = write_manifest(
        tmp_path / "m.csv", [{"prompt": "a fox", "image_url": IMAGE, "anything": "goes"}]
    )
    before = counters(shared_sim)["submits"]
    refused = CliRunner().invoke(
        cli, run_args(shared_sim, tmp_path, manifest, "--model", "acme/vidgen/v2"), env=ENV
    )
    assert refused.exit_code == 2 and "unknown model 'acme/vidgen/v2'" in refused.output
    assert "--allow-unregistered" in refused.output and "Traceback" not in refused.output
    assert counters(shared_sim)["submits"] == before
    log = tmp_path / "run.log"
    args = run_args(shared_sim, tmp_path, manifest, "--model", "acme/vidgen/v2")
    result = CliRunner().invoke(
        cli, ["--log-file", str(log), *args, "--allow-unregistered"], env=ENV
    )
    assert result.exit_code == 0, result.output
    assert counters(shared_sim)["submits"] == before + 1
    assert TOKEN not in log.read_text()
    status = CliRunner().invoke(cli, ["status", "--ledger", str(tmp_path / "ledger.db"), "--json"])
    assert json.loads(status.output)["spend_usd"] == 0  # no price known


def test_status_shows_counts_and_spend_and_no_limit_the_provider_never_imposed(
    shared_sim: SimulatorServer, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(3, failing=(2,)))
    result = CliRunner().invoke(
        cli, run_args(shared_sim, tmp_path, manifest, "--concurrency", "2"), env=ENV
    )
    assert result.exit_code == 1
    shown = CliRunner().invoke(cli, ["status", "--ledger", str(tmp_path / "ledger.db")])
    assert "3 jobs (2 done, 1 failed)" in shown.output
    assert "estimated spend: $4.80" in shown.output
    assert "last run: run #1 (exit 1)\n" in shown.output  # the provider never throttled
    assert "shot-002: " in shown.output and "content checker" in shown.output


def test_validate_prints_rows_and_cost_and_exits_0(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["validate", str(Path(__file__).parent.parent / "manifests" / "demo.csv")]
    )
    assert result.exit_code == 0
    assert "10 rows OK; estimated cost $22.00" in result.output


def test_a_run_command_previews_as_it_stands_with_run_changed_to_plan(tmp_path: Path) -> None:
    """Every option of run is taken by plan and validate; those about how to buy (not what)
    change nothing in the plan, and plan's help still lists only what shapes it."""
    from batchrunner.cli import HOW_TO_RUN
    from batchrunner.settings import flag_of

    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    ledger = str(tmp_path / "l.db")
    how = [
        "--out", str(tmp_path / "videos"), "--provider", "fal", "--base-url",
        "https://queue.example.com", "--auth-scheme", "key", "--concurrency", "4", "--rps", "5",
        "--no-stream", "--stream-stall", "30", "--downloads", "2", "--poll-min", "1",
        "--poll-max", "9", "--queue-timeout", "1h", "--run-timeout", "20m", "--simulate",
        "--max-runtime", "4h",
    ]  # fmt: skip
    covered = {flag_of(name).split("/")[0] for name in HOW_TO_RUN}  # type: ignore[union-attr]
    assert covered <= set(how) | {"--stream"}, covered - set(how)
    plain = CliRunner().invoke(cli, ["plan", str(manifest), "--ledger", ledger, "--json"])
    swapped = CliRunner().invoke(
        cli, ["plan", str(manifest), "--ledger", ledger, "--json", "--dry-run", *how]
    )
    assert swapped.exit_code == 0, swapped.output
    assert swapped.stdout == plain.stdout and json.loads(plain.stdout)["jobs"] == 3
    shown = CliRunner().invoke(cli, ["plan", "--help"]).output
    assert "--poll-min" not in shown and "--downloads" not in shown and "--budget" in shown
    checked = CliRunner().invoke(cli, ["validate", str(manifest), "--ledger", ledger, *how])
    assert checked.exit_code == 0 and "3 rows OK" in checked.output, checked.output
    every = ["--json", "--dry-run", "--replace-changed", *how]  # run's own flags too
    as_json = CliRunner().invoke(cli, ["validate", str(manifest), "--ledger", ledger, *every])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {
        "exit_code": 0, "manifest": str(manifest), "rows": 3, "jobs": 3,
        "models": ["fal-ai/veo3/image-to-video"], "cost_usd": 4.8, "unpriced_jobs": 0,
        "price_unconfirmed": [], "warnings": [],
    }  # fmt: skip
    cut = tmp_path / "cut.csv"  # still being written: one line, exit 2, in JSON too
    cut.write_text(manifest.read_text().rstrip("\n").rsplit(",", 2)[0], encoding="utf-8")
    refused_json = CliRunner().invoke(cli, ["validate", str(cut), "--json"])
    said = json.loads(refused_json.stdout)
    assert (refused_json.exit_code, said["exit_code"]) == (2, 2)
    assert any("the file ends in this row" in problem for problem in said["problems"])
    refused = CliRunner().invoke(cli, ["validate", str(manifest), "--concurrency", "0"])
    assert refused.exit_code == 2 and "'--concurrency': 0 is not in the range" in refused.output
    assert not (tmp_path / "videos").exists() and not Path(ledger).exists()


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_hidden_rows_of_a_sheet_are_read_and_said_once(tmp_path: Path, command: str) -> None:
    """A sheet filtered down to the approved shots and saved still holds the others, hidden:
    they are read (a hidden row is a row) and named before anything is bought. Each warning is
    printed once (a warning without a column was also logged)."""
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.active.append(["id", "prompt", "image_url"])
    for i in range(1, 13):
        workbook.active.append([f"shot-{i}", f"shot {i}", "https://example.com/a.png"])
    for row in (2, 3, 5, *range(6, 14)):  # sheet rows: 11 hidden, the header is row 1
        workbook.active.row_dimensions[row].hidden = True
    workbook.create_sheet("notes")
    workbook.save(tmp_path / "shots.xlsx")
    result = CliRunner().invoke(cli, [command, str(tmp_path / "shots.xlsx")])
    assert result.exit_code == 0, result.output
    (hidden,) = [line for line in result.output.splitlines() if "sheet are hidden" in line]
    assert (
        "11 rows of the sheet are hidden (by hand or by a filter: sheet rows 2, 3, 5, 6" in hidden
    )
    assert "12, ...); they are read like the others" in hidden
    assert result.output.count("the workbook has 2 sheets") == 1
    assert "12 rows" in result.output


def test_rows_visible_takes_the_rows_a_filtered_sheet_shows(tmp_path: Path) -> None:
    """A sheet filtered down to the approved shots: `--rows visible` takes those (with --rows
    spans, those of them the sheet shows), runs them, and says nothing about rows it left out;
    a plain `plan` warns about the hidden rows it reads, and only those it reads. On a CSV,
    which hides nothing, every row is taken, with a warning saying so."""
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.active.append(["title"])  # a title row and a blank row above the header
    workbook.active.append([])
    workbook.active.append(["id", "prompt", "image_url", "duration"])
    for i in range(1, 7):
        workbook.active.append([f"shot-{i}", f"shot {i}", IMAGE, "4s"])
    for sheet_row in (5, 6, 8):  # data rows 2, 3 and 5
        workbook.active.row_dimensions[sheet_row].hidden = True
    book = tmp_path / "shots.xlsx"
    workbook.save(book)

    plain = CliRunner().invoke(cli, ["plan", str(book)])
    assert plain.exit_code == 0, plain.output
    assert "3 rows of the sheet are hidden (by hand or by a filter: sheet rows 5, 6, 8)" in (
        plain.output
    )
    spans = CliRunner().invoke(cli, ["plan", str(book), "--rows", "4-6"])
    assert "1 row of the sheet is hidden (by hand or by a filter: sheet rows 8)" in spans.output
    visible = CliRunner().invoke(cli, ["plan", str(book), "--rows", "visible", "--json"])
    assert visible.exit_code == 0, visible.output
    assert "hidden" not in visible.stderr
    assert [d["job_id"] for d in json.loads(visible.stdout)["decisions"]] == [
        "shot-1",
        "shot-4",
        "shot-6",
    ]
    some = CliRunner().invoke(cli, ["plan", str(book), "--rows", "visible,2-4"])
    assert some.stdout.startswith(f"{book}: 1 row (--rows visible,2-4: 1 of 6) -> 1 job")
    none = CliRunner().invoke(cli, ["plan", str(book), "--rows", "2-3,visible"])
    assert none.exit_code == 2
    assert none.stderr == "error: --rows visible,2-3: the sheet shows none of those rows\n"
    with SimulatorServer(fast_config()) as server:
        args = [*run_args(server, tmp_path, book), "--rows", "visible"]
        ran = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": TOKEN})
        assert ran.exit_code == 0, ran.output
        assert sorted(job["prompt"] for job in counters(server)["jobs"].values()) == [
            "shot 1",
            "shot 4",
            "shot 6",
        ]
    csv = write_manifest(tmp_path / "m.csv", rows(2))
    taken = CliRunner().invoke(cli, ["plan", str(csv), "--rows", "visible"])
    assert taken.exit_code == 0 and "-> 2 jobs" in taken.stdout
    assert "--rows visible: no row of the manifest is hidden" in taken.stderr


def test_http_base_url_is_refused_for_a_remote_host(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(1))
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(manifest),
            "--ledger",
            str(tmp_path / "ledger.db"),
            "--base-url",
            "http://example.com",
        ],
        env=ENV,
    )
    assert result.exit_code == 2
    assert "only allowed for loopback" in result.output
    assert TOKEN not in result.output


def test_progress_bars_count_each_stage_when_enabled() -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream, enabled=True)
    progress.start(2)
    for stage in ("submitted", "submitted", "completed", "downloaded"):
        progress(stage)
    progress.close()
    text = stream.getvalue()
    assert "submitted" in text and "2/2" in text and "1/2" in text


def test_the_reasons_a_run_ends_with_name_the_jobs_they_ended(
    shared_sim: SimulatorServer, tmp_path: Path
) -> None:
    """The morning mail says which rows to look at: one job by its id, several by a few ids."""
    shots = rows(7)
    for n in (0, 1, 3, 4, 6):
        shots[n]["prompt"] += " #policy"
    manifest = write_manifest(tmp_path / "m.csv", shots)
    ran = CliRunner().invoke(cli, [*run_args(shared_sim, tmp_path, manifest), "--json"], env=ENV)
    assert ran.exit_code == 1, ran.output
    (reason,) = json.loads(ran.stdout)["reasons"]
    assert reason.startswith("5 x ") and "content checker" in reason
    assert reason.endswith(" (shot-001, shot-002, shot-004 and 2 more)")
    assert f"\n  {reason}\n" in ran.stderr
    # `retry` would buy the same refused prompts again: the rows need an edit
    assert json.loads(ran.stdout)["next_command"] == (
        "fix the failed rows in the sheet (the provider refused what they ask: `batchrunner "
        f"status --ledger {tmp_path / 'ledger.db'}`), then run the same command: a fixed row is "
        "sent as edited"
    )
    single = write_manifest(tmp_path / "one.csv", [shots[3]])
    args = run_args(shared_sim, tmp_path, single, "--ledger", str(tmp_path / "one.db"))
    alone = CliRunner().invoke(cli, [*args, "--json"], env=ENV)
    (reason,) = json.loads(alone.stdout)["reasons"]
    assert reason.startswith("shot-004: ") and "content checker" in reason


def test_a_failure_of_the_provider_s_own_is_retried_a_refused_field_is_edited(
    tmp_path: Path,
) -> None:
    from batchrunner.jobs import NewJob
    from batchrunner.ledger import Ledger
    from batchrunner.report import Summary
    from batchrunner.states import JobState

    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.add_jobs([NewJob(f"j{n}", "fal-ai/veo3.1", {"prompt": "a fox"}) for n in (1, 2)])
        ledger.transition("j1", JobState.FAILED, error="prompt: flagged by a content checker")
        assert Summary.from_ledger(ledger).next_command.startswith("fix the failed rows")
        ledger.transition("j2", JobState.FAILED, error="the provider failed: internal error")
        assert Summary.from_ledger(ledger).next_command == (
            f"`batchrunner status --ledger {tmp_path / 'l.db'}` to see why, then "
            f"`batchrunner retry --ledger {tmp_path / 'l.db'}`"
        )


def test_status_lists_jobs_with_their_ids_in_one_column(
    shared_sim: SimulatorServer, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(10))
    assert CliRunner().invoke(cli, run_args(shared_sim, tmp_path, manifest), env=ENV).exit_code == 0
    listed = CliRunner().invoke(cli, ["status", "--ledger", str(tmp_path / "ledger.db"), "--all"])
    lines = [line for line in listed.output.splitlines() if "  done  row " in line]
    assert len(lines) == 10 and lines[0].endswith("row 1   shot-001")
    assert len({line.index("shot-") for line in lines}) == 1, lines


def test_status_runs_of_a_ledger_no_batch_has_used_yet(tmp_path: Path) -> None:
    from batchrunner.ledger import Ledger

    with Ledger.open(tmp_path / "l.db"):
        pass
    said = CliRunner().invoke(cli, ["status", "--ledger", str(tmp_path / "l.db"), "--runs"])
    assert said.exit_code == 0 and said.output.endswith("\nruns: none yet\n"), said.output


def test_a_terminal_that_says_it_has_no_width_gets_bars_80_columns_wide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new pseudo-terminal is 0 × 0 until sized (``docker run -t`` before it is, some
    editors' shells): tqdm sized the bars on stderr to it and drew nothing at all."""
    import os
    import re
    import sys

    main, side = os.openpty()
    with os.fdopen(side, "w", encoding="utf-8") as terminal:
        assert os.get_terminal_size(side).columns == 0
        monkeypatch.setattr(sys, "stderr", terminal)
        progress = Progress()
        assert progress.enabled
        progress.start(2)
        progress("submitted")
        progress.close()
    written = b""
    with contextlib.suppress(OSError):  # EIO: read to where the closed side ended
        while chunk := os.read(main, 65536) if _readable(main) else b"":
            written += chunk
    os.close(main)
    lines = [
        line
        for line in re.sub(r"\x1b\[A", "", written.decode()).replace("\r", "\n").splitlines()
        if line.strip()
    ]
    assert any("submitted:  50%" in line for line in lines), lines
    assert all(len(line) == 80 for line in lines), lines


def _readable(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0.5)[0])


def test_the_submitted_bar_shows_what_the_run_has_committed(
    shared_sim: SimulatorServer, tmp_path: Path
) -> None:
    """Every clip costs money: the bar says what this run has committed as it submits."""
    from batchrunner import batch
    from tests.helpers import settings_for

    stream = io.StringIO()
    progress = Progress(stream=stream, enabled=True)
    manifest = write_manifest(tmp_path / "m.csv", rows(3))
    summary = batch.run_manifest(
        manifest, settings_for(shared_sim, tmp_path), token=TOKEN, observe=progress
    )
    progress.close()
    assert summary.exit_code == 0 and summary.run_spend_usd == 4.80  # 3 x 4 s with audio
    text = stream.getvalue()
    assert "submitted: 100%" in text and "3/3 [" in text and "jobs/s, $4.80]" in text


def test_resume_and_retry_show_the_progress_bars_run_shows(
    shared_sim: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`resume` of a night's batch stopped by its budget drew nothing on the terminal while it
    submitted and downloaded: only `run` made its bars."""
    from batchrunner import report

    shown: list[io.StringIO] = []

    class OnATerminal(Progress):
        def __init__(self) -> None:
            shown.append(io.StringIO())
            super().__init__(stream=shown[-1], enabled=True)

    monkeypatch.setattr(report, "Progress", OnATerminal)
    shots = rows(3)
    shots[0]["prompt"] += " #policy"
    manifest = write_manifest(tmp_path / "m.csv", shots)
    args = run_args(shared_sim, tmp_path, manifest, "--budget", "1.60")
    assert CliRunner().invoke(cli, args, env=ENV).exit_code == 75
    db = str(tmp_path / "ledger.db")
    resumed = CliRunner().invoke(cli, ["resume", "--ledger", db, "--budget", "10"], env=ENV)
    assert resumed.exit_code == 1, resumed.output  # the #policy row failed
    retried = CliRunner().invoke(cli, ["retry", "--ledger", db], env=ENV)
    assert retried.exit_code == 1, retried.output  # and fails again
    assert len(shown) == 3
    assert "downloaded: 100%" in shown[1].getvalue() and "2/2 [" in shown[1].getvalue()
    assert "submitted: 100%" in shown[2].getvalue() and "1/1 [" in shown[2].getvalue()


def test_a_rehearsal_and_a_real_batch_never_share_a_ledger(
    shared_sim: SimulatorServer, tmp_path: Path
) -> None:
    """`run --simulate` on shots.db, then the real run on shots.db: the real run took the
    simulator's clips as bought, bought nothing and exited 0. The other way round, a rehearsal
    would finish a real ledger's pending jobs with simulated clips. Both are refused, nothing
    sent."""
    manifest = write_manifest(tmp_path / "m.csv", rows(2))
    rehearsal = ["run", str(manifest), "--simulate", "--ledger", str(tmp_path / "r.db")]
    assert CliRunner().invoke(cli, [*rehearsal, "--out", str(tmp_path / "r")]).exit_code == 0
    real = run_args(shared_sim, tmp_path, manifest, "--ledger", str(tmp_path / "r.db"))
    before = counters(shared_sim)["submits"]
    refused = CliRunner().invoke(cli, real, env=ENV)
    assert refused.exit_code == 2, refused.output
    assert "holds 2 jobs made by the simulator (a --simulate rehearsal)" in refused.stderr
    assert counters(shared_sim)["submits"] == before
    bought = run_args(shared_sim, tmp_path, manifest, "--ledger", str(tmp_path / "b.db"))
    assert CliRunner().invoke(cli, bought, env=ENV).exit_code == 0
    again = ["run", str(manifest), "--simulate", "--ledger", str(tmp_path / "b.db")]
    refused = CliRunner().invoke(cli, [*again, "--out", str(tmp_path / "r")])
    assert refused.exit_code == 2, refused.output
    assert f"holds 2 jobs bought from {shared_sim.url}" in refused.stderr
    assert "Rehearse with a ledger and folder of its own" in refused.stderr


def test_a_rehearsal_s_deleted_video_is_fetched_again_not_lost(tmp_path: Path) -> None:
    """Each `--simulate` run starts its simulator on a new port: a video deleted after a
    rehearsal was fetched from the old, closed one, and its job stayed `completed` for good;
    the README's "a deleted video is fetched again" could not be rehearsed."""
    from batchrunner.ledger import Ledger

    manifest = write_manifest(tmp_path / "m.csv", rows(2))
    db, out = tmp_path / "r.db", tmp_path / "out"
    rehearsal = ["run", str(manifest), "--simulate", "--ledger", str(db), "--out", str(out)]
    assert CliRunner().invoke(cli, rehearsal).exit_code == 0
    (first, *_) = sorted(out.glob("*.mp4"))
    kept = first.read_bytes()
    first.unlink()
    resumed = CliRunner().invoke(cli, ["resume", "--ledger", str(db), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["downloaded"] == 1 and first.read_bytes() == kept
    with Ledger.open(db, create=False) as ledger:
        assert {job.state.value for job in ledger.jobs()} == {"done"}


def test_an_export_names_videos_and_posters_by_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--ledger shots.db` given relative: the export's `output_path` was absolute and its
    `poster` relative to the folder the run started in, which a script elsewhere cannot open."""
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path / "m.csv", rows(1))
    ran = ["run", "m.csv", "--simulate", "--ledger", "shots.db", "--out", "videos"]
    assert CliRunner().invoke(cli, ran).exit_code == 0
    assert manifest.exists()
    assert CliRunner().invoke(cli, ["export", "--ledger", "shots.db", "-o", "x.csv"]).exit_code == 0
    (job,) = pd.read_csv(tmp_path / "x.csv").to_dict("records")
    assert Path(job["output_path"]).is_absolute() and Path(job["poster"]).is_absolute()
    assert Path(job["poster"]).is_file()


def test_progress_is_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream)
    progress.start(5)
    progress("submitted")
    progress.close()
    assert stream.getvalue() == ""


def test_an_edited_row_with_the_same_id_is_refused_before_anything_is_sent(
    shared_sim: SimulatorServer, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", rows(2))
    assert CliRunner().invoke(cli, run_args(shared_sim, tmp_path, manifest), env=ENV).exit_code == 0
    edited = rows(3)
    edited[1]["prompt"] = "a completely different shot"
    write_manifest(manifest, edited)
    before = counters(shared_sim)["submits"]
    result = CliRunner().invoke(cli, run_args(shared_sim, tmp_path, manifest), env=ENV)
    assert result.exit_code == 2
    assert "row 2" in result.output and "'shot-002' is already in the ledger" in result.output
    assert counters(shared_sim)["submits"] == before  # not even the new row 3


def test_validate_reads_the_named_excel_sheet(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame({"notes": ["not the shots"]}).to_excel(
            writer, sheet_name="readme", index=False
        )
        pd.DataFrame(rows(3)).to_excel(writer, sheet_name="Day 2", index=False)
    first = CliRunner().invoke(cli, ["validate", str(path)])
    assert first.exit_code == 2 and "no 'prompt' column" in first.output
    named = CliRunner().invoke(cli, ["validate", str(path), "--sheet", "Day 2"])
    assert named.exit_code == 0, named.output
    assert "3 rows OK; estimated cost $4.80" in named.output


def test_an_export_keeps_whole_numbers_whole_beside_jobs_that_lack_them(tmp_path: Path) -> None:
    """A take's seed, a done job's bytes and frame size, beside a pending job that has none:
    pandas made them floats, and a seed copied back into a sheet read ``723923284.0``."""
    from batchrunner.jobs import NewJob
    from batchrunner.ledger import Ledger
    from batchrunner.states import JobState

    ledger = tmp_path / "l.db"
    with Ledger.open(ledger) as opened:
        opened.start_run("run")
        opened.add_jobs(
            NewJob(job_id=job_id, endpoint="fal-ai/veo3/image-to-video", row=1, variant=label,
                   input={"prompt": "a fox", **({"seed": 723923284} if label else {})})
            for job_id, label in (("fox", ""), ("fox~t2", "t2"))
        )  # fmt: skip
        for state in (JobState.SUBMITTING, JobState.QUEUED, JobState.COMPLETED):
            opened.transition("fox~t2", state)
        media = {"duration": 8.0, "width": 1280, "height": 720, "audio": True}
        opened.transition("fox~t2", JobState.DONE, bytes=65536, media=media)
    for suffix in (".csv", ".xlsx"):
        target = tmp_path / f"jobs{suffix}"
        result = CliRunner().invoke(cli, ["export", "--ledger", str(ledger), "-o", str(target)])
        assert result.exit_code == 0, result.output
    text = (tmp_path / "jobs.csv").read_text()
    assert ",723923284," in text and ",65536," in text and ",1280,720," in text
    assert "723923284.0" not in text and "65536.0" not in text and "1280.0" not in text
    sheet = pd.read_excel(tmp_path / "jobs.xlsx", dtype=object).set_index("job_id")
    assert sheet.loc["fox~t2", "seed"] == 723923284 and pd.isna(sheet.loc["fox", "seed"])
    assert isinstance(sheet.loc["fox~t2", "bytes"], int)
    assert sheet.loc["fox~t2", "media_duration"] == 8.0


@pytest.mark.parametrize(
    ("command", "broken", "said"),
    [
        (["plan", "{m}"], "load", "interrupted\n"),
        (["run", "{m}", "--json"], "run_manifest",
         "interrupted: what was sent is recorded; run the same command again to carry on\n"),
        (["resume", "--ledger", "{l}"], "resume",
         "interrupted: what was sent is recorded; `batchrunner resume --ledger {l}` carries on\n"),
    ],
)  # fmt: skip
def test_a_ctrl_c_outside_the_batch_loop_says_what_it_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], broken: str, said: str
) -> None:
    """The batch loop stops cleanly on Ctrl-C and sums up; a Ctrl-C before it (reading a big
    manifest, recording its rows) reaches the CLI, which says what it left: `plan` changed
    nothing, a `run` is carried on by the same command (not `resume`, which would carry on
    the ledger's previous run and leave the manifest's new rows out)."""
    from batchrunner import batch

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, broken, interrupted)
    manifest = write_manifest(tmp_path / "m.csv", rows(2))
    ledger = tmp_path / "l.db"
    args = [a.format(m=manifest, l=ledger) for a in command]
    result = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": TOKEN})
    assert result.exit_code == 130
    assert result.stderr == said.format(l=ledger)
    if "--json" in args:
        assert json.loads(result.stdout) == {"exit_code": 130, "error": said.strip()}


def test_rows_buys_only_the_rows_taken_and_the_plain_command_the_rest(tmp_path: Path) -> None:
    """`--rows` tries a few rows before the batch, or buys one alone: only those are
    recorded and bought, rows an earlier run recorded are left alone by it (and by a `resume`
    of it, which goes on with what it took), and the plain command then buys the rest, none
    twice."""
    with SimulatorServer(fast_config(run_seconds=0.2)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(6))
        ledger = str(tmp_path / "ledger.db")
        env = {"BATCHRUNNER_API_KEY": TOKEN}

        def run(*extra: str) -> str:
            result = CliRunner().invoke(
                cli, [*run_args(server, tmp_path, manifest), *extra], env=env
            )
            assert result.exit_code in (0, 75), result.output
            return result.output

        run("--run-budget", "3.20")  # rows 1 and 2 bought, 3 to 6 recorded and pending
        assert counters(server)["submits"] == 2
        plan = CliRunner().invoke(cli, ["plan", str(manifest), "--ledger", ledger, "--rows", "5"])
        assert plan.output.startswith(f"{manifest}: 1 row (--rows 5 of 6) -> 1 job")
        assert "to submit: 1 job, $1.60" in plan.output
        run("--rows", "5")
        assert counters(server)["submits"] == 3
        status = CliRunner().invoke(cli, ["status", "--ledger", ledger]).output
        assert "5 jobs are outside the last run's --rows 5 (left alone): " in status
        assert "no longer in the manifest" not in status
        resumed = CliRunner().invoke(cli, ["resume", "--ledger", ledger], env=env)
        assert resumed.exit_code == 0, resumed.output  # done with what it took
        assert "6 jobs: 3 pending (3 left alone: outside --rows 5, never sent), 3 done" in (
            resumed.output
        )
        assert counters(server)["submits"] == 3
        run()
        assert counters(server)["submits"] == 6
        done = json.loads(CliRunner().invoke(cli, ["status", "--ledger", ledger, "--json"]).output)
        assert done["counts"] == {"done": 6} and done["not_in_manifest_total"] == 0
        again = CliRunner().invoke(cli, [*run_args(server, tmp_path, manifest), "--rows", "7-9"])
        assert again.exit_code == 2 and again.output == (
            "error: --rows 7-9: the manifest has no such rows (its rows are numbered 1-6, as "
            "`plan` and errors number them)\n"
        )


def test_the_progress_display_says_what_the_provider_says_of_the_jobs_in_flight() -> None:
    """Queue places and log lines from the status streams feed the display: under the bars,
    how many jobs wait in the provider's queue (and the nearest one's place), how many run,
    and the latest log line; a finished job leaves the count."""
    stream = io.StringIO()
    progress = Progress(stream=stream, enabled=True)
    progress.SAID_EVERY = 0.0  # every status redrawn, for the test
    progress.start(3)

    def status(kind: str, place: int | None = None, log: str | None = None) -> QueueStatus:
        logs = [{"message": log, "level": "INFO"}] if log else None
        return QueueStatus(kind, place, None, None, logs, {})  # type: ignore[arg-type]

    progress.status("a", status("IN_QUEUE", 4))
    progress.status("b", status("IN_QUEUE", 2))
    progress.status(
        "c", status("IN_PROGRESS", log="Rendering frames 12-24 of the second shot, take 1")
    )
    assert progress.said() == (
        "queued 2 (next at position 2), running 1: Rendering frames 12-24 of the second sh…"
    )
    progress.status("d", status("IN_QUEUE", 0))  # fal counts from 0: it starts next
    assert progress.said().startswith("queued 3 (next in line), running 1")
    progress.status("d", status("COMPLETED"))
    progress.status("b", status("IN_PROGRESS"))
    progress.status("c", status("COMPLETED"))
    progress.close()
    assert progress.said() == "queued 1 (next at position 4), running 1: " + (
        "Rendering frames 12-24 of the second sh…"
    )
    assert "queued 2 (next at position 2), running 1" in stream.getvalue()


def test_with_errors_the_warnings_come_after_them_marked_as_warnings(tmp_path: Path) -> None:
    """Five lines that all read like problems, under "2 problem(s)", left a newcomer guessing
    which two: the errors come first, and what only warns says so."""
    path = write_manifest(
        tmp_path / "m.csv", [{"subject": "fox", "image_url": IMAGE, "notes": "keep"}]
    )
    result = CliRunner().invoke(cli, ["plan", str(path), "--prompt-template", "{subject}, {mood}"])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines == [
        f"{path}: column 'mood': the prompt template uses {{mood}}, but there is no 'mood' "
        "column; columns found: 'subject', 'image_url', 'notes'",
        f"{path}: warning: column 'notes': unknown column, kept as metadata and not sent to "
        "the model",
        f"error: {path}: 1 problem; nothing was submitted",
    ]


@pytest.mark.parametrize("name", ["shots.csv", "shots.db", "day.log.xlsx", "0001-a.mp4", "ledger"])
def test_a_log_file_that_is_a_manifest_a_ledger_or_a_video_is_refused(
    tmp_path: Path, name: str
) -> None:
    """``--log-file shots.csv`` (the manifest itself) appended log lines to the sheet, and the
    next night bought each line as a row; a ledger or a video would be broken the same way.
    Refused before anything is read or sent, nothing written to it."""
    target = tmp_path / name
    if name == "ledger":  # no telling suffix: a SQLite file all the same
        sqlite3.connect(target).execute("create table t (x)").connection.close()
    else:
        target.write_text("id,prompt\nfox,a red fox\n")
    before = target.read_bytes()
    manifest = write_manifest(tmp_path / "m.csv", rows(1))
    for where in ("before", "after"):
        args = ["validate", str(manifest), "--log-file", str(target)]
        if where == "before":
            args = ["--log-file", str(target), "validate", str(manifest)]
        refused = CliRunner().invoke(cli, args)
        assert refused.exit_code == 2, refused.output
        assert "a log's lines are added to its end: name it" in refused.output
        assert target.read_bytes() == before
    fine = CliRunner().invoke(
        cli, ["validate", str(manifest), "--log-file", str(tmp_path / "r.log")]
    )
    assert fine.exit_code == 0, fine.output


def test_validate_says_when_a_price_is_unknown_or_unconfirmed(tmp_path: Path) -> None:
    """``validate`` said "estimated cost $0.00" for jobs without a price (a model outside the
    registry) and nothing of a price only inferred, both of which ``plan`` says."""
    manifest = write_manifest(tmp_path / "m.csv", [{"id": "a", "prompt": "a fox"}])
    unconfirmed = CliRunner().invoke(
        cli, ["validate", str(manifest), "--model", "fal-ai/veo3.1/fast"]
    )
    assert unconfirmed.exit_code == 0, unconfirmed.output
    assert "estimated cost $1.20; price unconfirmed for fal-ai/veo3.1/fast" in unconfirmed.output
    unregistered = ["validate", str(manifest), "--model", "acme/x/v1", "--allow-unregistered"]
    unknown = CliRunner().invoke(cli, unregistered)
    assert "1 row OK; estimated cost unknown (1 job without a price)" in unknown.output
    said = json.loads(CliRunner().invoke(cli, [*unregistered, "--json"]).stdout)
    assert (said["cost_usd"], said["unpriced_jobs"]) == (None, 1)
