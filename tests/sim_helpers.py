"""Helpers shared by the tests that run against the queue simulator."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import trustme

ENDPOINT = "fal-ai/veo3/image-to-video"
VALID_BODY = {
    "prompt": "A lighthouse at dawn, waves rolling in",
    "image_url": "https://example.com/lighthouse.png",
    "duration": "4s",
    "generate_audio": False,
}

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None], *, timeout: float = 15.0, interval: float = 0.01, what: str = ""
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or probe}")
        time.sleep(interval)


class FakeClock:
    """A monotonic clock that only moves when a test says so."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class TLSFiles:
    ca_pem: Path  # trust this (SSL_CERT_FILE)
    cert_pem: Path  # server certificate chain for 127.0.0.1 and localhost
    key_pem: Path


def make_tls(folder: Path) -> TLSFiles:
    """A throwaway CA and a server certificate for ``127.0.0.1``/``localhost``."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TLSFiles(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca_pem))
    cert.private_key_pem.write_to_path(str(files.key_pem))
    files.cert_pem.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    return files
