"""The clip inside each served video: a real MP4 shaped like the request asked for.

A :class:`MediaShape` (aspect ratio, seconds, audio or not, resolution) becomes, through PyAV
(which bundles FFmpeg), an MP4 with a static grey picture at the honest frame size of that
resolution and aspect ratio (720p 16:9 → 1280×720, 9:16 → 720×1280, 1080p → 1920×1080,
4k → 3840×2160), :data:`FPS` frames per second, one GOP, and — exactly when asked for — a silent
48 kHz mono AAC track of the same duration. The bytes are the same in every process and on
every run (bitexact muxer and encoders, one thread, no creation time), because a restarted
simulator must serve the same file and downloads resume with ``Range`` requests.

Video is H.264 (libx264, ultrafast, constant QP 51, CAVLC) when the bundled FFmpeg has it, else
MPEG-4 part 2. A static picture makes every frame after the key frame an 11-byte skip frame, so
the cost is the key frame and x264's per-frame pass over the pixels. Measured with PyAV 18.1
(FFmpeg 8, libx264) on the 2-core test machine, best of 3, 8 fps:

=====================  ===========  =======  =======
shape                  frame size   time     size
=====================  ===========  =======  =======
16:9 2 s audio         1280×720     20 ms    5.4 KB
16:9 8 s audio         1280×720     58 ms    7.8 KB
9:16 4 s no audio      720×1280     26 ms    4.5 KB
16:9 8 s audio 768P    1366×768     62 ms    8.2 KB
16:9 8 s audio 1080p   1920×1080    108 ms   11 KB
16:9 8 s audio 4k      3840×2160    543 ms   29 KB
9:16 10 s audio 4k     2160×3840    673 ms   30 KB
=====================  ===========  =======  =======

Time grows with pixels × frames (12 fps costs 1.5× as much as 8; x264 at CRF 40 about 1.6×).
CABAC shrinks a 4k key frame from 25 KB to 2 KB but makes every skip frame ~230 bytes, so it is
no smaller overall. Honest sizes are cheap enough: each distinct shape is generated once per
process (:func:`clip_bytes` is cached), the 720p and 1080p the models default to take 20–110 ms
and stay near 10 KB, and even 4k is about half a second and 30 KB. MPEG-4 part 2 has no cheap
skip frames (a 720p 8 s clip is 40 KB, 4k 350 KB), so without libx264 :func:`frame_size` falls
back to a 180-line short side with the same aspect ratio. The audio is silence: 48 kHz mono AAC
costs ~4 KB for 8 s, where a quiet tone would cost the whole bitrate (~20 KB at 16 kb/s).
"""

from __future__ import annotations

import functools
import io
import math
import re
from dataclasses import dataclass
from fractions import Fraction

FPS = 8
SAMPLE_RATE = 48_000
_AUDIO_FRAME = 1024  # samples per AAC frame
_DEFAULT_RATIO = (16, 9)
_DEFAULT_SHORT_SIDE = 720  # no (or an unknown) resolution: what the models default to
_FALLBACK_SHORT_SIDE = 180  # every resolution, when encoding MPEG-4 part 2
_NAMED_SHORT_SIDES = {"4k": 2160, "uhd": 2160, "2k": 1440, "qhd": 1440, "fhd": 1080, "hd": 720}
_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*$")
_LINES = re.compile(r"^\s*(\d{3,4})\s*[pP]\s*$")
_QP2LAMBDA = 118  # FFmpeg's FF_QP2LAMBDA
_LUMA, _CHROMA = 96, 128  # the picture: a flat dark grey


@dataclass(frozen=True)
class MediaShape:
    """What a job's video looks like. ``dataclasses.asdict`` → JSON → ``MediaShape(**d)``.

    ``aspect_ratio`` like ``"16:9"`` or ``"9:16"`` (``"auto"`` or anything unparsable: 16:9),
    ``resolution`` like ``"720p"``, ``"1080p"``, ``"4k"`` or ``"768P"`` (None or unknown: 720p).
    """

    aspect_ratio: str = "16:9"
    seconds: float = 2.0
    audio: bool = True
    resolution: str | None = None
    playable: bool = True  # False: the file served is not a video (see .lies)


