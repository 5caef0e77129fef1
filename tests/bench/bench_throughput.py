"""Benchmarks (not tests): ``make bench``. Prints figures; asserts nothing about speed.

* manifest load: a 10,000-row CSV through validation;
* end to end: N jobs through submit → poll → result → download → verify against the simulator
  with near-zero job durations, so what is measured is batchrunner's own overhead (ledger
  commits, HTTP, hashing), plus the runner's peak RSS.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from batchrunner import batch
from batchrunner.manifest import load_manifest
from batchrunner.models import get_model
from batchrunner.retry import RetryPolicy
from tests.helpers import TOKEN, rows, write_manifest


def bench_manifest(folder: Path, n: int = 10_000) -> None:
    path = write_manifest(folder / "big.csv", rows(n))
    started = time.perf_counter()
    manifest = load_manifest(path, get_model("fal-ai/veo3/image-to-video"))
    elapsed = time.perf_counter() - started
    print(f"manifest: {len(manifest.rows)} rows validated in {elapsed:.2f} s")


def bench_run(folder: Path, n: int = 300, concurrency: int = 32) -> None:
    """The simulator runs in its own process, as a provider would: in a thread it would share
    the GIL with the runner and halve what is measured."""
    argv = [
        sys.executable,
        "-m",
        "batchrunner",
        "simulate",
        "--port",
        "0",
        "--token",
        TOKEN,
        "--queue-seconds",
        "0",
        "--run-seconds",
        "0.01",
        "--media-bytes",
        str(256 * 1024),
    ]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().rsplit(" ", 1)[-1].strip()
        manifest = write_manifest(folder / "run.csv", rows(n))
        settings = batch.Settings(
            ledger=folder / "run.db",
            out=folder / "out",
            base_url=url,
            auth_scheme="bearer",
            rps=None,
            concurrency=concurrency,
            poll_min=0.01,
            poll_max=0.2,
            retry=RetryPolicy.fast(),
        )
        started = time.perf_counter()
        summary = batch.run_manifest(manifest, settings, token=TOKEN)
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait()
    assert summary.exit_code == 0, summary
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"run: {n} jobs ({n * 256 // 1024} MiB of video) done in {elapsed:.2f} s "
        f"= {n / elapsed:.0f} jobs/s at concurrency {concurrency}; "
        f"peak RSS of the runner process {peak_mib:.0f} MiB"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    with tempfile.TemporaryDirectory() as tmp:
        bench_manifest(Path(tmp))
        bench_run(Path(tmp))
