"""Every download is decoded and compared with its request (PyAV).

The simulator serves clips that lie on purpose (``#lie:KIND`` in a prompt): a wrong duration, a
turned aspect ratio, missing audio, and a file that is not a video at all. The first three end
``done`` with a warning (the file is kept: the money is spent); the last is a failed download,
fetched again by ``resume``; nothing else about the run changes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchrunner.cli import cli
from batchrunner.ledger import Ledger
from batchrunner.models import get_model
from batchrunner.paths import video_name
from batchrunner.simulator import SimulatorServer
from batchrunner.simulator.clips import MediaShape, clip_bytes
from batchrunner.verify import (
    Expected,
    UnplayableError,
    compare,
    expected_of,
    inspect,
    media_dir,
)
from tests.helpers import IMAGE, TOKEN, counters, fast_config, run_args, write_manifest

ENV = {"BATCHRUNNER_API_KEY": TOKEN}
VEO3 = "fal-ai/veo3/image-to-video"
LIES = {
    "honest": "",
    "short": " #lie:duration",
    "turned": " #lie:aspect",
    "mute": " #lie:audio",
    "broken": " #lie:notvideo",
}


def lying_rows() -> list[dict[str, str]]:
    return [
        {"id": job_id, "prompt": f"A harbour at dawn{lie}", "image_url": IMAGE,
         "duration": "8s", "aspect_ratio": "16:9", "generate_audio": "true"}
        for job_id, lie in LIES.items()
    ]  # fmt: skip


def test_a_clip_that_follows_the_request_has_no_warnings(tmp_path: Path) -> None:
    clip = tmp_path / "c.mp4"
    clip.write_bytes(clip_bytes(MediaShape("9:16", 4.0, False, "1080p")))
    got = inspect(clip, Expected(4.0, "9:16", "1080p", False), tmp_path / "p.jpg")
    assert got.warnings == []
    assert got.media == {
        "container": "mov,mp4,m4a,3gp,3g2,mj2", "video_codec": "h264", "audio_codec": None,
        "width": 1080, "height": 1920, "duration": 4.0, "fps": 8.0, "frames": 32, "audio": False,
    }  # fmt: skip
    assert got.poster == str(tmp_path / "p.jpg")
    assert (tmp_path / "p.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG


def test_every_difference_is_one_sentence(tmp_path: Path) -> None:
    clip = tmp_path / "c.mp4"
    clip.write_bytes(clip_bytes(MediaShape("9:16", 2.0, False, "720p")))
    got = inspect(clip, Expected(8.0, "16:9", "1080p", True))
    assert got.warnings == [
        "duration 2 s, asked for 8 s",
        "frame 720×1280 is not 16:9 as asked",
        "frame 720×1280 has 720 lines, asked for 1080p",
        "no audio track, audio was asked for",
    ]
    assert got.poster is None


@pytest.mark.parametrize(
    ("aspect", "resolution", "width", "height"),
    [
        ("16:9", "720p", 1248, 704), ("1:1", "720p", 960, 960), ("4:3", "720p", 1120, 832),
        ("21:9", "720p", 1504, 640), ("1:1", "480p", 640, 640), ("21:9", "480p", 960, 416),
        ("16:9", "1080p", 1920, 1088), ("21:9", "1080p", 2176, 928),
        ("3:4", "1080p", 1248, 1664), ("16:9", "720p", 1280, 720), ("9:16", "4k", 2160, 3840),
    ],
)  # fmt: skip
def test_a_frame_of_the_asked_resolution_tier_has_no_warning(
    aspect: str, resolution: str, width: int, height: int
) -> None:
    """Seedance's tiers keep a 16:9 frame's area at every ratio (its 720p is 1248×704, and
    960×960 at 1:1): what it sends for the request is no "wrong resolution"."""
    media = {"width": width, "height": height, "duration": 5.0, "audio": False,
             "container": "mov,mp4,m4a,3gp,3g2,mj2", "video_codec": "h264"}  # fmt: skip
    assert compare(media, Expected(5.0, aspect, resolution, False)) == []


@pytest.mark.parametrize(
    ("aspect", "resolution", "width", "height"),
    [("16:9", "1080p", 1280, 720), ("1:1", "720p", 640, 640), ("1:1", "1080p", 960, 960),
     ("16:9", "768P", 1280, 720), ("9:16", "4k", 1080, 1920)],
)  # fmt: skip
def test_a_frame_of_another_resolution_tier_is_still_a_warning(
    aspect: str, resolution: str, width: int, height: int
) -> None:
    media = {"width": width, "height": height, "duration": 5.0, "audio": False,
             "container": "mov,mp4,m4a,3gp,3g2,mj2", "video_codec": "h264"}  # fmt: skip
    assert compare(media, Expected(5.0, aspect, resolution, False)) == [
        f"frame {width}×{height} has {min(width, height)} lines, asked for {resolution}"
    ]


def test_the_poster_folder_is_made_and_a_disk_problem_costs_only_the_poster(
    tmp_path: Path,
) -> None:
    clip = tmp_path / "c.mp4"
    clip.write_bytes(clip_bytes(MediaShape("16:9", 2.0, False, "720p")))
    nested = tmp_path / "ledger.media" / "posters" / "p.jpg"
    assert inspect(clip, Expected(), nested).poster == str(nested)
    assert nested.read_bytes()[:3] == b"\xff\xd8\xff"
    (tmp_path / "taken").write_text("a file where the folder would be")
    got = inspect(clip, Expected(), tmp_path / "taken" / "p.jpg")
    assert (got.poster, got.media["frames"]) == (None, 16)


def test_a_poster_folder_that_takes_nothing_is_said_once_not_for_every_clip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clip = tmp_path / "c.mp4"
    clip.write_bytes(clip_bytes(MediaShape("16:9", 2.0, False, "720p")))
    (tmp_path / "posters").write_text("a file where the folder would be")
    with caplog.at_level(logging.WARNING, logger="batchrunner.verify"):
        posters = [inspect(clip, Expected(), tmp_path / "posters" / f"{n}.jpg").poster
                   for n in range(3)]  # fmt: skip
    assert posters == [None, None, None]
    (said,) = [r.getMessage() for r in caplog.records]
    assert said == (
        f"cannot save posters in {tmp_path / 'posters'} (Not a directory): the videos are kept "
        "and checked; the gallery shows them without a poster"
    )


def test_a_poster_is_written_in_place_over_a_stale_one(tmp_path: Path) -> None:
    from PIL import Image

    clip = tmp_path / "c.mp4"
    clip.write_bytes(clip_bytes(MediaShape("16:9", 2.0, False, "720p")))
    poster = tmp_path / "posters" / "p.jpg"
    poster.parent.mkdir()
    poster.write_bytes(b"a longer poster left by an earlier run that a crash cut short" * 500)
    assert inspect(clip, Expected(), poster).poster == str(poster)
    assert poster.read_bytes()[-2:] == b"\xff\xd9"  # the new JPEG's end, nothing of the old
    with Image.open(poster) as image:
        assert (image.format, image.size) == ("JPEG", (320, 180))
    assert [p.name for p in poster.parent.iterdir()] == ["p.jpg"]  # no .part beside it


def test_a_poster_that_cannot_be_written_whole_is_not_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up halfway through the poster (a link to ``/dev/full`` showed it, but a
    link at a poster's name is no longer written through): what was written is removed."""
    from batchrunner import verify

    class FillsUp(io.FileIO):
        def write(self, data: Any) -> int:
            super().write(bytes(data[:100]))
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(verify, "open_to_write", lambda path: FillsUp(path, "w"))
    clip = tmp_path / "c.mp4"
    clip.write_bytes(clip_bytes(MediaShape("16:9", 2.0, False, "720p")))
    full = tmp_path / "full.jpg"
    got = inspect(clip, Expected(), full)
    assert (got.poster, got.media["frames"]) == (None, 16)
    assert not full.exists()


