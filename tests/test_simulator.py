"""The queue simulator: protocol shapes in-process, connection-level behaviour over sockets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sim_helpers import ENDPOINT, VALID_BODY, FakeClock, wait_until
from starlette.applications import Starlette

from batchrunner.simulator import Fault, SimulatorConfig, SimulatorServer, create_app, simulate
from batchrunner.simulator.clips import MediaShape, clip_bytes
from batchrunner.simulator.responses import DropConnection

ORIGIN = "http://sim.test"
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make(**config: Any) -> tuple[Starlette, FakeClock]:
    """An in-process simulator on a fake clock (queue 1 s, run 2 s unless told otherwise)."""
    config.setdefault("queue_seconds", 1.0)
    config.setdefault("run_seconds", 2.0)
    clock = FakeClock()
    return create_app(SimulatorConfig(**config), clock=clock), clock


def client_for(app: Starlette, auth: str | None = "Key test-key") -> httpx.AsyncClient:
    headers = {"Authorization": auth} if auth else {}
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url=ORIGIN, headers=headers)


async def submit(
    client: httpx.AsyncClient, body: dict[str, Any] | None = None, endpoint: str = ENDPOINT
) -> dict[str, Any]:
    response = await client.post(f"/{endpoint}", json=VALID_BODY if body is None else body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def counters(app: Starlette) -> dict[str, Any]:
    result: dict[str, Any] = app.state.sim.counters()
    return result


def paths(request_id: str, app_id: str = "fal-ai/veo3") -> tuple[str, str, str]:
    base = f"/{app_id}/requests/{request_id}"
    return base, f"{base}/status", f"{base}/cancel"


# -- submit, status, result ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_answers_in_queue_with_urls_that_drop_the_sub_path() -> None:
    app, _ = make()
    async with client_for(app) as client:
        response = await client.post(f"/{ENDPOINT}", json=VALID_BODY)
    assert response.status_code == 200
    data = response.json()
    request_id = data["request_id"]
    assert uuid.UUID(request_id).version == 4
    base = f"{ORIGIN}/fal-ai/veo3/requests/{request_id}"
    assert data == {
        "status": "IN_QUEUE",
        "request_id": request_id,
        "response_url": base,
        "status_url": f"{base}/status",
        "cancel_url": f"{base}/cancel",
        "logs": None,
        "metrics": {},
        "queue_position": 0,
    }
    assert response.headers["x-fal-request-id"] == request_id


@pytest.mark.anyio
async def test_a_job_goes_in_queue_in_progress_completed_with_exact_shapes() -> None:
    app, clock = make()
    async with client_for(app) as client:
        request_id = (await submit(client))["request_id"]
        result_path, status_path, _ = paths(request_id)
        response_url = ORIGIN + result_path

        queued = await client.get(status_path, params={"logs": "1"})
        assert queued.status_code == 202
        assert queued.json() == {
            "status": "IN_QUEUE",
            "request_id": request_id,
            "response_url": response_url,
            "queue_position": 0,
            "logs": None,
            "metrics": {},
        }
        early = await client.get(result_path)
        assert (early.status_code, early.json()) == (
            400,
            {"detail": "Request is still in progress"},
        )

        clock.advance(1.5)  # 0.5 s into a 2 s run
        running = await client.get(status_path, params={"logs": "true"})
        assert running.status_code == 202
        body = running.json()
        assert body["status"] == "IN_PROGRESS"
        assert body["queue_position"] is None and body["metrics"] == {}
        assert [entry["message"] for entry in body["logs"]] == [
            "Starting video generation",
            "Generating video: 25%",
        ]
        for entry in body["logs"]:
            assert set(entry) == {"message", "level", "source", "timestamp"}

        clock.advance(2.0)
        done = await client.get(status_path, params={"logs": "0"})
        assert done.status_code == 200
        body = done.json()
        assert body["status"] == "COMPLETED"
        assert body["queue_position"] is None
        assert body["metrics"] == {"inference_time": 2.0}
        assert body["logs"][-1]["message"] == "Video generation finished"
        assert "error" not in body and "error_type" not in body
        assert done.headers["x-fal-request-id"] == request_id

        result = await client.get(result_path)
        assert result.status_code == 200
        video = result.json()["video"]
        assert video == {
            "url": f"{ORIGIN}/media/{request_id}.mp4",
            "content_type": "video/mp4",
            "file_name": f"{request_id}.mp4",
            "file_size": 64 * 1024,
        }
        file = await client.get(video["url"])
    assert file.status_code == 200
    assert file.headers["content-type"] == "video/mp4"
    assert len(file.content) == video["file_size"]
    job = counters(app)["jobs"][request_id]
    clip = clip_bytes(MediaShape(**job["media_shape"]))
    assert job["media_shape"] == {  # VALID_BODY: 4 s, no audio; defaults: aspect "auto", 720p
        "aspect_ratio": "auto", "seconds": 4.0, "audio": False, "resolution": "720p",
        "playable": True,
    }  # fmt: skip
    assert file.content.startswith(clip)
    assert request_id.encode() in file.content[len(clip) :]
    assert result.headers["x-fal-billable-units"] == "4"  # seconds, by the model's price rule
    assert job["state"] == "COMPLETED"
    assert job["prompt"] == VALID_BODY["prompt"]
    assert job["media_sha256"] == hashlib.sha256(file.content).hexdigest()


@pytest.mark.anyio
async def test_each_job_gets_its_own_deterministic_file() -> None:
    app, clock = make(queue_seconds=0, run_seconds=1, media_bytes=20_000)
    async with client_for(app) as client:
        first = (await submit(client))["request_id"]
        second = (await submit(client))["request_id"]
        clock.advance(1)
        one = (await client.get(f"/media/{first}.mp4")).content
        again = (await client.get(f"/media/{first}.mp4")).content
        two = (await client.get(f"/media/{second}.mp4")).content
    assert one == again and one != two
    assert len(one) == len(two) == 20_000


@pytest.mark.parametrize("logs", ["1", "0", "true", "false"])
@pytest.mark.anyio
async def test_status_accepts_every_logs_value(logs: str) -> None:
    app, _ = make()
    async with client_for(app) as client:
        request_id = (await submit(client))["request_id"]
        response = await client.get(paths(request_id)[1], params={"logs": logs})
    assert response.status_code == 202
    assert {"queue_position", "logs", "metrics"} <= set(response.json())


# -- validation and auth -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_an_invalid_body_is_a_422_with_a_detail_list_and_creates_no_job() -> None:
    app, _ = make()
    async with client_for(app) as client:
        missing = await client.post(f"/{ENDPOINT}", json={"prompt": "a cat"})
        bad_duration = await client.post(f"/{ENDPOINT}", json={**VALID_BODY, "duration": "5s"})
        not_json = await client.post(
            f"/{ENDPOINT}", content=b"{nope", headers={"content-type": "application/json"}
        )
    assert missing.status_code == 422
    assert {"loc": ["body", "image_url"], "msg": "Field required", "type": "missing"} in (
        missing.json()["detail"]
    )
    assert bad_duration.status_code == 422
    [problem] = bad_duration.json()["detail"]
    assert problem["loc"] == ["body", "duration"] and problem["type"] == "literal_error"
    assert not_json.status_code == 422
    assert not_json.json()["detail"][0]["loc"] == ["body"]
    seen = counters(app)
    assert seen["submits"] == 0 and seen["jobs"] == {} and seen["submitted_bodies"] == {}


@pytest.mark.anyio
async def test_unknown_endpoints_are_404_and_extra_ones_pass_their_input_through() -> None:
    app, _ = make(extra_endpoints=("acme/thing/run", "acme/other"))
    async with client_for(app) as client:
        unknown = await client.post("/fal-ai/veo3/image-to-vidoe", json=VALID_BODY)
        with_path = await submit(client, {"anything": 1}, endpoint="acme/thing/run")
        without_path = await submit(client, {"anything": 2}, endpoint="acme/other")
    assert unknown.status_code == 404 and "not found" in unknown.json()["detail"]
    assert with_path["status_url"].startswith(f"{ORIGIN}/acme/thing/requests/")
    assert without_path["status_url"].startswith(f"{ORIGIN}/acme/other/requests/")
    jobs = counters(app)["jobs"]
    assert jobs[with_path["request_id"]]["endpoint"] == "acme/thing/run"
    assert jobs[without_path["request_id"]]["endpoint"] == "acme/other"


@pytest.mark.anyio
async def test_auth_accepts_bearer_or_key_and_rejects_a_missing_header() -> None:
    app, _ = make()
    async with client_for(app, auth=None) as client:
        missing = await client.post(f"/{ENDPOINT}", json=VALID_BODY)
        empty = await client.post(f"/{ENDPOINT}", json=VALID_BODY, headers={"Authorization": "Key"})
        other = await client.post(
            f"/{ENDPOINT}", json=VALID_BODY, headers={"Authorization": "Basic abc"}
        )
        bearer = await client.post(
            f"/{ENDPOINT}", json=VALID_BODY, headers={"Authorization": "Bearer t1"}
        )
        key = await client.post(
            f"/{ENDPOINT}", json=VALID_BODY, headers={"Authorization": "Key t2"}
        )
        status = await client.get(paths(key.json()["request_id"])[1])
    for rejected in (missing, empty, other, status):
        assert rejected.status_code == 401
        assert isinstance(rejected.json()["detail"], str)
        assert "x-fal-request-id" in rejected.headers
    assert bearer.status_code == key.status_code == 200
    seen = counters(app)
    assert seen["auth_failures"] == 4 and seen["submits"] == 2
    assert seen["auth_schemes"] == {"key": 2, "basic": 1, "bearer": 1}


@pytest.mark.anyio
async def test_auth_scheme_and_token_can_be_pinned() -> None:
    app, _ = make(auth_scheme="bearer", token="secret")
    async with client_for(app, auth=None) as client:

        async def post(auth: str) -> int:
            headers = {"Authorization": auth}
            return (await client.post(f"/{ENDPOINT}", json=VALID_BODY, headers=headers)).status_code

        assert await post("Bearer secret") == 200
        assert await post("bearer secret") == 200
        assert await post("Key secret") == 401
        assert await post("Bearer wrong") == 401


@pytest.mark.anyio
async def test_media_and_counters_need_no_auth() -> None:
    app, clock = make(queue_seconds=0, run_seconds=1)
    async with client_for(app) as client:
        request_id = (await submit(client))["request_id"]
    clock.advance(1)
    async with client_for(app, auth=None) as anonymous:
        assert (await anonymous.get(f"/media/{request_id}.mp4")).status_code == 200
        assert (await anonymous.get("/_sim/counters")).json()["submits"] == 1
    assert counters(app)["auth_failures"] == 0


@pytest.mark.anyio
async def test_returned_urls_use_the_public_and_media_origins() -> None:
    app, clock = make(public_origin="https://queue.fal.run", media_origin="https://v3.fal.media/")
    async with client_for(app) as client:
        data = await submit(client)
        request_id = data["request_id"]
        base = f"https://queue.fal.run/fal-ai/veo3/requests/{request_id}"
        assert (data["response_url"], data["status_url"], data["cancel_url"]) == (
            base,
            f"{base}/status",
            f"{base}/cancel",
        )
        assert (await client.get(paths(request_id)[1])).json()["response_url"] == base
        clock.advance(5)
        video = (await client.get(paths(request_id)[0])).json()["video"]
    assert video["url"] == f"https://v3.fal.media/media/{request_id}.mp4"


# -- failures, cancel, capacity, retention -------------------------------------------------------


@pytest.mark.parametrize("errors_in_status", [True, False])
@pytest.mark.anyio
async def test_a_policy_prompt_completes_with_an_error_and_its_result_is_a_422(
    errors_in_status: bool,
) -> None:
    app, clock = make(errors_in_status=errors_in_status)
    async with client_for(app) as client:
        body = {**VALID_BODY, "prompt": "something forbidden #policy"}
        request_id = (await submit(client, body))["request_id"]
        clock.advance(10)
        status = await client.get(paths(request_id)[1])
        result = await client.get(paths(request_id)[0])
        video = await client.get(f"/media/{request_id}.mp4")
    assert status.status_code == 200 and status.json()["status"] == "COMPLETED"
    if errors_in_status:
        assert status.json()["error_type"] == "content_policy_violation"
        assert "flagged by a content checker" in status.json()["error"]
    else:
        assert "error" not in status.json() and "error_type" not in status.json()
    assert result.status_code == 422
    assert result.json() == {
        "detail": [
            {
                "loc": ["body", "prompt"],
                "msg": "The content could not be processed because it contained material "
                "flagged by a content checker.",
                "type": "content_policy_violation",
            }
        ]
    }
    assert video.status_code == 404
    job = counters(app)["jobs"][request_id]
    assert job["error_type"] == "content_policy_violation" and job["media_sha256"] is None


@pytest.mark.anyio
async def test_cancel_answers_202_then_400_and_404_for_unknown_ids() -> None:
    app, clock = make()
    async with client_for(app) as client:
        queued = (await submit(client))["request_id"]
        running = (await submit(client))["request_id"]
        finished = (await submit(client))["request_id"]
        clock.advance(1.5)  # running (and finished) are IN_PROGRESS now
        first = await client.put(paths(queued)[2])
        assert (first.status_code, first.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        assert counters(app)["in_flight"] == 2
        second = await client.put(paths(queued)[2])
        assert (second.status_code, second.json()) == (400, {"status": "ALREADY_COMPLETED"})
        assert (await client.put(paths(running)[2])).status_code == 202
        clock.advance(5)
        assert (await client.put(paths(finished)[2])).status_code == 400
        unknown = await client.put(paths(str(uuid.uuid4()))[2])
        assert (unknown.status_code, unknown.json()) == (404, {"status": "NOT_FOUND"})

        status = (await client.get(paths(queued)[1])).json()
        assert status["status"] == "COMPLETED" and status["error_type"] == "request_cancelled"
        result = await client.get(paths(queued)[0])
        assert result.status_code == 400 and result.json()["error_type"] == "request_cancelled"
        assert (await client.get(paths(finished)[0])).status_code == 200
    assert counters(app)["in_flight"] == 0


@pytest.mark.anyio
async def test_capacity_keeps_jobs_in_queue_fifo_with_their_positions() -> None:
    app, clock = make(capacity=2)
    async with client_for(app) as client:
        submitted = [await submit(client) for _ in range(4)]
        assert [s["queue_position"] for s in submitted] == [0, 1, 2, 3]
        ids = [s["request_id"] for s in submitted]

        async def states() -> list[tuple[str, int | None]]:
            answers = [(await client.get(paths(i)[1])).json() for i in ids]
            return [(a["status"], a["queue_position"]) for a in answers]

        assert await states() == [
            ("IN_QUEUE", 0),
            ("IN_QUEUE", 1),
            ("IN_QUEUE", 2),
            ("IN_QUEUE", 3),
        ]
        clock.advance(1.0)
        assert await states() == [
            ("IN_PROGRESS", None),
            ("IN_PROGRESS", None),
            ("IN_QUEUE", 0),
            ("IN_QUEUE", 1),
        ]
        late = (await submit(client))["request_id"]  # queued behind the waiting two
        clock.advance(2.0)  # the first two finish at t=3 and the next two start at once
        assert await states() == [
            ("COMPLETED", None),
            ("COMPLETED", None),
            ("IN_PROGRESS", None),
            ("IN_PROGRESS", None),
        ]
        assert (await client.get(paths(late)[1])).json()["queue_position"] == 0
        clock.advance(10)
    seen = counters(app)
    assert seen["max_running"] == 2 and seen["max_in_flight"] == 5 and seen["in_flight"] == 0


@pytest.mark.anyio
async def test_max_in_flight_answers_429_like_a_reseller() -> None:
    app, clock = make(max_in_flight=2)
    async with client_for(app) as client:
        await submit(client)
        await submit(client)
        throttled = await client.post(f"/{ENDPOINT}", json=VALID_BODY)
        assert throttled.status_code == 429
        assert throttled.json() == {"detail": "Too many requests"}
        clock.advance(3)
        await submit(client)
    seen = counters(app)
    assert seen["rate_limited"] == 1 and seen["submits"] == 3 and seen["max_in_flight"] == 2


@pytest.mark.anyio
async def test_results_expire_after_result_ttl_while_status_and_media_stay() -> None:
    app, clock = make(result_ttl=10)
    async with client_for(app) as client:
        request_id = (await submit(client))["request_id"]
        result_path, status_path, cancel_path = paths(request_id)
        clock.advance(3 + 9.9)
        assert (await client.get(result_path)).status_code == 200
        assert counters(app)["jobs"][request_id]["expired"] is False
        clock.advance(0.2)
        gone = await client.get(result_path)
        assert (gone.status_code, gone.json()) == (404, {"detail": "Request not found"})
        status = await client.get(status_path)
        assert status.status_code == 200 and status.json()["status"] == "COMPLETED"
        assert (await client.put(cancel_path)).status_code == 400
        assert (await client.get(f"/media/{request_id}.mp4")).status_code == 200
    assert counters(app)["jobs"][request_id]["expired"] is True


@pytest.mark.anyio
async def test_status_ttl_forgets_the_whole_request() -> None:
    app, clock = make(result_ttl=10, status_ttl=20)
    async with client_for(app) as client:
        request_id = (await submit(client))["request_id"]
        result_path, status_path, cancel_path = paths(request_id)
        clock.advance(3 + 19.9)
        assert (await client.get(status_path)).status_code == 200
        clock.advance(0.2)
        for response in (await client.get(status_path), await client.get(result_path)):
            assert (response.status_code, response.json()) == (404, {"detail": "Request not found"})
        assert (await client.get(status_path + "/stream")).status_code == 404
        cancel = await client.put(cancel_path)
        assert (cancel.status_code, cancel.json()) == (404, {"status": "NOT_FOUND"})
        assert (await client.get(f"/media/{request_id}.mp4")).status_code == 200


@pytest.mark.anyio
async def test_a_start_timeout_ends_a_waiting_job_with_request_timeout() -> None:
    app, clock = make(capacity=1, queue_seconds=0, run_seconds=5)
    async with client_for(app) as client:
        blocker = (await submit(client))["request_id"]
        response = await client.post(
            f"/{ENDPOINT}", json=VALID_BODY, headers={"X-Fal-Request-Timeout": "2"}
        )
        waiting = response.json()["request_id"]
        clock.advance(2.5)
        status = (await client.get(paths(waiting)[1])).json()
        result = await client.get(paths(waiting)[0])
        assert (await client.get(paths(blocker)[1])).json()["status"] == "IN_PROGRESS"
    assert status["status"] == "COMPLETED" and status["error_type"] == "request_timeout"
    assert result.status_code == 504
    assert result.json()["error_type"] == "request_timeout"
    assert result.headers["x-fal-error-type"] == "request_timeout"
    assert result.headers["x-fal-request-timeout-type"] == "user"


@pytest.mark.anyio
async def test_unknown_ids_other_apps_and_sub_paths_are_not_found() -> None:
    app, _ = make()
    async with client_for(app) as client:
        request_id = (await submit(client))["request_id"]
        unknown = await client.get(paths(str(uuid.uuid4()))[1])
        other_app = await client.get(paths(request_id, "fal-ai/kling")[1])
        sub_path = await client.get(f"/{ENDPOINT}/requests/{request_id}/status")
        nowhere = await client.get("/")
        wrong_method = await client.delete(f"/{ENDPOINT}")
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "Request not found"})
    assert other_app.status_code == 404
    assert sub_path.status_code == 404
    assert nowhere.status_code == 404 and "x-fal-request-id" in nowhere.headers
    assert wrong_method.status_code == 405 and "detail" in wrong_method.json()


@pytest.mark.anyio
async def test_jitter_is_deterministic_per_seed() -> None:
    async def run_times(seed: int) -> list[float]:
        app, clock = make(queue_seconds=0, run_seconds=1, jitter=0.5, seed=seed)
        async with client_for(app) as client:
            ids = [(await submit(client))["request_id"] for _ in range(5)]
            clock.advance(10)
            answers = [(await client.get(paths(i)[1])).json() for i in ids]
        return [a["metrics"]["inference_time"] for a in answers]

    first, again, other = await run_times(1), await run_times(1), await run_times(2)
    assert first == again != other
    assert all(0.5 <= t <= 1.5 for t in first) and len(set(first)) > 1


@pytest.mark.anyio
async def test_counters_record_traffic_bodies_and_hosts() -> None:
    app, _ = make()
    async with client_for(app) as client:
        one = await submit(client)
        await submit(client)
        await submit(client, {**VALID_BODY, "prompt": "another"})
        await client.get(paths(one["request_id"])[1])
        await client.get(paths(one["request_id"])[0])
        await client.put(paths(one["request_id"])[2])
        await client.get("/_sim/counters")  # not counted itself
    seen = counters(app)
    canonical = json.dumps(VALID_BODY, sort_keys=True, separators=(",", ":"))
    assert seen["submitted_bodies"][hashlib.sha256(canonical.encode()).hexdigest()] == 2
    assert sorted(seen["submitted_bodies"].values()) == [1, 2]
    assert seen["requests"] == {
        "submit": 3,
        "status": 1,
        "stream": 0,
        "result": 1,
        "cancel": 1,
        "media": 0,
    }
    assert seen["by_host"] == {"sim.test": {"requests": 6, "authorized": 6}}
    assert seen["in_flight"] == 2 and seen["max_in_flight"] == 3
    assert seen["running"] == 0 and seen["max_running"] == 0
    assert one["request_id"] in seen["jobs"] and len(seen["jobs"]) == 3
    for key in ("rate_limited", "faults", "auth_failures"):
        assert key in seen


# -- status stream -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_status_stream_sends_each_change_and_pings_until_completed() -> None:
    config = SimulatorConfig(queue_seconds=0.05, run_seconds=0.3, stream_ping_seconds=0.02)
    app = create_app(config)
    async with client_for(app) as client:
        request_id = (await submit(client))["request_id"]
        response = await client.get(paths(request_id)[1] + "/stream")
        missing = await client.get(paths(str(uuid.uuid4()))[1] + "/stream")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]
    order = ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    statuses = [order.index(event["status"]) for event in events]
    assert statuses == sorted(statuses) and events[-1]["status"] == "COMPLETED"
    assert all({"queue_position", "logs", "metrics"} <= set(event) for event in events)
    assert ": ping" in response.text.splitlines()
    assert missing.status_code == 404
    assert counters(app)["requests"]["stream"] == 2


# -- media ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_media_supports_head_and_single_ranges() -> None:
    app, clock = make(queue_seconds=0, run_seconds=1, media_bytes=30_000)
    async with client_for(app, auth=None) as client:
        async with client_for(app) as authed:
            request_id = (await submit(authed))["request_id"]
            pending = await client.get(f"/media/{request_id}.mp4")
        clock.advance(1)
        url = f"/media/{request_id}.mp4"
        full = (await client.get(url)).content
        head = await client.head(url)
        first = await client.get(url, headers={"Range": "bytes=0-99"})
        tail = await client.get(url, headers={"Range": "bytes=29990-"})
        suffix = await client.get(url, headers={"Range": "bytes=-5"})
        past = await client.get(url, headers={"Range": "bytes=30000-"})
        unknown = await client.get(f"/media/{uuid.uuid4()}.mp4")
    assert pending.status_code == 404 and unknown.status_code == 404
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == "30000"
    assert head.headers["accept-ranges"] == "bytes"
    assert first.status_code == 206 and first.content == full[:100]
    assert first.headers["content-range"] == "bytes 0-99/30000"
    assert (
        tail.content == full[29990:] and tail.headers["content-range"] == "bytes 29990-29999/30000"
    )
    assert suffix.content == full[-5:]
    assert past.status_code == 416 and past.headers["content-range"] == "bytes */30000"


def test_the_served_file_is_a_playable_mp4_with_its_trailing_padding() -> None:
    import io

    import av

    from batchrunner.simulator.media import video_bytes

    data = video_bytes(str(uuid.uuid4()), 64 * 1024, MediaShape(seconds=4, audio=True))
    assert len(data) == 64 * 1024
    with av.open(io.BytesIO(data)) as container:
        assert container.duration is not None
        assert container.duration / av.time_base == pytest.approx(4.0, abs=0.25)
        assert {stream.type for stream in container.streams} == {"video", "audio"}
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 4 * 8 - 1  # every frame decodes, padding and all


# -- faults in-process ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_429_fault_carries_retry_after_and_is_not_processed() -> None:
    app, _ = make(faults=[Fault.parse("submit:429:retry_after=0.5")])
    async with client_for(app) as client:
        response = await client.post(f"/{ENDPOINT}", json=VALID_BODY)
    assert response.status_code == 429
    assert response.json() == {"detail": "Too many requests"}
    assert response.headers["retry-after"] == "0.5"
    seen = counters(app)
    assert seen["submits"] == 0 and seen["rate_limited"] == 1 and seen["faults"] == {"429": 1}


@pytest.mark.parametrize("code", [502, 503, 504])
@pytest.mark.anyio
async def test_ingress_faults_are_nginx_pages_without_a_request_id(code: int) -> None:
    app, _ = make(faults=[Fault("status", str(code))])  # type: ignore[arg-type]
    async with client_for(app) as client:
        request_id = (await submit(client))["request_id"]
        response = await client.get(paths(request_id)[1])
    assert response.status_code == code
    assert response.headers["content-type"].startswith("text/html")
    assert f"<title>{code} " in response.text and "nginx" in response.text
    assert "x-fal-request-id" not in response.headers


@pytest.mark.anyio
async def test_a_500_fault_is_an_app_error_with_a_request_id() -> None:
    app, _ = make(faults=[Fault("result", "500")])
    async with client_for(app) as client:
        request_id = (await submit(client))["request_id"]
        response = await client.get(paths(request_id)[0])
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error: simulated application failure"}
    assert response.headers["x-fal-request-id"] == request_id


@pytest.mark.anyio
async def test_html_200_and_invalid_json_faults_are_200s_that_do_not_parse() -> None:
    app, _ = make(faults=[Fault("submit", "html_200", times=1), Fault("submit", "invalid_json")])
    async with client_for(app) as client:
        html = await client.post(f"/{ENDPOINT}", json=VALID_BODY)
        broken = await client.post(f"/{ENDPOINT}", json=VALID_BODY)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert broken.status_code == 200
    assert broken.headers["content-type"] == "application/json"
    for response in (html, broken):
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.content)
    assert counters(app)["submits"] == 0


@pytest.mark.anyio
async def test_drop_and_drop_after_accept_in_process() -> None:
    app, _ = make(faults=[Fault("submit", "drop", times=1), Fault("submit", "drop_after_accept")])
    async with client_for(app) as client:
        with pytest.raises(DropConnection):
            await client.post(f"/{ENDPOINT}", json=VALID_BODY)
        assert counters(app)["submits"] == 0
        with pytest.raises(DropConnection):
            await client.post(f"/{ENDPOINT}", json=VALID_BODY)
    seen = counters(app)
    assert seen["submits"] == 1 and len(seen["jobs"]) == 1
    assert seen["faults"] == {"drop": 1, "drop_after_accept": 1}


@pytest.mark.anyio
async def test_times_and_after_pick_exactly_which_requests_fail() -> None:
    app, _ = make(faults=[Fault.parse("status:503:times=2:after=1")])
    async with client_for(app) as client:
        request_id = (await submit(client))["request_id"]
        codes = [(await client.get(paths(request_id)[1])).status_code for _ in range(5)]
    assert codes == [202, 503, 503, 202, 202]


@pytest.mark.anyio
async def test_faults_come_before_auth_and_any_skips_media() -> None:
    app, clock = make(queue_seconds=0, run_seconds=1)
    async with client_for(app) as client:
        request_id = (await submit(client))["request_id"]
        clock.advance(1)
        app.state.sim.config.faults = [Fault("any", "503")]  # the config is read live
        async with client_for(app, auth=None) as anonymous:
            assert (await anonymous.get(paths(request_id)[1])).status_code == 503
            assert (await anonymous.get(paths(request_id)[1] + "/stream")).status_code == 503
            assert (await anonymous.get(f"/media/{request_id}.mp4")).status_code == 200
    assert counters(app)["auth_failures"] == 0


@pytest.mark.anyio
async def test_fault_probability_replays_exactly_for_a_seed() -> None:
    async def pattern(seed: int) -> list[int]:
        app, _ = make(seed=seed, faults=[Fault.parse("submit:429:0.5")])
        async with client_for(app) as client:
            return [
                (await client.post(f"/{ENDPOINT}", json=VALID_BODY)).status_code for _ in range(40)
            ]

    first, again, other = await pattern(7), await pattern(7), await pattern(8)
    assert first == again != other
    assert 5 < first.count(429) < 35


@pytest.mark.anyio
async def test_a_cut_fault_drops_the_media_response_in_process() -> None:
    app, clock = make(queue_seconds=0, run_seconds=1, faults=[Fault("media", "cut", times=1)])
    async with client_for(app) as client:
        request_id = (await submit(client))["request_id"]
        clock.advance(1)
        with pytest.raises(DropConnection):
            await client.get(f"/media/{request_id}.mp4")
        assert (await client.get(f"/media/{request_id}.mp4")).status_code == 200


# -- Fault.parse and config validation ------------------------------------------------------------


def test_fault_parse_reads_every_option() -> None:
    assert Fault.parse("submit:429:0.2:retry_after=1") == Fault("submit", "429", 0.2, None, 0, 1.0)
    assert Fault.parse(" Any:502:after=3:times=2 ") == Fault("any", "502", times=2, after=3)
    assert Fault.parse("media:cut:probability=0.25") == Fault("media", "cut", probability=0.25)
    for text in ("submit:drop_after_accept:times=1", "status:503:0.5:after=2", "result:500"):
        assert str(Fault.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "expected route:kind"),
        ("submit", "expected route:kind"),
        ("queue:429", "unknown fault route"),
        ("submit:418", "unknown fault kind"),
        ("submit:429:2", "between 0 and 1"),
        ("submit:429:often", "probability must be a number"),
        ("submit:429:times=-1", "0 or more"),
        ("submit:429:times=1.5", "whole number"),
        ("submit:429:bogus=1", "unknown option"),
        ("submit:429:0.5:0.6", "given twice"),
        ("submit:503:retry_after=1", "only applies to 429"),
        ("status:cut", "only applies to the media route"),
        ("submit:403", "403 only applies to the media route"),
        ("status:drop_after_accept", "only applies to the submit route"),
        ("status:ignored", "only applies to the cancel route"),
    ],
)
def test_fault_parse_rejects_bad_rules_clearly(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="bad fault") as caught:
        Fault.parse(text)
    assert complaint in str(caught.value)


def test_config_validates_its_values() -> None:
    assert SimulatorConfig(faults=["submit:429"]).faults == [Fault("submit", "429")]  # type: ignore[list-item]
    for bad in (
        {"queue_seconds": -1},
        {"capacity": 0},
        {"jitter": 2},
        {"public_origin": "queue.fal.run"},
        {"status_ttl": -1},
        {"auth_scheme": "basic"},
    ):
        with pytest.raises(ValueError):
            SimulatorConfig(**bad)  # type: ignore[arg-type]


# -- over real sockets ---------------------------------------------------------------------------


def fast(**config: Any) -> SimulatorConfig:
    config.setdefault("queue_seconds", 0.05)
    config.setdefault("run_seconds", 0.1)
    return SimulatorConfig(**config)


def auth_client(**kwargs: Any) -> httpx.Client:
    return httpx.Client(headers={"Authorization": "Key test-key"}, timeout=10, **kwargs)


def completed(server: SimulatorServer, request_id: str) -> bool:
    job = server.counters()["jobs"].get(request_id)
    return job is not None and job["state"] == "COMPLETED"


def test_a_drop_is_a_remote_disconnect_and_creates_no_job(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with SimulatorServer(fast(faults=[Fault("submit", "drop", times=1)])) as server:
        with auth_client() as client:
            with pytest.raises(DROPPED):
                client.post(f"{server.url}/{ENDPOINT}", json=VALID_BODY)
            assert server.counters()["submits"] == 0
            answer = client.post(f"{server.url}/{ENDPOINT}", json=VALID_BODY)
            assert answer.status_code == 200
        seen = server.counters()
    assert seen["submits"] == 1 and seen["faults"] == {"drop": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_drop_after_accept_creates_a_job_whose_answer_never_arrives() -> None:
    with SimulatorServer(fast(faults=[Fault("submit", "drop_after_accept")])) as server:
        with auth_client() as client, pytest.raises(DROPPED):
            client.post(f"{server.url}/{ENDPOINT}", json=VALID_BODY)
        [request_id] = server.counters()["jobs"]
        assert server.counters()["submits"] == 1
        wait_until(lambda: completed(server, request_id), what="the orphan job to complete")


def test_a_cut_download_breaks_mid_body_and_the_next_one_is_whole() -> None:
    with SimulatorServer(fast(faults=[Fault("media", "cut", times=1)])) as server:
        with auth_client() as client:
            request_id = client.post(f"{server.url}/{ENDPOINT}", json=VALID_BODY).json()[
                "request_id"
            ]
            wait_until(lambda: completed(server, request_id))
            url = client.get(f"{server.url}/fal-ai/veo3/requests/{request_id}").json()["video"][
                "url"
            ]
        with httpx.Client(timeout=10) as anonymous:
            with pytest.raises(DROPPED):
                anonymous.get(url)
            whole = anonymous.get(url)
            part = anonymous.get(url, headers={"Range": "bytes=1000-"})
            head = anonymous.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(64 * 1024)
    assert whole.status_code == 200 and len(whole.content) == 64 * 1024
    assert (
        hashlib.sha256(whole.content).hexdigest()
        == (server.counters()["jobs"][request_id]["media_sha256"])
    )
    assert part.status_code == 206 and part.content == whole.content[1000:]
    assert part.headers["content-range"] == f"bytes 1000-{64 * 1024 - 1}/{64 * 1024}"


def test_three_ports_share_one_queue() -> None:
    with SimulatorServer(fast(), ports=3) as server:
        api, foreign, media = server.urls
        assert len({api, foreign, media}) == 3 and server.url == api
        server.config.public_origin = foreign
        server.config.media_origin = media
        with auth_client() as client:
            data = client.post(f"{api}/{ENDPOINT}", json=VALID_BODY).json()
            assert data["status_url"].startswith(foreign + "/fal-ai/veo3/requests/")
            wait_until(lambda: completed(server, data["request_id"]))
            via_foreign = client.get(data["status_url"])
            video = client.get(f"{api}/fal-ai/veo3/requests/{data['request_id']}").json()["video"]
        assert via_foreign.status_code == 200
        assert video["url"].startswith(media + "/media/")
        assert httpx.get(video["url"]).status_code == 200
        by_host = server.counters()["by_host"]
    host = lambda origin: origin.removeprefix("http://")  # noqa: E731
    assert by_host[host(api)] == {"requests": 2, "authorized": 2}
    assert by_host[host(foreign)] == {"requests": 1, "authorized": 1}
    assert by_host[host(media)] == {"requests": 1, "authorized": 0}


def test_a_restarted_simulator_remembers_jobs_in_its_state_file(tmp_path: Path) -> None:
    state = str(tmp_path / "sim.db")
    with SimulatorServer(fast(state_path=state)) as first, auth_client() as client:
        done = client.post(f"{first.url}/{ENDPOINT}", json=VALID_BODY).json()["request_id"]
        wait_until(lambda: completed(first, done))
        first.config.run_seconds = 1.0  # still running when this server stops
        pending = client.post(f"{first.url}/{ENDPOINT}", json=VALID_BODY).json()["request_id"]
        assert first.counters()["jobs"][pending]["state"] != "COMPLETED"
    with SimulatorServer(fast(state_path=state)) as second, auth_client() as client:
        assert set(second.counters()["jobs"]) == {done, pending}

        def status(request_id: str) -> httpx.Response:
            return client.get(f"{second.url}/fal-ai/veo3/requests/{request_id}/status")

        wait_until(lambda: status(pending).status_code == 200, what="the pending job")
        assert status(pending).json()["status"] == "COMPLETED"
        for request_id in (done, pending):
            result = client.get(f"{second.url}/fal-ai/veo3/requests/{request_id}")
            assert result.status_code == 200
            assert httpx.get(result.json()["video"]["url"]).status_code == 200
        assert status(str(uuid.uuid4())).status_code == 404
        assert second.counters()["submits"] == 0  # counters are per process


def test_concurrent_submits_never_exceed_max_in_flight() -> None:
    async def burst(url: str) -> list[int]:
        headers = {"Authorization": "Key test-key"}
        async with httpx.AsyncClient(headers=headers, timeout=20) as client:
            posts = [client.post(f"{url}/{ENDPOINT}", json=VALID_BODY) for _ in range(20)]
            return [r.status_code for r in await asyncio.gather(*posts)]

    with SimulatorServer(fast(run_seconds=60, max_in_flight=4)) as server:
        codes = asyncio.run(burst(server.url))
        seen = server.counters()
    assert sorted(codes) == [200] * 4 + [429] * 16
    assert seen["submits"] == 4 and seen["rate_limited"] == 16
    assert seen["in_flight"] == seen["max_in_flight"] == 4


def test_capacity_holds_under_concurrent_load() -> None:
    async def burst(url: str) -> list[str]:
        headers = {"Authorization": "Key test-key"}
        async with httpx.AsyncClient(headers=headers, timeout=20) as client:
            posts = [client.post(f"{url}/{ENDPOINT}", json=VALID_BODY) for _ in range(12)]
            return [r.json()["request_id"] for r in await asyncio.gather(*posts)]

    with SimulatorServer(fast(queue_seconds=0.01, run_seconds=0.3, capacity=3)) as server:
        ids = asyncio.run(burst(server.url))
        wait_until(lambda: all(completed(server, i) for i in ids), what="all jobs")
        seen = server.counters()
    assert seen["max_running"] == 3 and seen["max_in_flight"] == 12 and seen["in_flight"] == 0


def test_a_status_stream_over_a_socket_ends_after_completed() -> None:
    with SimulatorServer(fast()) as server, auth_client() as client:
        data = client.post(f"{server.url}/{ENDPOINT}", json=VALID_BODY).json()
        with client.stream("GET", data["status_url"] + "/stream") as stream:
            lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert json.loads(lines[-1].removeprefix("data: "))["status"] == "COMPLETED"


# -- the command ---------------------------------------------------------------------------------


def test_simulate_help_has_an_example_and_bad_faults_are_usage_errors() -> None:
    runner = CliRunner()
    help_text = runner.invoke(simulate, ["--help"]).output
    assert "Example:" in help_text and "--fault RULE" in help_text
    bad = runner.invoke(simulate, ["--fault", "submit:teapot"])
    assert bad.exit_code == 2 and "bad fault" in bad.output


def test_simulate_on_a_port_it_cannot_have_is_a_usage_error() -> None:
    runner = CliRunner()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = runner.invoke(simulate, ["--port", str(port)])
    assert busy.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in busy.output
    assert "Traceback" not in busy.output
    out_of_range = runner.invoke(simulate, ["--port", "99999"])
    assert out_of_range.exit_code == 2 and "99999 is not in the range" in out_of_range.output


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="sends SIGTERM")
def test_simulate_prints_its_address_and_stops_on_sigterm() -> None:
    code = "from batchrunner.simulator import simulate; simulate()"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--fault", "media:cut:times=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(
            r"batchrunner simulator listening on (http://127\.0\.0\.1:\d+)\n", line
        )
        assert match, line
        assert httpx.get(f"{match.group(1)}/_sim/counters").json()["submits"] == 0
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert stdout == "" and "Traceback" not in stderr


# -- account and result faults (issue 8) ---------------------------------------------------------


@pytest.mark.anyio
async def test_an_exhausted_balance_locks_submits_but_not_status_until_topped_up() -> None:
    app, clock = make(queue_seconds=0, run_seconds=1, balance=1)
    async with client_for(app) as client:
        first = await submit(client)
        locked = await client.post(f"/{ENDPOINT}", json=VALID_BODY)
        clock.advance(2)
        status = await client.get(f"/fal-ai/veo3/requests/{first['request_id']}/status")
        result = await client.get(f"/fal-ai/veo3/requests/{first['request_id']}")
        topped = await client.post("/_sim/top-up", json={"submits": 2})
        second = await client.post(f"/{ENDPOINT}", json=VALID_BODY)
    assert locked.status_code == 403
    assert locked.json()["detail"].startswith("User is locked. Reason: Exhausted balance")
    assert (status.status_code, result.status_code) == (200, 200)
    assert topped.json() == {"balance": 2} and second.status_code == 200
    seen = counters(app)
    assert (seen["submits"], seen["locked_refusals"], seen["balance"]) == (2, 1, 1)


@pytest.mark.anyio
async def test_prompt_markers_give_a_file_url_or_a_wrong_size() -> None:
    app, clock = make(queue_seconds=0, run_seconds=1)
    async with client_for(app) as client:
        local = await submit(client, {**VALID_BODY, "prompt": "a fox #file-url"})
        lying = await submit(client, {**VALID_BODY, "prompt": "a fox #wrong-size"})
        clock.advance(2)
        local_video = (await client.get(f"/fal-ai/veo3/requests/{local['request_id']}")).json()
        lying_video = (await client.get(f"/fal-ai/veo3/requests/{lying['request_id']}")).json()
        served = await client.get(f"/media/{lying['request_id']}.mp4")
    assert local_video["video"]["url"].startswith("file:///")
    assert lying_video["video"]["file_size"] == len(served.content) + 1000


@pytest.mark.anyio
async def test_a_client_that_leaves_mid_submit_creates_no_job_and_no_traceback() -> None:
    """A client killed while its body is on the way (Ctrl-C, a laptop closing): the simulator
    answers nobody, makes no job, and raises nothing into the server's log."""
    app, _ = make()
    scope = {
        "type": "http", "method": "POST", "path": f"/{ENDPOINT}", "raw_path": ENDPOINT.encode(),
        "query_string": b"", "root_path": "", "scheme": "http", "server": ("127.0.0.1", 80),
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", b"Key test-key"),
                    (b"content-type", b"application/json")],
        "http_version": "1.1", "client": ("127.0.0.1", 5000),
    }  # fmt: skip
    pieces = iter([{"type": "http.request", "body": b'{"prompt": ', "more_body": True}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(pieces, {"type": "http.disconnect"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert counters(app)["submits"] == 0
    assert counters(app)["jobs"] == {}


def test_simulate_options_are_the_config_fields_with_their_defaults() -> None:
    """Each option is declared once, on its SimulatorConfig field: the command's defaults make
    the default config, and values given reach the fields of the same name."""
    declared = {spec.name for spec in fields(SimulatorConfig) if "option" in spec.metadata}
    server = {"host", "port", "ssl_certfile", "ssl_keyfile"}

    def config_of(*argv: str) -> SimulatorConfig:
        params = simulate.make_context("simulate", list(argv)).params
        assert set(params) == declared | server
        return SimulatorConfig(**{k: v for k, v in params.items() if k in declared})

    assert config_of() == SimulatorConfig()
    given = config_of(
        "--queue-seconds", "0", "--auth-scheme", "key", "--fault", "submit:429:times=1",
        "--endpoint", "acme/x", "--balance", "3",
    )  # fmt: skip
    assert given == SimulatorConfig(
        queue_seconds=0,
        auth_scheme="key",
        faults=[Fault.parse("submit:429:times=1")],
        extra_endpoints=("acme/x",),
        balance=3,
    )
