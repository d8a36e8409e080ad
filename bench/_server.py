"""The benchmarks' test server, in a process of its own so that its CPU is not the client's.

Run as ``python bench/_server.py '{"rpm": 2400, ...}'``: it prints ``{"base_url": ...}`` once
serving, then answers JSON commands on stdin, one per line, with one JSON line on stdout:

- ``{"cmd": "reset", "drain": true}``: forget counters and refill (``drain``: empty) the buckets;
- ``{"cmd": "stats"}``: the server's counters.

:class:`BenchServer` drives it from the benchmark.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from typing import Any


def _drain(server: Any) -> None:
    # Each client starts from empty buckets, as when a key's limit is already in use, so that
    # "completed per second / ceiling" measures the steady state, not the first minute's burst.
    # This reaches into the test server's rate-limit state: a benchmark-only shortcut.
    limits = server.state.conditions.limits
    with limits._lock:
        for bucket in limits._buckets.values():
            bucket.level = 0.0
            bucket.updated = limits._clock()


def serve(conditions: dict[str, Any]) -> None:
    """Serve until stdin closes."""
    from chatstep.testing import TestServer

    latency = conditions.get("latency")
    if isinstance(latency, list):
        conditions["latency"] = tuple(latency)
    server = TestServer(validate=False, max_recorded=1000, **conditions)
    server.start()
    print(json.dumps({"base_url": server.base_url}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "reset":
            server.reset()
            if command.get("drain"):
                _drain(server)
            print(json.dumps({"ok": True}), flush=True)
        elif command["cmd"] == "stats":
            print(json.dumps(asdict(server.stats)), flush=True)
    server.stop()


class BenchServer:
    """A test server subprocess with given conditions (rpm, tpm, latency...)."""

    def __init__(self, python: str = sys.executable, **conditions: Any) -> None:
        self._process = subprocess.Popen(
            [python, __file__, json.dumps(conditions)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.base_url: str = self._read()["base_url"]

    def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark's test server exited (see its stderr)")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _ask(self, **command: Any) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()
        return self._read()

    def reset(self, *, drain: bool = False) -> None:
        """Forget counters; buckets full again (or empty with ``drain``)."""
        self._ask(cmd="reset", drain=drain)

    def stats(self) -> dict[str, Any]:
        """Requests received, 429s sent by the rate limiter, faults."""
        return self._ask(cmd="stats")

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
