"""Awaiting with a deadline without losing a cancellation.

``asyncio.wait_for`` before Python 3.12 swallows a cancellation that arrives while the awaited
operation completes (CPython gh-86296): the caller gets the result (or its error) and the task
goes on as if never cancelled. A map worker cancelled that way waited forever for its next row,
and the run never ended. :func:`within` uses ``asyncio.timeout`` (3.11+), which keeps the
cancellation, and falls back to ``wait_for`` only on 3.10.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["within"]

T = TypeVar("T")


async def within(seconds: float | None, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` for at most ``seconds`` (None: no limit).

    Raises :class:`TimeoutError` (``asyncio.TimeoutError``) when the time runs out; a
    cancellation of the calling task always propagates.
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10
