"""``chatstep map --engine ray`` and ``map_file_ray`` on a three-node loopback cluster.

Counts, never times: every row exactly once in the output, every row paid once (a row sent
again was refused with a 429 every time but the last, or was in flight at a kill).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatstep.testing import TestServer

from .conftest import FAKE_KEY


def _step(tmp_path: Path, server: TestServer, max_tokens: int = 20) -> Path:
    step = tmp_path / "step.yaml"
    step.write_text(
        f"model: gpt-4o-mini\nbase_url: {server.base_url}\n"
        f'prompt: "ray row {{{{ inputs.id }}}}"\nmax_tokens: {max_tokens}\n'
    )
    return step


def _rows(tmp_path: Path, count: int) -> Path:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(count)))
    return rows


def _sent(server: TestServer) -> Counter[str]:
    prompts = (
        str(r.body["messages"][-1]["content"])
        for r in server.requests
        if r.path.endswith("/chat/completions") and isinstance(r.body, dict)
    )
    return Counter(p for p in prompts if p.startswith("ray row"))


def _map(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "chatstep", "map", *map(str, args), "--engine", "ray"]
    command += ["--no-history", "--no-cache"]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def _output_ids(path: Path) -> list[int]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("rows", "shard_rows"), [(40, 10), (47, 13)], ids=["equal", "unequal"])
def test_shards_share_one_budget_and_a_rerun_pays_nothing(
    ray_env: dict[str, str], tmp_path: Path, rows: int, shard_rows: int
) -> None:
    with TestServer(rpm=600, latency=(0.02, 0.01)) as server:
        step, data, out = _step(tmp_path, server), _rows(tmp_path, rows), tmp_path / "out.jsonl"
        args = (step, "--rows", data, "-o", out, "--workers", "3", "--shard-rows", str(shard_rows))
        done = _map(ray_env, *args, "-c", "4")
        assert done.returncode == 0, done.stderr
        assert _output_ids(out) == list(range(rows))
        contents = [json.loads(line)["content"] for line in out.read_text().splitlines()]
        assert contents == [f"echo: ray row {i}" for i in range(rows)]
        sent = _sent(server)
        assert set(sent) == {f"ray row {i}" for i in range(rows)}
        assert sum(n - 1 for n in sent.values()) == server.stats.rate_limited
        assert server.stats.rate_limited <= 3  # one budget: at most the first probes meet a wall
        assert len(list((tmp_path / "out.jsonl.shards").glob("shard-*.sqlite3"))) == -(
            -rows // shard_rows
        )

        again = _map(ray_env, *args)
        assert again.returncode == 0, again.stderr
        assert f"{rows} from the journal; 0 requests" in again.stderr
        assert _sent(server) == sent  # nothing sent again
        assert _output_ids(out) == list(range(rows))


def _drain(server: TestServer, tpm: int, leave: int) -> None:
    """Spend all but ``leave`` tokens of the server's bucket (the key is in use elsewhere)."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    body["max_tokens"] = tpm - leave
    headers = {"Authorization": f"Bearer {FAKE_KEY}"}
    answer = httpx.post(f"{server.base_url}/chat/completions", json=body, headers=headers)
    assert answer.status_code == 200, answer.text


def test_a_tpm_bound_map_from_python_meets_almost_no_429s(cluster: Any, tmp_path: Path) -> None:
    from chatstep.integrations.ray import map_file_ray

    tpm = 60_000  # 1,000 tokens a second; the rows need ~7 seconds of it
    with TestServer(tpm=tpm, latency=(0.02, 0.01)) as server:
        _drain(server, tpm, leave=1_000)
        step, data, out = _step(tmp_path, server, 100), _rows(tmp_path, 60), tmp_path / "o.jsonl"
        stats = map_file_ray(step, data, out, workers=4, shard_rows=8, concurrency=4, history=False)
        assert stats.done == 60
        assert stats.failed == 0
        assert _output_ids(out) == list(range(60))
        sent = _sent(server)
        assert set(sent) == {f"ray row {i}" for i in range(60)}
        assert sum(n - 1 for n in sent.values()) == server.stats.rate_limited
        assert server.stats.rate_limited <= 4  # four workers learning alone met dozens here
        assert stats.rate_limited == server.stats.rate_limited


def _lease_holders(shards: Path) -> list[int]:
    """Process ids of the workers holding shard leases now."""
    path = shards / "leases.sqlite3"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        owners = db.execute("SELECT owner FROM leases WHERE expires >= ?", (time.time(),))
        return [int(owner.split(":")[1]) for (owner,) in owners]


