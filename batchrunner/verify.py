"""Is the downloaded file the video that was bought? Checked with PyAV after each download, in
a worker process (:mod:`batchrunner.inspector`).

::

    file ── decode every keyframe, and audio until it sounds ──► facts: container, codecs,
         │  count the frames: MP4 from its index          duration, frame size, audio
         │  (a cut file: a sample past the end), others by demuxing every video packet
         │  (fails: UnplayableError, a failed download; the file is removed, `resume` fetches it
         │   again from the stored result)
         ├─ compare with the request ──► warnings (the job is still done: the money is spent)
         └─ the keyframe at or before a quarter of the clip ──► a small JPEG poster beside
            the ledger

What is compared is only what the model's registry entry gives a meaning to
(:meth:`ModelSpec.media_shape`): the seconds of its duration field (within
:data:`DURATION_TOLERANCE`), an ``aspect_ratio`` like ``16:9`` (not ``auto``), a ``resolution``
like ``720p``/``1080P``/``4k`` (the short side, in lines, or a frame of the same area:
Seedance's 720p is 1248×704 at 16:9 and 960×960 at 1:1), and audio when the model has a field
that switches it on (or always has it). A model outside the registry is not compared at all.

The facts are stored on the job (``media``), the mismatches too (``warnings``), and the poster's
path (``poster``); ``status``, ``export`` and the gallery (:mod:`batchrunner.gallery`) show them.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import logging
import math
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from batchrunner.errors import DownloadError
from batchrunner.models import ModelSpec
from batchrunner.paths import MP4_SUFFIXES, open_to_write, safe_name
from batchrunner.pricing import seconds_of

logger = logging.getLogger(__name__)

DURATION_TOLERANCE = (0.5, 0.10)  # seconds, fraction: the larger of the two is allowed
ASPECT_TOLERANCE = 0.02  # fraction of the ratio (1366×768 is 16:9)
LINES_TOLERANCE = (8, 0.03)  # pixels, fraction of the short side (Seedance 720p: 704 lines)
POSTER_BOX = 320  # the poster fits in this many pixels square
POSTER_AT = 0.25  # the poster is the frame at this fraction of the clip
WEB_VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1"})
MP4_FAMILY = "mp4"  # PyAV's format name for MP4/MOV is "mov,mp4,m4a,3gp,3g2,mj2"
# No decoder while the file is opened: FFmpeg would open one per stream and decode a frame of
# each (the keyframe of a 1080p clip: ~10 ms) to learn the pixel and sample formats, which no
# check needs; inspect() decodes what it checks with decoders of its own.
_OPEN_OPTIONS = {"codec_whitelist": "none"}
MP4_DEMUXER = "mov,mp4,m4a,3gp,3g2,mj2"  # the name FFmpeg reports, so facts read the same
# Keyframes are decoded without the deblocking filter, a third of an H.264 keyframe's decoding
# (1080p: ~10 → ~7 ms): every slice is still parsed and reconstructed, so what does not decode
# still fails, and the poster, shrunk six times over, differs by less than a level in 255.
_VIDEO_DECODER_OPTIONS = {"skip_loop_filter": "all"}

_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*$")
_LINES = re.compile(r"^\s*(\d{3,4})\s*[pP]\s*$")
_NAMED_LINES = {"4k": 2160, "uhd": 2160, "2k": 1440, "qhd": 1440, "fhd": 1080, "hd": 720}


class UnplayableError(DownloadError):
    """The downloaded file does not decode as a video: a failed download, fetched again."""


@dataclass(frozen=True)
class Expected:
    """What the request asked for, where the model says what that means (None: not checked)."""

    seconds: float | None = None
    aspect_ratio: str | None = None  # as asked, e.g. "16:9"
    resolution: str | None = None  # as asked, e.g. "1080p"
    audio: bool | None = None

    @property
    def ratio(self) -> float | None:
        return ratio_of(self.aspect_ratio)

    @property
    def lines(self) -> int | None:
        return lines_of(self.resolution)


@dataclass(frozen=True)
class Inspection:
    """What a file turned out to be: the job's ``media``, ``warnings`` and ``poster``."""

    media: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    poster: str | None = None

    def fields(self) -> dict[str, Any]:
        """The ledger columns to set with the job's ``done`` transition."""
        return {"media": self.media, "warnings": self.warnings, "poster": self.poster}


def ratio_of(aspect_ratio: str | None) -> float | None:
    """``"16:9"`` → 1.777…; None for ``auto`` or anything that is not ``W:H``."""
    match = _RATIO.match(aspect_ratio or "")
    if match is None:
        return None
    across, down = float(match.group(1)), float(match.group(2))
    return across / down if across > 0 and down > 0 else None


