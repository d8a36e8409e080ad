"""Steps as an HTTP service: ``chatstep serve --steps DIR`` and :func:`steps_app`.

::

    POST /steps/{id}               JSON object of inputs -> the step result as JSON
    POST /steps/{id}?stream=true   server-sent events: delta, tool_call ..., then result | error
    GET  /steps                    the served steps and their inputs
    GET  /openapi.json             OpenAPI 3.1, generated from the steps

One :class:`~chatstep.core.runner.AsyncRunner` serves every request of the process, so the
connection pools, the history log, the ``max_cost`` budget and one
:class:`~chatstep.mapping.ratelimit.RateLimiter` (``rpm``/``tpm``, learned from response headers
as ``map`` does, paused for everyone by a 429) are shared; at most ``concurrency`` requests run
at once and at most ``max_queue`` more wait (beyond that: 503). Errors are
``{"error": {"message", "type", "param", "code"}}`` with the status users expect
(:mod:`chatstep.serving.problems`); never a traceback, never a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.core.streaming import Delta
from chatstep.errors import ConfigError
from chatstep.serving.catalog import ServedStep, load_step_directory, served_steps
from chatstep.serving.openapi import openapi_document, step_summary
from chatstep.serving.problems import RequestProblem, error_response_parts, render_problem
from chatstep.serving.wire import delta_events, read_inputs, result_json, sse, stream_flag
from chatstep.steps.loading import load_step

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from chatstep.core.connection import Connection
    from chatstep.core.result import AnyResult
    from chatstep.core.retry import RetryPolicy
    from chatstep.core.runner import AsyncRunner
    from chatstep.secrets import SecretStore
    from chatstep.steps.loading import StepSource

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_QUEUE", "StepService", "steps_app"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
"""Largest request body accepted, in bytes (larger: 413)."""
DEFAULT_MAX_QUEUE = 256
"""Requests that may wait for a free slot beyond ``concurrency`` (more: 503)."""
_STREAM_BUFFER = 256  # events buffered ahead of a slow client before the model waits
_logger = logging.getLogger("chatstep.serving")


class StepService:
    """The shared state behind a steps app: the steps, one runner, one limiter, the slots."""

    def __init__(
        self,
        steps: Sequence[ServedStep],
        *,
        concurrency: int = 16,
        max_queue: int = DEFAULT_MAX_QUEUE,
        rpm: float | None = None,
        tpm: float | None = None,
        max_cost: float | None = None,
        history: bool = True,
        cache: str | bool | None = None,
        retry: RetryPolicy | None = None,
        secrets: SecretStore | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        from chatstep.accounting.budget import check_max_cost
        from chatstep.mapping.ratelimit import RateLimiter

        if concurrency < 1:
            raise ConfigError("concurrency", f"must be at least 1, got {concurrency}")
        if max_queue < 0:
            raise ConfigError("max_queue", f"must be 0 or more, got {max_queue}")
        if max_body_bytes < 1:
            raise ConfigError("max_body_bytes", f"must be positive, got {max_body_bytes}")
        self.steps = {served.id: served for served in steps}
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.max_body_bytes = max_body_bytes
        self._limits = (rpm, tpm)
        self.limiter = RateLimiter(rpm=rpm, tpm=tpm)  # checks rpm/tpm now, not at request one
        self._max_cost = check_max_cost(max_cost)
        self._history = history
        self._cache = cache
        self._retry = retry
        self._secrets = secrets
        self._runner: AsyncRunner | None = None
        self._slots: asyncio.Semaphore | None = None
        self._admitted = 0

    @property
    def runner(self) -> AsyncRunner:
        """The process's runner, made on first use (on the serving event loop)."""
        if self._runner is None:
            from chatstep.core.runner import AsyncRunner
            from chatstep.mapping.ratelimit import observe_failures

            runner = AsyncRunner(
                retry=self._retry,
                secrets=self._secrets,
                history=None if self._history else False,
                cache=self._cache,
                max_cost=self._max_cost,
            )
            runner.hooks.append(self.limiter)
            runner.retry = observe_failures(runner.retry, self.limiter)
            self._runner = runner
        return self._runner

    async def aclose(self) -> None:
        """Close the runner: flush the history, close connection pools (idempotent).

        The app may serve again afterwards (on another event loop: a new runner, limiter and
        slots; the ``max_cost`` budget starts again).
        """
        from chatstep.mapping.ratelimit import RateLimiter

        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.aclose()
        self._slots = None  # asyncio primitives belong to one event loop
        self.limiter = RateLimiter(rpm=self._limits[0], tpm=self._limits[1])

    def admit(self) -> None:
        """Count a request in, or refuse it (503) when every slot and queue place is taken."""
        if self._admitted >= self.concurrency + self.max_queue:
            raise RequestProblem(
                503,
                f"the server is busy: {self.concurrency} requests running and {self.max_queue} "
                "waiting (try again shortly, or start it with a larger --concurrency)",
                code="server_busy",
                retry_after=1,
            )
        self._admitted += 1

    def release(self) -> None:
        self._admitted -= 1

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``concurrency`` slots (an admitted request waits here)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        async with self._slots:
            yield

    async def prepare(
        self, served: ServedStep, inputs: dict[str, Any], stream: bool
    ) -> tuple[Any, Any, Connection]:
        """Render the step for ``inputs`` (after searching its ``retrieve`` index, if any); a
        value it cannot take is a 422 naming the input."""
        try:
            return await self.runner.prepare_async(served.step, inputs, stream=stream or None)
        except ConfigError as exc:
            raise render_problem(exc, served) from None


