"""A step whose endpoint is down falls back to the embedded model (``backend: local``)."""

from __future__ import annotations

import asyncio
from typing import Any

from chatstep import AsyncRunner, RetryPolicy, StepResult
from chatstep.testing import TestServer


def test_down_endpoint_falls_back_to_the_embedded_model(local_model: Any) -> None:
    with TestServer(fault_rate=1.0, faults=("503",)) as down:
        step = {
            "model": "gpt-4o-mini",
            "prompt": "Say hi.",
            "max_tokens": 8,
            "base_url": down.base_url,
            "api_key": "sk-test-primary-0000",
            "max_retries": 0,
            "fallbacks": [{"backend": "local"}],
        }

        async def main() -> Any:
            policy = RetryPolicy(initial_delay=0.001, max_delay=0.001)
            async with AsyncRunner(retry=policy, history=False) as runner:
                return await runner.run(step)

        result = asyncio.run(main())
        assert len(down.requests) == 1
    assert isinstance(result, StepResult)
    assert result.answered_by is not None
    assert result.answered_by["candidate"] == "fallbacks[0]"
    assert result.answered_by["base_url"] == "local"
    assert result.cost == 0.0
    assert result.fallback_errors[0]["error"].startswith("InternalServerError")
