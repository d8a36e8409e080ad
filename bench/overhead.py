"""CPU time per request through chatstep vs the raw OpenAI SDK vs LiteLLM, and import times.

Against the test server answering instantly (in its own process), each client runs in a fresh
process: a warm-up, then N chat requests with C in flight; the client process's CPU time over
those N requests is divided by N. Import time is the wall time of the imports a first call
needs, in a fresh interpreter, best of several.

    python bench/overhead.py [--requests 2000] [--concurrency 16]

Run it in a virtualenv with the peers installed (``pip install -e . litellm langchain-openai``);
a missing peer is reported as such. Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import BenchServer

MODEL = "gpt-4o-mini"
KEY = "sk-bench-0000-fake"
WARMUP = 200


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Classify review {i}: the product was fine, I guess."}]


async def _pool(n: int, concurrency: int, call: Callable[[int], Awaitable[Any]]) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await call(i)

    await asyncio.gather(*(one(i) for i in range(n)))


async def _measure(
    n: int, concurrency: int, call: Callable[[int], Awaitable[Any]]
) -> dict[str, float]:
    await _pool(WARMUP, concurrency, call)
    cpu, wall = time.process_time(), time.perf_counter()
    await _pool(n, concurrency, call)
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


async def _client_openai(base_url: str, n: int, c: int) -> dict[str, float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=KEY)

    async def call(i: int) -> Any:
        return await client.chat.completions.create(model=MODEL, messages=_messages(i))  # type: ignore[arg-type]

    return await _measure(n, c, call)


async def _client_chatstep_runner(base_url: str, n: int, c: int, history: bool) -> dict[str, float]:
    from chatstep import AsyncRunner, ChatCompletion

    step = ChatCompletion(model=MODEL, prompt="Classify review {{ inputs.i }}: {{ inputs.text }}")
    runner = AsyncRunner(history=history)

    async def call(i: int) -> Any:
        return await runner.run(step, {"i": i, "text": "the product was fine, I guess."})

    return await _measure(n, c, call)


async def _client_chatstep_map(base_url: str, n: int, c: int, defaults: bool) -> dict[str, float]:
    from chatstep import ChatCompletion
    from chatstep.mapping.run import amap_step

    step = ChatCompletion(model=MODEL, prompt="Classify review {{ inputs.i }}: {{ inputs.text }}")

    async def run(count: int, tag: str) -> None:
        rows = ({"i": i, "text": "the product was fine, I guess."} for i in range(count))
        options: dict[str, Any] = {"concurrency": c, "history": defaults}
        if defaults:  # what `chatstep map` does: a journal and the call history
            options["journal"] = Path(tempfile.mkdtemp()) / f"{tag}.journal"
        async for _ in amap_step(step, rows, **options):
            pass

    await run(WARMUP, "warmup")
    cpu, wall = time.process_time(), time.perf_counter()
    await run(n, "measured")
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


async def _client_litellm(base_url: str, n: int, c: int) -> dict[str, float]:
    import litellm

    litellm.suppress_debug_info = True

    async def call(i: int) -> Any:
        return await litellm.acompletion(
            model=f"openai/{MODEL}", api_base=base_url, api_key=KEY, messages=_messages(i)
        )

    return await _measure(n, c, call)


CLIENTS: dict[str, tuple[str, Callable[[str, int, int], Awaitable[dict[str, float]]]]] = {
    "openai": ("raw AsyncOpenAI", _client_openai),
    "chatstep-runner": (
        "chatstep AsyncRunner.run (history off)",
        lambda u, n, c: _client_chatstep_runner(u, n, c, False),
    ),
    "chatstep-runner-history": (
        "chatstep AsyncRunner.run (history on)",
        lambda u, n, c: _client_chatstep_runner(u, n, c, True),
    ),
    "chatstep-map": (
        "chatstep map (no journal, no history)",
        lambda u, n, c: _client_chatstep_map(u, n, c, False),
    ),
    "chatstep-map-defaults": (
        "chatstep map (journal + history)",
        lambda u, n, c: _client_chatstep_map(u, n, c, True),
    ),
    "litellm": ("LiteLLM acompletion", _client_litellm),
}

IMPORTS = {
    "openai": "import openai",
    "chatstep (map + SDK)": "import chatstep.mapping.run, chatstep.backends.openai_http, openai",
    "litellm": "import litellm",
    "langchain-openai": "import langchain_openai",
}


def _run_client(name: str, base_url: str, n: int, c: int) -> dict[str, Any]:
    env = {**os.environ, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": KEY}
    env["CHATSTEP_HOME"] = tempfile.mkdtemp(prefix="chatstep-bench-")
    command = [sys.executable, __file__, "--client", name, "--base-url", base_url]
    command += ["--requests", str(n), "--concurrency", str(c)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _import_time(statement: str, tries: int = 5) -> float | None:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    times = []
    for _ in range(tries):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            return None
        times.append(float(done.stdout.strip()))
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="runs per client (median kept)")
    parser.add_argument(
        "--only", nargs="+", choices=list(CLIENTS), help="run only these clients (default: all)"
    )
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        run = CLIENTS[args.client][1]
        print(json.dumps(asyncio.run(run(args.base_url, args.requests, args.concurrency))))
        return

    print(f"# chatstep overhead: {args.requests} chat requests, {args.concurrency} in flight,")
    print("# against the test server answering instantly (its own process).")
    print(f"# python {sys.version.split()[0]}; median CPU of {args.repeat} runs per client\n")
    rows: list[tuple[str, dict[str, Any]]] = []
    with BenchServer() as server:
        for name, (label, _) in CLIENTS.items():
            if args.only and name not in args.only and name != "openai":
                continue
            runs = [
                _run_client(name, server.base_url, args.requests, args.concurrency)
                for _ in range(args.repeat)
            ]
            failed = [r for r in runs if "error" in r]
            if failed:
                rows.append((label, failed[0]))
                continue
            rows.append(
                (
                    label,
                    {
                        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                        "wall_s": statistics.median(r["wall_s"] for r in runs),
                    },
                )
            )
    base = next((r["cpu_s"] for label, r in rows if label == "raw AsyncOpenAI"), None)
    print(f"| {'client':<40} | CPU µs/request | vs raw SDK | requests/s (wall) |")
    print(f"|{'-' * 42}|---------------:|-----------:|------------------:|")
    for label, r in rows:
        if "error" in r:
            print(f"| {label:<40} | not run: {r['error'][:60]} |")
            continue
        per = r["cpu_s"] / args.requests * 1e6
        ratio = f"{r['cpu_s'] / base:.2f}x" if base else "-"
        print(f"| {label:<40} | {per:14.0f} | {ratio:>10} | {args.requests / r['wall_s']:17.0f} |")
    print("\n| import (fresh interpreter, best of 5) | seconds |")
    print("|---------------------------------------|--------:|")
    for label, statement in IMPORTS.items():
        seconds = _import_time(statement)
        shown = "not installed" if seconds is None else f"{seconds:.2f}"
        print(f"| {label:<37} | {shown:>7} |")


if __name__ == "__main__":
    main()
