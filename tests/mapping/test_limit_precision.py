"""The limiter budgets tokens the way the server charges them (issue 13, item 4).

The server charges prompt characters / 4 (OpenAI's up-front estimate), well above the exact BPE
count chatstep estimates with. The key is already in use (the token bucket nearly empty) when
the run starts, so every request has to be paced at the server's refill rate; without learning
the charge ratio from ``x-ratelimit-remaining-tokens`` the run over-sends and meets 429s.
"""

from __future__ import annotations

import httpx

from chatstep.mapping.run import map_step
from chatstep.steps.definitions import ChatCompletion

from .conftest import FAKE_KEY, FAST_RETRY, ServerFactory

TPM = 60_000  # 1,000 tokens a second
PROSE = (
    "Understanding international organizations requires considerable patience, "
    "especially when governments communicate through complicated diplomatic channels. "
)


def drain(base_url: str, leave: int) -> None:
    """Spend all but ``leave`` tokens of the server's bucket with one request."""
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": TPM - leave,
    }
    headers = {"Authorization": f"Bearer {FAKE_KEY}"}
    answer = httpx.post(f"{base_url}/chat/completions", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text


def test_a_server_charging_characters_meets_almost_no_429s(serve: ServerFactory) -> None:
    server = serve(latency=(0.02, 0.01), tpm=TPM, token_charge="characters")
    drain(server.base_url, leave=2_000)
    step = ChatCompletion(model="gpt-4o-mini", prompt="{{ inputs.id }}: {{ inputs.text }}")
    rows = [{"id": i, "text": PROSE * 3} for i in range(80)]
    out = map_step(
        step.model_copy(update={"max_tokens": 5}),
        rows,
        concurrency=16,
        retry=FAST_RETRY,
        history=False,
    )
    assert [r["id"] for r in out] == list(range(80))
    assert all(r["error"] is None for r in out)
    # Seen: 2-5 with the learned ratio (all where the first burst ends: the first request on
    # each new connection reaches the server late), 27-43 budgeting at the BPE estimate.
    assert server.stats.rate_limited <= 8
    assert 1.8 < out.stats.token_factor < 2.3  # 126 tokens charged, 63 estimated
