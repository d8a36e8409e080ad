"""RateLimiter: budgets, learning from headers, pool-wide pause on 429 (on a fake clock)."""

from __future__ import annotations

import asyncio

import pytest

from chatstep.core.request import Request
from chatstep.core.retry import RetryPolicy
from chatstep.errors import InternalServerError, RateLimitError
from chatstep.mapping.ratelimit import RateLimiter, observe_failures, parse_reset


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def chat(text: str = "hello", max_tokens: int = 10) -> Request:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    return Request("chat.completions", {**body, "max_tokens": max_tokens})


def limiter(t: FakeTime, **kwargs: object) -> RateLimiter:
    return RateLimiter(clock=t.clock, sleep=t.sleep, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5)],
)
def test_parse_reset(text: str, seconds: float) -> None:
    assert parse_reset(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "s1"])
def test_parse_reset_rejects_garbage(text: str) -> None:
    assert parse_reset(text) is None


def test_configured_rpm_spaces_requests_after_the_burst() -> None:
    asyncio.run(_test_configured_rpm_spaces_requests_after_the_burst())


async def _test_configured_rpm_spaces_requests_after_the_burst() -> None:
    t = FakeTime()
    rl = limiter(t, rpm=60, learn=False)
    start = t.now
    for _ in range(70):
        await rl.acquire(chat())
    # A full bucket (60) goes at once; the next 10 come one per second.
    assert t.now - start == pytest.approx(10.0, abs=0.01)
    assert rl.stats.requests == 70


def test_configured_tpm_budgets_prompt_plus_max_tokens() -> None:
    asyncio.run(_test_configured_tpm_budgets_prompt_plus_max_tokens())


async def _test_configured_tpm_budgets_prompt_plus_max_tokens() -> None:
    t = FakeTime()
    rl = limiter(t, tpm=6000, learn=False)
    request = chat(max_tokens=990)
    cost = rl.estimate(request)
    assert 995 <= cost <= 1010  # a few prompt tokens, plus max_tokens x n
    start = t.now
    for _ in range(12):
        await rl.acquire(request)
    # 6 requests fill the minute's 6000 tokens; each further one waits for its tokens.
    # 12 x cost tokens, of which the full bucket (6000) covers the first part at once.
    assert t.now - start == pytest.approx((12 * cost - 6000) * 60 / 6000, abs=1.0)


def test_a_request_bigger_than_the_bucket_still_goes_when_it_is_full() -> None:
    asyncio.run(_test_a_request_bigger_than_the_bucket_still_goes_when_it_is_full())


async def _test_a_request_bigger_than_the_bucket_still_goes_when_it_is_full() -> None:
    t = FakeTime()
    rl = limiter(t, tpm=100, learn=False)
    await rl.acquire(chat(max_tokens=500))  # would never fit; goes on a full bucket, as a debt
    await rl.acquire(chat(max_tokens=500))
    assert t.now - 1000.0 >= 60.0  # the debt is paid back before the next one


def test_learns_limits_from_headers_after_one_probe() -> None:
    asyncio.run(_test_learns_limits_from_headers_after_one_probe())


async def _test_learns_limits_from_headers_after_one_probe() -> None:
    t = FakeTime()
    rl = limiter(t)
    first = chat()
    await rl.acquire(first)
    # Until the first answer tells the limits, other requests wait.
    second = asyncio.ensure_future(rl.acquire(chat()))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not second.done()
    rl.observe_headers(
        {
            "x-ratelimit-limit-requests": "120",
            "x-ratelimit-remaining-requests": "119",
            "x-ratelimit-reset-requests": "500ms",
            "x-ratelimit-limit-tokens": "100000",
            "x-ratelimit-remaining-tokens": "99000",
            "x-ratelimit-reset-tokens": "600ms",
        },
        first,
    )
    await second
    assert rl.rpm == 120
    assert rl.tpm == 100000
    assert rl.stats.learned_rpm == 120