@pytest.mark.parametrize(
    ("shape", "size"),
    [(MediaShape("16:9", 2.0, False, "720p"), (320, 180)),
     (MediaShape("9:16", 2.0, False, "1080p"), (180, 320)),
     (MediaShape("9:16", 2.0, False, "720p"), (180, 320)),
     (MediaShape("1:1", 2.0, False, "720p"), (320, 320))],
    ids=["landscape", "portrait", "small-portrait", "square"],
)  # fmt: skip
def test_every_pixel_of_a_poster_is_the_clip_s_own(
    tmp_path: Path, shape: MediaShape, size: tuple[int, int]
) -> None:
    from PIL import Image

    clip = tmp_path / "c.mp4"
    clip.write_bytes(clip_bytes(shape))
    for attempt in range(2):  # the second decodes into buffers the first left behind
        inspect(clip, Expected(), tmp_path / "p.jpg")
        with Image.open(tmp_path / "p.jpg") as image:
            assert image.size == size
            extrema = image.convert("RGB").getextrema()
        # the clip is a flat grey (luma 98 in video range, 95 in RGB), edge to edge
        assert all(low >= 93 and high <= 97 for low, high in extrema), (attempt, extrema)


def test_a_file_that_is_not_a_video_is_unplayable(tmp_path: Path) -> None:
    page = tmp_path / "c.mp4"
    page.write_bytes(b"<html><body>Access denied</body></html>\n" * 50)
    with pytest.raises(UnplayableError, match="does not decode"):
        inspect(page, Expected())


