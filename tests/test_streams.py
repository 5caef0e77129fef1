"""Status by stream: each job follows its server-sent events, and falls back to polling.

Units read the client's stream through ``httpx.MockTransport``; the rest run whole batches
against the simulator over real sockets, with its stream faults (404, dropped mid-way, silent).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchrunner import batch
from batchrunner.client import QueueClient
from batchrunner.errors import KeyRefusedError, StreamNotOfferedError, TransientError
from batchrunner.ledger import Ledger
from batchrunner.providers import ApiConfig
from batchrunner.retry import RetryPolicy
from batchrunner.simulator import Fault, SimulatorServer
from batchrunner.streams import FAILURES_BEFORE_POLLING, BadEvent, StreamMemory, sse_events
from tests.helpers import TOKEN, counters, fast_config, rows, settings_for, write_manifest

ENDPOINT = "fal-ai/veo3/image-to-video"
API = ApiConfig(base_url="https://api.test", auth_scheme="bearer", token="tok", provider="test")


# ---------------------------------------------------------------------- reading events

STREAM = (
    b": ping\r"
    b'data: {"status": "IN_QUEUE", "queue_position": 2}\n\n'
    b'event: update\r\ndata: {"status":\r\ndata:"IN_PROGRESS"}\r\n\r\n'
    b": caf\xc3\xa9 \xff\n"
    b'id: 7\ndata: {"status": "COMPLETED"}'
)


async def events_of(chunks: list[bytes]) -> list[Any]:
    async def each() -> Any:
        for chunk in chunks:
            yield chunk

    return [event async for event in sse_events(each())]


EVENTS = [
    None,
    {"status": "IN_QUEUE", "queue_position": 2},
    {"status": "IN_PROGRESS"},
    None,
    {"status": "COMPLETED"},  # the last event, without its blank line
]


def test_events_are_the_same_wherever_the_bytes_are_cut() -> None:
    """CR LF, LF and CR all end lines, also when a CR LF is cut between two chunks; a blank
    line ends an event, comments are keep-alives, bytes that are not UTF-8 are replaced."""
    for cut in range(len(STREAM) + 1):
        assert anyio.run(events_of, [STREAM[:cut], STREAM[cut:]]) == EVENTS, cut


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_events_are_the_same_in_any_number_of_chunks(cuts: list[int]) -> None:
    edges = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(edges)]
    assert anyio.run(events_of, chunks) == EVENTS


def test_an_event_that_is_not_a_json_object_is_bad() -> None:
    with pytest.raises(BadEvent, match="not a JSON object"):
        anyio.run(events_of, [b"data: [1, 2]\n\n"])


# ---------------------------------------------------------------------- the client's stream


def client_answering(response: httpx.Response, seen: list[httpx.Request]) -> QueueClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response

    return QueueClient(API, retry=RetryPolicy.fast(), transport=httpx.MockTransport(handler))


async def read_all(client: QueueClient) -> list[Any]:
    async with client.status_stream(ENDPOINT, "req-1", url=None, stall=5) as events:
        return [None if e is None else (e.status, e.queue_position) async for e in events]


@pytest.mark.anyio
async def test_the_stream_yields_statuses_and_keep_alives_from_the_status_url() -> None:
    body = (
        b': ping\r\n\r\ndata: {"status": "IN_QUEUE", "queue_position": 3}\r\n\r\n'
        b'event: status\ndata: {"status": "IN_PROGRESS",\ndata: "logs": []}\n\n'
        b'data: {"status": "COMPLETED", "logs": []}'
    )
    seen: list[httpx.Request] = []
    answer = httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    async with client_answering(answer, seen) as client:
        events = await read_all(client)
    assert events == [None, ("IN_QUEUE", 3), ("IN_PROGRESS", None), ("COMPLETED", None)]
    assert str(seen[0].url) == "https://api.test/fal-ai/veo3/requests/req-1/status/stream?logs=1"
    assert seen[0].headers["authorization"] == "Bearer tok"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "stored",
    [
        "https://api.test/fal-ai/veo3/requests/req-1/status",
        "https://api.test/fal-ai/veo3/requests/req-1/status/?logs=0&x=1#part",
        "https://elsewhere.example/fal-ai/veo3/requests/req-1/status?logs=0",
    ],
)
async def test_the_stream_is_the_stored_status_url_on_the_api_origin(stored: str) -> None:
    seen: list[httpx.Request] = []
    answer = httpx.Response(200, content=b"", headers={"content-type": "text/event-stream"})
    client = client_answering(answer, seen)
    async with client, client.status_stream(ENDPOINT, "req-1", url=stored, logs=False) as events:
        assert [e async for e in events] == []
    assert str(seen[0].url) == "https://api.test/fal-ai/veo3/requests/req-1/status/stream?logs=0"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(404, json={"detail": "Not Found"}), StreamNotOfferedError),
        (httpx.Response(405), StreamNotOfferedError),
        (httpx.Response(200, json={"status": "IN_QUEUE"}), StreamNotOfferedError),
        (httpx.Response(401, json={"detail": "bad key"}), KeyRefusedError),
        (httpx.Response(502, text="<html>nginx</html>"), TransientError),
        (
            httpx.Response(
                200, content=b"data: {nope\n\n", headers={"content-type": "text/event-stream"}
            ),
            TransientError,
        ),
    ],
)
async def test_a_stream_that_cannot_be_followed_says_why(
    response: httpx.Response, error: type[Exception]
) -> None:
    async with client_answering(response, []) as client:
        with pytest.raises(error):
            await read_all(client)


def test_the_origin_is_polled_after_failures_in_a_row_or_once_streams_are_not_offered() -> None:
    memory = StreamMemory()
    for _ in range(FAILURES_BEFORE_POLLING - 1):
        memory.failed("https://a", "dropped")
    memory.completed("https://a")  # a success resets the count
    for _ in range(FAILURES_BEFORE_POLLING - 1):
        memory.failed("https://a", "dropped")
    assert memory.worth_trying("https://a")
    memory.failed("https://a", "dropped")
    assert not memory.worth_trying("https://a")
    memory.not_offered("https://b")
    assert not memory.worth_trying("https://b") and memory.worth_trying("https://c")
    assert not StreamMemory(enabled=False).worth_trying("https://c")


# ---------------------------------------------------------------------- whole runs


def run(tmp_path: Path, n: int, faults: list[Fault], **changes: Any) -> tuple[Any, dict, list]:
    config_changes = changes.pop("config", {})
    with SimulatorServer(fast_config(faults=faults, **config_changes)) as server:
        manifest = write_manifest(tmp_path / "m.csv", rows(n))
        settings = settings_for(server, tmp_path, **changes)
        summary = batch.run_manifest(manifest, settings, token=TOKEN)
        seen = counters(server)
    with Ledger.open(settings.ledger, create=False) as ledger:
        jobs = list(ledger.jobs())
    return summary, seen, jobs


def test_a_finished_jobs_result_is_fetched_when_completed_arrives_four_requests_a_job(
    tmp_path: Path,
) -> None:
    # polls would come at most every 30 s: a batch done in seconds was driven by its streams
    n, started = 6, time.monotonic()
    summary, seen, jobs = run(
        tmp_path, n, [], concurrency=3, poll_min=30, poll_max=30, config={"run_seconds": 0.3}
    )
    assert summary.exit_code == 0 and {j.state.value for j in jobs} == {"done"}
    assert time.monotonic() - started < 20
    requests = seen["requests"]
    assert requests == {
        "submit": n, "stream": n, "status": 0, "result": n, "cancel": 0, "media": n
    }  # fmt: skip
    assert all(j.started_at for j in jobs)  # IN_PROGRESS from the stream reached the ledger


def test_streams_not_offered_fall_back_to_polling_and_the_origin_is_remembered(
    tmp_path: Path,
) -> None:
    n, concurrency = 8, 2
    summary, seen, _ = run(tmp_path, n, [Fault("stream", "404")], concurrency=concurrency)
    assert summary.exit_code == 0
    # only jobs that opened a stream before the first 404 was confirmed by a poll tried one
    assert 1 <= seen["requests"]["stream"] <= concurrency
    assert seen["requests"]["status"] >= n


def test_a_stream_dropped_midway_falls_back_and_repeated_drops_make_the_origin_poll(
    tmp_path: Path,
) -> None:
    n = 10
    summary, seen, _ = run(tmp_path, n, [Fault("stream", "drop_midway")], concurrency=1)
    assert summary.exit_code == 0
    assert seen["requests"]["stream"] == FAILURES_BEFORE_POLLING
    assert seen["requests"]["submit"] == n and seen["requests"]["result"] == n


@pytest.mark.parametrize("ping_seconds", [0.05, 60.0], ids=["comments-only", "nothing-at-all"])
def test_a_silent_stream_is_given_up_after_the_stall_and_the_job_is_polled(
    tmp_path: Path, ping_seconds: float
) -> None:
    summary, seen, jobs = run(
        tmp_path,
        2,
        [Fault("stream", "silent", times=1)],
        concurrency=1,
        stream_stall=0.5,
        config={"stream_ping_seconds": ping_seconds},
    )
    assert summary.exit_code == 0 and {j.state.value for j in jobs} == {"done"}
    assert seen["faults"] == {"silent": 1}
    assert seen["requests"]["stream"] == 2  # one failure does not make the origin poll
    assert seen["requests"]["status"] >= 1


def test_streams_off_polls_only(tmp_path: Path) -> None:
    summary, seen, _ = run(tmp_path, 3, [], streams=False)
    assert summary.exit_code == 0
    assert seen["requests"]["stream"] == 0 and seen["requests"]["status"] >= 3


def test_a_job_overdue_while_streaming_is_cancelled_and_failed(tmp_path: Path) -> None:
    summary, seen, jobs = run(
        tmp_path, 2, [], queue_timeout=0.5, config={"queue_seconds": 30, "run_seconds": 0.1}
    )
    assert summary.counts == {"failed": 2}
    # then a fresh status each before the cancel (an overdue job may have finished unseen:
    # test_a_job_that_finished_while_its_stream_said_nothing_is_fetched_not_cancelled; more
    # while it still moves up the queue), and a look at how the cancel ended
    assert seen["requests"]["cancel"] == 2 and seen["requests"]["status"] >= 4
    assert all("queued timeout" in (j.error or "") for j in jobs)


def test_a_job_that_finished_while_its_stream_said_nothing_is_fetched_not_cancelled(
    tmp_path: Path,
) -> None:
    """The stream says nothing until the jobs are overdue by the clock, though they finished
    long before: a laptop asleep (the run's timers fire on waking, before the buffered
    events are read), a proxy holding events back. A fresh status comes before any cancel, so
    they are fetched, not cancelled."""
    summary, seen, _ = run(
        tmp_path,
        2,
        [Fault("stream", "silent")],
        concurrency=2,
        stream_stall=60,
        run_timeout=0.5,
        queue_timeout=0.5,
        config={"queue_seconds": 0, "run_seconds": 0.05, "stream_ping_seconds": 0.05},
    )
    assert summary.counts == {"done": 2}
    assert seen["requests"]["cancel"] == 0 and seen["requests"]["status"] == 2


def test_a_stream_that_fails_transiently_leaves_the_job_in_flight(tmp_path: Path) -> None:
    """Stream and polls all answer 502: the job stays queued for the next run, not failed."""
    summary, seen, jobs = run(
        tmp_path, 1, [Fault("status", "502", after=0)], retry=RetryPolicy.fast(attempts=2)
    )
    assert [j.state.value for j in jobs] == ["queued"]
    assert seen["requests"]["stream"] == 1 and seen["requests"]["status"] == 2
    assert summary.exit_code != 0


def test_stream_faults_are_only_for_the_stream_route() -> None:
    assert str(Fault.parse("stream:drop_midway:0.1")) == "stream:drop_midway:0.1"
    assert Fault("stream", "404").matches("stream") and not Fault("stream", "404").matches("status")
    assert Fault("status", "502").matches("stream")  # status rules cover its stream, as before
    for kind in ("404", "drop_midway", "silent"):
        with pytest.raises(ValueError, match="only applies to the stream route"):
            Fault("status", kind)  # type: ignore[arg-type]
