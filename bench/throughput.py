"""Throughput at the rate-limit ceiling: chatstep's map vs naive asyncio, LiteLLM and LangChain.

The test server (its own process) enforces requests-per-minute and tokens-per-minute limits the
way OpenAI does (prompt tokens + max_tokens charged up front, x-ratelimit headers, 429 +
Retry-After) and answers after a realistic latency. The same mixed-size workload (prompts of
10-300 words, max_tokens 50-300) goes through each client in turn, each in a fresh process and
each starting from empty rate-limit buckets (a key already in use), so the ideal run lasts
``--seconds``:

- chatstep ``amap_step``, limits learned from the headers (none configured);
- chatstep ``amap_step`` with ``rpm``/``tpm`` given;
- naive ``AsyncOpenAI`` + ``asyncio.gather`` + a semaphore (the SDK's own retries on);
- LiteLLM ``Router`` with the deployment's ``rpm``/``tpm`` set (usage-based routing, pre-call
  checks, retries);
- langchain-openai ``abatch`` with an ``InMemoryRateLimiter`` (requests only: set from RPM).

Reported per client: completed per second divided by the ceiling (min of RPM, TPM / mean
tokens per request), 429s the server sent, rows failed, wall time. Prints a table; asserts
nothing. Run it where the peers are installed (``pip install -e . litellm langchain-openai``).

    python bench/throughput.py [--requests 2000] [--seconds 60] [--latency 0.8 --jitter 0.4]
                               [--charge words|characters]

``--charge characters``: the server charges prompts as OpenAI's own limiter estimates them
(characters / 4), well above chatstep's exact BPE count, which chatstep has to learn from the
``x-ratelimit-remaining-tokens`` headers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
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
CONCURRENCY = 64
# Common English words: about one token each, so the server's word count is close to tokens.
SENTENCE = (
    "the product arrived on time and works as described but the battery life is shorter than "
    "expected after a week of daily use I would still buy it again for the price because "
    "support was quick to answer my questions about the warranty and the setup"
)
WORDS = SENTENCE.split()


def workload(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """Mixed sizes: prompts of 10-300 words, max_tokens 50-300 (deterministic)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.randint(10, 300)
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        rows.append({"id": i, "text": text, "max_tokens": rng.randint(50, 300)})
    return rows


CHARGE = ["words"]  # how the server charges prompts (set from --charge)


def server_cost(row: dict[str, Any]) -> int:
    """Tokens the test server charges: words (or characters / 4) of the prompt + max_tokens."""
    prompt = f"Review {row['id']}: {row['text']}"
    if CHARGE[0] == "characters":
        return math.ceil(len(prompt) / 4) + int(row["max_tokens"])
    return len(prompt.split()) + int(row["max_tokens"])


def _messages(row: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Review {row['id']}: {row['text']}"}]


# -- clients (each runs in its own process) -----------------------------------------------


Completed = list[int]
"""Ids of the rows that completed."""


async def _gather(
    rows: list[dict[str, Any]], call: Callable[[dict[str, Any]], Awaitable[Any]]
) -> Completed:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(row: dict[str, Any]) -> bool:
        async with gate:
            try:
                await call(row)
                return True
            except Exception:
                return False

    results = await asyncio.gather(*(one(r) for r in rows))
    return [row["id"] for row, ok in zip(rows, results, strict=True) if ok]


async def client_chatstep(
    rows: list[dict[str, Any]], limits: dict[str, Any], given: bool
) -> Completed:
    from chatstep import ChatCompletion
    from chatstep.mapping.run import amap_step

    step = ChatCompletion(
        model=MODEL,
        prompt="Review {{ inputs.id }}: {{ inputs.text }}",
        max_tokens="{{ inputs.max_tokens }}",
    )
    options: dict[str, Any] = {"concurrency": CONCURRENCY, "history": False}
    if given:
        options.update(rpm=limits["rpm"], tpm=limits["tpm"])
    return [out["id"] async for out in amap_step(step, rows, **options) if out["error"] is None]


async def client_naive(rows: list[dict[str, Any]], limits: dict[str, Any]) -> Completed:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=KEY, base_url=os.environ["OPENAI_BASE_URL"])

    async def call(row: dict[str, Any]) -> Any:
        return await client.chat.completions.create(
            model=MODEL,
            messages=_messages(row),  # type: ignore[arg-type]
            max_tokens=row["max_tokens"],
        )

    return await _gather(rows, call)