def faststart(clip: bytes, dest: Path) -> bytes:
    """``clip`` remuxed with its index first (as CDNs serve MP4s), so a cut file still opens."""
    import av

    with (
        av.open(io.BytesIO(clip)) as source,
        av.open(str(dest), "w", format="mp4", options={"movflags": "faststart"}) as out,
    ):
        streams = {s.index: out.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return dest.read_bytes()


def test_a_clip_cut_short_is_unplayable_though_its_index_opens(tmp_path: Path) -> None:
    whole = faststart(clip_bytes(MediaShape("16:9", 4.0, True, "720p")), tmp_path / "whole.mp4")
    assert inspect(tmp_path / "whole.mp4", Expected(4.0)).media["frames"] == 32
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) * 9 // 10])
    with pytest.raises(UnplayableError, match=r"ends after \d+ of 32 frames"):
        inspect(cut, Expected(4.0))


@pytest.mark.parametrize("keep", [0.5, -1], ids=["half", "all-but-the-last-byte"])
def test_a_clip_cut_anywhere_in_its_data_is_unplayable(tmp_path: Path, keep: float) -> None:
    whole = faststart(clip_bytes(MediaShape("16:9", 4.0, True, "720p")), tmp_path / "whole.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: int(len(whole) * keep) if keep > 0 else int(keep)])
    with pytest.raises(UnplayableError, match=r"ends after \d+ of \d+ (frames|audio packets)"):
        inspect(cut, Expected(4.0))


def remux(clip: bytes, dest: Path, **options: str) -> None:
    """``clip``'s packets in another container (``dest``'s suffix says which)."""
    import av

    with av.open(io.BytesIO(clip)) as source, av.open(str(dest), "w", options=options) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)


