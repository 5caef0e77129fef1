"""Output paths never leave the output folder, whatever the manifest says."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchrunner.paths import (
    MAX_NAME_BYTES,
    SAFE_NAME_CHARS,
    check_output_name,
    default_output_name,
    output_path,
    safe_name,
    written_whole,
)
from batchrunner.verify import poster_path


@pytest.mark.parametrize(
    "name",
    [
        "../x.mp4",
        "a/../../x.mp4",
        "/etc/passwd",
        "C:\\x.mp4",
        "c:x.mp4",
        "a//b.mp4",
        "",
        " ",
        "./x.mp4",
        "a\\..\\x.mp4",
        "x\x00.mp4",
    ],
)
def test_unsafe_names_are_refused(name: str, tmp_path: Path) -> None:
    assert check_output_name(name) is not None
    with pytest.raises(ValueError):
        output_path(tmp_path, name)


@pytest.mark.parametrize("name", ["clip.mp4", "shots/day1/clip 01.mp4", "été.mp4", "a..b.mp4"])
def test_ordinary_names_stay_inside(name: str, tmp_path: Path) -> None:
    assert check_output_name(name) is None
    assert output_path(tmp_path, name).is_relative_to(tmp_path.resolve())


def test_symlinked_folder_cannot_lead_outside(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "link")
    with pytest.raises(ValueError, match="outside"):
        output_path(out, "link/x.mp4")


def test_a_link_anywhere_below_the_folder_is_followed_and_checked(tmp_path: Path) -> None:
    """Only a path with a link in it is resolved; each kind of link is caught, and a link
    that stays inside leads where it points."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / "day1" / "inner").mkdir(parents=True)
    elsewhere.mkdir()
    os.symlink(elsewhere / "clip.mp4", out / "day1" / "clip.mp4")  # the file itself
    os.symlink(elsewhere, out / "day1" / "inner" / "deep")  # a folder two levels down
    os.symlink(out / "day1", out / "alias")  # a link that stays inside
    for name in ("day1/clip.mp4", "day1/inner/deep/x.mp4"):
        with pytest.raises(ValueError, match="outside"):
            output_path(out, name)
    assert output_path(out, "alias/new.mp4") == out.resolve() / "day1" / "new.mp4"
    assert output_path(out, "day1/inner/new.mp4") == out.resolve() / "day1/inner/new.mp4"
    assert output_path(out, "missing/folder/new.mp4") == out.resolve() / "missing/folder/new.mp4"


@given(st.text(max_size=40))
def test_any_name_either_refused_or_inside(name: str) -> None:
    root = Path("/tmp/batchrunner-out-root")
    try:
        path = output_path(root, name)
    except ValueError:
        return
    assert path.is_relative_to(root.resolve())


def test_default_names_sort_by_row_and_are_safe() -> None:
    assert default_output_name("shot/01", 7) == "0007-shot_01.mp4"
    assert check_output_name(default_output_name("../../etc", 1)) is None


def test_names_made_from_long_ids_fit_a_file_system_and_stay_apart() -> None:
    kept = "k" * SAFE_NAME_CHARS
    assert safe_name(kept) == kept  # what fitted before is named as before
    first, second = safe_name("x" * 300 + "1"), safe_name("x" * 300 + "2")
    assert first != second and len(first) == len(second) == SAFE_NAME_CHARS
    assert len((default_output_name("x" * 300, 123456) + ".part").encode()) <= 255


def test_posters_of_ids_a_file_name_cannot_keep_apart_are_apart(tmp_path: Path) -> None:
    ids = ["猫", "犬", "a/b", "a_b", "owl~16:9~t2", "owl~16_9~t2", "z" * 300, "Shot-1", "shot-1"]
    posters = {poster_path(tmp_path, job_id) for job_id in ids}
    assert len({str(path).lower() for path in posters}) == len(ids)  # apart where case is not
    assert poster_path(tmp_path, "a_b") == tmp_path / "posters" / "a_b.jpg"
    assert all(len(path.name.encode()) <= 250 for path in posters)


