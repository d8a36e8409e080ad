"""Requests per second through ``chatstep serve --steps`` vs the same step run directly.

The test server answers instantly in a process of its own; ``chatstep serve --steps`` runs in
another; the client sends N requests with C in flight. "direct" runs the same step with one
AsyncRunner in the client process (C in flight), so the ratio is what the HTTP hop and the
service's own work (input checks, the shared limiter and slots, the JSON result) cost.

    python bench/steps_service.py [--requests 1000] [--concurrency 16]

Prints requests per second of both and their ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import BenchServer

STEP = "model: gpt-4o-mini\nprompt: 'Summarize: {{ inputs.text }}'\nmax_tokens: 20\n"
KEY = "sk-bench-0000-fake"


async def _direct(requests: int, concurrency: int) -> float:
    from chatstep import AsyncRunner, load_step

    step = load_step(STEP)
    slots = asyncio.Semaphore(concurrency)
    async with AsyncRunner(history=False) as runner:

        async def one(i: int) -> None:
            async with slots:
                await runner.run(step, {"text": f"review {i}"})

        await asyncio.gather(*(one(i) for i in range(concurrency)))  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        return requests / (time.perf_counter() - started)


async def _served(url: str, requests: int, concurrency: int) -> float:
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(i: int) -> None:
            async with slots:
                answer = await client.post(url, json={"text": f"review {i}"})
                answer.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(concurrency)))  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        return requests / (time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    server = BenchServer()
    os.environ.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY=KEY)
    os.environ["CHATSTEP_HISTORY"] = "off"
    steps = Path(tempfile.mkdtemp()) / "steps"
    steps.mkdir()
    (steps / "summarize.yaml").write_text(STEP)
    port = _free_port()
    command = [sys.executable, "-m", "chatstep", "serve", "--steps", str(steps)]
    command += ["--port", str(port), "--concurrency", str(args.concurrency)]
    command += ["--no-history", "--log-level", "warning"]
    service = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/steps")
                break
            except httpx.TransportError:
                if service.poll() is not None:
                    raise SystemExit("chatstep serve --steps exited") from None
                time.sleep(0.05)
        direct = asyncio.run(_direct(args.requests, args.concurrency))
        url = f"http://127.0.0.1:{port}/steps/summarize"
        served = asyncio.run(_served(url, args.requests, args.concurrency))
    finally:
        service.terminate()
        service.wait()
        server.close()
    print(f"{args.requests} requests, {args.concurrency} in flight")
    print(f"direct (AsyncRunner):          {direct:8.0f} req/s")
    print(f"through serve --steps (HTTP):  {served:8.0f} req/s")
    print(f"ratio served/direct:           {served / direct:8.2f}")


if __name__ == "__main__":
    main()
