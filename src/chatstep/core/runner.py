"""The request pipeline, visible in one place.

::

    step --render(inputs, outputs, secrets)--> rendered step --build--> Request (no secrets)
      --> cache? --> rate limiter --> retry policy --> backend --> Response --> StepResult

:class:`AsyncRunner` holds what is shared between calls (backends and their connection pools, the
cache, the history log, the limiter); :mod:`chatstep.core.calls` runs one step with a throwaway one.
Each arrow's work lives in its own module: :mod:`~chatstep.core.render` and
:mod:`~chatstep.core.request` (prepare), :mod:`~chatstep.core.sending` (retry loop and endpoint
dispatch), :mod:`~chatstep.core.stream_reply` (the stream path and cache replay),
:mod:`~chatstep.core.reply_result` (Reply to priced result), :mod:`~chatstep.core.call_accounting`
(budget hold/settle and the history row).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from chatstep.accounting.context import check_context_window, context_window_for
from chatstep.backends.base import Backend, Reply
from chatstep.core.call_accounting import history_entry, reserve_worst_case, settle_cost
from chatstep.core.connection import BackendPool, Connection, for_local_model, resolve_connection
from chatstep.core.fallbacks import has_fallbacks, send_with_fallbacks
from chatstep.core.guard import has_guard, send_guarded
from chatstep.core.render import make_context, render_step
from chatstep.core.reply_result import build_result, priced_result
from chatstep.core.request import Request, build_request
from chatstep.core.response_check import check_response
from chatstep.core.result import AnyResult, StepResult
from chatstep.core.retry import RetryPolicy
from chatstep.core.sending import send_with_retry
from chatstep.core.stream_reply import DeltaCallback, replay
from chatstep.errors import APIError, ConfigError
from chatstep.steps.definitions import ChatCompletion, Step
from chatstep.steps.loading import StepSource, load_step
from chatstep.storage.cache import ResponseCache, cache_key, open_cache
from chatstep.storage.history import History
from chatstep.storage.history_writer import HistoryWriter

if TYPE_CHECKING:
    from chatstep.retrieval.retrieve import IndexCache
    from chatstep.secrets import SecretStore

__all__ = ["AsyncRunner", "CallHooks", "DeltaCallback", "StepSource", "as_step"]

T = TypeVar("T")


class CallHooks(Protocol):
    """Observers of every call (history log, cost accounting, rate limiter feedback)."""

    async def before_send(self, request: Request, conn: Connection) -> None: ...

    async def after_reply(self, request: Request, conn: Connection, reply: Reply) -> None: ...

    async def after_result(
        self, step: Step, request: Request, result: AnyResult | None, error: Exception | None
    ) -> None: ...


as_step = load_step
"""A step object from a step, a YAML/JSON path, or a mapping (``loading.load_step``)."""


def _valid_answer(request: Request, body: dict[str, Any]) -> bool:
    # A bad answer cached by an older chatstep is a miss, never a success.
    try:
        check_response(request.endpoint, body, "cache")
    except APIError:
        return False
    return True


def _table_window(price_table: Any, model: str) -> int | None:
    lookup = getattr(price_table, "context_window", None)
    return lookup(model) if callable(lookup) else context_window_for(model)


class AsyncRunner:
    """Runs steps through the pipeline; reuse one for many calls (it pools connections)."""

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
        """Shared settings for many calls.

        ``cache``: True (the default SQLite cache), a spec for ``open_cache`` (a path or a
        ``redis://`` URL) or a cache object turns caching on for every step that does not say
        ``cache: false``; None or False leaves it to each step's ``cache: true``.
        ``history``: None logs every call to the default history (unless ``CHATSTEP_HISTORY=off``),
        False logs nothing, or a :class:`History` to log to.
        ``max_cost``: USD cap on what this runner's calls may spend. Before each request its
        worst case (prompt tokens + ``max_tokens`` x ``n`` at current prices) must fit in what
        is left, else :class:`~chatstep.errors.BudgetExceededError` (nothing is sent); after
        it, its actual cost is spent (``budget.spent``). A model with no price cannot be
        bounded: a ConfigError.
        """
        from chatstep.accounting.budget import CostBudget, check_max_cost
        from chatstep.accounting.pricing import default_price_table
        from chatstep.secrets import default_secret_store

        self.budget = CostBudget(check_max_cost(max_cost))
        """What this runner's calls spent (``spent``, USD) against ``max_cost`` (``limit``)."""
        self.secrets = secrets if secrets is not None else default_secret_store()
        self.retry = retry or RetryPolicy()
        self.hooks = list(hooks or [])
        self.price_table = price_table if price_table is not None else default_price_table()
        self.cache_all = cache not in (None, False)
        self._cache_spec = cache if isinstance(cache, str) else None
        self._cache: ResponseCache | None = (
            cache if cache is not None and not isinstance(cache, str | bool) else None
        )
        self.cache_ttl = cache_ttl
        if history is False:
            self.history = History.disabled()
        elif isinstance(history, History):
            self.history = history
        else:
            self.history = History()
        self._history_writer = HistoryWriter(self.history)
        self.run_id = run_id
        self._backend = backend
        self._pool = BackendPool()
        self._indexes: IndexCache | None = None
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def __aenter__(self) -> AsyncRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def indexes(self) -> IndexCache:
        """The retrieval indexes this runner opened (each once, closed by ``aclose``)."""
        if self._indexes is None:
            from chatstep.retrieval.retrieve import IndexCache

            self._indexes = IndexCache()
        return self._indexes

    async def aclose(self) -> None:
        if self._indexes is not None:
            self._indexes.close()
        await self._pool.aclose()
        self._history_writer.close()  # on the loop: it cancels the loop's flush timer
        if self._cache is not None and self._cache_spec is not None:
            self._cache.close()

    def backend_for(self, conn: Connection) -> Backend:
        return self._backend if self._backend is not None else self._pool.get(conn)

    def prepare(
        self,
        step: StepSource,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        *,
        stream: bool | None = None,
        prefix: str = "",
        retrieved: list[dict[str, Any]] | None = None,
    ) -> tuple[Step, Request, Connection]:
        """Render a step and build its request and connection, without calling anything.

        ``prefix`` is put before field paths in errors (a flow passes ``tasks[2](summarize)``).
        A step with ``retrieve`` needs its chunks: :meth:`prepare_async` finds them, or pass
        ``retrieved`` (what templates see as ``retrieved``).
        """
        definition = as_step(step)
        wants_chunks = isinstance(definition, ChatCompletion) and definition.retrieve is not None
        if wants_chunks and retrieved is None:
            raise ConfigError(
                f"{prefix}.retrieve" if prefix else "retrieve",
                "searching the index needs an embeddings call, which this synchronous path "
                "cannot make",
                "run the step with run/map/flows (AsyncRunner.prepare_async), or remove retrieve",
            )
        context = make_context(inputs, outputs, self.secrets, retrieved if wants_chunks else None)
        rendered = render_step(definition, context, prefix=prefix)
        if wants_chunks and isinstance(rendered, ChatCompletion):
            rendered = rendered.model_copy()
            rendered._retrieved = retrieved
        request, conn = self.assemble(rendered, stream=stream)
        if not has_fallbacks(rendered):  # with fallbacks, each candidate is checked in turn
            self.check_fits(rendered, request, conn, prefix=prefix)
        return rendered, request, conn

    async def prepare_async(
        self,
        step: StepSource,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        *,
        stream: bool | None = None,
        prefix: str = "",
    ) -> tuple[Step, Request, Connection]:
        """:meth:`prepare`, after searching the index of a step with ``retrieve`` (one
        embeddings call through this runner; :mod:`chatstep.retrieval.retrieve`)."""
        definition = as_step(step)
        retrieved = None
        if isinstance(definition, ChatCompletion) and definition.retrieve is not None:
            from chatstep.retrieval.retrieve import retrieve_chunks

            context = make_context(inputs, outputs, self.secrets)
            retrieved = await retrieve_chunks(self, definition.retrieve, context, prefix=prefix)
        return self.prepare(
            definition, inputs, outputs, stream=stream, prefix=prefix, retrieved=retrieved
        )

    def assemble(self, rendered: Step, *, stream: bool | None) -> tuple[Request, Connection]:
        """The request and connection of a rendered step."""
        request = build_request(rendered, stream=stream)
        conn = resolve_connection(rendered, self.secrets)
        if conn.backend == "local" and self._backend is None:
            model = for_local_model(request.model)
            if model != request.model:
                request = Request(request.endpoint, {**request.body, "model": model})
        return request, conn

    def check_fits(
        self, step: Step, request: Request, conn: Connection, *, prefix: str = ""
    ) -> None:
        """Raise ``ConfigError`` when a chat request cannot fit its model's context window."""
        if request.endpoint != "chat.completions" or not isinstance(step, ChatCompletion):
            return
        window = step.context_window if isinstance(step.context_window, int) else None
        source = "the step's context_window"
        if window is None and conn.backend != "local":  # the embedded model checks its own
            window = _table_window(self.price_table, request.model)
            source = "chatstep's context window table or the price file"
        check_context_window(request.body, window, prefix=prefix, source=source)

    async def run(
        self,
        step: StepSource,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        *,
        stream: bool | None = None,
        on_delta: DeltaCallback | None = None,
    ) -> AnyResult:
        """Run one step. ``stream`` (or a callback) streams a chat step; the result is whole."""
        if on_delta is not None and stream is None:
            stream = True
        rendered, request, conn = await self.prepare_async(step, inputs, outputs, stream=stream)
        return await self.execute(rendered, request, conn, on_delta=on_delta)

    async def execute(
        self,
        step: Step,
        request: Request,
        conn: Connection,
        *,
        on_delta: DeltaCallback | None = None,
    ) -> AnyResult:
        """Send a prepared request (cache first, then with retries), build and log the result.

        A chat step with ``fallbacks`` tries them in order (:mod:`chatstep.core.fallbacks`); one
        with a ``guard`` is moderated before and after (:mod:`chatstep.core.guard`).
        """

        async def send(callback: DeltaCallback | None) -> AnyResult:
            if has_fallbacks(step):
                return await send_with_fallbacks(self, step, request, conn, callback)
            return await self.execute_once(step, request, conn, on_delta=callback)

        if has_guard(step):
            result = await send_guarded(self, step, request.body, on_delta, send)
        else:
            result = await send(on_delta)
        if isinstance(step, ChatCompletion) and isinstance(result, StepResult):
            result.retrieved = step._retrieved
        return result

    async def execute_once(
        self,
        step: Step,
        request: Request,
        conn: Connection,
        *,
        on_delta: DeltaCallback | None = None,
    ) -> AnyResult:
        """Send to one endpoint (no fallbacks), build the result, log the call to history."""
        started = time.perf_counter()
        result: AnyResult | None = None
        error: Exception | None = None
        held: list[float] = []
        try:
            result = await self._execute(step, request, conn, on_delta, started, held)
            return result
        except Exception as exc:
            error = exc
            if isinstance(exc, APIError) and isinstance(exc.result, Reply):
                # A stream cut midway: what arrived was billed; account for it.
                latency_ms = (time.perf_counter() - started) * 1000
                exc.result = priced_result(
                    self.price_table, step, request, exc.result, 1, latency_ms, conn
                )
            raise
        finally:
            latency_ms = (time.perf_counter() - started) * 1000
            settle_cost(self.budget, held, result, error)
            if self.history.writes_enabled:
                entry = history_entry(step, request, conn, result, error, latency_ms, self.run_id)
                self._history_writer.submit(entry)
            for hook in self.hooks:
                await hook.after_result(step, request, result, error)

    async def _execute(
        self,
        step: Step,
        request: Request,
        conn: Connection,
        on_delta: DeltaCallback | None,
        started: float,
        held: list[float],
    ) -> AnyResult:
        cache, key = self._cache_for(step, request, conn)
        if cache is not None and key is not None:
            hit = cache.get(key)
            if hit is not None and _valid_answer(request, hit):
                await replay(hit, on_delta)
                latency_ms = (time.perf_counter() - started) * 1000
                hit_reply = Reply(hit)
                return build_result(
                    self.price_table, step, request, hit_reply, 0, latency_ms, conn, cached=True
                )
        held.append(reserve_worst_case(self.budget, self.price_table, step, request, conn))
        backend = self.backend_for(conn)
        policy = replace(self.retry, max_retries=conn.max_retries)
        reply, attempts = await send_with_retry(
            backend, request, conn, policy, on_delta, hooks=self.hooks, sleep=self.sleep
        )
        latency_ms = (time.perf_counter() - started) * 1000
        result = build_result(self.price_table, step, request, reply, attempts, latency_ms, conn)
        if cache is not None and key is not None:
            ttl = step.cache_ttl if isinstance(step.cache_ttl, float | int) else self.cache_ttl
            cache.set(key, reply.body, ttl)
        return result

    def _cache_for(
        self, step: Step, request: Request, conn: Connection
    ) -> tuple[ResponseCache | None, str | None]:
        wanted = step.cache if step.cache is not None else self.cache_all
        if not wanted:
            return None, None
        if self._cache is None:
            self._cache = open_cache(self._cache_spec)
        where = conn.base_url or ("local://embedded" if conn.backend == "local" else None)
        return self._cache, cache_key(request.endpoint, request.body, where)

    async def list_models(self, step: StepSource | None = None) -> list[dict[str, Any]]:
        """Models the connection offers (``step`` gives connection settings; else defaults)."""
        definition = as_step(step) if step is not None else ChatCompletion(model="-", prompt="-")
        conn = resolve_connection(definition, self.secrets)
        reply = await self.backend_for(conn).list_models(timeout=conn.timeout)
        data = reply.body.get("data")
        return list(data) if isinstance(data, list) else []
