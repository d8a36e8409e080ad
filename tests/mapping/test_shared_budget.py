"""One rate budget in Redis shared by several ``chatstep map`` processes (issue 13, item 2)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from chatstep.errors import ConfigError, StorageError
from chatstep.mapping.run import map_step
from chatstep.steps.definitions import ChatCompletion

from .conftest import FAKE_KEY, ServerFactory, chat_bodies, prompt_of

TPM = 60_000  # 1,000 tokens a second
STEP = 'model: gpt-4o-mini\nprompt: "shard row {{ inputs.id }}"\nmax_tokens: 100\n'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_budget_fails_closed_naming_it(serve: ServerFactory) -> None:
    server = serve()
    url = f"redis://:hunter2@127.0.0.1:{_free_port()}/0"
    step = ChatCompletion(model="gpt-4o-mini", prompt="x {{ inputs.id }}")
    with pytest.raises(StorageError) as caught:
        map_step(step, [{"id": 1}], budget=url, history=False)
    assert f"127.0.0.1:{url.rsplit(':', 1)[1]}" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "does not run unlimited" in str(caught.value)
    assert chat_bodies(server) == []


def test_a_budget_that_is_not_redis_is_a_config_error() -> None:
    step = ChatCompletion(model="gpt-4o-mini", prompt="x")
    with pytest.raises(ConfigError, match="--budget"):
        map_step(step, [{"id": 1}], budget="memcached://127.0.0.1/0", history=False)


def drain(base_url: str, leave: int) -> None:
    """Spend all but ``leave`` tokens of the server's bucket (the key is in use elsewhere)."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    body["max_tokens"] = TPM - leave
    headers = {"Authorization": f"Bearer {FAKE_KEY}"}
    answer = httpx.post(f"{base_url}/chat/completions", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text


def test_three_processes_share_one_budget(
    serve: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    server = serve(latency=(0.02, 0.01), tpm=TPM)
    drain(server.base_url, leave=1_000)
    step = tmp_path / "step.yaml"
    step.write_text(STEP)
    shards = {0: range(0, 40), 1: range(40, 70), 2: range(70, 90)}  # unequal shards
    processes = []
    for shard, ids in shards.items():
        rows = tmp_path / f"rows{shard}.jsonl"
        rows.write_text("".join(json.dumps({"id": i}) + "\n" for i in ids))
        command = [
            sys.executable, "-m", "chatstep", "map", str(step), "--rows", str(rows),
            "--output", str(tmp_path / f"out{shard}.jsonl"), "--concurrency", "8",
            "--budget", redis_url, "--no-history", "--no-cache",
        ]  # fmt: skip
        processes.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    for shard, ids in shards.items():
        lines = (tmp_path / f"out{shard}.jsonl").read_text().splitlines()
        assert [json.loads(line)["id"] for line in lines] == list(ids)
    sent = Counter(prompt_of(body) for body in chat_bodies(server) if "shard row" in str(body))
    assert set(sent) == {f"shard row {i}" for i in range(90)}  # every row
    # Three processes learning the limit alone met dozens here; sharing it, a handful at most
    # (each process's first request goes before it knows the pool's level).
    rate_limited = server.stats.rate_limited
    assert rate_limited <= 6
    # A row sent more than once was refused (429, not charged) every time but the last.
    assert sum(n - 1 for n in sent.values()) == rate_limited
    # One scope for the pool, holding the learned limit; the key itself is nowhere in Redis.
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = client.keys("chatstep:budget:*")
    assert len(keys) == 1
    stored = client.hgetall(keys[0])
    client.close()
    assert float(stored[b"t:limit"]) == TPM
    assert FAKE_KEY.encode() not in keys[0] + b"".join(stored.values())


def _hash(redis_url: str) -> dict[bytes, bytes]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        (key,) = client.keys("chatstep:budget:*")
        stored: dict[bytes, bytes] = client.hgetall(key)
        return stored
    finally:
        client.close()


def test_headers_only_lower_the_shared_level_and_limit(redis_url: str) -> None:
    import asyncio

    from chatstep.mapping.shared_budget import RedisBudget

    def headers(limit: int, remaining: int) -> dict[str, str]:
        return {
            "x-ratelimit-limit-tokens": str(limit),
            "x-ratelimit-remaining-tokens": str(remaining),
        }

    async def scenario() -> list[tuple[float, float]]:
        budget = RedisBudget(redis_url)
        seen = []
        try:
            await budget.observe("s", headers(60_000, 50_000))  # learns the limit
            await budget.acquire("s", 20_000, rpm=None, tpm=None)
            for limit, remaining in ((60_000, 59_000), (90_000, 59_000), (60_000, 10_000)):
                await budget.observe("s", headers(limit, remaining))
                stored = _hash(redis_url)
                seen.append((float(stored[b"t:limit"]), float(stored[b"t:level"])))
        finally:
            await budget.aclose()
        return seen

    (high, higher_limit, low) = asyncio.run(scenario())
    # 50,000 - 20,000 reserved, plus at most a few seconds' refill (1,000 a second).
    assert high[0] == 60_000
    assert high[1] < 40_000  # a higher remaining did not raise it
    assert higher_limit[0] == 60_000  # nor a higher limit
    assert low[1] <= 10_000 + 5_000  # a lower remaining lowered it (refill since: a few s)


class _StopRedisAfter:
    """A runner hook that shuts Redis down after ``n`` answers (the store dies mid-run)."""

    def __init__(self, url: str, n: int) -> None:
        self.url, self.n, self.answers = url, n, 0

    async def before_send(self, request: object, conn: object) -> None:
        pass

    async def after_reply(self, request: object, conn: object, reply: object) -> None:
        import redis

        self.answers += 1
        if self.answers == self.n:
            client = redis.Redis.from_url(self.url)
            with contextlib.suppress(redis.ConnectionError):
                client.shutdown(nosave=True)
            client.close()

    async def after_result(
        self, step: object, request: object, result: object, error: object
    ) -> None:
        pass


def test_a_budget_lost_mid_run_stops_the_run_instead_of_failing_or_freeing_every_row(
    serve: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    from chatstep.core.runner import AsyncRunner
    from chatstep.mapping.run import amap_step

    server = serve(latency=(0.01, 0.005), rpm=6000)
    step = ChatCompletion(model="gpt-4o-mini", prompt="x {{ inputs.id }}")
    journal = tmp_path / "j.sqlite3"

    async def go() -> None:
        runner = AsyncRunner(hooks=[_StopRedisAfter(redis_url, 5)], history=False, cache=False)
        run = amap_step(step, [{"id": i} for i in range(200)], runner=runner, budget=redis_url,
                        journal=journal, concurrency=4)  # fmt: skip
        async for _ in run:
            pass

    import asyncio

    with pytest.raises(StorageError, match="does not run unlimited"):
        asyncio.run(go())
    sent = len(chat_bodies(server))
    assert 5 <= sent <= 5 + 4  # what was in flight when the store died, no more
    import sqlite3

    with sqlite3.connect(journal) as db:
        statuses = Counter(s for (s,) in db.execute("SELECT status FROM rows"))
    assert statuses["failed"] == 0  # no row was failed for it: a rerun sends them


def test_budget_fallback_goes_on_alone_with_a_share_of_the_limits(serve: ServerFactory) -> None:
    server = serve()
    url = f"redis://127.0.0.1:{_free_port()}/0"
    step = ChatCompletion(model="gpt-4o-mini", prompt="x {{ inputs.id }}")
    import asyncio

    from chatstep.mapping.run import amap_step
    from chatstep.mapping.shared_budget import SharedRateLimiter

    async def go() -> SharedRateLimiter:
        run = amap_step(step, [{"id": i} for i in range(6)], budget=url, budget_fallback=4,
                        rpm=600, tpm=80_000, history=False)  # fmt: skip
        out = [row async for row in run]
        assert [r["error"] for r in out] == [None] * 6
        assert isinstance(run.limiter, SharedRateLimiter)
        return run.limiter

    limiter = asyncio.run(go())
    assert limiter.alone
    assert (limiter.rpm, limiter.tpm) == (150, 20_000)
    assert len(chat_bodies(server)) == 6
    with pytest.raises(ConfigError, match="--budget-fallback"):
        map_step(step, [{"id": 1}], budget=url, budget_fallback=0, history=False)