def webm(dest: Path, frames: int, audio: bool) -> None:
    """A small VP9 (and Opus) WebM at 8 fps: a container without an MP4 index."""
    import av

    with av.open(str(dest), "w", format="webm") as out:
        video = out.add_stream("libvpx-vp9", rate=8, options={"deadline": "realtime"})
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
        sound = out.add_stream("libopus", rate=48_000, layout="mono") if audio else None
        for index in range(frames):
            picture = av.VideoFrame(320, 180, "yuv420p")
            for plane, value in zip(picture.planes, (index * 8, 128, 128), strict=True):
                plane.update(bytes([value]) * plane.buffer_size)
            picture.pts = index
            out.mux(video.encode(picture))
        out.mux(video.encode())
        if sound is not None:
            for index in range(frames * 48_000 // 8 // 960):
                silence = av.AudioFrame(format="s16", layout="mono", samples=960)
                silence.planes[0].update(bytes(silence.planes[0].buffer_size))
                silence.sample_rate, silence.pts = 48_000, index * 960
                out.mux(sound.encode(silence))
            out.mux(sound.encode())


def test_a_webm_is_demuxed_through_and_counted(tmp_path: Path) -> None:
    clip = tmp_path / "c.webm"
    webm(clip, frames=16, audio=True)
    got = inspect(clip, Expected(2.0, "16:9", "180p", True), tmp_path / "p.jpg")
    assert got.warnings == []
    assert got.media == {
        "container": "matroska,webm", "video_codec": "vp9", "audio_codec": "opus",
        "width": 320, "height": 180, "duration": 2.008, "fps": 8.0, "frames": 16, "audio": True,
    }  # fmt: skip
    assert (tmp_path / "p.jpg").read_bytes()[:3] == b"\xff\xd8\xff"


def test_a_webm_named_mp4_is_probed_and_read(tmp_path: Path) -> None:
    clip = tmp_path / "c.mp4"  # opened as an MP4 first, as its name says, then probed
    webm(clip, frames=16, audio=False)
    got = inspect(clip, Expected(2.0))
    assert got.warnings == ["container is matroska,webm, not MP4"]
    assert (got.media["video_codec"], got.media["frames"]) == ("vp9", 16)


def test_a_fragmented_mp4_is_demuxed_through_and_counted(tmp_path: Path) -> None:
    clip = tmp_path / "c.mp4"  # its index lists no samples: each fragment has its own
    fragments = {"movflags": "frag_keyframe+empty_moov"}
    remux(clip_bytes(MediaShape("16:9", 4.0, True, "720p")), clip, **fragments)
    got = inspect(clip, Expected(4.0, "16:9", "720p", True))
    assert got.warnings == []
    assert (got.media["frames"], got.media["audio"], got.media["duration"]) == (32, True, 4.021)


def grey_clip(dest: Path, luma: int, frames: int) -> None:
    """An H.264 MP4 of a flat picture at ``luma``; the codec set-up (SPS, PPS) does not
    depend on the picture, so two of these share their decoder."""
    import av

    with av.open(str(dest), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=8, options={"preset": "ultrafast"})
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
        for index in range(frames):
            picture = av.VideoFrame(320, 180, "yuv420p")
            for plane, value in zip(picture.planes, (luma, 128, 128), strict=True):
                plane.update(bytes([value]) * plane.buffer_size)
            picture.pts = index
            out.mux(video.encode(picture))
        out.mux(video.encode())


def test_a_kept_decoder_shows_each_clip_its_own_picture(tmp_path: Path) -> None:
    import av
    from PIL import Image, ImageStat

    from batchrunner import verify

    dark, bright = tmp_path / "dark.mp4", tmp_path / "bright.mp4"
    grey_clip(dark, luma=40, frames=16)
    grey_clip(bright, luma=200, frames=8)
    with av.open(str(dark)) as opened:
        theirs = verify._decoder_key(opened.streams.video[0])

    def kept() -> list[object]:  # the idle decoders for these clips' set-up
        return [decoder for key, decoder in verify._DECODERS._idle if key == theirs]

    seen, lent = {}, []
    for clip in (dark, bright, dark):
        got = inspect(clip, Expected(), tmp_path / f"{clip.stem}.jpg")
        poster = Image.open(tmp_path / f"{clip.stem}.jpg").convert("L")
        seen[clip.stem] = (got.media["frames"], round(ImageStat.Stat(poster).mean[0]))
        lent.append(kept())
    assert seen == {"dark": (16, 27), "bright": (8, 214)}  # 40 and 200 in video range
    assert len(lent[0]) == 1 and lent == [lent[0]] * 3  # one decoder read all three

    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart(bright.read_bytes(), tmp_path / "whole.mp4")[:-1])
    with pytest.raises(UnplayableError, match="ends after 7 of 8 frames"):
        inspect(cut, Expected())
    assert kept() == []  # a decoder lent to a file that failed is not kept


def test_the_poster_is_the_keyframe_at_a_quarter_though_the_decoder_held_it_back(
    tmp_path: Path,
) -> None:
    import av
    from PIL import Image, ImageStat

    clip = tmp_path / "c.mp4"  # 2 s at 8 fps, dark then bright from frame 4 (0.5 s), a keyframe
    with av.open(str(clip), "w", format="mp4") as out:
        x264 = {"preset": "veryfast", "forced-idr": "1", "x264-params": "bframes=2:scenecut=0"}
        video = out.add_stream("libx264", rate=8, options=x264)  # B-frames: a decoder delay
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
        for index in range(16):
            picture, luma = av.VideoFrame(320, 180, "yuv420p"), 40 if index < 4 else 200
            for plane, value in zip(picture.planes, (luma, 128, 128), strict=True):
                plane.update(bytes([value]) * plane.buffer_size)
            picture.pts = index
            if index == 4:
                picture.pict_type = av.video.frame.PictureType.I
            out.mux(video.encode(picture))
        out.mux(video.encode())
    inspect(clip, Expected(), tmp_path / "p.jpg")
    assert ImageStat.Stat(Image.open(tmp_path / "p.jpg").convert("L")).mean[0] > 200


