"""The downloader over httpx.MockTransport: verify, resume, never send credentials."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from batchrunner.downloader import MediaClient, download
from batchrunner.errors import DownloadError
from batchrunner.paths import part_path
from batchrunner.retry import RetryPolicy

BODY = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(BODY).hexdigest()
pytestmark = pytest.mark.anyio


class CutStream(httpx.AsyncByteStream):
    """Sends ``keep`` bytes, then the connection 'drops'."""

    def __init__(self, data: bytes, keep: int):
        self.data, self.keep = data, keep

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data[: self.keep]
        raise httpx.ReadError("connection reset by peer")


class Media:
    """A media server: Range support switchable, the first ``cuts`` responses cut halfway."""

    def __init__(self, *, ranges: bool = True, cuts: int = 0, length: int | None = None):
        self.ranges, self.cuts, self.length = ranges, cuts, length
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        start = 0
        header = request.headers.get("range")
        status, headers = 200, {"content-type": "video/mp4"}
        if header and self.ranges:
            start = int(header.removeprefix("bytes=").split("-")[0])
            status = 206
            headers["content-range"] = f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"
        data = BODY[start:]
        headers["content-length"] = str(self.length if self.length is not None else len(data))
        if self.cuts:
            self.cuts -= 1
            return httpx.Response(status, headers=headers, stream=CutStream(data, len(data) // 2))
        return httpx.Response(status, headers=headers, content=data)


def client(media: Media) -> MediaClient:
    return MediaClient(httpx.MockTransport(media))


async def test_downloads_verifies_and_renames_atomically(tmp_path: Path) -> None:
    media = Media()
    dest = tmp_path / "clip.mp4"
    async with client(media) as c:
        got = await download(c, "https://cdn.test/a.mp4", dest, expected_size=len(BODY))
    assert (got.bytes, got.sha256, got.fetched) == (len(BODY), SHA, True)
    assert dest.read_bytes() == BODY
    assert not list(tmp_path.glob("*.part"))
    assert "authorization" not in media.requests[0].headers


async def test_a_file_of_the_right_size_with_a_second_name_is_another_job_s(
    tmp_path: Path,
) -> None:
    dest, kept = tmp_path / "0001-a.mp4", tmp_path / "0001-a@1.mp4"
    other = b"another job's video".ljust(len(BODY), b".")  # the size the result promises
    dest.write_bytes(other)
    os.link(dest, kept)  # a replaced job's video, kept under a name of its own
    media = Media()
    async with client(media) as c:
        got = await download(c, "https://cdn.test/a.mp4", dest, expected_size=len(BODY))
    assert (got.fetched, got.sha256, dest.read_bytes()) == (True, SHA, BODY)
    assert kept.read_bytes() == other  # renamed over this name only
    # one name, this video: what a run that stopped after its rename left; fetched again to
    # be sure (a file of the right size was adopted unseen: another batch's, say), kept as is
    async with client(media) as c:
        again = await download(c, "https://cdn.test/a.mp4", dest, expected_size=len(BODY))
    assert (again.fetched, again.sha256, len(media.requests)) == (False, SHA, 2)


async def test_another_video_at_the_name_is_neither_overwritten_nor_adopted(
    tmp_path: Path,
) -> None:
    """A batch stopped with jobs in flight, another ledger's run wrote its videos into the
    same folder meanwhile (its lock was free), and resume replaced them, or, the same size,
    recorded them as its own. The file there is compared with the video once fetched: kept,
    and the download fails saying why (the result stays for a run after it is moved)."""
    dest = tmp_path / "0001-a.mp4"
    other = b"another batch's video".ljust(len(BODY), b".")
    dest.write_bytes(other)
    async with client(Media()) as c:
        with pytest.raises(DownloadError, match=r"0001-a\.mp4 is already there and is another"):
            await download(c, "https://cdn.test/a.mp4", dest, expected_size=len(BODY))
    assert dest.read_bytes() == other and not part_path(dest).exists()


async def test_a_file_the_disk_refuses_is_a_download_error_not_a_crash(tmp_path: Path) -> None:
    dest = tmp_path / ("x" * 300 + ".mp4")  # longer than a file name may be
    async with client(Media()) as c:
        with pytest.raises(DownloadError, match="File name too long"):
            await download(c, "https://cdn.test/a.mp4", dest, expected_size=len(BODY))


async def test_cut_download_resumes_with_range(tmp_path: Path) -> None:
    media = Media(cuts=1)
    dest = tmp_path / "clip.mp4"
    async with client(media) as c:
        got = await download(
            c, "https://cdn.test/a.mp4", dest, expected_size=len(BODY), retry=RetryPolicy.fast()
        )
    assert got.sha256 == SHA and dest.read_bytes() == BODY
    assert len(media.requests) == 2
    assert media.requests[1].headers["range"] == f"bytes={len(BODY) // 2}-"


async def test_cut_download_restarts_when_server_ignores_range(tmp_path: Path) -> None:
    media = Media(cuts=1, ranges=False)
    dest = tmp_path / "clip.mp4"
    async with client(media) as c:
        got = await download(
            c, "https://cdn.test/a.mp4", dest, expected_size=len(BODY), retry=RetryPolicy.fast()
        )
    assert got.sha256 == SHA and dest.read_bytes() == BODY


async def test_size_mismatch_with_result_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    media = Media()
    dest = tmp_path / "clip.mp4"
    async with client(media) as c:
        with pytest.raises(DownloadError, match="result said"):
            await download(c, "https://cdn.test/a.mp4", dest, expected_size=len(BODY) + 5)
    assert not dest.exists()


class Body(httpx.AsyncByteStream):
    """A body that ends cleanly (no connection error) after ``data``; no Content-Length unless
    the response's headers give one."""

    def __init__(self, data: bytes):
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


