"""A queue client stand-in for scheduler tests, and a ledger, runner and media host around it.

The scheduler's ordering guarantees (what is committed before the POST, what is stored before the
download, what a stop does to a submit under way) are about *when* things happen relative to each
other. A real server cannot pause a submit on cue; :class:`FakeQueue` can: its ``on_submit`` hook
runs while the POST is "on the wire", and may wait on events the test controls.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from batchrunner.answers import QueueStatus
from batchrunner.client import Result, Submitted, Wire
from batchrunner.downloader import MediaClient
from batchrunner.jobs import NewJob
from batchrunner.ledger import Ledger
from batchrunner.reach import Reach
from batchrunner.retry import RetryPolicy
from batchrunner.scheduler import Runner
from batchrunner.settings import Settings
from batchrunner.simulator.clips import MediaShape, clip_bytes

ENDPOINT = "fal-ai/veo3/image-to-video"
ORIGIN = "https://api.test"
PRICE = 1.60  # 4 s with audio
# a real clip of what new_jobs asks for (4 s, 16:9, audio): downloads are decoded and checked
VIDEO = clip_bytes(MediaShape("16:9", 4.0, True, "720p"))


def new_jobs(n: int) -> list[NewJob]:
    return [
        NewJob(
            job_id=f"job-{i:02d}",
            endpoint=ENDPOINT,
            input={"prompt": f"shot {i}", "duration": "4s", "generate_audio": True},
            row=i,
            price_usd=PRICE,
        )
        for i in range(1, n + 1)
    ]


class FakeQueue:
    """Answers like the queue API: every submit is accepted, every job is complete at once.

    ``on_submit(job_id)`` is awaited inside :meth:`submit`, i.e. while the POST is under way.
    """

    def __init__(self, on_submit: Callable[[str], Awaitable[None]] | None = None):
        self.retry = RetryPolicy.fast()
        self.reach = Reach(f"the API at {ORIGIN}", origin=ORIGIN)  # it always answers
        self.on_submit = on_submit
        self.submitted: list[str] = []  # job ids (the prompt names them), in POST order

    async def submit(
        self,
        endpoint_id: str,
        payload: dict[str, Any],
        *,
        retry_throttled: bool = True,
        wire: Wire | None = None,
    ) -> Submitted:
        job_id = "job-{:02d}".format(int(payload["prompt"].split()[-1]))
        self.submitted.append(job_id)
        if wire is not None:
            wire.busy = True  # the POST is out
        if self.on_submit is not None:
            await self.on_submit(job_id)
        base = f"{ORIGIN}/fal-ai/veo3/requests/req-{job_id}"
        return Submitted(f"req-{job_id}", f"{base}/status", base, f"{base}/cancel", 0)

    async def status(
        self, endpoint_id: str, request_id: str, *, url: str | None = None, logs: bool = True
    ) -> QueueStatus:
        return QueueStatus("COMPLETED", None, None, None, [], {"status": "COMPLETED"})

    @contextlib.asynccontextmanager
    async def status_stream(
        self, endpoint_id: str, request_id: str, **_: Any
    ) -> AsyncIterator[AsyncIterator[QueueStatus | None]]:
        """The status stream: one event, COMPLETED (like :meth:`status`)."""

        async def events() -> AsyncIterator[QueueStatus | None]:
            yield await self.status(endpoint_id, request_id)

        yield events()

    async def result(self, endpoint_id: str, request_id: str, *, url: str | None = None) -> Result:
        video = {"url": f"https://cdn.test/{request_id}.mp4", "file_size": len(VIDEO)}
        return Result({"video": video}, billable_units=4)

    async def cancel(self, endpoint_id: str, request_id: str, *, url: str | None = None) -> str:
        return "CANCELLATION_REQUESTED"


def media(handler: Callable[[httpx.Request], None] | None = None) -> MediaClient:
    """A media host serving :data:`VIDEO`; ``handler`` sees each request first."""

    def serve(request: httpx.Request) -> httpx.Response:
        if handler is not None:
            handler(request)
        return httpx.Response(200, content=VIDEO, headers={"content-type": "video/mp4"})

    return MediaClient(httpx.MockTransport(serve))


def runner(
    ledger: Ledger,
    queue: FakeQueue,
    media_client: MediaClient,
    out: Path,
    **options: Any,
) -> Runner:
    values: dict[str, Any] = {"poll_min": 0.01, "poll_max": 0.01}  # the fastest a run may poll
    values.update(options)
    return Runner(
        ledger,
        queue,  # type: ignore[arg-type]  # duck-typed: the four queue operations and `retry`
        media_client,
        out,
        origin=ORIGIN,
        options=Settings(**values),
    )


def committed(ledger_path: Path, job_id: str) -> Any:
    """The job as another process would read it now: committed data only."""
    with Ledger.open(ledger_path, create=False) as other:
        return other.get(job_id)