async def client_litellm(rows: list[dict[str, Any]], limits: dict[str, Any]) -> Completed:
    import litellm
    from litellm import Router

    litellm.suppress_debug_info = True
    deployment = {
        "model": f"openai/{MODEL}",
        "api_base": os.environ["OPENAI_BASE_URL"],
        "api_key": KEY,
        "rpm": limits["rpm"],
        "tpm": limits["tpm"],
    }
    router = Router(
        model_list=[{"model_name": MODEL, "litellm_params": deployment}],
        routing_strategy="usage-based-routing-v2",
        enable_pre_call_checks=True,
        num_retries=3,
    )

    async def call(row: dict[str, Any]) -> Any:
        return await router.acompletion(
            model=MODEL, messages=_messages(row), max_tokens=row["max_tokens"]
        )

    return await _gather(rows, call)


async def client_langchain(rows: list[dict[str, Any]], limits: dict[str, Any]) -> Completed:
    from langchain_core.rate_limiters import InMemoryRateLimiter
    from langchain_core.runnables import ConfigurableField
    from langchain_openai import ChatOpenAI

    limiter = InMemoryRateLimiter(
        requests_per_second=limits["rpm"] / 60, check_every_n_seconds=0.05, max_bucket_size=10
    )
    llm = ChatOpenAI(
        model=MODEL,
        api_key=KEY,  # type: ignore[arg-type]
        base_url=os.environ["OPENAI_BASE_URL"],
        rate_limiter=limiter,
    ).configurable_fields(max_tokens=ConfigurableField(id="max_tokens"))
    inputs = [_messages(r) for r in rows]
    configs: Any = [
        {"configurable": {"max_tokens": r["max_tokens"]}, "max_concurrency": CONCURRENCY}
        for r in rows
    ]
    results = await llm.abatch(inputs, config=configs, return_exceptions=True)
    return [row["id"] for row, r in zip(rows, results, strict=True) if not isinstance(r, Exception)]


Client = Callable[[list[dict[str, Any]], dict[str, Any]], Awaitable[Completed]]
CLIENTS: dict[str, tuple[str, Client]] = {
    "chatstep-learned": (
        "chatstep map (limits learned from headers)",
        lambda rows, limits: client_chatstep(rows, limits, False),
    ),
    "chatstep-given": (
        "chatstep map (--rpm/--tpm given)",
        lambda rows, limits: client_chatstep(rows, limits, True),
    ),
    "naive": ("AsyncOpenAI + gather + semaphore", client_naive),
    "litellm": ("LiteLLM Router (rpm/tpm set)", client_litellm),
    "langchain": ("langchain-openai abatch + InMemoryRateLimiter", client_langchain),
}


def _client_main(name: str, n: int, limits: dict[str, Any]) -> None:
    rows = workload(n)
    started = time.perf_counter()
    completed = asyncio.run(CLIENTS[name][1](rows, limits))
    print(json.dumps({"completed": completed, "wall_s": time.perf_counter() - started}))


# -- the harness ---------------------------------------------------------------------------


