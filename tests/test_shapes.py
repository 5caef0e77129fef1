"""Every input shape runs end to end against the simulator, and the clips follow the request.

Text-to-video (no image), image-to-video with a local image, first/last frame with two local
images, reference-to-video with a list cell (``a | b`` and a JSON list), each through
``batchrunner run --simulate``; the downloaded MP4s are opened with PyAV.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import av
import pytest
from click.testing import CliRunner

from batchrunner.cli import cli
from batchrunner.ledger import Ledger
from batchrunner.manifest import job_id_for, load_manifest
from batchrunner.models import get_model
from batchrunner.planner import to_jobs
from batchrunner.simulator import SimulatorServer
from batchrunner.simulator.state import body_digest
from tests.helpers import IMAGE, TOKEN, counters, fast_config, run_args, write_manifest

ROOT = Path(__file__).resolve().parent.parent
LIGHTHOUSE = ROOT / "manifests" / "images" / "lighthouse.png"
FRAME = ROOT / "tests" / "manifests" / "bad" / "images" / "frame.png"


def simulate(tmp_path: Path, manifest: Path, model: str) -> dict[str, Any]:
    ledger, out = tmp_path / "l.db", tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["run", str(manifest), "--model", model, "--simulate", "--json",
         "--ledger", str(ledger), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.output.strip().splitlines()[-1])
    return summary


def probe(path: Path) -> tuple[float, float, bool]:
    """(width / height, seconds, has audio) of an MP4, read with PyAV."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        seconds = (container.duration or 0) / av.time_base
        audio = bool(container.streams.audio)
        return video.width / video.height, seconds, audio


def outputs(tmp_path: Path) -> dict[str, Path]:
    with Ledger.open(tmp_path / "l.db", create=False) as ledger:
        return {job.job_id: Path(job.output_path or "") for job in ledger.jobs()}


def test_text_to_video_rows_need_no_image(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path / "t2v.csv",
        [
            {"id": "wide", "prompt": "A storm over the plains"},
            {"id": "tall", "prompt": "A lantern festival", "aspect_ratio": "9:16",
             "duration": 4, "generate_audio": "no"},
        ],
    )  # fmt: skip
    summary = simulate(tmp_path, manifest, "fal-ai/veo3.1")
    assert summary["counts"] == {"done": 2}
    assert summary["spend_usd"] == pytest.approx(3.20 + 0.80)
    assert summary["billed_usd"] == summary["spend_usd"] and summary["billed_jobs"] == 2
    files = outputs(tmp_path)
    assert probe(files["wide"]) == (
        pytest.approx(16 / 9, rel=0.01),
        pytest.approx(8, abs=0.3),
        True,
    )
    assert probe(files["tall"]) == (
        pytest.approx(9 / 16, rel=0.01),
        pytest.approx(4, abs=0.3),
        False,
    )


def test_image_to_video_with_a_local_image(tmp_path: Path) -> None:
    shutil.copy(LIGHTHOUSE, tmp_path / "lighthouse.png")
    manifest = write_manifest(
        tmp_path / "i2v.csv",
        [{"id": "l1", "prompt": "The beam sweeps the sea", "image_url": "lighthouse.png",
          "resolution": "1080p", "duration": "6s"}],
    )  # fmt: skip
    summary = simulate(tmp_path, manifest, "fal-ai/veo3.1/image-to-video")
    assert summary["counts"] == {"done": 1} and summary["spend_usd"] == pytest.approx(2.40)
    assert probe(outputs(tmp_path)["l1"])[1] == pytest.approx(6, abs=0.3)


def test_first_last_frame_with_two_local_images(tmp_path: Path) -> None:
    shutil.copy(LIGHTHOUSE, tmp_path / "first.png")
    shutil.copy(FRAME, tmp_path / "last.png")
    manifest = write_manifest(
        tmp_path / "flf.csv",
        [{"id": "f1", "prompt": "Dawn turns to dusk", "first_frame_url": "first.png",
          "last_frame_url": "last.png", "resolution": "4k"}],
    )  # fmt: skip
    summary = simulate(tmp_path, manifest, "fal-ai/veo3.1/fast/first-last-frame-to-video")
    assert summary["counts"] == {"done": 1} and summary["spend_usd"] == pytest.approx(8 * 0.35)