def lines_of(resolution: str | None) -> int | None:
    """``"720p"`` → 720, ``"768P"`` → 768, ``"4k"`` → 2160; None for what has no line count."""
    if not resolution:
        return None
    named = _NAMED_LINES.get(resolution.strip().lower())
    if named is not None:
        return named
    match = _LINES.match(resolution)
    return int(match.group(1)) if match else None


def expected_of(spec: ModelSpec, payload: Mapping[str, Any]) -> Expected:
    """What a job's request asked of its clip, in the terms the registry defines."""
    if not spec.known:
        return Expected()
    body = spec.complete(payload)
    shape = spec.media_shape(payload)
    duration_field = spec.price.seconds if spec.price and spec.price.per != "video" else "duration"
    seconds = seconds_of(body.get(duration_field))
    aspect = body.get("aspect_ratio")
    resolution = body.get("resolution")
    has_audio_field = isinstance(spec.audio, str) and spec.audio in spec.fields
    return Expected(
        seconds=seconds or None,
        aspect_ratio=aspect if isinstance(aspect, str) and ratio_of(aspect) else None,
        resolution=resolution if isinstance(resolution, str) and lines_of(resolution) else None,
        audio=bool(shape["audio"]) if has_audio_field or spec.audio is True else None,
    )


def media_dir(ledger_path: str | Path) -> Path:
    """Where a ledger keeps posters and thumbnails: ``<ledger>.media/`` beside it (like its
    ``.lock``), never among the videos."""
    path = Path(ledger_path)
    return path.with_name(path.name + ".media")


def poster_path(media: Path, job_id: str) -> Path:
    """A job's poster in a ledger's :func:`media_dir`: named after its id, with a hash of the
    id when the name had to change it (``a/b`` and ``a_b`` are both ``a_b``) or a file system
    that ignores case could (``A`` and ``a``), so that no two jobs share a poster."""
    name = safe_name(job_id)
    if name != job_id.lower():
        name += "-" + hashlib.sha256(job_id.encode()).hexdigest()[:10]
    return media / "posters" / f"{name}.jpg"


def inspect(path: Path, expected: Expected, poster: Path | None = None) -> Inspection:
    """Read ``path`` through, describe it, compare it with ``expected``, save a poster.

    Every keyframe is decoded (each group of pictures starts with one, and the rest of the group
    depends on it), and so is audio until one packet gives sound. A cut file is caught by its
    index (MP4: a track's last sample ends past the end of the file) or, for other containers,
    by demuxing every video packet and counting them. Decoding every frame would check little
    more at ten times the CPU. Decoders are reused from file to file (:class:`_DecoderPool`).
    Where the simulator's 720p clip's 7.1 M instructions go (callgrind): 4.6 M decoding its one
    keyframe (3,600 macroblocks, 0.7 M of it the tables FFmpeg's H.264 flush frees and the
    next file allocates again), 1.7 M opening it (1.05 M the MP4 header), the rest demuxing
    and Python; a poster is 4.0 M more (:func:`_save_poster`).

    Raises :class:`UnplayableError` when it is not a video that decodes.
    """
    import av
    from av.stream import Discard

    try:
        with _open(path) as container, _DECODERS.lend() as lend:
            if not container.streams.video:
                raise UnplayableError(f"{path.name} has no video stream")
            video = container.streams.video[0]
            audio = container.streams.audio[0] if container.streams.audio else None
            if audio is not None and audio.codec_context is None:
                raise UnplayableError(f"{path.name} has an audio stream no decoder reads")
            pictures = lend(video)
            sound = lend(audio) if audio is not None else None
            tracks = [video] if audio is None else [video, audio]
            for stream in container.streams:
                if stream not in tracks:
                    stream.discard = Discard.all
            seconds = _container_seconds(container, video)
            indexed = _indexed_frames(container, tracks, path.name)
            if indexed is not None and not video.codec_context.has_b_frames:
                # the demuxer skips the frames between keyframes without reading them; not
                # when frames are reordered (B-frames): the MP4 demuxer then loses track of
                # the composition offsets and gives the keyframes it returns wrong times
                video.discard = Discard.nonkey
            frames, last_pts, keyframes, heard = 0, 0, [], False
            for packet in container.demux(tracks):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                if packet.stream is not video:
                    if not heard and sound is not None and sound.decode(packet):
                        heard = True
                        packet.stream.discard = Discard.all  # the rest is not even read
                    continue
                frames += 1
                if packet.pts is not None and packet.pts > last_pts:
                    last_pts = packet.pts
                if packet.is_keyframe:
                    keyframes.extend(pictures.decode(packet))
            keyframes.extend(pictures.decode(None))  # what the decoder held back
            if sound is not None and not heard:
                heard = bool(sound.decode(None))
            if not keyframes:
                raise UnplayableError(f"{path.name} has a video stream but no frame decodes")
            if indexed is not None:
                frames = indexed
            elif video.frames and frames < video.frames:
                raise UnplayableError(f"{path.name} ends after {frames} of {video.frames} frames")
            rate = float(video.average_rate) if video.average_rate else None
            if not seconds:
                last_time = float(last_pts * video.time_base) if video.time_base else 0.0
                seconds = last_time + (1 / rate if rate else 0.0)
            media = {
                "container": container.format.name,
                "video_codec": video.codec_context.name,
                "audio_codec": audio.codec_context.name if audio is not None else None,
                "width": pictures.width,
                "height": pictures.height,
                "duration": round(seconds, 3),
                "fps": round(rate, 3) if rate else None,
                "frames": frames,
                "audio": heard,  # an audio stream none of whose packets decodes is silence
            }
            still = _still(keyframes, seconds * POSTER_AT, video.time_base)
            saved = _save_poster(still, poster) if poster is not None else None
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise UnplayableError(f"{path.name} does not decode as a video ({reason})") from exc
    return Inspection(media, compare(media, expected, path.suffix), saved)