def test_without_rate_headers_learning_ends_and_nothing_is_limited() -> None:
    asyncio.run(_test_without_rate_headers_learning_ends_and_nothing_is_limited())


async def _test_without_rate_headers_learning_ends_and_nothing_is_limited() -> None:
    t = FakeTime()
    rl = limiter(t)
    first = chat()
    await rl.acquire(first)
    rl.observe_headers({"content-type": "application/json"}, first)
    for _ in range(100):
        await rl.acquire(chat())
    assert rl.rpm is None
    assert rl.tpm is None
    assert t.sleeps == []


def test_learned_level_follows_the_servers_remaining() -> None:
    asyncio.run(_test_learned_level_follows_the_servers_remaining())


async def _test_learned_level_follows_the_servers_remaining() -> None:
    t = FakeTime()
    rl = limiter(t)
    first = chat()
    await rl.acquire(first)
    headers = {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0"}
    rl.observe_headers(headers, first)
    start = t.now
    await rl.acquire(chat())
    # The server said its bucket is empty: the next request waits a refill (1 s at 60 rpm).
    assert t.now - start == pytest.approx(1.0, abs=0.01)


def test_configured_limits_are_only_lowered_by_headers() -> None:
    asyncio.run(_test_configured_limits_are_only_lowered_by_headers())


async def _test_configured_limits_are_only_lowered_by_headers() -> None:
    t = FakeTime()
    rl = limiter(t, rpm=60)
    first = chat()
    await rl.acquire(first)
    rl.observe_headers(
        {"x-ratelimit-limit-requests": "100000", "x-ratelimit-remaining-requests": "99999"}, first
    )
    assert rl.rpm == 60


def test_a_429_pauses_the_whole_pool_for_its_retry_after() -> None:
    asyncio.run(_test_a_429_pauses_the_whole_pool_for_its_retry_after())


async def _test_a_429_pauses_the_whole_pool_for_its_retry_after() -> None:
    t = FakeTime()
    rl = limiter(t, learn=False)
    await rl.acquire(chat())
    rl.observe_failure(RateLimitError("429", status_code=429, retry_after=7.0))
    start = t.now
    await rl.acquire(chat())
    assert t.now - start == pytest.approx(7.0)
    assert rl.stats.rate_limited == 1


def test_other_failures_do_not_pause() -> None:
    asyncio.run(_test_other_failures_do_not_pause())


async def _test_other_failures_do_not_pause() -> None:
    t = FakeTime()
    rl = limiter(t, learn=False)
    rl.observe_failure(InternalServerError("500", status_code=500))
    rl.observe_failure(
        RateLimitError("quota", status_code=429, code="insufficient_quota", retry_after=9.0)
    )
    start = t.now
    await rl.acquire(chat())
    assert t.now == start
    assert rl.stats.rate_limited == 0


def test_observe_failures_reports_every_decision_and_keeps_the_policy() -> None:
    t = FakeTime()
    rl = limiter(t, learn=False)
    policy = observe_failures(RetryPolicy(max_retries=3, initial_delay=0.01), rl)
    error = RateLimitError("429", status_code=429, retry_after=2.0)
    assert policy.delay_for(error, 1) == 2.0
    assert policy.max_retries == 3
    assert rl.stats.rate_limited == 1
    assert rl.paused_for == pytest.approx(2.0)


def test_limits_must_be_positive() -> None:
    from chatstep.errors import ConfigError

    with pytest.raises(ConfigError, match="rpm"):
        RateLimiter(rpm=0)


def test_a_per_day_limit_is_recognised_from_the_reset_header() -> None:
    asyncio.run(_test_a_per_day_limit_is_recognised_from_the_reset_header())


async def _test_a_per_day_limit_is_recognised_from_the_reset_header() -> None:
    t = FakeTime()
    rl = limiter(t)
    first = chat()
    await rl.acquire(first)
    # 10,000 a day, none left, and a full refill in a day: one request every 8.64 s.
    headers = {
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "24h0m0s",
    }
    rl.observe_headers(headers, first)
    start = t.now
    await rl.acquire(chat())
    assert t.now - start == pytest.approx(8.64, rel=0.01)


def test_reset_headers_near_a_minute_keep_the_minute() -> None:
    asyncio.run(_test_reset_headers_near_a_minute_keep_the_minute())


async def _test_reset_headers_near_a_minute_keep_the_minute() -> None:
    t = FakeTime()
    rl = limiter(t)
    first = chat()
    await rl.acquire(first)
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "300",
        "x-ratelimit-reset-requests": "31s",  # rounding: exactly 30 s would be a minute's pace
    }
    rl.observe_headers(headers, first)
    drain = 300
    for _ in range(drain):
        await rl.acquire(chat())
    start = t.now
    await rl.acquire(chat())
    assert t.now - start == pytest.approx(0.1, abs=0.01)  # 600 per minute: one per 0.1 s


