"""Calling async code from synchronous code: :func:`run_sync` and :func:`sync_twin`.

Kept apart from the request path so the sync forms of the public functions cost no import.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

__all__ = ["run_sync", "sync_twin"]

P = ParamSpec("P")
T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, even inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside an event loop (a notebook, an async orchestrator): run in a thread.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="chatstep-run")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def sync_twin(afunc: Callable[P, Coroutine[Any, Any, T]], doc: str = "") -> Callable[P, T]:
    """The synchronous form of ``afunc`` (named without its leading ``a``), through
    :func:`run_sync`; same parameters, so one signature serves both."""

    @functools.wraps(afunc)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(afunc(*args, **kwargs))

    call.__name__ = call.__qualname__ = afunc.__name__.removeprefix("a")
    call.__doc__ = doc or f"Synchronous :func:`{afunc.__name__}`."
    return call
