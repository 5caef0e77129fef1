"""The simulator's clips follow the request: aspect ratio, duration, audio (checked with PyAV)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from sim_helpers import ENDPOINT, VALID_BODY, FakeClock
from starlette.applications import Starlette

from batchrunner.simulator import SimulatorConfig, create_app
from batchrunner.simulator.clips import MediaShape, clip_bytes, frame_size, video_codec
from batchrunner.simulator.media import video_bytes, video_sha256, video_size

ORIGIN = "http://sim.test"
HONEST = video_codec() == "libx264"  # honest frame sizes only with H.264 (see clips.py)


@dataclass(frozen=True)
class Probe:
    width: int
    height: int
    video_seconds: float
    audio_seconds: float | None  # None: no audio stream
    codec: str


def probe(data: bytes) -> Probe:
    """What PyAV sees in an MP4, decoding every video frame and audio packet."""
    with av.open(io.BytesIO(data), mode="r") as container:
        video = container.streams.video[0]
        assert video.time_base is not None
        frames = list(container.decode(video))
        assert frames, "no video frame decoded"
        last = frames[-1]
        assert last.pts is not None and last.duration is not None
        video_seconds = float((last.pts + last.duration) * video.time_base)
        audio_seconds = None
        if container.streams.audio:
            audio = container.streams.audio[0]
            assert audio.duration is not None and audio.time_base is not None
            audio_seconds = float(audio.duration * audio.time_base)
        return Probe(
            width=frames[0].width,
            height=frames[0].height,
            video_seconds=video_seconds,
            audio_seconds=audio_seconds,
            codec=video.codec_context.name,
        )


# -- the clips ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "ratio", "size"),
    [
        (MediaShape("16:9", 8.0, True), 16 / 9, (1280, 720)),
        (MediaShape("9:16", 4.0, False), 9 / 16, (720, 1280)),
        (MediaShape("1:1", 5.0, True), 1.0, (720, 720)),
        (MediaShape("9:16", 6.0, True, "1080p"), 9 / 16, (1080, 1920)),
        (MediaShape("auto", 2.0, False, "480p"), 16 / 9, (854, 480)),
    ],
    ids=str,
)
def test_a_clip_has_the_shape_it_was_asked_for(
    shape: MediaShape, ratio: float, size: tuple[int, int]
) -> None:
    data = clip_bytes(shape)
    seen = probe(data)
    assert (seen.width, seen.height) == frame_size(shape)
    assert seen.width / seen.height == pytest.approx(ratio, rel=0.01)
    if HONEST:
        assert (seen.width, seen.height) == size
        assert seen.codec == "h264"
    assert seen.video_seconds == pytest.approx(shape.seconds, abs=0.25)
    if shape.audio:
        assert seen.audio_seconds == pytest.approx(shape.seconds, abs=0.25)
    else:
        assert seen.audio_seconds is None
    assert len(data) < 20_000  # small: every served file is at least this long


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        (MediaShape(), (1280, 720)),
        (MediaShape("16:9", resolution="1080p"), (1920, 1080)),
        (MediaShape("9:16", resolution="4k"), (2160, 3840)),
        (MediaShape("16:9", resolution="768P"), (1366, 768)),
        (MediaShape("9:16", resolution="512P"), (512, 910)),
        (MediaShape("4:3", resolution="480p"), (640, 480)),
        (MediaShape("3:4"), (720, 960)),
        (MediaShape("21:9"), (1680, 720)),
        (MediaShape("9:21"), (720, 1680)),
        (MediaShape("auto", resolution="nonsense"), (1280, 720)),
        (MediaShape("wide"), (1280, 720)),
    ],
    ids=str,
)
def test_frame_sizes_are_honest_and_even(shape: MediaShape, size: tuple[int, int]) -> None:
    width, height = frame_size(shape)
    assert width % 2 == 0 and height % 2 == 0
    if HONEST:
        assert (width, height) == size
    assert width / height == pytest.approx(size[0] / size[1], rel=0.01)


def test_a_shape_round_trips_through_json() -> None:
    shape = MediaShape("9:16", 4.0, False, "1080p")
    assert MediaShape(**json.loads(json.dumps(dataclasses.asdict(shape)))) == shape


_SHA_OF_CLIPS = """
import hashlib, sys
from batchrunner.simulator.clips import MediaShape, clip_bytes
for shape in (MediaShape("9:16", 4.0, False), MediaShape("16:9", 3.0, True, "1080p")):
    sys.stdout.write(hashlib.sha256(clip_bytes(shape)).hexdigest() + "\\n")