def _ratio(aspect_ratio: str) -> tuple[float, float]:
    match = _RATIO.match(aspect_ratio or "")
    if match is None:
        return _DEFAULT_RATIO
    across, down = float(match.group(1)), float(match.group(2))
    if not (across > 0 and down > 0 and 0.1 <= across / down <= 10):
        return _DEFAULT_RATIO
    return across, down


def _short_side(resolution: str | None) -> int:
    if resolution is None:
        return _DEFAULT_SHORT_SIDE
    named = _NAMED_SHORT_SIDES.get(resolution.strip().lower())
    if named is not None:
        return named
    match = _LINES.match(resolution)
    return int(match.group(1)) if match else _DEFAULT_SHORT_SIDE


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def frame_size(shape: MediaShape) -> tuple[int, int]:
    """``(width, height)`` of the clip: the resolution's lines on the short side, both even.

    Without libx264 (MPEG-4 part 2 has no cheap skip frames) the short side is
    :data:`_FALLBACK_SHORT_SIDE` instead, so the clip stays small; the aspect ratio still holds.
    """
    across, down = _ratio(shape.aspect_ratio)
    lines = _short_side(shape.resolution) if video_codec() == "libx264" else _FALLBACK_SHORT_SIDE
    short = _even(lines)
    if across >= down:
        return _even(short * across / down), short
    return short, _even(short * down / across)


def frame_count(shape: MediaShape) -> int:
    """Video frames in the clip (at least one): the duration to within half a frame."""
    seconds = shape.seconds if math.isfinite(shape.seconds) else 0.0
    return max(1, round(seconds * FPS))


def sample_count(shape: MediaShape) -> int:
    """Audio samples in the clip (at least one AAC frame's worth)."""
    seconds = shape.seconds if math.isfinite(shape.seconds) else 0.0
    return max(_AUDIO_FRAME, round(seconds * SAMPLE_RATE))


@functools.cache
def video_codec() -> str:
    """``libx264`` when the bundled FFmpeg can encode H.264, else ``mpeg4``."""
    import av

    try:
        av.codec.Codec("libx264", "w")
    except Exception:  # any failure means "not available"
        return "mpeg4"
    return "libx264"


@functools.cache
def clip_bytes(shape: MediaShape) -> bytes:
    """The MP4 for ``shape``, built in memory; byte-for-byte the same on every run."""
    import av

    width, height = frame_size(shape)
    frames = frame_count(shape)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4", options={"fflags": "+bitexact"}) as out:
        codec = video_codec()
        video = out.add_stream(codec, rate=FPS)
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.gop_size = frames
        video.codec_context.flags |= av.codec.context.Flags.bitexact
        video.codec_context.thread_count = 1
        if codec == "libx264":
            video.options = {
                "preset": "ultrafast",
                "qp": "51",
                "threads": "1",
                "x264-params": f"keyint={frames}:min-keyint={frames}:scenecut=0:bframes=0",
            }
        else:  # constant quantiser 31 (-q:v 31): the coarsest
            video.codec_context.flags |= av.codec.context.Flags.qscale
            video.codec_context.global_quality = 31 * _QP2LAMBDA
            video.options = {"threads": "1"}
        audio = None
        if shape.audio:
            audio = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
            audio.codec_context.flags |= av.codec.context.Flags.bitexact
            audio.codec_context.thread_count = 1

        picture = av.VideoFrame(width, height, "yuv420p")
        for plane, value in zip(picture.planes, (_LUMA, _CHROMA, _CHROMA), strict=True):
            plane.update(bytes([value]) * (plane.line_size * plane.height))
        picture.time_base = Fraction(1, FPS)
        for index in range(frames):
            picture.pts = index
            out.mux(video.encode(picture))
        out.mux(video.encode(None))

        if audio is not None:
            total = sample_count(shape)
            for start in range(0, total, _AUDIO_FRAME):
                samples = min(_AUDIO_FRAME, total - start)
                sound = av.AudioFrame(format="s16", layout="mono", samples=samples)
                sound.sample_rate = SAMPLE_RATE
                sound.planes[0].update(bytes(2 * samples))
                sound.pts = start
                sound.time_base = Fraction(1, SAMPLE_RATE)
                out.mux(audio.encode(sound))
            out.mux(audio.encode(None))
    return buffer.getvalue()
