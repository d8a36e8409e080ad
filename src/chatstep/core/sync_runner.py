"""The synchronous :class:`Runner`: an :class:`~chatstep.core.runner.AsyncRunner` on a private loop.

Like ``openai.OpenAI`` beside ``openai.AsyncOpenAI`` (and ``httpx.Client`` beside
``httpx.AsyncClient``), chatstep offers one runner per calling style. Synchronous code keeps one
:class:`Runner` for many calls, so the calls share connection pools, the cache and the history
writer instead of building them again per call::

    with chatstep.Runner() as runner:
        for review in reviews:
            print(runner.run("classify.yaml", {"review": review}).content)

Every call runs on one event loop in one daemon thread that the runner owns, so it works the same
from plain scripts, from worker threads, and from code that already runs an event loop (a
notebook, an async orchestrator) without touching that loop.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import weakref
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from chatstep.core.runner import AsyncRunner, CallHooks, DeltaCallback, StepSource

if TYPE_CHECKING:
    from chatstep.backends.base import Backend
    from chatstep.core.result import AnyResult
    from chatstep.core.retry import RetryPolicy
    from chatstep.secrets import SecretStore
    from chatstep.storage.cache import ResponseCache
    from chatstep.storage.history import History

__all__ = ["Runner"]

T = TypeVar("T")


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    # Also the finalizer of a runner that was never closed: it must not reference the runner.
    if not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join()
        loop.close()


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    # Ctrl-C and SIGTERM must reach the main thread: a signal the kernel hands to this thread
    # (or to the executor threads it starts, which inherit the mask) would leave a main thread
    # blocked in a read (input() in `chatstep chat`) waiting forever.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    loop.run_forever()


class Runner:
    """Runs steps from synchronous code; reuse one for many calls (it pools connections).

    Takes the same settings as :class:`~chatstep.core.runner.AsyncRunner` (``secrets``,
    ``retry``, ``backend``, ``hooks``, ``price_table``, ``cache``, ``cache_ttl``, ``history``,
    ``run_id``, ``max_cost``). Thread-safe: calls from several threads run concurrently on the
    runner's loop. Close it (or use it as a context manager) to close its connections and flush
    the history. Callbacks (``on_delta``, hooks) run on the runner's loop thread.
    """

    def __init__(
        self,
        *,
        secrets: SecretStore | None = None,
        retry: RetryPolicy | None = None,
        backend: Backend | None = None,
        hooks: list[CallHooks] | None = None,
        price_table: Any = None,
        cache: ResponseCache | str | bool | None = None,
        cache_ttl: float | None = None,
        history: History | bool | None = None,
        run_id: str | None = None,
        max_cost: float | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=_run_loop, args=(self._loop,), name="chatstep-runner", daemon=True
        )
        self._thread.start()
        self._finalizer = weakref.finalize(self, _stop, self._loop, self._thread)
        self._closed = False

        async def make() -> AsyncRunner:
            # Built on the runner's loop: whatever it binds to a loop binds to this one.
            return AsyncRunner(
                secrets=secrets,
                retry=retry,
                backend=backend,
                hooks=hooks,
                price_table=price_table,
                cache=cache,
                cache_ttl=cache_ttl,
                history=history,
                run_id=run_id,
                max_cost=max_cost,
            )

        try:
            self.async_runner: AsyncRunner = self._call(make())
            """The :class:`AsyncRunner` doing the work (use it only on the runner's loop)."""
        except BaseException:
            self._finalizer()
            raise

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Runner:
        # chatstep < 0.2 called the async runner Runner: point old code at its new name.
        raise TypeError("chatstep.Runner is synchronous: use `async with chatstep.AsyncRunner()`")

    async def __aexit__(self, *exc: object) -> None:  # pragma: no cover - __aenter__ raises
        return None

    @property
    def closed(self) -> bool:
        return self._closed

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "Runner.run was called from one of the runner's own callbacks, which would "
                "wait for itself forever; call AsyncRunner.run (runner.async_runner) there"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C while waiting cancels the call on the loop too
            raise

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Runner is closed; create a new one")

    def run(
        self,
        step: StepSource,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        *,
        stream: bool | None = None,
        on_delta: DeltaCallback | None = None,
    ) -> AnyResult:
        """Run one step (see :meth:`AsyncRunner.run`); raises what it raises."""
        self._check_open()
        return self._call(
            self.async_runner.run(step, inputs, outputs, stream=stream, on_delta=on_delta)
        )

    def list_models(self, step: StepSource | None = None) -> list[dict[str, Any]]:
        """Models the connection offers (see :meth:`AsyncRunner.list_models`)."""
        self._check_open()
        return self._call(self.async_runner.list_models(step))

    def close(self) -> None:
        """Close the connection pools, flush the history and stop the loop thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self.async_runner.aclose())
        finally:
            self._finalizer()