def test_tokens_are_counted_only_once_a_token_limit_is_known() -> None:
    asyncio.run(_test_tokens_are_counted_only_once_a_token_limit_is_known())


async def _test_tokens_are_counted_only_once_a_token_limit_is_known() -> None:
    # Counting loads a tokenizer vocabulary (~70 MB): not worth it with no limit to count for.
    t = FakeTime()
    counted: list[Request] = []

    def estimate(request: Request) -> int:
        counted.append(request)
        return 10

    rl = limiter(t, estimate=estimate)
    first = chat()
    await rl.acquire(first)
    rl.observe_headers({}, first)
    for _ in range(5):
        await rl.acquire(chat())
    assert counted == []
    second = chat()
    await rl.acquire(second)
    rl.observe_headers(
        {"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "990"}, second
    )
    await rl.acquire(chat())
    assert len(counted) == 1


def test_a_429_tells_the_limits_too() -> None:
    asyncio.run(_test_a_429_tells_the_limits_too())


async def _test_a_429_tells_the_limits_too() -> None:
    t = FakeTime()
    rl = limiter(t)
    await rl.acquire(chat())
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-limit-tokens": "90000",
        "x-ratelimit-remaining-tokens": "12",
    }
    rl.observe_failure(RateLimitError("429", status_code=429, retry_after=0.5, rate_limits=headers))
    assert (rl.rpm, rl.tpm) == (600, 90000)
    assert rl.paused_for == pytest.approx(0.5)


def test_a_configured_level_follows_the_server_both_ways_under_the_callers_cap() -> None:
    asyncio.run(_test_a_configured_level_follows_the_server_both_ways_under_the_callers_cap())


async def _test_a_configured_level_follows_the_server_both_ways_under_the_callers_cap() -> None:
    t = FakeTime()
    rl = limiter(t, rpm=60)
    first = chat()
    await rl.acquire(first)
    # The key is partly in use elsewhere: the first answer shows 50 left (the cap starts there).
    rl.observe_headers({"x-ratelimit-remaining-requests": "50"}, first)
    t.now += 0.01  # (answers sync only from requests sent after the last synced one)
    second = chat()
    await rl.acquire(second)
    rl.observe_headers({"x-ratelimit-remaining-requests": "0"}, second)  # now none left
    start = t.now
    third = chat()
    await rl.acquire(third)
    assert t.now - start == pytest.approx(1.0, abs=0.02)  # one refill at 60 rpm
    # An answer counted before a request sent earlier reached the server shows more left than
    # our level: a configured level is raised back (only lowering it drifts low for good)...
    rl.observe_headers({"x-ratelimit-remaining-requests": "30"}, third)
    start = t.now
    for _ in range(29):
        await rl.acquire(chat())
    assert t.now - start < 0.5
    # ...but never past the caller's own cap, whatever the server says is left.
    t.now += 0.01
    fourth = chat()
    await rl.acquire(fourth)
    rl.observe_headers({"x-ratelimit-remaining-requests": "9000"}, fourth)
    start = t.now
    for _ in range(60):
        await rl.acquire(chat())
    assert t.now - start >= 29.0  # about 18 left of the cap: 42 more wait for its refill
