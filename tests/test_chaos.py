"""Chaos: an 80-job batch on a faulty provider, the runner SIGKILLed at random moments.

Run alone with ``pytest -m chaos -s`` to see the figures it prints.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from batchrunner.simulator import Fault, SimulatorServer
from tests.helpers import TOKEN, counters, fast_config, rows, run_args, write_manifest

JOBS = 80
KILLS = 8
FAULTS = [
    Fault("any", "429", probability=0.04, retry_after=0.05),
    Fault("any", "502", probability=0.04),
    Fault("status", "drop", probability=0.04),
    Fault("result", "drop", probability=0.04),
    Fault("submit", "drop_after_accept", probability=0.03),
    Fault("media", "cut", probability=0.15),
    Fault("stream", "drop_midway", probability=0.1),
    Fault("stream", "silent", probability=0.05),
    Fault("stream", "404", probability=0.03),
]


@pytest.mark.slow
@pytest.mark.chaos
def test_random_sigkills_lose_nothing_and_rebuy_only_unknowns(tmp_path: Path) -> None:
    chance = random.Random(20261123)
    config = fast_config(queue_seconds=0.1, run_seconds=0.8, jitter=0.5, faults=FAULTS, seed=7)
    with SimulatorServer(config) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(JOBS))
        ledger, out = tmp_path / "ledger.db", tmp_path / "out"
        argv = [
            sys.executable,
            "-m",
            "batchrunner",
            *run_args(server, tmp_path, manifest, "--concurrency", "8", "--stream-stall", "1s"),
        ]
        env = {**os.environ, "BATCHRUNNER_API_KEY": TOKEN}
        kills = 0
        with open(tmp_path / "runner.log", "ab") as log:
            for _ in range(KILLS * 3):
                if kills == KILLS:
                    break
                proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
                time.sleep(chance.uniform(0.8, 2.5))  # a random moment, not a synchronisation
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                proc.wait(timeout=10)
        assert kills == KILLS, f"only {kills} kills landed while work remained"

        # without --resubmit-unknown nothing was ever bought twice
        before_final = Counter(job["prompt"] for job in counters(server)["jobs"].values())
        assert max(before_final.values()) == 1

        # faults stay on, so a final run can itself lose a submit answer (a new `unknown`);
        # like a nightly cron job, run again until the batch settles (bounded)
        final_runs = 0
        while final_runs < 5:
            final_runs += 1
            final = subprocess.run(
                [*argv, "--resubmit-unknown"], env=env, capture_output=True, text=True, timeout=180
            )
            if final.returncode == 0:
                break
        assert final.returncode == 0, final.stderr[-2000:]
        seen = counters(server)

    db = sqlite3.connect(ledger)
    states = Counter(state for (state,) in db.execute("select state from jobs"))
    assert states == {"done": JOBS}
    for request_id, path, digest in db.execute("select request_id, output_path, sha256 from jobs"):
        served = seen["jobs"][request_id]["media_sha256"]
        assert digest == served == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert not list(out.rglob("*.part"))
    ever_unknown = {
        job_id
        for (job_id,) in db.execute("select distinct job_id from events where to_state = 'unknown'")
    }
    extra_submits = seen["submits"] - JOBS
    assert extra_submits <= len(ever_unknown)
    print(
        f"\nchaos: {kills} SIGKILLs survived; faults injected {seen['faults']}; "
        f"{len(ever_unknown)} jobs recorded unknown; {extra_submits} duplicate submissions; "
        f"{states['done']} files verified by sha256; {final_runs} final run(s)"
    )