def _wait_for(condition: Any, what: str) -> None:
    for _ in range(6000):
        if condition():
            return
        time.sleep(0.01)
    pytest.fail(f"never happened: {what}")


def test_kill_9_of_a_worker_then_of_the_driver_then_rerun(
    ray_env: dict[str, str], tmp_path: Path
) -> None:
    with TestServer(latency=(0.05, 0.0)) as server:
        step, data, out = _step(tmp_path, server), _rows(tmp_path, 80), tmp_path / "out.jsonl"
        shards = tmp_path / "out.jsonl.shards"
        args = [step, "--rows", data, "-o", out, "--workers", "2", "--shard-rows", "10"]
        args += ["-c", "2", "--lease-ttl", "2"]
        command = [sys.executable, "-m", "chatstep", "map", *map(str, args), "--engine", "ray"]
        command += ["--no-history", "--no-cache"]
        driver = subprocess.Popen(command, env=ray_env, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: sum(_sent(server).values()) >= 10 and _lease_holders(shards), "sends")
            victim = _lease_holders(shards)[0]
            os.kill(victim, signal.SIGKILL)  # Ray retries its task; the retry resumes the shard
            _wait_for(lambda: sum(_sent(server).values()) >= 40, "40 rows sent")
            os.kill(driver.pid, signal.SIGKILL)
        finally:
            if driver.poll() is None:
                driver.kill()
            driver.communicate(timeout=60)
        assert not out.exists()

        done = _map(ray_env, *args)  # the same command resumes
        assert done.returncode == 0, done.stderr
        assert _output_ids(out) == list(range(80))  # every row exactly once
        sent = _sent(server)
        assert set(sent) == {f"ray row {i}" for i in range(80)}
        # Paid twice: at most the rows in flight at the two kills (2 workers x 2 requests each).
        twice = sum(n - 1 for n in sent.values())
        assert twice <= 2 + 2 * 2

        again = _map(ray_env, *args)
        assert again.returncode == 0, again.stderr
        assert _sent(server) == sent


def test_several_machines_mode_keeps_journal_and_budget_in_redis(
    ray_env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    import redis

    with TestServer(rpm=600) as server:
        step, data, out = _step(tmp_path, server), _rows(tmp_path, 30), tmp_path / "out.jsonl"
        args = (step, "--rows", data, "-o", out, "--shard-rows", "7", "--journal", redis_url)
        done = _map(ray_env, *args, "--budget", redis_url)
        assert done.returncode == 0, done.stderr
        assert _output_ids(out) == list(range(30))
        client = redis.Redis.from_url(redis_url)
        assert len(client.keys("chatstep:journal:*:shard:*")) == 5
        assert len(client.keys("chatstep:budget:*")) == 1
        assert client.keys("chatstep:lease:*") == []  # released at each shard's end
        client.close()
        assert not (tmp_path / "out.jsonl.shards").exists()
        sent = _sent(server)
        again = _map(ray_env, *args, "--budget", redis_url)
        assert again.returncode == 0, again.stderr
        assert _sent(server) == sent


def test_an_unreachable_budget_fails_closed_unless_split_is_chosen(
    ray_env: dict[str, str], tmp_path: Path
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with TestServer() as server:
        step, data, out = _step(tmp_path, server), _rows(tmp_path, 6), tmp_path / "out.jsonl"
        budget = f"redis://:secret@127.0.0.1:{port}/0"
        args = (step, "--rows", data, "-o", out, "--budget", budget, "--rpm", "600")
        refused = _map(ray_env, *args)
        assert refused.returncode != 0
        assert "cannot be reached" in refused.stderr
        assert "does not run unlimited" in refused.stderr
        assert "secret" not in refused.stderr
        assert "Traceback" not in refused.stderr
        assert _sent(server) == Counter()

        split = _map(ray_env, *args, "--budget-fallback", "2")
        assert split.returncode == 0, split.stderr
        assert _output_ids(out) == list(range(6))


def test_max_cost_is_refused_rather_than_applied_per_shard(
    ray_env: dict[str, str], tmp_path: Path
) -> None:
    with TestServer() as server:
        step, data, out = _step(tmp_path, server), _rows(tmp_path, 3), tmp_path / "out.jsonl"
        done = _map(ray_env, step, "--rows", data, "-o", out, "--max-cost", "1")
        assert done.returncode == 3
        assert "--max-cost: is not supported with --engine ray" in done.stderr
        assert _sent(server) == Counter()
