"""Response cache keys and backends (SQLite, and Redis against a real redis-server)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chatstep
from chatstep.storage.cache import (
    DEFAULT_BASE_URL,
    CacheStats,
    RedisCache,
    ResponseCache,
    SqliteCache,
    cache_key,
    normalize_base_url,
    open_cache,
)

BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Capital of France?"},
    ],
    "temperature": 0,
}
RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21},
}


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("CHATSTEP_HOME", str(path))
    return path


# -- keys ---------------------------------------------------------------------------------------


def test_key_is_a_sha256_hex_digest_and_stable() -> None:
    key = cache_key("chat.completions", BODY, None)
    assert len(key) == 64
    assert int(key, 16) >= 0
    assert key == cache_key("chat.completions", dict(reversed(list(BODY.items()))), None)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o"},
        {"temperature": 0.7},
        {"seed": 1},
        {"max_tokens": 5},
        {"n": 2},
        {"messages": [{"role": "user", "content": "Capital of Spain?"}]},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"response_format": {"type": "json_object"}},
    ],
)
def test_answer_changing_params_change_the_key(change: dict[str, Any]) -> None:
    assert cache_key("chat.completions", {**BODY, **change}, None) != cache_key(
        "chat.completions", BODY, None
    )


@pytest.mark.parametrize(
    "change",
    [
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"user": "user-42"},
        {"metadata": {"run": "nightly"}},
        {"store": True},
        {"temperature": 0.0},  # the same number as 0
    ],
)
def test_fields_that_cannot_change_the_answer_keep_the_key(change: dict[str, Any]) -> None:
    assert cache_key("chat.completions", {**BODY, **change}, None) == cache_key(
        "chat.completions", BODY, None
    )


def test_endpoint_and_base_url_are_in_the_key() -> None:
    base = cache_key("chat.completions", BODY, None)
    assert cache_key("embeddings", BODY, None) != base
    assert cache_key("chat.completions", BODY, "http://127.0.0.1:8080/v1") != base
    # None is OpenAI's endpoint, however it is spelled.
    for spelling in [
        DEFAULT_BASE_URL,
        "https://API.openai.com:443/v1/",
        " https://api.openai.com/v1",
    ]:
        assert cache_key("chat.completions", BODY, spelling) == base


def test_base_url_normalization_drops_credentials() -> None:
    assert normalize_base_url("https://user:sk-secret123456@Example.COM:8443/v1/") == (
        "https://example.com:8443/v1"
    )
    assert normalize_base_url("https://x.openai.azure.com/openai?api-version=2024-10-21&key=k") == (
        "https://x.openai.azure.com/openai?api-version=2024-10-21"
    )
    assert normalize_base_url("http://localhost:80/v1") == "http://localhost/v1"


def test_a_body_carrying_a_credential_is_refused() -> None:
    with pytest.raises(ValueError, match="api_key"):
        cache_key("chat.completions", {**BODY, "api_key": "sk-abcdefgh12345678"}, None)
    with pytest.raises(ValueError, match="authorization"):
        cache_key("chat.completions", {**BODY, "Authorization": "Bearer x"}, None)


# -- SQLite -------------------------------------------------------------------------------------


def test_sqlite_roundtrip_in_default_location(home: Path) -> None:
    with open_cache(None) as cache:
        assert isinstance(cache, SqliteCache)
        assert cache.path == home / "cache.sqlite3"
        key = cache_key("chat.completions", BODY, None)
        assert cache.get(key) is None
        cache.set(key, RESPONSE)
        assert cache.get(key) == RESPONSE
        assert cache.stats == CacheStats(hits=1, misses=1, writes=1)
        assert cache.stats.hit_rate == 0.5
    # A new object on the same file sees the stored value.
    with SqliteCache(home / "cache.sqlite3") as again:
        assert again.get(key) == RESPONSE


def test_sqlite_ttl_expires_with_the_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    with SqliteCache(tmp_path / "c.sqlite3", clock=clock) as cache:
        cache.set("short", RESPONSE, ttl=0.5)
        cache.set("forever", RESPONSE)
        clock.now += 0.4
        assert cache.get("short") == RESPONSE
        clock.now += 0.2
        assert cache.get("short") is None
        assert len(cache) == 1  # the expired row was deleted on read
        clock.now += 10**9
        assert cache.get("forever") == RESPONSE


def test_sqlite_purges_expired_rows_lazily(tmp_path: Path) -> None:
    clock = FakeClock()
    with SqliteCache(tmp_path / "c.sqlite3", clock=clock) as cache:
        cache.PURGE_EVERY = 10
        for i in range(5):
            cache.set(f"old{i}", RESPONSE, ttl=1)
        clock.now += 5
        for i in range(5):
            cache.set(f"new{i}", RESPONSE, ttl=100)
        # The tenth write purged the five expired rows without anyone reading them.
        assert len(cache) == 5


def test_open_cache_specs(tmp_path: Path, home: Path) -> None:
    explicit = tmp_path / "sub" / "mine.db"
    for spec, path in [
        ("sqlite", home / "cache.sqlite3"),
        (str(explicit), explicit),
        (f"sqlite://{explicit}", explicit),
        (explicit, explicit),
    ]:
        cache = open_cache(spec)
        assert isinstance(cache, SqliteCache)
        assert cache.path == path
        assert isinstance(cache, ResponseCache)
        cache.close()


def test_sqlite_from_many_threads(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with SqliteCache(tmp_path / "c.sqlite3") as cache:

        def work(worker: int) -> None:
            try:
                for i in range(100):
                    key = f"{worker}-{i}"
                    cache.set(key, {"worker": worker, "i": i})
                    assert cache.get(key) == {"worker": worker, "i": i}
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(cache) == 800
        assert cache.stats.hits == 800
        assert cache.stats.writes == 800
        assert cache.stats.errors == 0


def test_sqlite_from_several_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    script = (
        "import sys\n"
        "from chatstep.storage.cache import SqliteCache\n"
        "c = SqliteCache(sys.argv[1])\n"
        "for i in range(200):\n"
        "    c.set(f'{sys.argv[2]}-{i}', {'i': i})\n"
        "assert c.stats.errors == 0, c.stats\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(chatstep.__file__).parents[1])}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), str(n)], env=env)
        for n in range(4)
    ]
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    with SqliteCache(path) as cache:
        assert len(cache) == 800
        assert cache.get("3-199") == {"i": 199}


def test_sqlite_unreadable_value_is_a_miss(tmp_path: Path) -> None:
    with SqliteCache(tmp_path / "c.sqlite3") as cache:
        cache._connection().execute(
            "INSERT INTO responses (key, value, created) VALUES ('bad', 'not json', 0)"
        )
        assert cache.get("bad") is None
        assert cache.stats.errors == 1
        assert cache.stats.misses == 1


# -- Redis --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    pytest.importorskip("redis", reason="the redis package is not installed (chatstep[redis])")
    import redis

    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir]
    proc = subprocess.Popen(
        [str(a) for a in [*args, "--appendonly", "no"]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        for _ in range(200):
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited with {proc.returncode}")
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not answer PING")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait()


def test_redis_roundtrip_and_prefix(redis_url: str) -> None:
    import redis

    with open_cache(redis_url) as cache:
        assert isinstance(cache, RedisCache)
        key = cache_key("chat.completions", BODY, None)
        assert cache.get(key) is None
        cache.set(key, RESPONSE)
        assert cache.get(key) == RESPONSE
        assert cache.stats == CacheStats(hits=1, misses=1, writes=1)
    raw = redis.Redis.from_url(redis_url)
    stored = raw.get(f"chatstep:cache:{key}")
    raw.close()
    assert stored is not None
    assert json.loads(stored) == RESPONSE
    assert b", " not in stored  # compact JSON


def test_redis_ttl_is_set_and_expires(redis_url: str) -> None:
    import redis

    raw = redis.Redis.from_url(redis_url)
    with RedisCache(redis_url) as cache:
        cache.set("long", RESPONSE, ttl=3600)
        remaining = raw.pttl("chatstep:cache:long")
        assert 0 < remaining <= 3_600_000
        cache.set("none", RESPONSE)
        assert raw.pttl("chatstep:cache:none") == -1  # no expiry
        cache.set("short", RESPONSE, ttl=0.05)
        # Redis expires the key itself; wait for it without asserting on time.
        for _ in range(400):
            if cache.get("short") is None:
                break
            time.sleep(0.01)
        assert cache.get("short") is None
    raw.close()


def test_redis_from_many_threads(redis_url: str) -> None:
    errors: list[BaseException] = []
    with RedisCache(redis_url, prefix="chatstep:test-threads:") as cache:

        def work(worker: int) -> None:
            try:
                for i in range(50):
                    cache.set(f"{worker}-{i}", {"i": i})
                    assert cache.get(f"{worker}-{i}") == {"i": i}
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert cache.stats.hits == 400


def test_redis_down_is_a_miss_not_a_failure() -> None:
    pytest.importorskip("redis", reason="the redis package is not installed (chatstep[redis])")
    port = _free_port()  # nothing listens there
    with RedisCache(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1) as cache:
        cache.set("k", RESPONSE)
        assert cache.get("k") is None
        assert cache.stats.errors == 2
        assert cache.stats.misses == 1