def expected(endpoint: str, payload: dict[str, str]) -> Expected:
    return expected_of(get_model(endpoint, allow_unregistered=True), payload)


def test_only_what_the_model_defines_is_compared() -> None:
    veo3 = expected(VEO3, {"prompt": "x", "image_url": IMAGE, "duration": "6s"})
    assert veo3 == Expected(seconds=6.0, aspect_ratio=None, resolution="720p", audio=True)
    wide = expected("fal-ai/veo3.1", {"prompt": "x", "aspect_ratio": "9:16"})
    assert (wide.aspect_ratio, wide.ratio) == ("9:16", pytest.approx(9 / 16))
    kling = expected("fal-ai/kling-video/v2.5-turbo/pro/image-to-video", {"prompt": "x"})
    assert kling.audio is None  # the model has no audio switch: nothing to compare
    assert expected("someone/else", {"duration": "8s"}) == Expected()  # not registered


def test_a_file_that_is_never_a_video_ends_as_a_failed_download(tmp_path: Path) -> None:
    """A result whose file never decodes stayed ``completed``: every resume fetched it again
    and exited 1, the summary naming other things. The third such download gives it up:
    ``download_failed``, said with why and ``retry --downloads`` (nothing bought again)."""
    manifest = write_manifest(tmp_path / "m.csv", [lying_rows()[-1]])  # "broken"
    with SimulatorServer(fast_config()) as server:
        first = CliRunner().invoke(cli, run_args(server, tmp_path, manifest), env=ENV)
        assert first.exit_code == 1, first.output
        args = ["resume", "--ledger", str(tmp_path / "ledger.db"), "--json"]
        states = []
        for _ in range(2):
            again = CliRunner().invoke(cli, args, env=ENV)
            states.append(json.loads(again.stdout.strip().splitlines()[-1]))
        assert [s["counts"] for s in states] == [{"completed": 1}, {"download_failed": 1}]
        last = states[-1]
        assert last["exit_code"] == 1 and "retry --downloads" in (last["next_command"] or "")
        assert any("does not decode as a video" in reason for reason in last["reasons"])
        assert counters(server)["submits"] == 1  # bought once
        assert counters(server)["requests"]["media"] == 3


def test_names_always_carry_the_row_number() -> None:
    assert video_name("shot-01", 7, None) == "0007-shot-01.mp4"
    assert video_name("shot-01", 7, "lake.mp4") == "0007-lake.mp4"
    assert video_name("shot-01", 12, "day2/lake~16_9.mp4") == "day2/0012-lake~16_9.mp4"