class EndsEarly:
    """The first answer is a 200 whose body stops cleanly halfway; then Range requests work.

    ``claimed`` is the Content-Length the first answer states (None: no Content-Length).
    """

    def __init__(self, claimed: int | None):
        self.claimed = claimed
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) == 1:
            headers = {} if self.claimed is None else {"content-length": str(self.claimed)}
            return httpx.Response(200, headers=headers, stream=Body(BODY[: len(BODY) // 2]))
        start = int(request.headers["range"].removeprefix("bytes=").split("-")[0])
        headers = {"content-range": f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"}
        return httpx.Response(206, headers=headers, stream=Body(BODY[start:]))


async def test_a_200_that_ends_short_without_content_length_is_resumed_not_kept(
    tmp_path: Path,
) -> None:
    media = EndsEarly(claimed=None)
    dest = tmp_path / "clip.mp4"
    async with MediaClient(httpx.MockTransport(media)) as c:
        got = await download(
            c, "https://cdn.test/a.mp4", dest, expected_size=len(BODY), retry=RetryPolicy.fast()
        )
    assert (got.bytes, got.sha256) == (len(BODY), SHA)
    assert dest.read_bytes() == BODY
    assert media.requests[1].headers["range"] == f"bytes={len(BODY) // 2}-"


async def test_a_body_shorter_than_its_content_length_is_resumed_not_kept(tmp_path: Path) -> None:
    media = EndsEarly(claimed=len(BODY))  # the header promises it all; half arrives
    dest = tmp_path / "clip.mp4"
    async with MediaClient(httpx.MockTransport(media)) as c:
        got = await download(c, "https://cdn.test/a.mp4", dest, retry=RetryPolicy.fast())
    assert (got.bytes, got.sha256) == (len(BODY), SHA)  # no file_size: Content-Length decides
    assert dest.read_bytes() == BODY


async def test_a_body_longer_than_the_results_file_size_is_refused(tmp_path: Path) -> None:
    def longer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Body(BODY))  # no Content-Length to check up front

    dest = tmp_path / "clip.mp4"
    async with MediaClient(httpx.MockTransport(longer)) as c:
        with pytest.raises(DownloadError, match=f"got {len(BODY)} bytes, expected 1000"):
            await download(c, "https://cdn.test/a.mp4", dest, expected_size=1000)
    assert not dest.exists()
    assert not list(tmp_path.iterdir())  # the .part file is gone too


async def test_a_206_for_a_range_not_asked_for_is_not_written_into_the_file(
    tmp_path: Path,
) -> None:
    half = len(BODY) // 2
    dest = tmp_path / "clip.mp4"
    (tmp_path / "clip.mp4.part").write_bytes(BODY[:half])  # left by an earlier, cut try
    seen: list[str | None] = []

    def wrong_range_once(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("range"))
        if len(seen) == 1:  # asked for bytes=51200-, answers from byte 1000
            headers = {"content-range": f"bytes 1000-{len(BODY) - 1}/{len(BODY)}"}
            return httpx.Response(206, headers=headers, stream=Body(BODY[1000:]))
        return httpx.Response(200, stream=Body(BODY))

    async with MediaClient(httpx.MockTransport(wrong_range_once)) as c:
        got = await download(
            c, "https://cdn.test/a.mp4", dest, expected_size=len(BODY), retry=RetryPolicy.fast()
        )
    assert (got.sha256, dest.read_bytes()) == (SHA, BODY)
    assert seen == [f"bytes={half}-", None]  # started again from scratch


async def test_persistent_cuts_fail_after_budget_but_keep_the_part(tmp_path: Path) -> None:
    media = Media(cuts=100)
    dest = tmp_path / "clip.mp4"
    async with client(media) as c:
        with pytest.raises(DownloadError, match="did not complete"):
            await download(
                c, "https://cdn.test/a.mp4", dest, expected_size=len(BODY), retry=RetryPolicy.fast()
            )
    assert not dest.exists()
    assert (tmp_path / "clip.mp4.part").exists()  # resume can continue from here later
    assert len(media.requests) == RetryPolicy.fast().attempts


async def test_a_present_file_is_taken_only_once_its_bytes_are_the_video_s(
    tmp_path: Path,
) -> None:
    media = Media()
    dest = tmp_path / "clip.mp4"
    dest.write_bytes(BODY)
    async with client(media) as c:
        got = await download(c, "https://cdn.test/a.mp4", dest, expected_size=len(BODY))
    assert (got.fetched, got.sha256, len(media.requests)) == (False, SHA, 1)
    dest.write_bytes(BODY[:10])  # cut, and the ledger says this job saved it: written over
    async with client(media) as c:
        got = await download(c, "https://cdn.test/a.mp4", dest, expected_size=len(BODY), mine=True)
    assert (got.fetched, dest.read_bytes()) == (True, BODY)


async def test_unwritable_folder_is_a_clear_download_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    async with client(Media()) as c:
        with pytest.raises(DownloadError, match="cannot write"):
            await download(c, "https://cdn.test/a.mp4", blocker / "clip.mp4")


@pytest.mark.parametrize(("status", "tries"), [(404, 3), (410, 3), (403, 1)])
async def test_a_gone_or_refused_video_fails_for_good(
    tmp_path: Path, status: int, tries: int
) -> None:
    """404/410 are retried (a CDN may lag behind), then permanent; other 4xx at once."""
    seen: list[httpx.Request] = []

    def gone(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status)

    async with MediaClient(httpx.MockTransport(gone)) as c:
        with pytest.raises(DownloadError, match=str(status)) as info:
            await download(
                c, "https://cdn.test/a.mp4", tmp_path / "x.mp4", retry=RetryPolicy.fast(3)
            )
    assert len(seen) == tries and info.value.permanent


async def test_a_url_that_is_not_http_fails_for_good_without_a_request(tmp_path: Path) -> None:
    async with MediaClient(httpx.MockTransport(lambda r: 1 / 0)) as c:
        with pytest.raises(DownloadError, match="not http") as info:
            await download(c, "file:///etc/passwd", tmp_path / "x.mp4")
    assert info.value.permanent and not (tmp_path / "x.mp4").exists()


async def test_a_size_that_disagrees_twice_fails_for_good(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def short(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"x" * 100)

    async with MediaClient(httpx.MockTransport(short)) as c:
        with pytest.raises(DownloadError, match="again after a fresh download") as info:
            await download(
                c, "https://cdn.test/a.mp4", tmp_path / "x.mp4", expected_size=50,
                retry=RetryPolicy.fast(),
            )  # fmt: skip
    assert info.value.permanent and len(seen) == 2
    assert not (tmp_path / "x.mp4").exists() and not list(tmp_path.glob("*.part"))


async def test_a_full_disk_is_a_clear_download_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("batchrunner.downloader.os.fsync", full)
    async with client(Media()) as c:
        with pytest.raises(DownloadError, match="no space left on the device"):
            await download(
                c, "https://cdn.test/a.mp4", tmp_path / "clip.mp4", expected_size=len(BODY)
            )
    assert not (tmp_path / "clip.mp4").exists()


async def test_a_cdn_redirect_is_followed_to_the_video(tmp_path: Path) -> None:
    seen: list[str] = []

    def cdn(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host == "api.test":
            return httpx.Response(302, headers={"location": "https://cdn.test/v/a.mp4?sig=1"})
        if request.url.path == "/v/a.mp4":
            return httpx.Response(307, headers={"location": "/final/a.mp4"})
        return httpx.Response(200, content=BODY)

    async with MediaClient(httpx.MockTransport(cdn)) as c:
        got = await download(c, "https://api.test/a.mp4", tmp_path / "a.mp4")
    assert seen == [
        "https://api.test/a.mp4",
        "https://cdn.test/v/a.mp4?sig=1",
        "https://cdn.test/final/a.mp4",
    ]
    assert (got.bytes, got.sha256) == (len(BODY), SHA)


@pytest.mark.parametrize(
    ("location", "reason"),
    [("file:///etc/passwd", "is not http"), ("https://cdn.test/loop.mp4", "redirects")],
)
async def test_a_redirect_away_from_http_or_in_a_loop_fails_for_good(
    tmp_path: Path, location: str, reason: str
) -> None:
    asked: list[httpx.Request] = []

    def cdn(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(301, headers={"location": location})

    async with MediaClient(httpx.MockTransport(cdn)) as c:
        with pytest.raises(DownloadError, match=reason) as info:
            await download(c, "https://cdn.test/a.mp4", tmp_path / "a.mp4")
    assert info.value.permanent
    assert len(asked) == (1 if "file" in location else MediaClient.MAX_REDIRECTS + 1)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("answer", "cause"),
    [
        (httpx.Response(403), "cdn.test:8443: answered 403"),
        (httpx.Response(503), "cdn.test:8443: answered 503"),
        (httpx.ConnectError("connection refused"), "cdn.test:8443: ConnectError"),
        (httpx.Response(404), ""),  # this file is gone: the job's own fate
    ],
    ids=["refused", "down", "out of reach", "gone"],
)
async def test_a_failed_download_names_a_cause_that_files_failing_alike_share(
    tmp_path: Path, answer: httpx.Response | Exception, cause: str
) -> None:
    """What failed, without the URL: the run stops buying when its last downloads all fail
    for one cause (``test_a_media_host_out_of_reach_stops_the_buying_and_keeps_every_result``),
    never a password the URL carries."""

    def serve(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    url = "https://user:secret@cdn.test:8443/files/a.mp4"
    async with MediaClient(httpx.MockTransport(serve)) as media:
        with pytest.raises(DownloadError) as failed:
            await download(media, url, tmp_path / "a.mp4", retry=RetryPolicy.fast(attempts=2))
    assert failed.value.cause == cause