def _open(path: Path) -> Any:
    """``av.open``, told the demuxer when the name says MP4: FFmpeg would otherwise try every
    demuxer's probe on the first bytes (~0.1 ms). A file that is not an MP4 after all is
    opened again and probed, so it fails (or opens) as it would have."""
    import av

    if path.suffix.lower() in MP4_SUFFIXES:
        try:
            return av.open(str(path), format=MP4_DEMUXER, options=_OPEN_OPTIONS)
        except av.error.FFmpegError:
            pass
    return av.open(str(path), options=_OPEN_OPTIONS)


class _DecoderPool:
    """Opened decoders kept between files: a new decoder costs more than the keyframe of the
    simulator's clip (its tables and frame buffers are allocated and zeroed, ~0.5 ms for H.264
    and ~0.25 ms for AAC), and clip after clip has the same codec set-up.

    A decoder is lent for a stream whose codec, set-up bytes (``extradata``: H.264's SPS and
    PPS, AAC's AudioSpecificConfig), time base and frame size or sample rate and channels are
    those of the stream it was opened for, and flushed first, which is how FFmpeg resets a
    decoder for a seek; only the codecs in :data:`POOLED_CODECS` (whose set-up is all in those
    fields) are kept. Decoders come back only from a file that was read without an error, and
    at most ``keep`` wait, the oldest dropped first (an H.264 decoder keeps a few frames'
    buffers: ~3 MB each at 1080p). Frames a file still holds stay valid after its decoders
    go back: FFmpeg counts references to decoded buffers and its buffer pools are thread-safe.
    """

    def __init__(self, keep: int) -> None:
        self._idle: deque[tuple[tuple[Any, ...], Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lend(self) -> Iterator[Callable[[Any], Any]]:
        """``with pool.lend() as lend: decoder = lend(stream)``; the decoders go back at the
        end of a ``with`` block left without an exception."""
        lent: list[tuple[tuple[Any, ...], Any]] = []

        def lend(stream: Any) -> Any:
            key = _decoder_key(stream)
            decoder = self._take(key) if key is not None else None
            if decoder is None:
                decoder = stream.codec_context
                decoder.thread_count = 1  # no decoder threads: a clip is small work
                if stream.type == "video":
                    decoder.options = _VIDEO_DECODER_OPTIONS
            else:
                decoder.flush_buffers()
            if key is not None:
                lent.append((key, decoder))
            return decoder

        yield lend
        with self._lock:
            self._idle.extend(lent)

    def _take(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            for index, (idle_key, decoder) in enumerate(self._idle):
                if idle_key == key:
                    del self._idle[index]
                    return decoder
        return None


POOLED_CODECS = WEB_VIDEO_CODECS | {"aac", "opus"}
_DECODERS = _DecoderPool(keep=4)


def _decoder_key(stream: Any) -> tuple[Any, ...] | None:
    """What a stream's decoder is opened from, or None when it is not pooled."""
    context = stream.codec_context
    if context.name not in POOLED_CODECS:
        return None
    if stream.type == "video":
        shape = (context.width, context.height)
    else:
        shape = (context.sample_rate, context.channels)
    return (stream.type, context.name, context.extradata, stream.time_base, *shape)


def _indexed_frames(container: Any, tracks: list[Any], name: str) -> int | None:
    """MP4: the video's frame count from the index, once every track's last sample is found
    whole in the file (muxers write a track's samples in order, so a cut reaches its last one
    first). None when the index does not list every sample (other containers, fragmented MP4):
    the caller demuxes every packet and counts them instead."""
    if MP4_FAMILY not in container.format.name:
        return None
    if any(not track.frames or len(track.index_entries) != track.frames for track in tracks):
        return None
    size = container.size
    for track in tracks:
        entries = track.index_entries
        last = entries[-1]
        if last.pos + last.size > size:
            whole = bisect.bisect_right(entries, size, key=lambda entry: entry.pos + entry.size)
            what = "frames" if track is tracks[0] else f"{track.type} packets"
            raise UnplayableError(f"{name} ends after {whole} of {track.frames} {what}")
    return int(tracks[0].frames)


def compare(media: Mapping[str, Any], expected: Expected, suffix: str = ".mp4") -> list[str]:
    """How the file differs from the request, one readable sentence per difference."""
    problems: list[str] = []
    width, height = int(media["width"]), int(media["height"])
    if expected.seconds is not None:
        slack = max(DURATION_TOLERANCE[0], DURATION_TOLERANCE[1] * expected.seconds)
        if abs(media["duration"] - expected.seconds) > slack:
            problems.append(f"duration {media['duration']:g} s, asked for {expected.seconds:g} s")
    ratio = expected.ratio
    if ratio is not None and height and abs(width / height - ratio) > ASPECT_TOLERANCE * ratio:
        problems.append(f"frame {width}×{height} is not {expected.aspect_ratio} as asked")
    lines = expected.lines
    if lines is not None and width and height:
        short = min(width, height)
        # "720p" is a 16:9 frame's short side; at other ratios a model may keep its area
        # instead (Seedance: 960×960 at 1:1, 2176×928 at 21:9 for 1080p)
        same_area = math.sqrt(width * height * 9 / 16)
        slack = max(LINES_TOLERANCE[0], LINES_TOLERANCE[1] * lines)
        if min(abs(short - lines), abs(same_area - lines)) > slack:
            problems.append(
                f"frame {width}×{height} has {short} lines, asked for {expected.resolution}"
            )
    if expected.audio is True and not media["audio"]:
        problems.append("no audio track, audio was asked for")
    if expected.audio is False and media["audio"]:
        problems.append("has an audio track, none was asked for")
    if suffix.lower() in (".mp4", ".mov") and MP4_FAMILY not in str(media["container"]):
        problems.append(f"container is {media['container']}, not MP4")
    if media["video_codec"] not in WEB_VIDEO_CODECS:
        problems.append(f"video codec {media['video_codec']} may not play in a browser")
    return problems


def _container_seconds(container: Any, video: Any) -> float:
    import av

    if container.duration:
        return float(container.duration / av.time_base)
    if video.duration and video.time_base:
        return float(video.duration * video.time_base)
    return 0.0


def _still(keyframes: list[Any], at: float, time_base: Any) -> Any:
    """The last keyframe at or before ``at`` seconds (the first when none is). The time is the
    frame's pts in the stream's time base: frames the decoder gives back only when flushed
    (it holds a few back when a clip has B-frames) carry no time base of their own."""
    if not time_base:
        return keyframes[0]
    before = [frame for frame in keyframes if frame.pts is not None and frame.pts * time_base <= at]
    return before[-1] if before else keyframes[0]


def _save_poster(frame: Any, dest: Path) -> str | None:
    """A small JPEG of ``frame`` at ``dest``; None on a disk problem, which costs the poster
    and nothing else.

    FFmpeg shrinks the frame (an area average) in its own YUV 4:2:0 and only then turns the
    small picture into RGB: shrinking into RGB costs twice as much, and the JPEG keeps colour at
    half resolution either way. The JPEG is made in memory and written in one call, in place,
    not as a ``.part`` renamed: see :func:`_open_poster`. PIL encoding straight into the file
    costs 0.09 ms less in-process and releases the GIL while it encodes (into memory it
    holds it), yet whole runs took more CPU (2,000 near-instant jobs at concurrency 200, in
    one sitting on a loaded machine: 13.9 against 11.6 ms a job, medians of 5 and 3, runs
    spreading ±1.5 ms), most likely because
    a worker that lets the GIL go waits to get it back, so more clips are checked at once than
    :data:`_DECODERS` keeps decoders for.

    For the simulator's 1280×720 keyframe (in-process medians): shrink 0.30–0.43 ms (2.2 M
    instructions), RGBA 0.06, JPEG 0.33, writing 0.04. Tried and not kept: FFmpeg's other
    scalers (FAST_BILINEAR 0.23 ms aliases, 18 dB PSNR against AREA on ``testsrc2``; POINT
    0.09 ms, 25 dB; BILINEAR and smoother ones cost more), PIL's ``reduce`` of the three planes
    (0.97 ms), FFmpeg's MJPEG encoder (1.03 against 0.80 ms for shrink and JPEG, same size), and
    a JPEG from the YCbCr planes (no faster: libjpeg-turbo's RGB→YCbCr is SIMD)."""
    from PIL import Image

    scale = min(1.0, POSTER_BOX / max(frame.width, frame.height, 1))
    width, height = (max(2, round(side * scale) // 2 * 2) for side in (frame.width, frame.height))
    shrink, paint = _scalers()
    small = shrink.reformat(frame, width, height, "yuv420p", interpolation="AREA", threads=1)
    # 4 bytes a pixel, as PIL keeps RGB: it reads the frame in place. Not for every width:
    # FFmpeg 8's SIMD conversion to RGBA leaves the last pixels of a row unwritten when the
    # width is 2 or 4 past a multiple of 16 (a portrait poster is 180 wide: a 4-pixel stripe of
    # whatever the buffer held), so other widths are turned into 3-byte RGB, which PIL copies
    # (0.1 ms more).
    mode = "RGBX" if width % 8 == 0 else "RGB"
    rgb = paint.reformat(small, format=_RGB_FORMATS[mode], interpolation="BILINEAR", threads=1)
    plane = rgb.planes[0]
    image = Image.frombuffer(mode, (width, height), plane, "raw", mode, plane.line_size, 1)
    jpeg = io.BytesIO()
    image.save(jpeg, "JPEG", quality=80)
    data = jpeg.getbuffer()
    try:
        with _open_poster(dest) as file:
            try:
                while data:  # one write(2) for a file on disk, unless it fills the disk
                    data = data[file.write(data) :]
            except OSError:
                dest.unlink(missing_ok=True)  # what a full disk left of it
                raise
    except OSError as exc:
        _poster_trouble(dest, exc)
        return None
    return str(dest)


_POSTER_TROUBLE: set[tuple[str, int | None]] = set()  # (folder, errno) already said


def _poster_trouble(dest: Path, exc: OSError) -> None:
    """Say once per folder and cause that posters cannot be saved (a full disk, a file where
    the folder should be): every later clip would say it again."""
    said = (str(dest.parent), exc.errno)
    if said in _POSTER_TROUBLE:
        logger.debug("cannot save the poster %s: %s", dest, exc)
        return
    _POSTER_TROUBLE.add(said)
    logger.warning(
        "cannot save posters in %s (%s): the videos are kept and checked; the gallery shows "
        "them without a poster",
        dest.parent,
        exc.strerror or exc,
    )


_RGB_FORMATS = {"RGBX": "rgba", "RGB": "rgb24"}  # PIL's raw mode: FFmpeg's pixel format


def _open_poster(dest: Path) -> BinaryIO:
    """``dest`` opened to be written over (the JPEG goes in one call), making the folder the
    first time; never through a link someone put there (:func:`~batchrunner.paths.open_to_write`).

    In place, not a ``.part`` renamed over it (that doubles the writing's CPU, 0.037 against
    0.086 ms, with three more system calls and a directory update): the job's ``done``
    transition, which records the poster, is committed only after :func:`inspect` returns, and
    a job that is not done is inspected again (its poster written over) by the next run, so a
    poster cut short by a crash is never one a done job points to."""
    try:
        return open_to_write(dest)
    except FileNotFoundError:  # the first poster beside this ledger
        dest.parent.mkdir(parents=True, exist_ok=True)
        return open_to_write(dest)


_per_thread = threading.local()


def _scalers() -> tuple[Any, Any]:
    """This thread's two FFmpeg scalers (shrink, then to RGB): each keeps its set-up (filter
    tables, ~0.1 ms) while sizes and formats repeat, as they do from clip to clip. Not shared
    between threads: a scaler is not thread-safe."""
    scalers = getattr(_per_thread, "scalers", None)
    if scalers is None:
        from av.video.reformatter import VideoReformatter

        scalers = _per_thread.scalers = (VideoReformatter(), VideoReformatter())
    return scalers