@pytest.mark.slow
def test_lying_clips_are_done_with_warnings_and_a_non_video_is_a_failed_download(
    tmp_path: Path,
) -> None:
    manifest = write_manifest(tmp_path / "m.csv", lying_rows())
    ledger_path = tmp_path / "ledger.db"
    with SimulatorServer(fast_config()) as server:
        result = CliRunner().invoke(cli, run_args(server, tmp_path, manifest, "--json"), env=ENV)
        assert result.exit_code == 1, result.output  # one job is not done
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        seen = counters(server)
        with Ledger.open(ledger_path, create=False) as ledger:
            jobs = {job.job_id: job for job in ledger.jobs()}

        # nothing else changes: one submit per job, every job paid for, the same spend
        assert seen["submits"] == 5
        assert summary["counts"] == {"done": 4, "completed": 1}
        assert summary["spend_usd"] == pytest.approx(5 * 3.20)
        warnings = {job_id: job.warnings for job_id, job in jobs.items()}
        assert warnings == {
            "honest": [],
            "short": ["duration 4 s, asked for 8 s"],
            "turned": ["frame 720×1280 is not 16:9 as asked"],
            "mute": ["no audio track, audio was asked for"],
            "broken": [],
        }
        served = {job["prompt"]: job["media_sha256"] for job in seen["jobs"].values()}
        for job_id, lie in LIES.items():
            job = jobs[job_id]
            if job_id == "broken":
                continue
            assert job.state == "done" and job.error is None
            video = Path(job.output_path or "")
            assert video.parent == (tmp_path / "out").resolve()
            assert (
                hashlib.sha256(video.read_bytes()).hexdigest() == served[f"A harbour at dawn{lie}"]
            )
            assert job.poster is not None and Path(job.poster).is_file()
            assert Path(job.poster).parent == media_dir(ledger_path) / "posters"
        assert jobs["short"].media is not None and jobs["short"].media["duration"] == 4.0
        assert jobs["mute"].media is not None and jobs["mute"].media["audio"] is False

        broken = jobs["broken"]
        assert broken.state == "completed" and broken.output_path is None
        assert broken.error == (
            "download failed (the result is kept; `resume` retries): 0005-broken.mp4 does not "
            "decode as a video (Invalid data found when processing input)"
        )
        assert not list((tmp_path / "out").glob("0005-*"))  # the bad file is not kept
        names = [p.name for p in (tmp_path / "out").iterdir()]
        # no ledger data: the page, and the hidden lock that keeps other batches out
        assert sorted(n for n in names if not n.endswith(".mp4")) == [
            ".batchrunner.lock",
            "report.html",
        ]
        assert len(names) == 6  # four videos

        # status and export show the warnings; the failed download needs attention
        status = CliRunner().invoke(cli, ["status", "--ledger", str(ledger_path)])
        assert "warning  row 2  short: duration 4 s, asked for 8 s" in status.output
        assert "completed  row 5  broken: download failed" in status.output
        export = tmp_path / "e.jsonl"
        CliRunner().invoke(cli, ["export", "--ledger", str(ledger_path), "-o", str(export)])
        exported = {r["job_id"]: r for r in map(json.loads, export.read_text().splitlines())}
        assert exported["turned"]["warnings"] == "frame 720×1280 is not 16:9 as asked"
        assert (exported["turned"]["media_width"], exported["turned"]["media_height"]) == (
            720,
            1280,
        )
        assert exported["honest"]["warnings"] is None
        assert exported["honest"]["media_audio"] is True

        # resume fetches the broken file again (no new purchase) and fails it again
        again = CliRunner().invoke(cli, ["resume", "--ledger", str(ledger_path)], env=ENV)
        assert again.exit_code == 1, again.output
        assert counters(server)["submits"] == 5
        assert counters(server)["requests"]["media"] == seen["requests"]["media"] + 1


def test_an_imported_model_s_audio_switch_is_checked_in_every_clip(tmp_path: Path) -> None:
    """PixVerse 5.5 switches sound on with `generate_audio_switch`; imported from fal's
    document, its clips' sound was never compared with the request (only a field called
    `generate_audio` was), so a silent clip bought with sound passed without a word."""
    doc = Path(__file__).parent / "fixtures" / "fal-ai__pixverse__v5.5__image-to-video.json"
    added = CliRunner().invoke(cli, ["models", "add", str(doc), "--price", "0.10/video"])
    assert added.exit_code == 0, added.output
    assert "audio: generate_audio_switch switches sound on" in added.output
    asked = {"image_url": IMAGE, "model": "fal-ai/pixverse/v5.5/image-to-video"}
    manifest = write_manifest(
        tmp_path / "m.csv",
        [{"id": "loud", "prompt": "A harbour at dawn", "generate_audio_switch": "true", **asked},
         {"id": "mute", "prompt": "A harbour at dawn #lie:audio", "generate_audio_switch": "true",
          **asked},
         {"id": "quiet", "prompt": "A harbour at dusk", **asked}],
    )  # fmt: skip
    with SimulatorServer(fast_config()) as server:
        result = CliRunner().invoke(cli, run_args(server, tmp_path, manifest), env=ENV)
    assert result.exit_code == 0, result.output
    with Ledger.open(tmp_path / "ledger.db", create=False) as ledger:
        got = {job.job_id: (job.media["audio"], job.warnings) for job in ledger.jobs()}
    assert got == {
        "loud": (True, []),
        "mute": (False, ["no audio track, audio was asked for"]),
        "quiet": (False, []),
    }
