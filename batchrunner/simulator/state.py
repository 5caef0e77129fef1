"""The simulator's state (``app.state.sim``): the job world, fault rules and counters.

Every method takes the one :class:`threading.Lock`, so the routes (on the server's event loop)
and :meth:`Simulator.counters` (from a test thread) see exact, consistent numbers. Nothing awaits
while holding the lock, and video files (whose first use encodes a clip) are sized and hashed
after releasing it.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .clips import MediaShape
from .config import Fault, SimulatorConfig
from .media import video_sha256, video_size
from .store import JobStore
from .world import Job, World

ROUTES = ("submit", "status", "stream", "result", "cancel", "media")


def body_digest(body: Any) -> str:
    """sha256 of the canonical JSON of a request body (the ``submitted_bodies`` key)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


LOCKED_DETAIL = (
    "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
)


class AccountLocked(Exception):
    """The account cannot pay for another submit (fal's 403 ``User is locked``)."""


@dataclass(frozen=True)
class JobView:
    """A consistent snapshot of one job, taken under the lock, for building a response."""

    request_id: str
    owner_app: str
    status: str
    queue_position: int | None
    logs: list[dict[str, Any]]
    inference_time: float | None
    error_type: str | None
    result_expired: bool  # result_ttl has passed: the result answers 404
    media_size: int | None  # file size when it succeeded
    media_shape: MediaShape  # what its video looks like


