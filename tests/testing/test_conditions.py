"""Rate limits, latency and injected faults."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from chatstep.testing import Conditions, Respond, TestServer
from chatstep.testing.conditions import FAULT_KINDS
from chatstep.testing.ratelimit import RateLimits, format_duration, request_cost

CHAT = "/v1/chat/completions"


def _body(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def _post(
    server: TestServer, body: dict[str, Any], path: str = "/chat/completions"
) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body)


# -- durations and costs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "1ms"),
        (0.12, "120ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (8.64, "8.64s"),
        (59.9995, "1m0s"),
        (360, "6m0s"),
        (90.5, "1m30.5s"),
        (3723, "1h2m3s"),
    ],
)
def test_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_chat_request_costs_prompt_plus_completion_budget() -> None:
    assert request_cost(CHAT, _body("one two three", max_tokens=10, n=2), 1024) == 3 + 20
    assert request_cost(CHAT, _body("one two", max_completion_tokens=5), 1024) == 2 + 5
    assert request_cost(CHAT, _body("one two"), 1024) == 2 + 1024
    assert request_cost("/v1/embeddings", {"input": ["a b", "c"]}, 1024) == 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_buckets_refill_continuously() -> None:
    clock = FakeClock()
    limits = RateLimits(rpm=60, clock=clock)
    for _ in range(60):
        assert limits.charge(CHAT, _body()).allowed
    refused = limits.charge(CHAT, _body())
    assert not refused.allowed
    assert refused.kind == "requests"
    assert refused.wait == pytest.approx(1.0)
    clock.now += 0.5
    assert not limits.charge(CHAT, _body()).allowed
    clock.now += 0.5
    assert limits.charge(CHAT, _body()).allowed
    clock.now += 30
    headers = limits.headers()
    assert headers["x-ratelimit-remaining-requests"] == "30"
    assert headers["x-ratelimit-reset-requests"] == "30s"


def test_a_request_larger_than_the_bucket_is_refused_for_good() -> None:
    limits = RateLimits(tpm=100, clock=FakeClock())
    decision = limits.charge(CHAT, _body(max_tokens=200), "gpt-4o-mini")
    assert not decision.allowed
    assert decision.kind == "tokens"
    assert decision.wait == 0
    assert decision.message.startswith("Request too large for gpt-4o-mini")


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rpm: must be a positive number"):
        RateLimits(rpm=0)


# -- rate limits over HTTP ----------------------------------------------------------------


def test_rpm_limit_answers_429_with_openai_headers(openai_server: TestServer) -> None:
    openai_server.configure(rpm=2)
    first, second, third = (_post(openai_server, _body()) for _ in range(3))
    assert [r.status_code for r in (first, second, third)] == [200, 200, 429]
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-requests" in second.headers
    assert "x-ratelimit-limit-tokens" not in first.headers
    error = third.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "requests"
    assert "Limit 2, Used 2, Requested 1" in error["message"]
    assert int(third.headers["retry-after"]) >= 1
    assert 0 < int(third.headers["retry-after-ms"]) <= 30_000
    assert openai_server.stats.rate_limited == 1


def test_tpm_limit_charges_prompt_and_completion_budget(openai_server: TestServer) -> None:
    openai_server.configure(tpm=1000)
    response = _post(openai_server, _body("one two three", max_tokens=100, n=2))
    assert response.headers["x-ratelimit-limit-tokens"] == "1000"
    remaining = int(response.headers["x-ratelimit-remaining-tokens"])
    # 203 tokens charged; the bucket refills ~17 tokens a second meanwhile.
    assert 797 <= remaining < 1000
    refused = _post(openai_server, _body(max_tokens=1200))
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "tokens"
    assert "Request too large" in refused.json()["error"]["message"]
    assert "retry-after" not in refused.headers


def test_the_sdk_sees_a_rate_limit_error(openai_server: TestServer, client: openai.OpenAI) -> None:
    openai_server.configure(rpm=1)
    client.chat.completions.create(**_body())
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(**_body())
    assert caught.value.code == "rate_limit_exceeded"


def test_streams_carry_rate_limit_headers(openai_server: TestServer) -> None:
    openai_server.configure(rpm=10, tpm=10_000)
    response = _post(openai_server, _body(stream=True, max_tokens=5))
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-ratelimit-remaining-requests"] == "9"


def test_models_are_not_rate_limited(openai_server: TestServer) -> None:
    openai_server.configure(rpm=1)
    for _ in range(3):
        assert httpx.get(f"{openai_server.base_url}/models").status_code == 200


def test_reset_restores_the_initial_conditions(openai_server: TestServer) -> None:
    openai_server.configure(rpm=1, fault_rate=0.5)
    assert openai_server.conditions.rpm == 1
    openai_server.reset()
    assert openai_server.conditions == Conditions()
    assert all(_post(openai_server, _body()).status_code == 200 for _ in range(5))


def test_configure_rejects_unknown_settings(openai_server: TestServer) -> None:
    with pytest.raises(TypeError, match="unknown setting"):
        openai_server.configure(rps=3)
    with pytest.raises(ValueError, match="unknown kind"):
        openai_server.configure(faults=["explode"])
    with pytest.raises(ValueError, match="fault_rate"):
        openai_server.configure(fault_rate=2)


# -- latency ------------------------------------------------------------------------------


def test_latency_can_make_clients_time_out(
    openai_server: TestServer, client: openai.OpenAI
) -> None:
    openai_server.configure(latency=5.0)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(**_body(), timeout=0.2)


def test_latency_callable_sees_path_and_body(openai_server: TestServer) -> None:
    seen: list[tuple[str, Any]] = []

    def latency(path: str, body: Any) -> float:
        seen.append((path, body))
        return 0.0

    openai_server.configure(latency=latency)
    _post(openai_server, _body("x"))
    _post(openai_server, {"model": "m", "input": "y"}, "/embeddings")
    assert seen == [(CHAT, _body("x")), ("/v1/embeddings", {"model": "m", "input": "y"})]


def test_latency_mean_and_jitter_are_validated() -> None:
    with pytest.raises(ValueError, match="latency"):
        Conditions(latency=(0.1, -1.0))


# -- faults -------------------------------------------------------------------------------


def test_fault_kinds_are_listed() -> None:
    assert set(FAULT_KINDS) == {
        "429",
        "500",
        "503",
        "reset",
        "timeout",
        "malformed",
        "truncated_stream",
    }


@pytest.mark.parametrize(
    ("kind", "exception"),
    [
        ("429", openai.RateLimitError),
        ("500", openai.InternalServerError),
        ("503", openai.InternalServerError),
        ("reset", openai.APIConnectionError),
    ],
)
def test_each_fault_kind_reaches_the_sdk(
    openai_server: TestServer, client: openai.OpenAI, kind: str, exception: type[Exception]
) -> None:
    openai_server.configure(fault_rate=1.0, faults=[kind])
    with pytest.raises(exception):
        client.chat.completions.create(**_body())
    assert openai_server.stats.faults == {kind: 1}


def test_injected_429_asks_for_a_short_wait(openai_server: TestServer) -> None:
    openai_server.configure(fault_rate=1.0, faults=["429"], fault_retry_after=0.25)
    response = _post(openai_server, _body())
    assert response.status_code == 429
    assert response.headers["retry-after-ms"] == "250"
    assert response.headers["retry-after"] == "1"


def test_timeout_fault_holds_the_answer(openai_server: TestServer, client: openai.OpenAI) -> None:
    openai_server.configure(fault_rate=1.0, faults=["timeout"], fault_timeout=10)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(**_body(), timeout=0.2)


def test_malformed_fault_is_a_200_that_is_not_json(openai_server: TestServer) -> None:
    openai_server.configure(fault_rate=1.0, faults=["malformed"])
    response = _post(openai_server, _body())
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert openai_server.spec_violations == []  # deliberate, not the test's mistake


def test_truncated_stream_fault_ends_before_done(openai_server: TestServer) -> None:
    openai_server.configure(fault_rate=1.0, faults=["truncated_stream"])
    text = _post(openai_server, _body("a few words to stream", stream=True)).text
    events = [event for event in text.split("\n\n") if event]
    assert events, "some chunks arrive"
    assert "data: [DONE]" not in events
    chunks = [json.loads(event.removeprefix("data: ")) for event in events]
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks)
    # Non-streaming requests never get it.
    assert _post(openai_server, _body()).status_code == 200


def test_faults_are_reproducible_per_body_whatever_the_order() -> None:
    bodies = [_body(f"row {i}") for i in range(30)]

    def outcomes(order: list[int], seed: int) -> dict[int, list[int]]:
        with (
            TestServer(fault_rate=0.5, faults=["500", "503"], seed=seed) as server,
            httpx.Client(base_url=server.base_url) as http,
        ):
            seen: dict[int, list[int]] = {i: [] for i in order}
            for _attempt in range(2):
                for i in order:
                    seen[i].append(http.post("/chat/completions", json=bodies[i]).status_code)
            return seen

    forward = outcomes(list(range(30)), seed=7)
    backward = outcomes(list(reversed(range(30))), seed=7)
    assert forward == backward
    statuses = [status for attempts in forward.values() for status in attempts]
    assert {200, 500, 503} <= set(statuses)
    assert outcomes(list(range(30)), seed=8) != forward


def test_scripted_items_win_over_faults(openai_server: TestServer) -> None:
    openai_server.configure(fault_rate=1.0, faults=["500"])
    openai_server.enqueue(Respond(content="scripted"))
    first = _post(openai_server, _body())
    assert first.json()["choices"][0]["message"]["content"] == "scripted"
    assert _post(openai_server, _body()).status_code == 500


def test_faults_apply_to_embeddings_but_not_models(openai_server: TestServer) -> None:
    openai_server.configure(fault_rate=1.0, faults=["503"])
    assert _post(openai_server, {"model": "m", "input": "x"}, "/embeddings").status_code == 503
    assert httpx.get(f"{openai_server.base_url}/models").status_code == 200


def test_stats_count_requests_by_path(openai_server: TestServer) -> None:
    _post(openai_server, _body())
    _post(openai_server, _body())
    httpx.get(f"{openai_server.base_url}/models")
    stats = openai_server.stats
    assert stats.requests == 3
    assert stats.by_path == {CHAT: 2, "/v1/models": 1}
    assert stats.rate_limited == 0
    assert stats.faults == {}


def test_recording_can_be_bounded() -> None:
    with TestServer(max_recorded=3) as server:
        for i in range(5):
            _post(server, _body(f"row {i}"))
        assert [r.body["messages"][0]["content"] for r in server.requests] == [
            "row 2",
            "row 3",
            "row 4",
        ]
        assert server.stats.requests == 5
