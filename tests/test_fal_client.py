"""fal's own Python client (``fal_client``) works against the simulator, over HTTPS.

fal_client builds ``https://{FAL_QUEUE_RUN_HOST}/...`` at import time, so each scenario runs in
a subprocess with ``FAL_QUEUE_RUN_HOST`` pointing at a TLS simulator whose certificate a
throwaway CA (``SSL_CERT_FILE``) vouches for. The scenario prints one JSON line of what it saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sim_helpers import ENDPOINT, VALID_BODY, TLSFiles, make_tls

from batchrunner.simulator import Fault, SimulatorConfig, SimulatorServer

KEY = "test-key"
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server(tls: TLSFiles) -> Iterator[SimulatorServer]:
    config = SimulatorConfig(queue_seconds=0.5, run_seconds=0.2, auth_scheme="key", token=KEY)
    with SimulatorServer(
        config, ssl_certfile=str(tls.cert_pem), ssl_keyfile=str(tls.key_pem)
    ) as running:
        yield running


def run_fal(server: SimulatorServer, tls: TLSFiles, script: str, tmp_path: Path) -> Any:
    """Run ``script`` (which prints one JSON line last) with fal_client aimed at ``server``."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    env.update(
        FAL_QUEUE_RUN_HOST=server.url.removeprefix("https://"),
        FAL_RUN_HOST=server.url.removeprefix("https://"),
        FAL_KEY=KEY,
        FAL_HOME_DIR=str(tmp_path / "fal-home"),
        SSL_CERT_FILE=str(tls.ca_pem),
        NO_PROXY="*",
    )
    preamble = f"import json, fal_client\nENDPOINT = {ENDPOINT!r}\nBODY = {VALID_BODY!r}\n"
    completed = subprocess.run(
        [sys.executable, "-c", preamble + textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert completed.returncode == 0, completed.stderr
    assert "backup domain" not in completed.stderr  # no fallback to falrun.com was attempted
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_fal_client_submits_polls_and_gets_the_result(
    server: SimulatorServer, tls: TLSFiles, tmp_path: Path
) -> None:
    seen = run_fal(
        server,
        tls,
        """
        client = fal_client.SyncClient(key="test-key")
        handle = client.submit(ENDPOINT, arguments=BODY)
        kinds = [type(handle.status(with_logs=True)).__name__]
        for status in handle.iter_events(with_logs=True, interval=0.02):
            kinds.append(type(status).__name__)
        result = handle.get()
        print(json.dumps({
            "request_id": handle.request_id,
            "status_url": handle.status_url,
            "kinds": kinds,
            "logs": status.logs,
            "metrics": status.metrics,
            "error_type": status.error_type,
            "result": result,
        }))
        """,
        tmp_path,
    )
    request_id = seen["request_id"]
    assert seen["status_url"] == f"{server.url}/fal-ai/veo3/requests/{request_id}/status"
    assert seen["kinds"][0] == "Queued" and seen["kinds"][-1] == "Completed"
    assert set(seen["kinds"]) <= {"Queued", "InProgress", "Completed"}
    assert seen["logs"][-1]["message"] == "Video generation finished"
    assert seen["metrics"]["inference_time"] > 0 and seen["error_type"] is None
    video = seen["result"]["video"]
    assert video["url"] == f"{server.url}/media/{request_id}.mp4"
    download = httpx.get(video["url"], verify=ssl.create_default_context(cafile=tls.ca_pem))
    assert len(download.content) == video["file_size"]

    counters = server.counters()
    assert counters["jobs"][request_id]["media_sha256"] == (
        hashlib.sha256(download.content).hexdigest()
    )
    assert counters["submits"] == 1 and counters["auth_failures"] == 0
    queue_requests = sum(counters["requests"][r] for r in ("submit", "status", "result"))
    assert counters["auth_schemes"] == {"key": queue_requests}  # "Authorization: Key test-key"
    host = server.url.removeprefix("https://")
    assert counters["by_host"][host] == {
        "requests": queue_requests + 1,
        "authorized": queue_requests,
    }


def test_fal_client_cancels_and_sees_failures(
    server: SimulatorServer, tls: TLSFiles, tmp_path: Path
) -> None:
    seen = run_fal(
        server,
        tls,
        """
        from fal_client.client import FalClientHTTPError

        handle = fal_client.submit(ENDPOINT, arguments=BODY)
        handle.cancel()
        cancelled = fal_client.status(ENDPOINT, handle.request_id, with_logs=True)
        try:
            fal_client.cancel(ENDPOINT, handle.request_id)  # rebuilt URL, sub-path dropped
            again = None
        except FalClientHTTPError as exc:
            again = exc.status_code
        policy = fal_client.submit(ENDPOINT, arguments={**BODY, "prompt": "bad #policy"})
        try:
            policy.get()
            refused = None
        except FalClientHTTPError as exc:
            refused = {"status": exc.status_code, "message": exc.message}
        final = policy.status()
        print(json.dumps({
            "cancelled": [type(cancelled).__name__, cancelled.error_type],
            "again": again,
            "refused": refused,
            "policy": [type(final).__name__, final.error_type],
        }))
        """,
        tmp_path,
    )
    assert seen["cancelled"] == ["Completed", "request_cancelled"]
    assert seen["again"] == 400  # ALREADY_COMPLETED
    assert seen["refused"]["status"] == 422
    assert seen["policy"] == ["Completed", "content_policy_violation"]
    counters = server.counters()
    assert counters["requests"]["cancel"] == 2 and counters["auth_failures"] == 0


def test_fal_client_resubmits_a_lost_answer_creating_a_duplicate_job(
    server: SimulatorServer, tls: TLSFiles, tmp_path: Path
) -> None:
    """Why batchrunner does not retry an ambiguous submit: fal_client does, and pays twice."""
    server.config.faults = [Fault("submit", "drop_after_accept", times=1)]
    seen = run_fal(
        server,
        tls,
        """
        handle = fal_client.submit(ENDPOINT, arguments=BODY)
        print(json.dumps({"request_id": handle.request_id}))
        """,
        tmp_path,
    )
    counters = server.counters()
    assert counters["faults"] == {"drop_after_accept": 1}
    assert counters["submits"] == 2 and list(counters["submitted_bodies"].values()) == [2]
    assert seen["request_id"] in counters["jobs"] and len(counters["jobs"]) == 2


def test_fal_client_has_no_backup_domain_for_a_non_fal_host() -> None:
    from fal_client import client as fal

    assert fal._fallback_url(httpx.URL("https://127.0.0.1:8787/fal-ai/veo3")) is None
    assert fal._fallback_url(httpx.URL("https://queue.fal.run/x")) == httpx.URL(
        "https://queue.falrun.com/x"
    )
    request = httpx.Request("GET", "https://127.0.0.1:8787/x", extensions={"timeout": {}})
    fal._limit_connect_timeout(request)
    assert request.extensions["timeout"] == {}  # only fal's own domains get the 5 s cap
