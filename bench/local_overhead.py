"""What chatstep's local backend costs on top of llama.cpp: tokens per second, three ways.

(a) llama-cpp-python's ``create_chat_completion`` called directly,
(b) ``LocalBackend.complete`` in-process,
(c) ``create_serving_app(LocalBackend())`` served by uvicorn, called with the official client.

All three use the same loaded model, the same Gemma chat format, the same prompts, greedy
decoding (temperature 0, fixed seed) and the same max_tokens, and each starts from an empty KV
cache as the backend does. Runs are interleaved (a, b, c in rotating order, prompt by prompt)
so that machine noise hits all three alike. Prints median tokens/second and the ratios b/a and
c/a (1.00 = no overhead). Run: ``python bench/local_overhead.py [--reps 5] [--max-tokens 64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rain forms, step by step.",
    "List ten ideas for a birthday party.",
]
SEED = 1234


def _direct(model: Any, handler: Any, prompt: str, max_tokens: int) -> int:
    """(a): llama-cpp-python alone, from an empty KV cache like the backend."""
    llama = model.llama
    llama.reset()
    llama.chat_handler = handler
    result = llama.create_chat_completion(
        messages=[{"role": "user", "content": prompt}],
        temperature=0.0,
        seed=SEED,
        max_tokens=max_tokens,
        repeat_penalty=1.0,
    )
    return int(result["usage"]["completion_tokens"])


def _body(prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": "gemma-3-270m",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "seed": SEED,
        "max_tokens": max_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions of every prompt")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request")
    args = parser.parse_args()

    import uvicorn
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from openai import OpenAI

    from chatstep.backends.local.backend import LocalBackend
    from chatstep.backends.local.model import GEMMA_CHAT_TEMPLATE, load_local_model
    from chatstep.serving.model_app import create_serving_app

    model = load_local_model()
    llama = model.llama
    handler = Jinja2ChatFormatter(
        template=GEMMA_CHAT_TEMPLATE,
        eos_token=llama._model.token_get_text(llama.token_eos()),
        bos_token=llama._model.token_get_text(llama.token_bos()),
    ).to_chat_handler()
    backend = LocalBackend()
    loop = asyncio.new_event_loop()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(create_serving_app(backend), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    client = OpenAI(
        base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/v1", api_key="unused", max_retries=0
    )

    def in_process(prompt: str, max_tokens: int) -> int:
        reply = loop.run_until_complete(backend.complete(_body(prompt, max_tokens), timeout=600))
        return int(reply.body["usage"]["completion_tokens"])

    def over_http(prompt: str, max_tokens: int) -> int:
        answer = client.chat.completions.create(**_body(prompt, max_tokens))
        assert answer.usage is not None
        return int(answer.usage.completion_tokens)

    variants: dict[str, Callable[[str, int], int]] = {
        "a  llama_cpp create_chat_completion": lambda p, n: _direct(model, handler, p, n),
        "b  LocalBackend.complete": in_process,
        "c  chatstep serve + openai client": over_http,
    }
    names = list(variants)
    rates: dict[str, list[float]] = {name: [] for name in names}
    tokens: dict[str, list[int]] = {name: [] for name in names}

    for prompt in PROMPTS:  # warm-up: first calls pay one-time costs
        for name in names:
            variants[name](prompt, 4)
    for rep in range(args.reps):
        for i, prompt in enumerate(PROMPTS):
            shift = (rep + i) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                count = variants[name](prompt, args.max_tokens)
                elapsed = time.perf_counter() - started
                rates[name].append(count / elapsed)
                tokens[name].append(count)

    server.should_exit = True
    thread.join()
    loop.close()

    base = statistics.median(rates[names[0]])
    runs = args.reps * len(PROMPTS)
    print(
        f"Gemma 3 270M Q4_K_M, {model.n_threads} threads, n_ctx {model.n_ctx}, "
        f"max_tokens {args.max_tokens}, {runs} interleaved runs per variant, greedy, seed {SEED}"
    )
    print(
        f"{'variant':<38} {'median tok/s':>12} {'min':>7} {'max':>7} {'tokens/run':>10} {'x/a':>6}"
    )
    for name in names:
        median = statistics.median(rates[name])
        print(
            f"{name:<38} {median:>12.1f} {min(rates[name]):>7.1f} {max(rates[name]):>7.1f} "
            f"{statistics.mean(tokens[name]):>10.1f} {median / base:>6.3f}"
        )
    b, c = (statistics.median(rates[name]) / base for name in names[1:])
    print(f"b/a = {b:.3f} (in-process overhead {100 * (1 - b):+.1f}%; target under 5%)")
    print(f"c/a = {c:.3f} (HTTP serving overhead {100 * (1 - c):+.1f}%)")


if __name__ == "__main__":
    main()