class Simulator:
    """The mutable heart of one simulator instance (shared by every port it listens on)."""

    def __init__(self, config: SimulatorConfig, *, clock: Callable[[], float] | None = None):
        self.config = config  # read on every request: a test may change it while serving
        self.clock = clock or time.monotonic  # tests pass a fake clock to step through states
        self.lock = threading.Lock()
        self.closing = False
        self._wall_offset = time.time() - self.clock()
        self.world = World()
        self._store: JobStore | None = None
        if config.state_path:
            self._store = JobStore(config.state_path)
            jobs, cursor = self._store.load(lambda wall: wall - self._wall_offset)
            self.world.load(jobs, cursor if cursor is not None else self.now())
        else:
            self.world.cursor = self.now()
        # per rule index; the config is read live, so rules may be added while running
        self._fault_seen: Counter[int] = Counter()
        self._fault_injected: Counter[int] = Counter()
        self.submits = 0
        self.submitted_bodies: Counter[str] = Counter()
        self.balance = config.balance  # submits the account can still pay for (None: any)
        self.locked_refusals = 0
        self.requests: Counter[str] = Counter({route: 0 for route in ROUTES})
        self.rate_limited = 0
        self.faults: Counter[str] = Counter()
        self.by_host: dict[str, dict[str, int]] = {}
        self.auth_schemes: Counter[str] = Counter()  # scheme word of Authorization headers seen
        self.auth_failures = 0

    # -- clock -------------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def wall(self, monotonic: float) -> float:
        return monotonic + self._wall_offset

    def _advance(self) -> float:
        """Bring the world (and its state file) up to now, under the lock; returns now."""
        self.world.capacity = self.config.capacity
        self.world.result_ttl = self.config.result_ttl
        self.world.status_ttl = self.config.status_ttl
        now = self.now()
        self.world.advance(now)
        self._flush()
        return now

    # -- per-request bookkeeping -------------------------------------------------------------

    def note_request(self, route: str, host: str, authorization: str | None) -> None:
        """Count a request on ``route`` (before faults and auth), by Host and auth scheme."""
        with self.lock:
            self.requests[route] += 1
            seen = self.by_host.setdefault(host, {"requests": 0, "authorized": 0})
            seen["requests"] += 1
            if authorization is not None:
                seen["authorized"] += 1
                self.auth_schemes[authorization.strip().partition(" ")[0].lower()] += 1

    def pick_fault(self, route: str) -> Fault | None:
        """The fault to inject into this request on ``route``, if any (counted as injected)."""
        with self.lock:
            chosen: Fault | None = None
            for index, fault in enumerate(self.config.faults):
                if not fault.matches(route):
                    continue
                self._fault_seen[index] += 1
                if chosen is not None or self._fault_seen[index] <= fault.after:
                    continue
                if fault.times is not None and self._fault_injected[index] >= fault.times:
                    continue
                draw = random.Random(f"{self.config.seed}/fault/{index}/{self._fault_seen[index]}")
                if fault.probability < 1.0 and draw.random() >= fault.probability:
                    continue
                self._fault_injected[index] += 1
                chosen = fault
            if chosen is not None:
                self.faults[chosen.kind] += 1
                if chosen.kind == "429":
                    self.rate_limited += 1
            return chosen

    def check_auth(self, header: str | None) -> str | None:
        """None when ``header`` is acceptable, else the 401 ``detail`` (counted)."""
        problem = self._auth_problem(header)
        if problem is not None:
            with self.lock:
                self.auth_failures += 1
        return problem

    def _auth_problem(self, header: str | None) -> str | None:
        if not header or not header.strip():
            return "Missing Authorization header"
        scheme, _, token = header.strip().partition(" ")
        scheme, token = scheme.lower(), token.strip()
        allowed = (
            ("bearer", "key") if self.config.auth_scheme == "any" else (self.config.auth_scheme,)
        )
        if scheme not in allowed:
            wanted = " or ".join(f"'{s.capitalize()} <token>'" for s in allowed)
            return f"Invalid Authorization header: expected {wanted}"
        if not token:
            return "Invalid Authorization header: empty token"
        if self.config.token is not None and token != self.config.token:
            return "Invalid API key"
        return None

    # -- jobs --------------------------------------------------------------------------------

    def submit(
        self,
        endpoint_id: str,
        body: dict[str, Any],
        *,
        start_timeout: float | None = None,
        shape: MediaShape | None = None,
    ) -> tuple[Job, int] | None:
        """Create a job, or None when the ``max_in_flight`` throttle says 429 (counted).

        ``shape`` is what the job's video will look like (None: the default
        :class:`MediaShape`, a 2 s 16:9 clip with audio). Returns the job and its queue position
        at submit time.
        """
        with self.lock:
            now = self._advance()
            limit = self.config.max_in_flight
            if limit is not None and self.world.in_flight >= limit:
                self.rate_limited += 1
                return None
            if self.balance is not None:
                if self.balance <= 0:
                    self.locked_refusals += 1
                    raise AccountLocked(LOCKED_DETAIL)
                self.balance -= 1
            seq = self.world.next_seq
            jitter = random.Random(f"{self.config.seed}/jitter/{seq}")
            spread = self.config.jitter
            queue_seconds = self.config.queue_seconds * (1 + spread * jitter.uniform(-1, 1))
            run_seconds = self.config.run_seconds * (1 + spread * jitter.uniform(-1, 1))
            request_id = str(uuid.uuid4())
            while request_id in self.world.jobs:  # pragma: no cover - astronomically unlikely
                request_id = str(uuid.uuid4())
            prompt = body.get("prompt")
            job = Job(
                request_id=request_id,
                endpoint_id=endpoint_id,
                body=body,
                seq=seq,
                submitted_at=now,
                ready_at=now + max(0.0, queue_seconds),
                run_seconds=max(0.0, run_seconds),
                policy_violation=isinstance(prompt, str) and self.config.policy_marker in prompt,
                deadline=None if start_timeout is None else now + start_timeout,
                shape=shape or MediaShape(),
            )
            position = self.world.waiting_ahead()
            self.world.add(job, now)
            self.submits += 1
            self.submitted_bodies[body_digest(body)] += 1
            self._flush()
            return job, position

    def view(self, request_id: str) -> JobView | None:
        """A snapshot of the job as of now; None when unknown or forgotten (``status_ttl``)."""
        with self.lock:
            now = self._advance()
            job = self.world.get(request_id, now)
            if job is None:
                return None
            view = JobView(
                request_id=job.request_id,
                owner_app=job.owner_app,
                status=job.status,
                queue_position=self.world.queue_position(job),
                logs=[
                    {
                        "message": message,
                        "level": level,
                        "source": "user",
                        "timestamp": datetime.fromtimestamp(self.wall(at), UTC).isoformat(),
                    }
                    for at, level, message in job.log_events(now)
                ],
                inference_time=(
                    round(job.ended_at - job.started_at, 6)
                    if job.ended_at is not None and job.started_at is not None
                    else None
                ),
                error_type=job.error_type,
                result_expired=self.world.result_expired(job, now),
                media_size=None,
                media_shape=job.shape,
            )
            size = self.config.media_bytes if job.succeeded else None
        if size is None:
            return view
        return replace(view, media_size=video_size(view.request_id, size, view.media_shape))

    def next_change(self, request_id: str) -> float | None:
        """Seconds until the job's next scheduled change (it starts or ends), if one is known:
        an open status stream wakes then, so it reports a change the moment it happens."""
        with self.lock:
            job = self.world.jobs.get(request_id)
            if job is None or job.ended_at is not None:
                return None
            at = job.ready_at if job.started_at is None else job.started_at + job.run_seconds
            return at - self.now()

    def cancel(self, request_id: str) -> str:
        """``CANCELLATION_REQUESTED``, ``ALREADY_COMPLETED`` or ``NOT_FOUND``.

        A cancelled job ends at once: ``COMPLETED`` with ``error_type`` ``request_cancelled``.
        """
        with self.lock:
            now = self._advance()
            job = self.world.get(request_id, now)
            if job is None:
                answer = "NOT_FOUND"
            elif self.world.cancel(job, now):
                answer = "CANCELLATION_REQUESTED"
            else:
                answer = "ALREADY_COMPLETED"
            self._flush()
            return answer

    def media_job(self, request_id: str) -> bool:
        """Whether ``request_id`` has a video to serve (media outlives ``result_ttl``)."""
        return self.media_shape(request_id) is not None

    def media_shape(self, request_id: str) -> MediaShape | None:
        """The shape of ``request_id``'s video; None when it has none to serve."""
        with self.lock:
            self._advance()
            job = self.world.jobs.get(request_id)
            return job.shape if job is not None and job.succeeded else None

    def top_up(self, submits: int) -> int | None:
        """Let the account pay for ``submits`` more submits; returns the new balance."""
        with self.lock:
            if self.balance is not None:
                self.balance += submits
            return self.balance

    def request(self, request_id: str) -> tuple[str, dict[str, Any]] | None:
        """The endpoint and input body ``request_id`` was submitted with (for billing)."""
        with self.lock:
            job = self.world.jobs.get(request_id)
            return None if job is None else (job.endpoint_id, dict(job.body))

    # -- reading -----------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        """Everything tests and users may want to know about the traffic so far (a copy)."""
        with self.lock:
            now = self._advance()
            size = self.config.media_bytes
            shapes = {job.request_id: job.shape for job in self.world if job.succeeded}
            seen: dict[str, Any] = {
                "submits": self.submits,
                "submitted_bodies": dict(self.submitted_bodies),
                "requests": dict(self.requests),
                "in_flight": self.world.in_flight,
                "max_in_flight": self.world.max_in_flight,
                "running": self.world.running,
                "max_running": self.world.max_running,
                "rate_limited": self.rate_limited,
                "balance": self.balance,
                "locked_refusals": self.locked_refusals,
                "faults": dict(self.faults),
                "by_host": {host: dict(seen) for host, seen in self.by_host.items()},
                "auth_schemes": dict(self.auth_schemes),
                "auth_failures": self.auth_failures,
                "jobs": {
                    job.request_id: {
                        "state": job.status,
                        "endpoint": job.endpoint_id,
                        "prompt": job.prompt,
                        "error_type": job.error_type,
                        "expired": self.world.result_expired(job, now),
                        "media_shape": asdict(job.shape),
                        "media_sha256": None,
                        # the job's own time: queued + running (what an ideal client waits)
                        "service_seconds": round(
                            job.ready_at - job.submitted_at + job.run_seconds, 6
                        ),
                    }
                    for job in self.world
                },
            }
        for request_id, shape in shapes.items():
            seen["jobs"][request_id]["media_sha256"] = video_sha256(request_id, size, shape)
        return seen

    # -- persistence -------------------------------------------------------------------------

    def _flush(self) -> None:
        if self._store is not None and self.world.changed:
            changed = [self.world.jobs[request_id] for request_id in self.world.changed]
            self._store.save(changed, self.world.cursor, self.wall)
        self.world.changed.clear()

    def close(self) -> None:
        """Stop open status streams and close the state file."""
        with self.lock:
            self.closing = True
            if self._store is not None:
                self._store.close()
                self._store = None