def _steps_from(
    source: str | Path | Mapping[str, StepSource] | Sequence[ServedStep],
) -> list[ServedStep]:
    if isinstance(source, str | Path):
        return load_step_directory(source)
    if isinstance(source, Mapping):
        return served_steps((step_id, load_step(step)) for step_id, step in source.items())
    return list(source)


def steps_app(
    steps: str | Path | Mapping[str, StepSource] | Sequence[ServedStep],
    *,
    api_key: str | None = None,
    concurrency: int = 16,
    max_queue: int = DEFAULT_MAX_QUEUE,
    rpm: float | None = None,
    tpm: float | None = None,
    max_cost: float | None = None,
    history: bool = True,
    cache: str | bool | None = None,
    retry: RetryPolicy | None = None,
    secrets: SecretStore | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    title: str = "chatstep steps",
) -> Starlette:
    """A Starlette (ASGI) app serving steps as ``POST /steps/{id}``, with ``/openapi.json``.

    ``steps``: a directory of step files (see :mod:`chatstep.serving.catalog` for the naming
    rule), or a mapping ``{id: step, path or dict}``. ``api_key``: when set, every request must
    send ``Authorization: Bearer KEY`` (else 401). ``concurrency`` requests run at once, at most
    ``max_queue`` wait; ``rpm``/``tpm`` cap requests and tokens per minute for the process;
    ``max_cost`` (USD) caps what it may spend (then 402). ``history`` logs every call with its
    step id. The runner is closed by the app's lifespan; mounted in another app, call
    ``await app.state.step_service.aclose()`` at shutdown.

    Raises :class:`~chatstep.errors.ConfigError` for a bad step file (``FILE:LINE: problem``
    for every one) or option.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from chatstep.serving.model_app import BearerAuthMiddleware, check_api_key

    service = StepService(
        _steps_from(steps),
        concurrency=concurrency,
        max_queue=max_queue,
        rpm=rpm,
        tpm=tpm,
        max_cost=max_cost,
        history=history,
        cache=cache,
        retry=retry,
        secrets=secrets,
        max_body_bytes=max_body_bytes,
    )
    document = openapi_document(list(service.steps.values()), title=title)
    if api_key is not None:
        document["security"] = [{"bearer": []}]
    listing = [step_summary(served) for served in service.steps.values()]
    endpoints = _Endpoints(service)

    async def list_steps(request: Request) -> Response:
        return JSONResponse(listing)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await service.aclose()

    routes = [
        Route("/steps", list_steps, methods=["GET"]),
        Route("/steps/{step_id}", endpoints.run, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: endpoints.not_found}, lifespan=lifespan
    )
    app.state.step_service = service
    if api_key is not None:
        app.add_middleware(BearerAuthMiddleware, api_key=check_api_key(api_key))
    return app


class _Endpoints:
    """The request handlers of a steps app."""

    def __init__(self, service: StepService) -> None:
        self.service = service

    def failure(self, exc: BaseException) -> Response:
        from starlette.responses import JSONResponse

        status, body, headers = error_response_parts(exc, self.service.limiter)
        return JSONResponse(body, status_code=status, headers=headers)

    async def run(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        service = self.service
        served = service.steps.get(request.path_params["step_id"])
        if served is None:
            ids = sorted(service.steps)
            known = ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
            known = known or "none"
            return self.failure(
                RequestProblem(
                    404,
                    f"no step {_shown_id(request.path_params['step_id'])} here (served: {known}; "
                    "GET /steps lists them)",
                    code="step_not_found",
                )
            )
        try:
            stream = stream_flag(request) and served.streams
            inputs = await read_inputs(request, served, service.max_body_bytes)
            service.admit()
        except Exception as exc:
            return self.failure(exc)
        if stream:
            return await self.run_streaming(request, served, inputs)

        async def work() -> tuple[AnyResult, Connection]:
            async with service.slot():
                rendered, prepared, conn = await service.prepare(served, inputs, stream=False)
                return await service.runner.execute(rendered, prepared, conn), conn

        task = asyncio.ensure_future(work())
        task.add_done_callback(lambda _: service.release())  # also when cancelled unstarted
        if not await _unless_disconnected(request, task):
            return _hung_up_response()
        try:
            result, conn = task.result()
        except Exception as exc:
            return self.failure(exc)
        return JSONResponse(result_json(served, result, conn))

    async def run_streaming(
        self, request: Request, served: ServedStep, inputs: dict[str, Any]
    ) -> Response:
        from starlette.background import BackgroundTask
        from starlette.responses import StreamingResponse

        service = self.service
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=_STREAM_BUFFER)

        async def on_delta(delta: Delta) -> None:
            await events.put(("delta", delta))

        async def work() -> None:
            try:
                async with service.slot():
                    rendered, prepared, conn = await service.prepare(served, inputs, stream=True)
                    result = await service.runner.execute(
                        rendered, prepared, conn, on_delta=on_delta
                    )
                await events.put(("result", result_json(served, result, conn)))
            except Exception as exc:
                await events.put(("error", exc))

        task = asyncio.ensure_future(work())
        task.add_done_callback(lambda _: service.release())
        first_event = asyncio.ensure_future(events.get())
        if not await _unless_disconnected(request, first_event):
            await _cancel(task)
            return _hung_up_response()
        kind, first = first_event.result()
        if kind == "error":  # nothing sent yet: the error gets its own status
            return self.failure(first)

        async def frames() -> AsyncIterator[bytes]:
            item: tuple[str, Any] = (kind, first)
            while True:
                what, value = item
                if what == "delta":
                    for frame in delta_events(value):
                        yield frame
                elif what == "result":
                    yield sse("result", value)
                    return
                else:
                    status, body, _ = error_response_parts(value, service.limiter)
                    yield sse("error", {**body, "status": status})
                    return
                item = await events.get()

        return StreamingResponse(
            frames(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            # Runs after the response, finished or not: a client that hung up stops the model.
            background=BackgroundTask(_cancel, task),
        )

    async def not_found(self, request: Request, exc: Exception) -> Response:
        from starlette.exceptions import HTTPException

        status = exc.status_code if isinstance(exc, HTTPException) else 500
        offers = "this server offers POST /steps/{id}, GET /steps and GET /openapi.json"
        message = f"{request.method} {request.url.path}: " + (
            f"no such endpoint ({offers})"
            if status == 404
            else f"method not allowed ({offers})"
            if status == 405
            else str(getattr(exc, "detail", "request failed"))
        )
        return self.failure(RequestProblem(status, message))


def _shown_id(step_id: str) -> str:
    """A requested id as an error message may quote it: ``repr``, at most 80 characters."""
    return repr(step_id[:80]) + (
        f" (cut from {len(step_id):,} characters)" if len(step_id) > 80 else ""
    )


def _hung_up_response() -> Response:
    from starlette.responses import Response

    return Response(status_code=499)  # nginx's "client closed request"; nobody reads it


async def _cancel(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _unless_disconnected(request: Request, work: asyncio.Future[Any]) -> bool:
    """Wait for ``work``; False (and ``work`` cancelled) if the client hangs up first.

    The body is read already, so the next ASGI message is the client's disconnect: a request
    whose client is gone gives its slot back and stops its upstream call.
    """

    async def hung_up() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(hung_up())
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not watcher.done():
            await _cancel(watcher)
    if work.done():
        return True
    await _cancel(work)
    return False
