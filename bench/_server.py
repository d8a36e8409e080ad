"""The benchmarks' test server, in a process of its own so that its CPU is not the client's.

Run as ``python bench/_server.py '{"rpm": 2400, ...}'``: it prints ``{"base_url": ...}`` once
serving, then answers JSON commands on stdin, one per line, with one JSON line on stdout:

- ``{"cmd": "reset", "drain": true}``: forget counters and refill (``drain``: empty) the buckets;
- ``{"cmd": "stats"}``: the server's counters;
- ``{"cmd": "charges"}``: every chat request the rate limiter saw since the last reset, as
  ``[seconds, prompt, admitted]`` (who was paid for, and when). The buckets are emptied again
  at the first chat request after a reset (it alone fits), so start-up time fills nothing.

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


def _log_charges(server: Any, log: list[list[Any]]) -> None:
    # Every request passes the rate limiter once: logging its decisions shows which rows were
    # paid for (admitted) and when, whatever the server keeps of recorded requests.
    # A benchmark-only shortcut into the test server's state, like _drain.
    import time

    limits = server.state.conditions.limits
    charge = limits.charge

    def logged(path: str, body: Any, model: str = "") -> Any:
        if not log:
            # Empty buckets at the first request, not at the reset: a client's start-up time
            # must not fill them (a burst above the ceiling), only what it alone would spend.
            from chatstep.testing.ratelimit import request_cost

            _drain(server)
            first = request_cost(path, body, limits.default_completion_tokens, limits.token_charge)
            for kind, bucket in limits._buckets.items():
                bucket.level = 1.0 if kind == "requests" else float(first)
        decision = charge(path, body, model)
        if path.endswith("/chat/completions") and isinstance(body, dict):
            messages = body.get("messages") or [{}]
            prompt = str(messages[-1].get("content", ""))[:40]
            log.append([time.monotonic(), prompt, decision.allowed])
        return decision

    limits.charge = logged


def serve(conditions: dict[str, Any]) -> None:
    """Serve until stdin closes."""
    from chatstep.testing import TestServer

    latency = conditions.get("latency")
    if isinstance(latency, list):
        conditions["latency"] = tuple(latency)
    server = TestServer(validate=False, max_recorded=1000, **conditions)
    server.start()
    log: list[list[Any]] = []
    _log_charges(server, log)
    print(json.dumps({"base_url": server.base_url}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "reset":
            server.reset()
            log.clear()
            _log_charges(server, log)  # a reset makes new buckets
            if command.get("drain"):
                _drain(server)
            print(json.dumps({"ok": True}), flush=True)
        elif command["cmd"] == "stats":
            print(json.dumps(asdict(server.stats)), flush=True)
        elif command["cmd"] == "charges":
            print(json.dumps(log), flush=True)
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

    def _read(self) -> Any:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark's test server exited (see its stderr)")
        return json.loads(line)

    def _ask(self, **command: Any) -> Any:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()
        return self._read()

    def reset(self, *, drain: bool = False) -> None:
        """Forget counters; buckets full again (or empty with ``drain``)."""
        self._ask(cmd="reset", drain=drain)

    def stats(self) -> dict[str, Any]:
        """Requests received, 429s sent by the rate limiter, faults."""
        stats: dict[str, Any] = self._ask(cmd="stats")
        return stats

    def charges(self) -> list[list[Any]]:
        """``[seconds, prompt, admitted]`` of each chat request since the last reset."""
        log: list[list[Any]] = self._ask(cmd="charges")
        return log

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