def test_reference_to_video_with_list_cells(tmp_path: Path) -> None:
    shutil.copy(LIGHTHOUSE, tmp_path / "a.png")
    shutil.copy(FRAME, tmp_path / "b.png")
    manifest = write_manifest(
        tmp_path / "r2v.csv",
        [
            {"id": "piped", "prompt": "The same fox in three seasons",
             "image_urls": f"a.png | b.png | {IMAGE}"},
            {"id": "json", "prompt": "The same owl in two cities",
             "image_urls": json.dumps(["b.png", IMAGE])},
        ],
    )  # fmt: skip
    summary = simulate(tmp_path, manifest, "fal-ai/veo3.1/reference-to-video")
    assert summary["counts"] == {"done": 2}
    spec = get_model("fal-ai/veo3.1/reference-to-video")
    rows = {row.job_id: row for row in load_manifest(manifest, spec).rows}
    assert rows["piped"].payload["image_urls"] == [
        str(tmp_path / "a.png"), str(tmp_path / "b.png"), IMAGE,
    ]  # fmt: skip
    assert set(rows["piped"].files) == {"image_urls[0]", "image_urls[1]"}
    assert set(rows["json"].files) == {"image_urls[0]"}


def test_list_items_are_sent_as_data_uris_and_urls(tmp_path: Path) -> None:
    """Over real sockets: what the server receives for a list cell with local files."""
    shutil.copy(FRAME, tmp_path / "b.png")
    manifest = write_manifest(
        tmp_path / "r2v.csv",
        [{"id": "x", "prompt": "A robot in a garden", "image_urls": f"b.png|{IMAGE}"}],
    )
    with SimulatorServer(fast_config()) as server:
        result = CliRunner().invoke(
            cli,
            [*run_args(server, tmp_path, manifest), "--model", "fal-ai/veo3.1/reference-to-video"],
            env={"BATCHRUNNER_API_KEY": TOKEN},
        )
        assert result.exit_code == 0, result.output
        seen = counters(server)
    (job,) = seen["jobs"].values()
    assert job["endpoint"] == "fal-ai/veo3.1/reference-to-video"
    data = "data:image/png;base64," + base64.b64encode(FRAME.read_bytes()).decode()
    spec = get_model("fal-ai/veo3.1/reference-to-video")
    sent = spec.complete({"prompt": "A robot in a garden", "image_urls": [data, IMAGE]})
    assert seen["submitted_bodies"] == {body_digest(sent): 1}
    with Ledger.open(tmp_path / "ledger.db", create=False) as ledger:
        stored = json.dumps(ledger.get("x").input)
    assert "base64" not in stored and str(tmp_path / "b.png") in stored


def test_job_ids_and_input_hashes_of_existing_ledgers_do_not_change(tmp_path: Path) -> None:
    """Pinned before the registry became data: a cron run on an old ledger must match its rows."""
    manifest = tmp_path / "noid.csv"
    manifest.write_text(
        'prompt,image_url,duration\n"a fox, at dusk",https://example.com/a.png,6\n'
        "plain,https://example.com/b.png,\n"
    )
    jobs = to_jobs(load_manifest(manifest, get_model("fal-ai/veo3/image-to-video")))
    assert {job.job_id: job.input_hash for job in jobs} == {
        "j14504a8c536da0e5": "14504a8c536da0e5bf5689037f35f5bb5c21fc090685415f2382cbc8ba209fc7",
        "j1567f47b65ba526f": "1567f47b65ba526f47cd331cb5e60b798383e4c3a251a4076f60365dffb346b0",
    }
    demo = to_jobs(load_manifest(ROOT / "manifests" / "demo.csv", get_model(jobs[0].endpoint)))
    hashes = {job.job_id: job.input_hash for job in demo}
    assert hashes["shot-01"] == "29813b4f7ed38791c130712db09fe1b5c9e73d168faa3e97f86d2d9e80ad1e6b"
    assert hashes["shot-10"] == "4c76286bae118cb08833d959dda57f96ba54960a71b06fec55b9b3d6de5a5bcf"
    canonical = b'{"endpoint":"fal-ai/veo3/image-to-video","input":{"prompt":"x"}}'
    expected = "j" + hashlib.sha256(canonical).hexdigest()[:16]
    assert job_id_for("fal-ai/veo3/image-to-video", {"prompt": "x"}, {}) == expected