@pytest.mark.parametrize(("size", "fits"), [(MAX_NAME_BYTES, True), (MAX_NAME_BYTES + 1, False)])
def test_an_output_name_too_long_for_a_file_system_is_refused(size: int, fits: bool) -> None:
    name = "é" * (size // 2) + "e" * (size % 2)  # bytes, not characters, are what is counted
    assert (check_output_name(f"day1/{name}") is None) is fits
    assert (check_output_name(f"{name}/clip.mp4") is None) is fits


@pytest.mark.anyio
async def test_a_run_never_writes_through_a_symlink_out_of_its_folder(tmp_path: Path) -> None:
    """The run resolves its output folder once; each video's own path is still resolved and
    checked, so a folder inside ``--out`` that links elsewhere fails that download (the result
    is kept) and writes nothing there."""
    import dataclasses

    from batchrunner.ledger import Ledger
    from batchrunner.states import JobState
    from tests import fake_queue

    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "link")
    jobs = [
        dataclasses.replace(job, output_name=name)
        for job, name in zip(
            fake_queue.new_jobs(2), ["link/clip.mp4", "kept/clip.mp4"], strict=True
        )
    ]
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        ledger.add_jobs(jobs)
        async with fake_queue.media() as cdn:
            await fake_queue.runner(ledger, fake_queue.FakeQueue(), cdn, out).run()
        linked, kept = ledger.get("job-01"), ledger.get("job-02")
    assert list(elsewhere.iterdir()) == []
    assert linked.state is JobState.COMPLETED and "leads outside" in (linked.error or "")
    assert kept.state is JobState.DONE and Path(kept.output_path or "").parent == out / "kept"


def test_two_writes_of_one_file_at_once_both_land_whole(tmp_path: Path) -> None:
    """`batchrunner report` while a run writes the same gallery: each write has a part file of
    its own (a shared name made one of them fail, `No such file or directory`)."""
    page = tmp_path / "videos" / "report.html"
    with written_whole(page) as first, written_whole(page) as second:
        assert first != second and first.name.endswith(".part.html")
        first.write_text("the run's")
        second.write_text("report's")
    assert page.read_text() == "the run's"  # renamed over the other, last
    assert sorted(p.name for p in page.parent.iterdir()) == ["report.html"]


def test_links_put_at_a_downloads_or_a_posters_name_are_not_written_through(
    tmp_path: Path,
) -> None:
    """Someone with write access to a shared folder links ``0001-shot-001.mp4.part`` and the
    job's poster to files of theirs elsewhere: the download appended the video to the first
    (resumed from its size), the poster overwrote the second. A link there is removed and a
    file of the run's own made in its place; the files outside are untouched."""
    from click.testing import CliRunner

    from batchrunner.cli import cli
    from batchrunner.simulator import SimulatorServer
    from batchrunner.verify import media_dir
    from tests.helpers import TOKEN, fast_config, rows, write_manifest

    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    notes, photo = elsewhere / "notes.txt", elsewhere / "photo.jpg"
    notes.write_text("\n".join(map(str, range(1000))))
    photo.write_bytes(b"not yours to overwrite")
    ledger = tmp_path / "l.db"
    os.symlink(notes, out / "0001-shot-001.mp4.part")
    poster = poster_path(media_dir(ledger), "shot-001")
    poster.parent.mkdir(parents=True)
    os.symlink(photo, poster)
    manifest = write_manifest(tmp_path / "m.csv", rows(1))
    with SimulatorServer(fast_config()) as server:
        args = ["--base-url", server.url, "--auth-scheme", "bearer", "--ledger", str(ledger)]
        ran = CliRunner().invoke(
            cli,
            ["run", str(manifest), *args, "--out", str(out)],
            env={"BATCHRUNNER_API_KEY": TOKEN},
        )
    assert ran.exit_code == 0, ran.output
    assert notes.read_text() == "\n".join(map(str, range(1000)))
    assert photo.read_bytes() == b"not yours to overwrite"
    video = out / "0001-shot-001.mp4"
    assert not video.is_symlink() and video.stat().st_size > 1000
    assert not poster.is_symlink() and poster.read_bytes().startswith(b"\xff\xd8")  # a JPEG
