"""The request pipeline, visible in one place.

::

    step --render(inputs, outputs, secrets)--> rendered step --build--> Request (no secrets)
      --> cache? --> rate limiter --> retry policy --> backend --> Response --> StepResult

:class:`Runner` holds what is shared between calls (backends and their connection pools, the
cache, the history log, the limiter); :func:`arun_step` / :func:`run_step` run one step with a
throwaway runner.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from chatstep.backends.base import Backend, Reply
from chatstep.connection import BackendPool, Connection, resolve_connection
from chatstep.errors import APIConnectionError, APIError, ChatstepError
from chatstep.loading import load_step
from chatstep.output import parse_json_output
from chatstep.render import make_context, render_step
from chatstep.request import Request, build_request
from chatstep.result import AnyResult, EmbeddingResult, ModerationResult, StepResult
from chatstep.retry import RetryPolicy
from chatstep.steps import ChatCompletion, Embedding, Moderation, Step
from chatstep.streaming import ChunkAssembler, Delta

if TYPE_CHECKING:
    from chatstep.secrets import SecretStore

__all__ = ["CallHooks", "Runner", "arun_step", "astream_step", "run_step"]

T = TypeVar("T")
DeltaCallback = Callable[[Delta], Any]
StepSource = Step | str | Path | Mapping[str, Any]


class CallHooks(Protocol):
    """Observers of every call (history log, cost accounting, rate limiter feedback)."""

    async def before_send(self, request: Request, conn: Connection) -> None: ...

    async def after_reply(self, request: Request, conn: Connection, reply: Reply) -> None: ...

    async def after_result(
        self, step: Step, request: Request, result: AnyResult | None, error: Exception | None
    ) -> None: ...


@dataclass
class _Attempt:
    delivered: bool = False


def _as_step(step: StepSource) -> Step:
    if isinstance(step, ChatCompletion | Moderation | Embedding):
        return step
    return load_step(step)


async def _deliver(on_delta: DeltaCallback | None, delta: Delta) -> None:
    if on_delta is None:
        return
    outcome = on_delta(delta)
    if inspect.isawaitable(outcome):
        await outcome


def _mirror_function_call(response: dict[str, Any]) -> None:
    # Steps written for legacy function calling read message.function_call; the request used
    # tools, so the first tool call is mirrored there.
    for choice in response.get("choices") or []:
        message = choice.get("message") or {}
        calls = message.get("tool_calls") or []
        if calls and not message.get("function_call"):
            fn = calls[0].get("function") or {}
            message["function_call"] = {"name": fn.get("name"), "arguments": fn.get("arguments")}


class Runner:
    """Runs steps through the pipeline; reuse one for many calls (it pools connections)."""

    def __init__(
        self,
        *,
        secrets: SecretStore | None = None,
        retry: RetryPolicy | None = None,
        backend: Backend | None = None,
        hooks: list[CallHooks] | None = None,
        price_table: Any = None,
    ) -> None:
        from chatstep.secrets import default_secret_store

        self.secrets = secrets if secrets is not None else default_secret_store()
        self.retry = retry or RetryPolicy()
        self.hooks = list(hooks or [])
        self.price_table = price_table
        self._backend = backend
        self._pool = BackendPool()
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def __aenter__(self) -> Runner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._pool.aclose()

    def backend_for(self, conn: Connection) -> Backend:
        return self._backend if self._backend is not None else self._pool.get(conn)

    def prepare(
        self,
        step: StepSource,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        *,
        stream: bool | None = None,
    ) -> tuple[Step, Request, Connection]:
        """Render a step and build its request and connection, without calling anything."""
        definition = _as_step(step)
        rendered = render_step(definition, make_context(inputs, outputs, self.secrets))
        return (
            rendered,
            build_request(rendered, stream=stream),
            resolve_connection(rendered, self.secrets),
        )

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
        rendered, request, conn = self.prepare(step, inputs, outputs, stream=stream)
        result: AnyResult | None = None
        error: Exception | None = None
        try:
            result = await self.execute(rendered, request, conn, on_delta=on_delta)
            return result
        except Exception as exc:
            error = exc
            raise
        finally:
            for hook in self.hooks:
                await hook.after_result(rendered, request, result, error)

    async def execute(
        self,
        step: Step,
        request: Request,
        conn: Connection,
        *,
        on_delta: DeltaCallback | None = None,
    ) -> AnyResult:
        """Send a prepared request with retries and build the result."""
        backend = self.backend_for(conn)
        policy = replace(self.retry, max_retries=conn.max_retries)
        started = time.perf_counter()
        reply, attempts = await self._send_with_retry(backend, request, conn, policy, on_delta)
        latency_ms = (time.perf_counter() - started) * 1000
        return self._result(step, request, reply, attempts, latency_ms)

    async def _send_with_retry(
        self,
        backend: Backend,
        request: Request,
        conn: Connection,
        policy: RetryPolicy,
        on_delta: DeltaCallback | None,
    ) -> tuple[Reply, int]:
        attempt = 0
        while True:
            attempt += 1
            state = _Attempt()
            try:
                for hook in self.hooks:
                    await hook.before_send(request, conn)
                reply = await self._send(backend, request, conn.timeout, on_delta, state)
            except APIError as exc:
                delay = None if state.delivered else policy.delay_for(exc, attempt)
                if delay is None:
                    raise
                await self.sleep(delay)
                continue
            for hook in self.hooks:
                await hook.after_reply(request, conn, reply)
            return reply, attempt

    async def _send(
        self,
        backend: Backend,
        request: Request,
        timeout: float,
        on_delta: DeltaCallback | None,
        state: _Attempt,
    ) -> Reply:
        body = request.body
        if request.endpoint == "embeddings":
            return await backend.embed(body, timeout=timeout)
        if request.endpoint == "moderations":
            return await backend.moderate(body, timeout=timeout)
        if not body.get("stream"):
            return await backend.complete(body, timeout=timeout)
        streamed = await backend.stream(body, timeout=timeout)
        assembler = ChunkAssembler()
        async for chunk in streamed.chunks:
            for delta in assembler.add(chunk):
                state.delivered = True
                await _deliver(on_delta, delta)
        if not assembler.finished:
            raise APIConnectionError(
                "POST /chat/completions: the stream ended before the answer finished"
            )
        return Reply(assembler.response(), streamed.headers)

    def _cost(self, model: str, usage: dict[str, Any]) -> float | None:
        if self.price_table is None or not usage:
            return None
        cost = self.price_table.cost(model, usage)
        return None if cost is None else float(cost.total_usd)

    def _result(
        self, step: Step, request: Request, reply: Reply, attempts: int, latency_ms: float
    ) -> AnyResult:
        response = reply.body
        common: dict[str, Any] = {
            "response": response,
            "request": request,
            "step_id": step.id,
            "latency_ms": latency_ms,
            "attempts": attempts,
            "headers": dict(reply.headers),
        }
        usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
        common["cost"] = self._cost(str(response.get("model") or request.model), usage or {})
        if request.endpoint == "embeddings":
            return EmbeddingResult(**common)
        if request.endpoint == "moderations":
            return ModerationResult(**common)
        assert isinstance(step, ChatCompletion)
        if step.functions:
            _mirror_function_call(response)
        result = StepResult(**common)
        parsed = parse_json_output(result, request.body.get("response_format"))
        if parsed:
            result.parsed = parsed[0]
        return result

    async def list_models(self, step: StepSource | None = None) -> list[dict[str, Any]]:
        """Models the connection offers (``step`` gives connection settings; else defaults)."""
        definition = _as_step(step) if step is not None else ChatCompletion(model="-", prompt="-")
        conn = resolve_connection(definition, self.secrets)
        reply = await self.backend_for(conn).list_models(timeout=conn.timeout)
        data = reply.body.get("data")
        return list(data) if isinstance(data, list) else []


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
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

    import threading

    thread = threading.Thread(target=target, name="chatstep-run")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


async def arun_step(
    step: StepSource,
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    *,
    stream: bool | None = None,
    on_delta: DeltaCallback | None = None,
    runner: Runner | None = None,
) -> AnyResult:
    """Run one step (a step object, a YAML/JSON path, or a dict) and return its result."""
    if runner is not None:
        return await runner.run(step, inputs, outputs, stream=stream, on_delta=on_delta)
    async with Runner() as own:
        return await own.run(step, inputs, outputs, stream=stream, on_delta=on_delta)


def run_step(
    step: StepSource,
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    *,
    stream: bool | None = None,
    on_delta: DeltaCallback | None = None,
) -> AnyResult:
    """Synchronous :func:`arun_step`."""
    return _run_sync(arun_step(step, inputs, outputs, stream=stream, on_delta=on_delta))


class StepStream:
    """Async iterator over a streamed step's deltas; ``result`` holds the assembled result."""

    def __init__(self, task_factory: Callable[[DeltaCallback], Awaitable[AnyResult]]) -> None:
        self._queue: asyncio.Queue[Delta | None] = asyncio.Queue()
        self._factory = task_factory
        self._task: asyncio.Task[AnyResult] | None = None
        self.result: AnyResult | None = None

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delta]:
        async def run() -> AnyResult:
            try:
                return await self._factory(self._queue.put_nowait)
            finally:
                self._queue.put_nowait(None)

        self._task = asyncio.ensure_future(run())
        try:
            while (delta := await self._queue.get()) is not None:
                yield delta
            self.result = await self._task
        finally:
            if not self._task.done():
                self._task.cancel()


def astream_step(
    step: StepSource,
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    *,
    runner: Runner | None = None,
) -> StepStream:
    """Stream a chat step: ``async for delta in stream``, then ``stream.result``."""

    async def factory(callback: DeltaCallback) -> AnyResult:
        return await arun_step(step, inputs, outputs, stream=True, on_delta=callback, runner=runner)

    return StepStream(factory)


def is_chatstep_error(exc: BaseException) -> bool:
    """True for errors chatstep raises on purpose."""
    return isinstance(exc, ChatstepError)
