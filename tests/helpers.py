"""Helpers the tests share: simulator settings, manifests, counters."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from batchrunner.batch import Settings
from batchrunner.retry import RetryPolicy
from batchrunner.simulator import SimulatorConfig, SimulatorServer

TOKEN = "sim-test-token-5f2a"
IMAGE = "https://storage.googleapis.com/falserverless/example_inputs/veo3-i2v-input.png"


def fast_config(**overrides: Any) -> SimulatorConfig:
    values: dict[str, Any] = {"queue_seconds": 0.05, "run_seconds": 0.15, "token": TOKEN}
    values.update(overrides)
    return SimulatorConfig(**values)


def counters(server: SimulatorServer) -> dict[str, Any]:
    """What the server saw, read over HTTP like any client would."""
    with urllib.request.urlopen(f"{server.url}/_sim/counters", timeout=10) as answer:
        return json.loads(answer.read())


def ctrl_c_after(server: SimulatorServer, submits: int) -> AbstractContextManager[None]:
    """Ctrl-C as soon as ``server`` has taken ``submits`` submits: a user stopping a run with
    jobs in flight (make them slow to finish)."""
    return ctrl_c_when(lambda: counters(server)["submits"] >= submits)


@contextmanager
def ctrl_c_when(ready: Callable[[], bool]) -> Iterator[None]:
    """Ctrl-C (SIGINT to this process) as soon as ``ready()`` holds, asked every 20 ms, for a
    run on this (the main) thread; nothing is sent once the block is left."""
    leaving, deciding = threading.Event(), threading.Lock()

    def watch() -> None:
        while not leaving.wait(0.02):
            seen = ready()
            with deciding:
                if seen and not leaving.is_set():
                    os.kill(os.getpid(), signal.SIGINT)
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        with deciding:
            leaving.set()
        watcher.join()


def settings_for(server: SimulatorServer, tmp_path: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "ledger": tmp_path / "ledger.db",
        "out": tmp_path / "out",
        "base_url": server.url,
        "auth_scheme": "bearer",
        "rps": None,
        "poll_min": 0.02,
        "poll_max": 0.2,
        "retry": RetryPolicy.fast(),
    }
    values.update(changes)
    return Settings(**values)


def run_args(server: SimulatorServer, tmp_path: Path, manifest: Path, *extra: str) -> list[str]:
    """``batchrunner run`` against ``server``, ledger and videos in ``tmp_path``, fast polling."""
    return [
        "run", str(manifest), "--ledger", str(tmp_path / "ledger.db"),
        "--out", str(tmp_path / "out"), "--base-url", server.url, "--auth-scheme", "bearer",
        "--rps", "500", "--poll-min", "0.02", "--poll-max", "0.2", *extra,
    ]  # fmt: skip


def page_data(html: str) -> dict[str, Any]:
    """The data a gallery page carries (its cards, facets and summary)."""
    match = re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S)
    assert match is not None
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def rows(n: int, *, failing: tuple[int, ...] = (), **extra: Any) -> list[dict[str, Any]]:
    """``n`` distinct 4-second rows; rows numbered in ``failing`` trip the content checker."""
    made = []
    for i in range(1, n + 1):
        prompt = f"Shot {i}: a slow dolly past a lighthouse at dusk"
        if i in failing:
            prompt += " #policy"
        made.append(
            {"id": f"shot-{i:03d}", "prompt": prompt, "image_url": IMAGE, "duration": "4s", **extra}
        )
    return made
