"""--check-urls: the manifest's file URLs fetched before anything is bought."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from click.testing import CliRunner

from batchrunner import urlcheck
from batchrunner.cli import cli
from batchrunner.downloader import MediaClient
from batchrunner.errors import Problem
from batchrunner.manifest import load_manifest
from batchrunner.models import get_model
from batchrunner.simulator import SimulatorServer
from tests.helpers import TOKEN, counters, fast_config, rows, run_args, write_manifest

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


class _Files(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        answers = {
            "/fox.png": (200, "image/png", PNG),
            "/gone.png": (404, "text/plain", b"not found"),
            "/private.png": (403, "application/xml", b"<Error>AccessDenied</Error>"),
            "/share": (200, "text/html; charset=utf-8", b"<!doctype html><title>Sign in</title>"),
            "/png-called-html": (200, "text/html", PNG),  # a misconfigured server: still a PNG
        }
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/fox.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, kind, body = answers[self.path]
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def files() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_each_url_is_judged_by_what_its_server_answers(files: str) -> None:
    """Over real sockets: what the provider would certainly fail is named, the rest passes."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a port nobody listens on
    nobody = f"http://127.0.0.1:{closed.getsockname()[1]}/fox.png"
    urls = [f"{files}/{p}" for p in ("fox.png", "moved", "png-called-html", "gone.png")]
    urls += [f"{files}/private.png", f"{files}/share", nobody]
    try:
        found = anyio.run(urlcheck._check_all, urls, None)
    finally:
        closed.close()
    assert list(found) == urls[3:]  # the first three fetch as files
    assert found[f"{files}/gone.png"] == "answered 404: the provider could not fetch it either"
    assert found[f"{files}/private.png"].startswith("answered 403 (a private or expired link?)")
    assert found[f"{files}/share"].startswith("serves a web page, not the file")
    assert found[nobody].startswith("cannot be fetched from this machine (ConnectError")


def _served(asked: Counter[str]) -> MediaClient:
    def answer(request: httpx.Request) -> httpx.Response:
        asked[request.url.path] += 1
        assert request.headers["range"] == "bytes=0-1023"  # the start only, not the file
        if request.url.path == "/gone.png":
            return httpx.Response(404)
        return httpx.Response(200, headers={"content-type": "image/png"}, content=PNG)

    return MediaClient(transport=httpx.MockTransport(answer))


def test_a_broken_url_is_a_problem_of_each_row_that_names_it_fetched_once(tmp_path: Path) -> None:
    asked: Counter[str] = Counter()
    gone, fine = "https://cdn.example.com/gone.png", "https://cdn.example.com/fox.png"
    sheet = [
        {**row, "image_url": url}
        for row, url in zip(rows(4), [fine, gone, fine, gone], strict=True)
    ]
    manifest = write_manifest(tmp_path / "m.csv", sheet)
    loaded = load_manifest(manifest, get_model("fal-ai/veo3/image-to-video"))
    problems = urlcheck.url_problems(loaded, _served(asked))
    assert [(p.row, p.line, p.column, p.value) for p in problems] == [
        (2, 3, "image_url", gone),
        (4, 5, "image_url", gone),
    ]
    assert problems[0].message == "image URL answered 404: the provider could not fetch it either"
    assert asked == {"/fox.png": 1, "/gone.png": 1}  # each URL once, however many rows

    async def in_a_notebook() -> list[Problem]:  # its loop runs: the check goes beside it
        return urlcheck.url_problems(loaded, _served(asked))

    assert asyncio.run(in_a_notebook()) == problems


def test_check_urls_stops_validate_and_run_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: Counter[str] = Counter()
    monkeypatch.setattr(urlcheck, "MediaClient", lambda **_: _served(asked))
    sheet = rows(3)
    sheet[1]["image_url"] = "https://cdn.example.com/gone.png"
    manifest = write_manifest(tmp_path / "m.csv", sheet)
    checked = CliRunner().invoke(cli, ["validate", str(manifest), "--check-urls"])
    assert checked.exit_code == 2
    assert checked.stderr.startswith(
        f"{manifest}: row 2, line 3, column 'image_url': image URL answered 404"
    )
    assert CliRunner().invoke(cli, ["validate", str(manifest)]).exit_code == 0  # opt-in
    with SimulatorServer(fast_config()) as server:
        args = [*run_args(server, tmp_path, manifest), "--check-urls"]
        ran = CliRunner().invoke(cli, args, env={"BATCHRUNNER_API_KEY": TOKEN})
        assert ran.exit_code == 2 and "nothing was submitted" in ran.output
        assert counters(server)["submits"] == 0
