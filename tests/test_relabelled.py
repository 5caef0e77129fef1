"""Jobs the ledger holds under another label: changing --count or --matrix, or running --count
after a gallery re-roll, buys only what is missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchrunner import batch
from batchrunner.cli import cli
from batchrunner.expand import Expansion
from batchrunner.ledger import Ledger
from batchrunner.manifest import load_manifest
from batchrunner.models import get_model
from batchrunner.planner import make_plan
from batchrunner.relabelled import split_label
from batchrunner.simulator import SimulatorServer
from batchrunner.states import JobState
from tests.helpers import IMAGE, TOKEN, counters, settings_for, write_manifest

SHEETS = {
    "ids and outputs": [
        {"id": "fox", "prompt": "a fox", "image_url": IMAGE, "duration": "4s", "output": "fox"},
        {"id": "owl", "prompt": "an owl", "image_url": IMAGE, "duration": "4s", "output": ""},
    ],
    "no id column": [
        {"prompt": "a fox", "image_url": IMAGE, "duration": "4s"},
        {"prompt": "an owl", "image_url": IMAGE, "duration": "4s"},
    ],
    "a seed column": [
        {"prompt": "a fox", "image_url": IMAGE, "duration": "4s", "seed": "7"},
        {"prompt": "an owl", "image_url": IMAGE, "duration": "4s", "seed": "9"},
    ],
}


def run(sim: SimulatorServer, tmp_path: Path, manifest: Path, count: int, **more: Any) -> int:
    """Run ``manifest`` with ``--count count`` (and other expansion); the submits it made."""
    before = counters(sim)["submits"]
    expansion = Expansion(count=count, **more)
    summary = batch.run_manifest(
        manifest, settings_for(sim, tmp_path), expansion=expansion, token=TOKEN
    )
    assert summary.exit_code == 0
    return int(counters(sim)["submits"] - before)


def to_submit(tmp_path: Path, manifest: Path, count: int, **more: Any) -> int:
    """What ``plan`` says ``run --count count`` would submit."""
    loaded = load_manifest(
        manifest, get_model("fal-ai/veo3/image-to-video"), expansion=Expansion(count=count, **more)
    )
    return make_plan(loaded, tmp_path / "ledger.db").to_submit


@pytest.mark.parametrize("sheet", SHEETS)
def test_raising_count_from_1_to_2_buys_one_more_take_of_each_row(
    sim: SimulatorServer, tmp_path: Path, sheet: str
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", SHEETS[sheet])
    assert run(sim, tmp_path, manifest, count=1) == 2
    assert to_submit(tmp_path, manifest, count=2) == 2  # what `plan` says, `run` does
    assert run(sim, tmp_path, manifest, count=2) == 2  # take 2 of each; take 1 is bought
    assert run(sim, tmp_path, manifest, count=1) == 0
    assert run(sim, tmp_path, manifest, count=3) == 2
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        jobs = list(ledger.jobs())
    assert len(jobs) == 6 and all(job.state is JobState.DONE for job in jobs)
    assert sorted(job.variant for job in jobs) == ["", "", "t2", "t2", "t3", "t3"]
    if sheet == "ids and outputs":
        videos = sorted(path.name for path in (tmp_path / "out").glob("*.mp4"))
        assert videos == [
            "0001-fox.mp4", "0001-fox~t2.mp4", "0001-fox~t3.mp4",
            "0002-owl.mp4", "0002-owl~t2.mp4", "0002-owl~t3.mp4",
        ]  # fmt: skip


@pytest.mark.parametrize("sheet", SHEETS)
def test_lowering_count_to_1_buys_nothing(sim: SimulatorServer, tmp_path: Path, sheet: str) -> None:
    manifest = write_manifest(tmp_path / "m.csv", SHEETS[sheet])
    assert run(sim, tmp_path, manifest, count=2) == 4
    assert to_submit(tmp_path, manifest, count=1) == 0
    assert run(sim, tmp_path, manifest, count=1) == 0  # the nightly command, without --count
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        jobs = list(ledger.jobs())
    assert sorted(job.variant for job in jobs) == ["t1", "t1", "t2", "t2"]
    if sheet == "ids and outputs":
        fox = next(job for job in jobs if job.job_id == "fox~t1")
        assert fox.output_name == "fox~t1.mp4"  # the one take keeps the name it was saved by


def test_a_take_bought_by_a_gallery_reroll_is_that_take_of_count(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", SHEETS["ids and outputs"])
    assert run(sim, tmp_path, manifest, count=1) == 2
    (tmp_path / "ids.txt").write_text("fox\n")
    rerolled = CliRunner().invoke(
        cli,
        [
            "retry",
            "--ledger",
            str(tmp_path / "ledger.db"),
            "--ids",
            str(tmp_path / "ids.txt"),
            "--new-take",
        ],
        env={"BATCHRUNNER_API_KEY": TOKEN},
    )
    assert rerolled.exit_code == 0, rerolled.output
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        reroll = ledger.get("fox~t2")
    assert reroll.take_of == "fox" and reroll.state is JobState.DONE
    # take 2 of --count 2 is the re-roll (its seed is retry's): only owl~t2 is bought
    assert to_submit(tmp_path, manifest, count=2) == 1
    assert run(sim, tmp_path, manifest, count=2) == 1
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        assert ledger.get("fox~t2").input == reroll.input
        assert ledger.counts() == {JobState.DONE: 4}


def test_a_matrix_of_a_fields_default_buys_only_the_new_values(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """``--matrix resolution=720p,1080p`` after a run at the default 720p: ``fox~720p`` is
    ``fox``, not the same video bought again (nor a row refused as renamed); with --count 2 as
    well, each take is the recorded take of the same number."""
    manifest = write_manifest(tmp_path / "m.csv", SHEETS["ids and outputs"])
    both = (("resolution", ("720p", "1080p")),)
    assert run(sim, tmp_path, manifest, count=1) == 2
    assert to_submit(tmp_path, manifest, count=1, matrix=both) == 2
    assert run(sim, tmp_path, manifest, count=1, matrix=both) == 2  # the 1080p ones
    assert run(sim, tmp_path, manifest, count=2, matrix=both) == 4  # take 2 of each
    assert run(sim, tmp_path, manifest, count=2) == 0  # the 720p takes 1 and 2 are bought
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        jobs = {job.job_id: job for job in ledger.jobs()}
    assert sorted(jobs) == [
        "fox", "fox~1080p", "fox~1080p~t2", "fox~720p~t2",
        "owl", "owl~1080p", "owl~1080p~t2", "owl~720p~t2",
    ]  # fmt: skip
    assert all(job.state is JobState.DONE for job in jobs.values())


def test_an_edited_row_is_no_first_take_of_its_old_request(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """Only a job asking what the row asks (the seed aside) is its take: an edited prompt with
    a new --count is the new takes it asks for, as a new id would be."""
    sheet: list[dict[str, Any]] = [dict(row) for row in SHEETS["no id column"]]
    manifest = write_manifest(tmp_path / "m.csv", sheet)
    assert run(sim, tmp_path, manifest, count=1) == 2
    sheet[0]["prompt"] = "a red fox"
    write_manifest(manifest, sheet)
    assert run(sim, tmp_path, manifest, count=2) == 3  # both takes of the edited row, owl's t2
    shown = CliRunner().invoke(cli, ["status", "--ledger", str(tmp_path / "ledger.db"), "--json"])
    assert json.loads(shown.stdout)["counts"] == {"done": 5}


def test_take_labels_split_into_matrix_values_and_take() -> None:
    assert split_label("16:9~t2") == ("16:9", 2)
    assert split_label("t1") == ("", 1)
    assert split_label("16:9~1080p") == ("16:9~1080p", None)
    assert split_label("") == ("", None)


def test_plan_writes_the_bodies_run_would_send_for_jobs_held_under_another_label(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    """After ``--count 2``, the nightly command without it plans take 1 as ``fox~t1`` (bought):
    ``plan -o`` writes that job's id and request, as ``plan`` and ``run`` see it."""
    manifest = write_manifest(tmp_path / "m.csv", SHEETS["ids and outputs"])
    assert run(sim, tmp_path, manifest, count=2) == 4
    bodies = tmp_path / "bodies.jsonl"
    args = ["plan", str(manifest), "--ledger", str(tmp_path / "ledger.db"), "-o", str(bodies)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in bodies.read_text().splitlines()]
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        held = {job.job_id: job for job in ledger.jobs()}
    assert [(body["job_id"], body["variant"]) for body in written] == [
        ("fox~t1", "t1"),
        ("owl~t1", "t1"),
    ]
    assert all(body["input"] == held[body["job_id"]].input for body in written)
