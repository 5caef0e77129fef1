"""RetryPolicy, call_with_retry and the RateLimiter, on fake clocks where timing matters."""

from __future__ import annotations

import math
import time
from datetime import datetime

import anyio
import httpx
import pytest

from batchrunner import reach
from batchrunner.client import QueueClient
from batchrunner.errors import FinalError, RateLimitedError, TransientError, UsageError
from batchrunner.providers import ApiConfig
from batchrunner.ratelimit import RateLimiter
from batchrunner.retry import OUTAGE_RETRY, RetryPolicy, call_with_retry, mark_waiting


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeSleep:
    """Records requested waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await anyio.lowlevel.checkpoint()


class Flaky:
    """Fails with the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


# --- RetryPolicy.delay -------------------------------------------------------------------------


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0, jitter=False)
    error = TransientError("x")
    assert [policy.delay(n, error) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(10_000, error) == 3.0  # no overflow on absurd attempt numbers


def test_equal_jitter_stays_within_half_and_full_backoff() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=30.0, jitter=True)
    samples = [policy.delay(3, TransientError("x")) for _ in range(500)]
    assert all(2.0 <= s <= 4.0 for s in samples)
    assert len(set(samples)) > 1  # it does spread


def test_retry_after_is_a_minimum_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0, max_retry_after=300.0, jitter=False)
    assert policy.delay(1, RateLimitedError("429", retry_after=10.0)) == 10.0
    assert policy.delay(4, RateLimitedError("429", retry_after=0.1)) == 4.0  # backoff is longer
    assert policy.delay(1, RateLimitedError("429", retry_after=10_000)) == 300.0
    assert policy.delay(1, RateLimitedError("429")) == 0.5  # no Retry-After: plain backoff


def test_fast_policy_keeps_the_budget_but_never_waits() -> None:
    policy = RetryPolicy.fast(attempts=4)
    assert policy.attempts == 4
    assert policy.delay(3, RateLimitedError("429", retry_after=60)) == 0.0


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=-1)


# --- call_with_retry ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_retries_transient_errors_then_succeeds() -> None:
    sleep = FakeSleep()
    seen: list[tuple[int, str, float]] = []
    fn = Flaky(TransientError("one"), TransientError("two"))
    policy = RetryPolicy(attempts=5, base_delay=1.0, jitter=False)

    result = await call_with_retry(
        policy, fn, on_retry=lambda n, e, d: seen.append((n, str(e), d)), sleep=sleep
    )

    assert result == "ok"
    assert fn.calls == 3
    assert sleep.waits == [1.0, 2.0]
    assert seen == [(1, "one", 1.0), (2, "two", 2.0)]


@pytest.mark.anyio
async def test_retry_after_from_the_error_is_waited() -> None:
    sleep = FakeSleep()
    fn = Flaky(RateLimitedError("slow down", retry_after=2.5))
    policy = RetryPolicy(attempts=3, base_delay=0.01, jitter=False)
    assert await call_with_retry(policy, fn, sleep=sleep) == "ok"
    assert sleep.waits == [2.5]


@pytest.mark.anyio
async def test_budget_is_bounded_and_the_last_error_says_how_many_tries() -> None:
    sleep = FakeSleep()
    fn = Flaky(*[RateLimitedError(f"429 #{n}", retry_after=1.0) for n in range(10)])
    with pytest.raises(RateLimitedError) as info:
        await call_with_retry(RetryPolicy(attempts=4, jitter=False), fn, sleep=sleep)
    assert fn.calls == 4
    assert len(sleep.waits) == 3
    assert str(info.value) == "429 #3 (gave up after 4 tries)"
    assert info.value.retry_after == 1.0 and info.value.status == 429


@pytest.mark.anyio
async def test_one_attempt_means_no_retry() -> None:
    fn = Flaky(TransientError("down"))
    with pytest.raises(TransientError, match=r"down \(gave up after 1 try\)"):
        await call_with_retry(RetryPolicy(attempts=1), fn, sleep=FakeSleep())
    assert fn.calls == 1


@pytest.mark.anyio
async def test_errors_outside_retry_on_propagate_at_once() -> None:
    sleep = FakeSleep()
    fn = Flaky(FinalError("bad input"))
    with pytest.raises(FinalError, match=r"^bad input$"):
        await call_with_retry(RetryPolicy(), fn, sleep=sleep)
    assert fn.calls == 1 and sleep.waits == []


@pytest.mark.anyio
async def test_retry_on_can_name_other_exceptions() -> None:
    fn = Flaky(OSError("disk"), OSError("disk"))
    policy = RetryPolicy.fast(3)
    assert await call_with_retry(policy, fn, retry_on=(OSError,)) == "ok"
    assert fn.calls == 3


# --- RateLimiter ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_unlimited_limiter_never_waits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        await limiter.acquire()
    assert clock.waits == []


@pytest.mark.anyio
async def test_concurrent_acquires_are_spaced_one_interval_apart() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock, sleep=clock.sleep)
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(limiter.acquire)
    # the first goes at once; the others get the next free half-second slots
    assert sorted(clock.waits) == [0.5, 1.0, 1.5, 2.0]
    # so at most rps starts fall in any one-second window
    starts = [clock.now] + [clock.now + w for w in clock.waits]
    for start in starts:
        assert sum(start <= s < start + 1.0 for s in starts) <= 2


@pytest.mark.anyio
async def test_idle_time_is_not_banked_into_a_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now += 10.0  # idle for a long time
    await limiter.acquire()
    await limiter.acquire()
    await limiter.acquire()
    assert clock.waits == [0.25, 0.5]


