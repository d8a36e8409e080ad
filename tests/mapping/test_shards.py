"""The sharded journal, its leases and the pool budget, without Ray (issue 13, items 2-3).

Real SQLite files, a real redis-server on 127.0.0.1 and the project's test server.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from chatstep.errors import ConfigError, JournalMismatchError, ShardLeaseError, StorageError
from chatstep.mapping.leases import Lease, LeaseStore, RedisLease, SqliteLease
from chatstep.mapping.pool_budget import PoolBudget
from chatstep.mapping.shard_run import run_definition, run_shard
from chatstep.mapping.shards import (
    ShardJournalStore,
    ShardRunJournal,
    open_shard_journal,
    plan_shards,
)
from chatstep.steps.definitions import ChatCompletion

from .conftest import ServerFactory, chat_bodies, prompt_of

STEP = ChatCompletion(model="gpt-4o-mini", prompt="shard row {{ inputs.id }}", max_tokens=20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["sqlite", "redis"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return str(tmp_path / "journal")


def _lease_store(spec: str) -> LeaseStore:
    if spec.startswith("redis://"):
        import redis

        return RedisLease(redis.Redis.from_url(spec), spec)
    return SqliteLease(Path(spec).with_suffix(".leases.sqlite3"))


# -- shards --------------------------------------------------------------------------------


def test_shards_are_consecutive_ranges_and_the_last_may_be_short() -> None:
    shards = plan_shards(23, 10)
    assert [(s.start, s.stop) for s in shards] == [(0, 10), (10, 20), (20, 23)]
    assert [s.name for s in shards] == ["000000", "000001", "000002"]
    assert plan_shards(23, 10) == shards  # a rerun cuts the same shards
    assert plan_shards(0, 10) == []
    with pytest.raises(ConfigError, match="--shard-rows"):
        plan_shards(5, 0)


# -- leases --------------------------------------------------------------------------------


def test_one_holder_at_a_time_and_an_expired_lease_can_be_taken(store_spec: str) -> None:
    store = _lease_store(store_spec)
    assert store.take("run:000001", "a", 30.0)
    assert not store.take("run:000001", "b", 30.0)  # a zombie's retry must wait
    assert store.holder("run:000001") == "a"
    assert store.take("run:000001", "a", 30.0)  # the holder may take it again
    assert not store.renew("run:000001", "b", 30.0)
    store.release("run:000001", "b")  # not b's to release
    assert store.holder("run:000001") == "a"
    # A killed holder's lease runs out; then the next taker gets it, and the old one cannot renew.
    assert store.take("run:000002", "dead", 0.001)
    for _ in range(1000):
        if store.holder("run:000002") is None:
            break
        time.sleep(0.005)
    assert store.take("run:000002", "next", 30.0)
    assert not store.renew("run:000002", "dead", 30.0)
    store.release("run:000001", "a")
    assert store.holder("run:000001") is None


def test_a_lease_held_elsewhere_is_refused_naming_the_holder(store_spec: str) -> None:
    store = _lease_store(store_spec)
    assert store.take("run:000000", "host:123:abc", 30.0)
    lease = Lease(store, "run:000000", ttl=30.0, wait=0.0)
    with pytest.raises(ShardLeaseError, match=r"another live worker \(host:123:abc\)"):
        asyncio.run(lease.acquire())


def test_a_lost_lease_stops_recording_and_sending(store_spec: str) -> None:
    store = _lease_store(store_spec)
    lease = Lease(store, "run:000003", ttl=0.3)

    async def lose() -> None:
        await lease.acquire()
        lease.check()  # held
        store.release("run:000003", lease.owner)
        assert store.take("run:000003", "thief", 30.0)  # the retried task took it over
        await lease.keep()  # returns once a renewal is refused

    asyncio.run(lose())
    assert not lease.held
    with pytest.raises(ShardLeaseError, match="lease on the shard ended"):
        lease.check()


# -- shard journals ------------------------------------------------------------------------


def _open(spec: str) -> ShardJournalStore:
    return open_shard_journal(spec, "test-run")


def test_a_shard_journal_keeps_rows_across_reopening(store_spec: str) -> None:
    definition = run_definition(STEP, None)
    store = _open(store_spec)
    run_id = store.claim(definition, 10, restart=False)
    journal = ShardRunJournal(store, "000001", ["0", "1", "2"], run_id=run_id)
    journal.record(0, "h0", "ok", {"content": "a"}, 0.5)
    journal.record(2, "h2", "failed", {"error": {"type": "X"}}, None)
    store.close()

    again = _open(store_spec)
    assert again.claim(definition, 10, restart=False) == run_id
    resumed = ShardRunJournal(again, "000001", ["0", "1", "2"], run_id=run_id)
    assert [(e.index, e.status, e.input_hash) for e in resumed.stream()] == [
        (0, "ok", "h0"),
        (2, "failed", "h2"),
    ]
    assert resumed.count() == 2
    assert resumed.count("ok") == 1
    assert resumed.spent() == 0.5
    # Another shard's journal is its own.
    assert ShardRunJournal(again, "000002", ["0"], run_id=run_id).count() == 0
    # Another step, or another shard size, is refused; --restart forgets the rows.
    other = run_definition(STEP.model_copy(update={"max_tokens": 21}), None)
    with pytest.raises(JournalMismatchError, match="different step"):
        again.claim(other, 10, restart=False)
    with pytest.raises(JournalMismatchError, match="--shard-rows 10"):
        again.claim(definition, 7, restart=False)
    assert again.claim(other, 7, restart=True) != run_id
    assert ShardRunJournal(again, "000001", ["0", "1", "2"], run_id="").count() == 0
    again.close()


def test_an_unreachable_redis_journal_is_a_storage_error() -> None:
    store = open_shard_journal(f"redis://:pw@127.0.0.1:{_free_port()}/0", "r")
    with pytest.raises(StorageError, match="cannot be reached") as caught:
        store.claim({}, 10, restart=False)
    assert "pw" not in str(caught.value)


# -- one shard through the real request path ------------------------------------------------


def _run(store: ShardJournalStore, rows: list[dict[str, Any]], run_id: str, **kw: Any) -> Any:
    return asyncio.run(
        run_shard(STEP, rows, store=store, shard="000000", run_id=run_id, history=False, **kw)
    )


def test_a_shard_resumes_from_its_journal_without_paying_twice(
    serve: ServerFactory, store_spec: str
) -> None:
    server = serve()
    rows = [{"id": i} for i in range(12)]
    store = _open(store_spec)
    run_id = store.claim(run_definition(STEP, None), 12, restart=False)
    first = _run(store, rows[:7], run_id)  # a worker died after 7 rows
    assert first.counts["done"] == 7
    second = _run(store, rows, run_id)
    assert [r["id"] for r in second.rows] == list(range(12))
    assert [r["content"] for r in second.rows] == [f"echo: shard row {i}" for i in range(12)]
    assert second.counts["from_journal"] == 7
    assert second.counts["requests"] == 5
    sent = Counter(prompt_of(b) for b in chat_bodies(server))
    assert sent == Counter(f"shard row {i}" for i in range(12))  # each row paid once
    # The lease was released at the end: another worker takes the shard at once.
    assert store.leases().take(f"{run_id}:000000", "next", 30.0)
    store.close()


def test_a_shard_held_by_a_live_worker_sends_nothing(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve()
    store = _open(str(tmp_path / "journal"))
    run_id = store.claim(run_definition(STEP, None), 5, restart=False)
    assert store.leases().take(f"{run_id}:000000", "other:1:x", 30.0)
    with pytest.raises(ShardLeaseError, match="other:1:x"):
        _run(store, [{"id": 1}], run_id, lease_ttl=0.2)  # waits 2 x ttl, then gives up
    assert chat_bodies(server) == []
    store.close()


# -- the pool budget's arithmetic ------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pool_budget_reserves_queues_and_refills() -> None:
    clock = _Clock()
    pool = PoolBudget(clock=clock)
    waits = [pool.take("s", 10.0, 60.0, None)[0] for _ in range(62)]
    assert waits[:60] == [0.0] * 60
    assert waits[60:] == pytest.approx([1.0, 2.0])  # 1 request a second refills
    clock.now += 2.0
    assert pool.take("s", 10.0, 60.0, None)[0] == pytest.approx(1.0)
    assert pool.take("other", 10.0, 60.0, None)[0] == 0.0  # scopes are apart


def test_pool_budget_headers_only_lower_and_a_pause_empties() -> None:
    clock = _Clock()
    pool = PoolBudget(clock=clock)
    pool.learn("s", [-1, -1, 1000.0, 900.0])  # limit learned: 1,000 tokens/min, 900 left
    assert pool.take("s", 900.0, None, None)[0] == 0.0
    pool.learn("s", [-1, -1, 1000.0, 1000.0])  # a late answer says "1,000 left": ignored
    assert pool.take("s", 60.0, None, None)[0] == pytest.approx(3.6)
    pool.learn("s", [-1, -1, 2000.0, -1])  # a higher limit is not taken either
    clock.now += 60.0  # a minute refills 1,000: the debt of 60 leaves 940
    assert pool.take("s", 940.0, None, None)[0] == 0.0
    assert pool.take("s", 1.0, None, None)[0] > 0.0
    pool.hold("s", 5.0)
    assert pool.take("s", 0.0, None, None)[0] == pytest.approx(5.0)


def test_an_answer_lowers_to_remaining_less_what_the_pool_reserved_since() -> None:
    clock = _Clock()
    pool = PoolBudget(clock=clock)
    pool.learn("s", [-1, -1, 6000.0, 6000.0])  # 6,000 tokens/min known, all left
    _, reserved = pool.take("s", 1000.0, None, None)  # this request's totals
    for _ in range(3):
        pool.take("s", 1000.0, None, None)  # three more go out before its answer comes
    # Its answer says 4,800 left (the provider charged it 1,200). The other three are not in
    # that figure yet: the pool's level is 4,800 - 3,000, not 4,800 (which would raise it).
    pool.learn("s", [-1, -1, 6000.0, 4800.0], 0.0, reserved)
    assert pool.take("s", 1800.0, None, None)[0] == 0.0
    assert pool.take("s", 100.0, None, None)[0] == pytest.approx(1.0)  # 100 a second refill


def test_a_split_budget_gives_each_worker_its_share() -> None:
    pool = PoolBudget(divide=4, clock=_Clock())
    waits = [pool.take("s", 0.0, 40.0, None)[0] for _ in range(11)]
    assert waits[:10] == [0.0] * 10
    assert waits[10] == pytest.approx(6.0)  # 10 a minute: one every 6 s


def test_engine_ray_without_ray_names_the_extra(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": 1}\n')
    step = tmp_path / "step.yaml"
    step.write_text("model: gpt-4o-mini\nprompt: x {{ inputs.id }}\n")
    script = (
        "import sys; sys.modules['ray'] = None\n"  # import ray fails, as when not installed
        "from chatstep.cli.app import main; main()\n"
    )
    args = ["map", str(step), "--rows", str(rows), "-o", str(tmp_path / "o.jsonl")]
    done = subprocess.run(
        [sys.executable, "-c", script, *args, "--engine", "ray"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "pip install 'chatstep[ray]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_a_shard_journal_reports_its_finished_runs(tmp_path: Path) -> None:
    store = open_shard_journal(str(tmp_path / "shards"), "test-run")
    try:
        run_id = store.claim({"step": "x"}, 10, False)
        journal = ShardRunJournal(store, "000000", [str(i) for i in range(8)], run_id=run_id)
        for index, status in ((0, "ok"), (1, "ok"), (2, "failed"), (4, "ok"), (7, "ok")):
            journal.record(index, "h", status, {"id": index}, 0.0)  # type: ignore[arg-type]
        assert list(journal.finished_ranges()) == [(0, 2), (4, 4), (7, 7)]
        assert list(journal.finished_ranges(include_failed=False)) == [(0, 1), (4, 4), (7, 7)]
    finally:
        store.close()
