"""The gallery page as written: self-contained, relative links, safe with any prompt, facets.

How it behaves in a browser is in ``test_gallery_browser.py``.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from batchrunner import gallery
from batchrunner.cli import cli
from batchrunner.jobs import NewJob
from batchrunner.ledger import Ledger
from batchrunner.simulator.clips import MediaShape, clip_bytes
from batchrunner.states import JobState
from tests.helpers import IMAGE, page_data

ROOT = Path(__file__).resolve().parent.parent
VEO3 = "fal-ai/veo3/image-to-video"
EVIL = 'Night </script><script>alert("x")</script> <img src=x onerror=alert(1)> & "quotes"'


def make_ledger(tmp_path: Path) -> Path:
    image = tmp_path / "in" / "fox.png"
    image.parent.mkdir()
    image.write_bytes((ROOT / "manifests/images/lighthouse.png").read_bytes())
    files = {"image_url": {"path": str(image), "sha256": "cd" * 32, "size": 1, "mime": "image/png"}}
    path = tmp_path / "state" / "l.db"
    with Ledger.open(path) as ledger:
        ledger.start_run("run", options={"out": str(tmp_path / "videos")})
        ledger.add_jobs(
            NewJob(
                job_id=f"j{i}", endpoint=VEO3, row=i, variant="",
                input={"prompt": EVIL if i == 1 else f"Shot {i}", "duration": "4s",
                       "image_url": str(image) if i == 1 else IMAGE,
                       "aspect_ratio": "9:16" if i % 2 else "16:9"},
                files=files if i == 1 else {}, metadata={"client": "acme"}, price_usd=1.6,
            )
            for i in (1, 2, 3)
        )  # fmt: skip
        video = tmp_path / "videos" / "0001 fox.mp4"
        video.parent.mkdir()
        video.write_bytes(b"not checked here")
        for state in (JobState.SUBMITTING, JobState.QUEUED, JobState.COMPLETED):
            ledger.transition("j1", state)
        ledger.transition(
            "j1", JobState.DONE, output_path=str(video), warnings=["duration 2 s, asked for 4 s"],
            media={"duration": 2.0, "width": 720, "height": 1280, "audio": True,
                   "video_codec": "h264", "audio_codec": "aac"},
        )  # fmt: skip
        ledger.transition("j2", JobState.FAILED, error="bad <b>")
        ledger.finish_run(1, {})
    return path


def test_the_page_is_self_contained_and_links_relative(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    written = gallery.report(ledger)
    assert written == tmp_path / "videos" / "report.html"  # the last run's --out
    html = written.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"?https?:", html)  # no CDN
    assert html.count("</script>") == 2  # the prompt cannot close the data block
    cards = {c["id"]: c for c in page_data(html)["cards"]}
    assert cards["j1"]["prompt"] == EVIL
    assert cards["j1"]["video"] == "0001%20fox.mp4"
    assert cards["j1"]["warnings"] == ["duration 2 s, asked for 4 s"]
    assert cards["j1"]["media"] == {
        "duration": 2.0, "width": 720, "height": 1280, "audio": True, "codecs": "h264/aac",
    }  # fmt: skip
    (thumb,) = cards["j1"]["inputs"]
    assert (thumb["href"], thumb["label"]) == ("../in/fox.png", "fox.png")
    assert thumb["src"] == "../state/l.db.media/thumbs/" + "cd" * 10 + ".jpg"
    assert (tmp_path / "state/l.db.media/thumbs").is_dir()
    assert cards["j2"]["inputs"] == [
        {"src": IMAGE, "href": IMAGE, "name": "image_url", "label": "veo3-i2v-input.png"}
    ]
    assert (cards["j2"]["state"], cards["j2"]["error"], cards["j2"]["video"]) == (
        "failed",
        "bad <b>",
        None,
    )
    data = page_data(html)
    assert data["facets"] == {"aspect_ratio": [["9:16", 2], ["16:9", 1]]}  # "client" never varies
    assert data["summary"]["counts"] == {"pending": 1, "done": 1, "failed": 1}
    assert data["summary"]["warned"] == 1 and data["summary"]["models"] == [VEO3]


def test_a_poster_deleted_by_hand_is_left_out_not_linked(tmp_path: Path) -> None:
    """``LEDGER.media`` deleted to save space: the cards showed a broken image where the poster
    was; a card without one is a play button on a blank frame, as for a clip never checked."""
    ledger = make_ledger(tmp_path)
    poster = tmp_path / "state" / "l.db.media" / "posters" / "j1.jpg"
    poster.parent.mkdir(parents=True)
    poster.write_bytes(b"a jpeg")
    with Ledger.open(ledger, create=False) as opened:
        opened.db.execute("update jobs set poster = ? where job_id = 'j1'", [str(poster)])
        opened.db.conn.commit()
    shown = {c["id"]: c for c in page_data(gallery.report(ledger).read_text())["cards"]}
    assert shown["j1"]["poster"] == "../state/l.db.media/posters/j1.jpg"
    poster.unlink()
    gone = {c["id"]: c for c in page_data(gallery.report(ledger).read_text())["cards"]}
    assert gone["j1"]["poster"] is None and gone["j1"]["video"] == "0001%20fox.mp4"


def test_report_command_writes_where_asked_and_explains_a_missing_ledger(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    target = tmp_path / "review" / "day2.html"
    result = CliRunner().invoke(cli, ["report", "--ledger", str(ledger), "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert page_data(target.read_text())["cards"][0]["video"] == "../videos/0001%20fox.mp4"
    missing = CliRunner().invoke(cli, ["report", "--ledger", str(tmp_path / "nope.db")])
    assert missing.exit_code == 2 and "no ledger at" in missing.output


def test_a_gallery_that_cannot_be_written_costs_only_the_gallery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger_path = make_ledger(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with Ledger.open(ledger_path, create=False) as ledger:
        assert gallery.write_after_run(ledger, blocker / "out") is None
    assert "could not write the review gallery" in caplog.text


def test_a_ledger_from_before_media_checks_opens_and_shows(tmp_path: Path) -> None:
    """m005 on an m004 ledger: the new columns read as empty, the page still renders."""
    path = make_ledger(tmp_path)
    with sqlite3.connect(path) as db:  # roll the file back to the previous schema
        db.execute("delete from _sqlite_migrations where name = 'm005_jobs_media'")
        for column in ("media", "warnings", "poster", "take_of"):
            db.execute(f"alter table jobs drop column {column}")
    with Ledger.open(path) as ledger:
        assert ledger.get("j1").warnings == [] and ledger.get("j1").media is None
        assert ledger.get("j1").take_of is None
    cards = page_data(gallery.report(path).read_text())["cards"]
    assert [c["id"] for c in cards] == ["j1", "j2", "j3"]


def test_a_deleted_poster_is_made_again_from_its_video(tmp_path: Path) -> None:
    """``LEDGER.media`` deleted (or the ledger copied without it), or a poster that could not be
    saved at the time: the page makes each done job's poster again from its video, where the
    run saves posters, so the review shows frames, not blank cards."""
    ledger = make_ledger(tmp_path)
    (tmp_path / "videos" / "0001 fox.mp4").write_bytes(clip_bytes(MediaShape("9:16", 4.0, True)))
    poster = tmp_path / "state" / "l.db.media" / "posters" / "j1.jpg"
    for recorded in (None, str(tmp_path / "elsewhere" / "j1.jpg")):
        shutil.rmtree(poster.parent.parent, ignore_errors=True)
        with Ledger.open(ledger, create=False) as opened:
            opened.db.execute("update jobs set poster = ? where job_id = 'j1'", [recorded])
            opened.db.conn.commit()
        shown = {c["id"]: c for c in page_data(gallery.report(ledger).read_text())["cards"]}
        assert shown["j1"]["poster"] == "../state/l.db.media/posters/j1.jpg", recorded
        with Image.open(poster) as made:
            assert made.format == "JPEG" and made.size == (180, 320)
        assert shown["j2"]["poster"] is None  # not done: nothing to show
    assert sorted(p.name for p in poster.parent.iterdir()) == ["j1.jpg"]