@pytest.mark.anyio
async def test_slots_follow_the_real_clock() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now += 0.4
    await limiter.acquire()
    assert clock.waits == [pytest.approx(0.6)]


@pytest.mark.anyio
async def test_real_time_rate_is_respected() -> None:
    limiter = RateLimiter(50.0)
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(limiter.acquire)
    elapsed = time.monotonic() - started
    assert elapsed >= 5 / 50 - 0.01  # five intervals at least; no upper bound (slow CI)


@pytest.mark.parametrize("rps", [0, -1.0, math.nan, math.inf])
def test_nonsense_rates_are_refused(rps: float) -> None:
    with pytest.raises(UsageError):
        RateLimiter(rps)


@pytest.mark.anyio
async def test_a_429_halves_the_rate_actually_sent_and_it_recovers_to_no_cap() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    for _ in range(40):  # 40 requests within the last second
        await limiter.acquire()
        clock.now += 0.02
    limiter.throttled()
    limiter.throttled()  # a burst of 429s cuts once
    assert limiter.rps == 20.0
    await limiter.acquire()
    await limiter.acquire()
    assert clock.waits == [pytest.approx(1 / 20)]
    clock.now += 20.0  # 20 s without a 429: 1.1 ** 20 > 4, so the cut is lifted
    await limiter.acquire()
    assert limiter.rps is None


@pytest.mark.anyio
async def test_a_cut_never_goes_above_the_users_cap_nor_below_one_per_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5.0, clock=clock, sleep=clock.sleep)
    limiter.throttled()  # nothing sent in the last second
    assert limiter.rps == 1.0
    clock.now += 60.0
    await limiter.acquire()
    assert limiter.rps == 5.0  # recovered to the ceiling, never past it


@pytest.mark.anyio
async def test_a_429_on_a_poll_slows_the_limiter_but_one_on_a_submit_does_not() -> None:
    limiter = RateLimiter(None)
    answers = iter([httpx.Response(429), httpx.Response(200, json={"status": "IN_QUEUE"})])
    transport = httpx.MockTransport(lambda request: next(answers))
    api = ApiConfig(base_url="https://api.test", auth_scheme="bearer", token="t", provider="x")
    async with QueueClient(
        api, retry=RetryPolicy.fast(), limiter=limiter, transport=transport
    ) as client:
        await client.status("fal-ai/veo3", "r1")
    assert limiter.rps == pytest.approx(1.0, abs=0.01)  # one request sent in the last second
    submits = RateLimiter(None)
    transport = httpx.MockTransport(lambda request: httpx.Response(429))
    async with QueueClient(
        api, retry=RetryPolicy.fast(), limiter=submits, transport=transport
    ) as client:
        with pytest.raises(RateLimitedError):
            await client.submit("fal-ai/veo3", {"prompt": "x"}, retry_throttled=False)
    assert submits.rps is None  # the scheduler's concurrency limit handles those


@pytest.mark.anyio
async def test_an_outage_being_waited_for_uses_up_neither_tries_nor_time() -> None:
    """While the run waits for a network that dropped (:mod:`batchrunner.reach` bounds that
    wait), a request's failed connections are tried again every few seconds without using up
    its policy: once the network is back, it still has all its tries for its own trouble."""
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls <= 20:
            raise mark_waiting(TransientError("nothing connects"))
        if calls <= 22:
            raise TransientError("answered 503")
        return "ok"

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(attempts=3, base_delay=1.0, max_delay=60.0, total=10.0, jitter=False)
    assert await call_with_retry(policy, flaky, sleep=sleep) == "ok"
    assert calls == 23
    assert max(slept[:20]) == OUTAGE_RETRY  # tried again every few seconds, not every minute
    assert sum(slept[:20]) > policy.total  # yet the outage did not use up the time either


def test_the_origins_waited_for_are_recorded_as_they_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a run records for `status` (:class:`batchrunner.reach.Waits`): nothing for an
    address never reached or a blip; each host that answered before and stopped, with when
    the earliest outage began; a host that answers again, or is given up on, is dropped."""
    monkeypatch.setattr(reach, "SAY_AFTER", 1.0)
    told: list[tuple[str | None, str | None]] = []
    waits = reach.Waits(lambda since, hosts: told.append((since, hosts)))
    api = reach.Reach("the API", patience=60, origin="https://api.quickrouter.ai")
    media = reach.Reach("the media host", patience=60, origin="https://v3.fal.media")
    api.listener = media.listener = waits
    never = reach.Reach("a wrong address", first=60, origin="https://api.typo.ai")
    never.listener = waits
    never.failed(time.monotonic() - 5)  # never answered: a wrong address, not an outage
    api.answered()
    media.answered()
    api.failed(time.monotonic())  # a blip
    assert told == []

    api.failing_since = time.monotonic() - 5
    api.failed(time.monotonic())
    ((since, hosts),) = told
    assert hosts == "api.quickrouter.ai"
    began = datetime.fromisoformat(since or "").timestamp()
    assert time.time() - 6 < began < time.time() - 4
    api.failed(time.monotonic())  # the same outage: nothing new to record
    media.failed(time.monotonic() - 2)
    assert told[1:] == [(since, "api.quickrouter.ai, v3.fal.media")]  # the earliest start
    api.answered()
    assert told[2][1] == "v3.fal.media"
    media.patience = 1.0  # given up on: the run no longer waits for it
    media.failed(time.monotonic())
    assert told[3:] == [(None, None)]