"""


def test_clips_are_byte_for_byte_the_same_in_every_process() -> None:
    def run() -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", _SHA_OF_CLIPS],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent.parent,
            timeout=60,
        )
        return done.stdout.split()

    first, second = run(), run()
    assert len(first) == 2 and first == second
    here = [
        hashlib.sha256(clip_bytes(MediaShape("9:16", 4.0, False))).hexdigest(),
        hashlib.sha256(clip_bytes(MediaShape("16:9", 3.0, True, "1080p"))).hexdigest(),
    ]
    assert here == first


def test_the_served_file_is_the_clip_then_a_unique_free_box() -> None:
    shape = MediaShape("9:16", 4.0, False)
    clip = clip_bytes(shape)
    one, two = video_bytes("one", 30_000, shape), video_bytes("two", 30_000, shape)
    assert len(one) == len(two) == video_size("one", 30_000, shape) == 30_000
    assert one.startswith(clip) and two.startswith(clip) and one != two
    assert one[len(clip) + 4 : len(clip) + 8] == b"free"
    assert probe(one) == probe(clip)
    tiny = video_bytes("one", 0, shape)  # never shorter than the clip and its marker box
    assert len(tiny) == video_size("one", 0, shape) > len(clip)
    assert video_bytes("one", 30_000) == video_bytes("one", 30_000, MediaShape())
    assert video_sha256("one", 30_000, None) == video_sha256("one", 30_000, MediaShape())


# -- through the simulator ----------------------------------------------------------------------


def make(state_path: Path, clock: FakeClock | None = None) -> Starlette:
    config = SimulatorConfig(
        queue_seconds=0.0, run_seconds=1.0, media_bytes=30_000, state_path=str(state_path)
    )
    return create_app(config, clock=clock or FakeClock())


def client_for(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": "Key test-key"}
    return httpx.AsyncClient(transport=transport, base_url=ORIGIN, headers=headers)


def submit_with_shape(app: Starlette, clock: FakeClock, shape: MediaShape | None) -> str:
    accepted = app.state.sim.submit(ENDPOINT, dict(VALID_BODY), shape=shape)
    assert accepted is not None
    clock.advance(1.5)  # done
    request_id: str = accepted[0].request_id
    return request_id


async def fetch_result(client: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    result = await client.get(f"/fal-ai/veo3/requests/{request_id}")
    assert result.status_code == 200, result.text
    video: dict[str, Any] = result.json()["video"]
    return video


@pytest.mark.anyio
async def test_a_job_serves_the_clip_of_its_shape_and_resumes_after_a_restart(
    tmp_path: Path,
) -> None:
    state = tmp_path / "sim.db"
    shape = MediaShape("9:16", 4.0, False)
    clock = FakeClock()
    first = make(state, clock)
    request_id = submit_with_shape(first, clock, shape)
    async with client_for(first) as client:
        video = await fetch_result(client, request_id)
        full = await client.get(video["url"])
        head = await client.get(video["url"], headers={"Range": "bytes=0-9999"})
    first.state.sim.close()
    assert full.status_code == 200 and len(full.content) == video["file_size"] == 30_000
    assert full.headers["etag"] == f'"{video_sha256(request_id, 30_000, shape)}"'
    seen = probe(full.content)
    assert seen.audio_seconds is None
    assert seen.video_seconds == pytest.approx(4.0, abs=0.25)
    assert seen.width / seen.height == pytest.approx(9 / 16, rel=0.01)
    if HONEST:
        assert (seen.width, seen.height) == (720, 1280)
    counted = first.state.sim.counters()["jobs"][request_id]
    assert counted["media_shape"] == dataclasses.asdict(shape)

    second = make(state)  # a new process's clock: the state file carries the job over
    async with client_for(second) as client:
        assert (await fetch_result(client, request_id))["file_size"] == 30_000
        rest = await client.get(video["url"], headers={"Range": "bytes=10000-"})
    second.state.sim.close()
    assert head.status_code == 206 and rest.status_code == 206
    assert rest.headers["content-range"] == "bytes 10000-29999/30000"
    assert rest.headers["etag"] == full.headers["etag"]
    assert head.content + rest.content == full.content


@pytest.mark.anyio
async def test_a_job_without_a_shape_serves_the_default_clip(tmp_path: Path) -> None:
    clock = FakeClock()
    app = make(tmp_path / "sim.db", clock)
    request_id = submit_with_shape(app, clock, None)
    async with client_for(app) as client:
        video = await fetch_result(client, request_id)
        file = await client.get(video["url"])
    app.state.sim.close()
    assert file.content == video_bytes(request_id, 30_000, MediaShape())
    seen = probe(file.content)
    assert seen.video_seconds == pytest.approx(2.0, abs=0.25)
    assert seen.audio_seconds == pytest.approx(2.0, abs=0.25)
    assert seen.width / seen.height == pytest.approx(16 / 9, rel=0.01)


@pytest.mark.anyio
async def test_a_state_file_from_before_shapes_loads_with_the_default_shape(
    tmp_path: Path,
) -> None:
    state = tmp_path / "sim.db"
    clock = FakeClock()
    first = make(state, clock)
    request_id = submit_with_shape(first, clock, MediaShape("1:1", 5.0, True))
    assert first.state.sim.counters()["jobs"][request_id]["state"] == "COMPLETED"
    first.state.sim.close()
    with sqlite3.connect(state) as db:  # what an older simulator wrote: no "shape"
        (data,) = db.execute("SELECT data FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
        record = json.loads(data)
        del record["shape"]
        db.execute(
            "UPDATE jobs SET data = ? WHERE request_id = ?", (json.dumps(record), request_id)
        )
    db.close()

    second = make(state)
    async with client_for(second) as client:
        video = await fetch_result(client, request_id)
        file = await client.get(video["url"])
    second.state.sim.close()
    assert file.status_code == 200
    assert file.content == video_bytes(request_id, 30_000, MediaShape())


@pytest.mark.anyio
async def test_a_job_submitted_over_http_serves_the_clip_of_its_recorded_shape(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    app = make(tmp_path / "sim.db", clock)
    async with client_for(app) as client:
        response = await client.post(f"/{ENDPOINT}", json=VALID_BODY)
        request_id = response.json()["request_id"]
        clock.advance(1.5)
        video = await fetch_result(client, request_id)
        file = await client.get(video["url"])
    shape = MediaShape(**app.state.sim.counters()["jobs"][request_id]["media_shape"])
    app.state.sim.close()
    assert len(file.content) == video["file_size"]
    assert file.content == video_bytes(request_id, 30_000, shape)