def _run_client(name: str, server: BenchServer, n: int, limits: dict[str, Any]) -> dict[str, Any]:
    server.reset(drain=True)
    env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY}
    env["CHATSTEP_HOME"] = tempfile.mkdtemp(prefix="chatstep-bench-")
    command = [sys.executable, __file__, "--client", name, "--requests", str(n)]
    command += ["--limits", json.dumps(limits)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    stats = server.stats()
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["?"]
        missing = next((ln for ln in lines if "ModuleNotFoundError" in ln), None)
        return {"error": (missing or lines[-1])[:70]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["requests"] = stats["requests"]
    result["rate_limited"] = stats["rate_limited"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of an ideal run")
    parser.add_argument("--latency", type=float, default=0.8, help="mean seconds per answer")
    parser.add_argument("--jitter", type=float, default=0.4, help="latency +/- this, uniform")
    parser.add_argument("--only", help="comma-separated client names: " + ", ".join(CLIENTS))
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--limits", help=argparse.SUPPRESS)
    parser.add_argument(
        "--charge", choices=["words", "characters"], default="words", help="prompt charging"
    )
    args = parser.parse_args()
    CHARGE[0] = args.charge
    if args.client:
        _client_main(args.client, args.requests, json.loads(args.limits))
        return

    rows = workload(args.requests)
    mean_cost = sum(server_cost(r) for r in rows) / len(rows)
    rate = args.requests / args.seconds  # the ceiling, requests per second
    # Tokens bind (the ceiling); requests per minute sit 20% above it, so both limits matter.
    limits = {"rpm": math.ceil(rate * 60 * 1.2), "tpm": math.ceil(rate * 60 * mean_cost)}
    ceiling = min(limits["rpm"] / 60, limits["tpm"] / 60 / mean_cost)

    from chatstep.accounting.tokens import estimate_request_tokens
    from chatstep.core.request import Request

    estimate = sum(
        estimate_request_tokens(
            Request(
                "chat.completions",
                {"model": MODEL, "messages": _messages(r), "max_tokens": r["max_tokens"]},
            ).body
        )
        for r in rows
    ) / len(rows)

    print(f"# throughput at the rate-limit ceiling: {args.requests} chat requests")
    print(
        f"# server limits: {limits['rpm']} RPM, {limits['tpm']} TPM; mean {mean_cost:.0f} "
        f"tokens charged per request; ceiling {ceiling:.2f} requests/s "
        f"(ideal run {args.requests / ceiling:.0f} s)"
    )
    print(
        f"# latency {args.latency} +/- {args.jitter} s; {CONCURRENCY} in flight at most; "
        "every client starts from empty buckets"
    )
    print(
        f"# chatstep budgets {estimate:.0f} tokens per request (BPE + message overhead) where "
        f"the test server charges {mean_cost:.0f} (it counts {args.charge}): "
        "configured --tpm is conservative by that ratio\n"
    )
    names = args.only.split(",") if args.only else list(CLIENTS)
    results: list[tuple[str, dict[str, Any]]] = []
    with BenchServer(
        rpm=limits["rpm"],
        tpm=limits["tpm"],
        latency=[args.latency, args.jitter],
        token_charge=args.charge,
    ) as server:
        for name in names:
            label = CLIENTS[name][0]
            print(f"running: {label} ...", file=sys.stderr, flush=True)
            results.append((label, _run_client(name, server, args.requests, limits)))

    print(
        f"| {'client':<46} | completed/s ÷ ceiling | tokens/s ÷ TPM | 429s | 429s % "
        "| failed | wall s |"
    )
    print(
        f"|{'-' * 48}|----------------------:|---------------:|-----:|-------:|-------:|-------:|"
    )
    by_id = {r["id"]: r for r in rows}
    for label, r in results:
        if "error" in r:
            print(f"| {label:<46} | not run: {r['error']} |")
            continue
        done = r["completed"]
        ratio = len(done) / r["wall_s"] / ceiling
        # Work done: the tokens the server charged for the rows that completed. A client that
        # loses big rows to 429s completes more *requests* per second than the ceiling.
        work = sum(server_cost(by_id[i]) for i in done) / r["wall_s"] / (limits["tpm"] / 60)
        share = 100 * r["rate_limited"] / max(r["requests"], 1)
        print(
            f"| {label:<46} | {ratio:21.3f} | {work:14.3f} | {r['rate_limited']:4d} "
            f"| {share:5.1f}% | {args.requests - len(done):6d} | {r['wall_s']:6.1f} |"
        )


if __name__ == "__main__":
    main()
