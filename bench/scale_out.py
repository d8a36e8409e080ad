"""Scale-out: one dataset mapped by several ``chatstep map`` processes against one rate limit.

The test server (its own process) enforces requests and tokens per minute, OpenAI-style, on
loopback; every scenario starts from empty buckets (a key already in use). Scenarios:

- 1 process;
- 4 processes sharing one ``--budget redis://`` (a ``redis-server`` on 127.0.0.1 started here);
- 4 independent processes (each learns the limits alone);
- 4 processes each given a fixed split, ``--rpm``/``--tpm`` divided by 4;

the 4-process ones on equal shards and on unequal shards (70/10/10/10 %). Printed per
scenario: rows per second while the server admitted them, divided by the ceiling (the
server's view: process start-up is not rate), the same over the whole wall time, 429s, and
rows paid twice (the server admitted a row's request more than once), checked against the
journals (every row finished exactly once). Asserts nothing.

    python bench/scale_out.py [--rows 2000] [--rpm 4800] [--latency 0.5 --jitter 0.3]
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import BenchServer

KEY = "sk-bench-scale-0000-fake"
STEP = (
    "model: gpt-4o-mini\n"
    'prompt: "Row {{ inputs.id }}: {{ inputs.text }}"\n'
    'max_tokens: "{{ inputs.max_tokens }}"\n'
)
WORDS = ["the", "parcel", "came", "late", "but", "support", "was", "kind", "and", "a", "refund"]
PROCESS_TIMEOUT = 600.0  # a bound on a hung scenario, not a speed check
UNEQUAL = (0.7, 0.1, 0.1, 0.1)


def workload(n: int, seed: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "id": i,
            "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 120))),
            "max_tokens": rng.randint(20, 120),
        }
        for i in range(n)
    ]


def cost(row: dict[str, Any]) -> int:
    """Tokens the test server charges (it counts prompt words + max_tokens)."""
    return len(f"Row {row['id']}: {row['text']}".split()) + int(row["max_tokens"])


def shards(rows: list[dict[str, Any]], weights: tuple[float, ...]) -> list[list[dict[str, Any]]]:
    out, start = [], 0
    for k, weight in enumerate(weights):
        end = len(rows) if k == len(weights) - 1 else start + round(weight * len(rows))
        out.append(rows[start:end])
        start = end
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return redis, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    redis.kill()
    raise RuntimeError("redis-server did not start")


def run_scenario(
    name: str,
    parts: list[list[dict[str, Any]]],
    extra: list[str],
    server: BenchServer,
    tmp: Path,
) -> dict[str, Any]:
    """Run one ``chatstep map`` per shard at once; the server's and the journals' counts."""
    server.reset(drain=True)
    work = tmp / name
    work.mkdir()
    step = work / "step.yaml"
    step.write_text(STEP)
    env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY}
    env["CHATSTEP_HOME"] = str(work / "home")
    chatstep = str(Path(sys.executable).with_name("chatstep"))
    processes = []
    started = time.monotonic()
    for k, part in enumerate(parts):
        source = work / f"rows-{k}.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in part))
        command = [chatstep, "map", str(step), "-r", str(source), "-o", str(work / f"out-{k}")]
        command[-1] += ".jsonl"
        command += ["-c", "64", "--no-history", "--no-progress", *extra]
        processes.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE))
    errors = []
    for process in processes:
        _, stderr = process.communicate(timeout=PROCESS_TIMEOUT)
        if process.returncode != 0:
            errors.append(stderr.decode(errors="replace").strip().splitlines()[-1:])
    wall = time.monotonic() - started
    charges = server.charges()
    stats = server.stats()
    admitted = [(t, prompt) for t, prompt, ok in charges if ok]
    paid = collections.Counter(prompt.split(":")[0] for _, prompt in admitted)
    journaled = 0
    for k in range(len(parts)):
        with sqlite3.connect(work / f"out-{k}.jsonl.journal.sqlite3") as db:
            journaled += db.execute("SELECT count(*) FROM rows WHERE status = 'ok'").fetchone()[0]
    times = sorted(t for t, _ in admitted)
    window = times[-1] - times[0] if len(times) > 1 else math.inf
    return {
        "rows": sum(len(p) for p in parts),
        "journaled": journaled,
        "requests": stats["requests"],
        "rate_limited": stats["rate_limited"],
        "paid_twice": sum(n - 1 for n in paid.values() if n > 1),
        "paid_rows": len(paid),
        "admit_window": window,
        "wall": wall,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rpm", type=int, default=4800, help="the server's requests per minute")
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--jitter", type=float, default=0.3)
    parser.add_argument("--only", help="comma-separated scenario names")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not on PATH (apt-get install redis-server)")

    rows = workload(args.rows)
    mean = sum(cost(r) for r in rows) / len(rows)
    # Requests per minute bind; tokens per minute sit 10% above the requests' need.
    rpm, tpm = args.rpm, math.ceil(args.rpm * mean * 1.1)
    ceiling = min(rpm / 60, tpm / 60 / mean)  # rows per second
    equal, unequal = shards(rows, (0.25,) * 4), shards(rows, UNEQUAL)
    split = ["--rpm", str(rpm / 4), "--tpm", str(tpm / 4)]
    print(f"# scale-out: {args.rows} rows, server {rpm} RPM / {tpm} TPM (mean {mean:.0f} tokens "
          f"a row), ceiling {ceiling:.1f} rows/s; latency {args.latency} +/- {args.jitter} s; "
          "every scenario starts from empty buckets")  # fmt: skip
    print(f"# command: python bench/scale_out.py --rows {args.rows} --rpm {args.rpm} "
          f"--latency {args.latency} --jitter {args.jitter}\n")  # fmt: skip

    with (
        tempfile.TemporaryDirectory() as name,
        BenchServer(rpm=rpm, tpm=tpm, latency=[args.latency, args.jitter]) as server,
    ):
        tmp = Path(name)
        redis, url = start_redis(name)
        try:
            scenarios: dict[str, tuple[str, list[list[dict[str, Any]]], list[str]]] = {
                "one": ("1 process", [rows], []),
                "shared": ("4 processes, one --budget redis://, equal", equal, ["--budget", url]),
                "shared-unequal": ("4, one --budget, unequal", unequal, ["--budget", url]),
                "independent": ("4 independent, equal", equal, []),
                "independent-unequal": ("4 independent, unequal", unequal, []),
                "split": ("4, fixed split --rpm/4 --tpm/4, equal", equal, split),
                "split-unequal": ("4, fixed split, unequal", unequal, split),
            }
            names = args.only.split(",") if args.only else list(scenarios)
            results = []
            for key in names:
                label, parts, extra = scenarios[key]
                print(f"running: {label} ...", file=sys.stderr, flush=True)
                results.append((label, run_scenario(key, parts, extra, server, tmp)))
        finally:
            redis.terminate()
            redis.wait(timeout=30)

    print(f"| {'scenario':<40} | rows/s ÷ ceiling (server) | (wall) | requests | 429s "
          "| 429s % | paid twice | journaled | wall s |")  # fmt: skip
    print(f"|{'-' * 42}|--------------------------:|-------:|---------:|-----:|-------:"
          "|-----------:|----------:|-------:|")  # fmt: skip
    base = None
    for label, r in results:
        served = r["paid_rows"] / r["admit_window"] / ceiling
        wall = r["journaled"] / r["wall"] / ceiling
        share = 100 * r["rate_limited"] / max(r["requests"], 1)
        base = base or served
        print(f"| {label:<40} | {served:25.3f} | {wall:6.3f} | {r['requests']:8d} "
              f"| {r['rate_limited']:4d} | {share:5.1f}% | {r['paid_twice']:10d} "
              f"| {r['journaled']:9d} | {r['wall']:6.1f} |")  # fmt: skip
        if r["errors"]:
            print(f"|   errors: {r['errors']}")
    print("\n(server): rows admitted / (last admit - first admit) / ceiling; (wall): rows "
          "journaled / wall time incl. process start-up / ceiling; paid twice: admitted "
          "requests beyond one per row.")  # fmt: skip


if __name__ == "__main__":
    main()
