"""``chatstep serve``'s model process: the embedded model runs in a child, behind a proxy.

The front process (the one listening on ``--host``/``--port``) never loads the model. It starts
a worker process (``python -m chatstep.serving.worker SOCKET``) that serves
:func:`chatstep.serving.model_app.create_serving_app` over a Unix socket, and forwards each
request to it.
If the worker dies (a native crash in llama.cpp, the OOM killer, ``kill -9``), the requests in
flight get a 500 with code ``worker_died`` (an error event when a stream had started), and the
next request starts a new worker, so the server never goes down with its model.

The worker exits when the front process goes away: it watches its stdin, a pipe from the front.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.errors import BackendUnavailableError

if TYPE_CHECKING:
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["WORKER_UNAVAILABLE_EXIT", "ModelWorker", "create_proxy_app"]

# The worker's exit status when the model cannot be loaded here (as `chatstep`'s exit code 7).
WORKER_UNAVAILABLE_EXIT = 7
# Bounds: starting a worker (loading the model), and waiting for one answer beyond its timeout.
_START_TIMEOUT = 600.0
_READ_MARGIN = 30.0
# How long a worker that refuses connections may take to finish dying before a retry.
_EXIT_WAIT = 5.0
_DEATH_WAIT = 1.0
_READY = "ready"
# Request headers the worker needs (the body's type, and the client's timeout).
_PASSED_HEADERS = ("content-type", "x-stainless-read-timeout", "x-stainless-timeout")


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class ModelWorker:
    """The model's child process: started, checked before each request, restarted when dead."""

    def __init__(self, log_level: str = "warning") -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="chatstep-serve-")
        self.socket_path = str(Path(self._dir.name) / "model.sock")
        self._log_level = log_level
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self.restarts = 0
        self.last_exit: str | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The worker's process id (None before the first start)."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the worker and wait until it listens (blocking; the model loads first).

        Raises BackendUnavailableError (the worker's own message) when the model cannot load.
        """
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        process = subprocess.Popen(
            [sys.executable, "-m", "chatstep.serving.worker", self.socket_path, self._log_level],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._process = process
        assert process.stdout is not None
        assert process.stderr is not None
        # The worker's stderr (uvicorn's log) goes on to ours, line by line.
        threading.Thread(target=_relay, args=(process.stderr,), daemon=True).start()
        ready = _read_line(process.stdout, _START_TIMEOUT)
        if ready != _READY:
            process.kill()
            code = process.wait()
            detail = ready or _describe_exit(code)
            raise BackendUnavailableError(detail.removeprefix("error: "))
        threading.Thread(target=self._restart_when_dead, args=(process,), daemon=True).start()

    def _restart_when_dead(self, process: subprocess.Popen[str]) -> None:
        """Wait for ``process`` to end; unless stopped on purpose, start a new worker at once."""
        process.wait()
        if self._stopping or self._process is not process:
            return
        with contextlib.suppress(BackendUnavailableError):  # the next request retries
            self.ensure_running()

    def ensure_running(self) -> None:
        """Start a new worker if the last one died (blocking; one restart at a time)."""
        with self._lock:
            process = self._process
            if self._stopping or (process is not None and process.poll() is None):
                return
            if process is not None:
                self.last_exit = _describe_exit(process.returncode)
                self.restarts += 1
            self.start()

    @property
    def process(self) -> subprocess.Popen[str] | None:
        """The current worker process."""
        return self._process

    def stop(self) -> None:
        """Stop the worker (closing its stdin asks it to exit) and remove its socket."""
        self._stopping = True
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._dir.cleanup()


def _read_line(stream: Any, timeout: float) -> str:
    """The next line of ``stream`` without its newline ("" at EOF or after ``timeout``)."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0].strip() if line else ""


def _relay(stream: Any) -> None:
    for line in stream:
        sys.stderr.write(line)


async def _worker_died(process: subprocess.Popen[str] | None) -> dict[str, Any]:
    """The 500 body for a request whose worker ``process`` dropped it."""
    code = None
    if process is not None:
        # The connection drops as the worker exits: give it a moment to be seen dead.
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = await asyncio.to_thread(process.wait, _DEATH_WAIT)
    how = _describe_exit(code) if code is not None else "it closed the connection"
    message = (
        f"the local model's worker process stopped while answering ({how}); a new one is "
        "started: send the request again"
    )
    error = {"message": message, "type": "server_error", "param": None}
    return {"error": {**error, "code": "worker_died"}}


def _read_timeout(request: Request) -> float:
    from chatstep.serving.model_app import DEFAULT_TIMEOUT

    raw = request.headers.get("x-stainless-read-timeout") or request.headers.get(
        "x-stainless-timeout"
    )
    try:
        value = float(raw) if raw is not None else DEFAULT_TIMEOUT
    except ValueError:
        value = DEFAULT_TIMEOUT
    return (value if math.isfinite(value) and value > 0 else DEFAULT_TIMEOUT) + _READ_MARGIN


def create_proxy_app(worker: ModelWorker, *, api_key: str | None = None) -> Starlette:
    """A Starlette app forwarding ``/v1/...`` to ``worker``, answering 500 when it dies.

    ``api_key``: when set, every request must send it as ``Authorization: Bearer KEY``.
    """
    import httpx
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    from chatstep.serving.model_app import BearerAuthMiddleware, check_api_key

    # No kept-alive connections: one to a dead worker would fail the next request. A new Unix
    # socket connection per request costs microseconds.
    transport = httpx.AsyncHTTPTransport(
        uds=worker.socket_path, limits=httpx.Limits(max_keepalive_connections=0)
    )
    client = httpx.AsyncClient(transport=transport, base_url="http://worker")

    async def forward(request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in _PASSED_HEADERS}
        outgoing = client.build_request(
            request.method,
            request.url.path,
            params=request.query_params,
            headers=headers,
            content=await request.body(),
            timeout=httpx.Timeout(10.0, read=_read_timeout(request)),
        )
        for attempt in (1, 2):
            try:
                await asyncio.to_thread(worker.ensure_running)
            except BackendUnavailableError as exc:
                error = {"message": str(exc), "type": "server_error", "param": None}
                return JSONResponse({"error": {**error, "code": "backend_unavailable"}}, 503)
            process = worker.process
            try:
                upstream = await client.send(outgoing, stream=True)
                break
            except httpx.ConnectError:
                if attempt == 2:
                    return JSONResponse(await _worker_died(process), status_code=500)
                # Not delivered (the worker died between requests): safe to send again once
                # the dead worker is gone and a new one listens.
                if process is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        await asyncio.to_thread(process.wait, _EXIT_WAIT)
            except httpx.TransportError:
                return JSONResponse(await _worker_died(process), status_code=500)
        passed = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
        if upstream.headers.get("content-type", "").startswith("text/event-stream"):
            return StreamingResponse(
                _relay_events(upstream, process),
                status_code=upstream.status_code,
                headers=passed,
                background=BackgroundTask(upstream.aclose),
            )
        try:
            content = await upstream.aread()
        except httpx.TransportError:
            return JSONResponse(await _worker_died(process), status_code=500)
        finally:
            await upstream.aclose()
        return Response(content, status_code=upstream.status_code, headers=passed)

    methods = ["GET", "POST"]
    app = Starlette(routes=[Route("/{path:path}", forward, methods=methods)])
    if api_key is not None:
        app.add_middleware(BearerAuthMiddleware, api_key=check_api_key(api_key))
    app.state.http = client
    return app


_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


async def _relay_events(
    upstream: httpx.Response, process: subprocess.Popen[str] | None
) -> AsyncIterator[bytes]:
    import httpx

    try:
        async for piece in upstream.aiter_raw():
            yield piece
    except httpx.TransportError:
        # The stream had started: the failure travels as an error event, as in model_app.py.
        yield f"data: {json.dumps(await _worker_died(process))}\n\n".encode()


def _exit_with_parent() -> None:
    """Exit when the front process closes our stdin (it stopped, or died)."""
    sys.stdin.read()
    os._exit(0)


def main(argv: list[str]) -> int:
    """The worker: load the model, listen on the Unix socket ``argv[0]``, say ``ready``."""
    import socket

    import uvicorn

    from chatstep.backends.local.backend import LocalBackend
    from chatstep.backends.local.model import (
        LOCAL_MODEL_ID,
        MODEL_PATH_ENV,
        installed_models,
        load_local_model,
    )
    from chatstep.serving.model_app import create_serving_app

    path, log_level = argv[0], argv[1] if len(argv) > 1 else "warning"
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    try:
        names = [LOCAL_MODEL_ID] if os.environ.get(MODEL_PATH_ENV) else installed_models()
        for name in names or [LOCAL_MODEL_ID]:  # none installed: fail with the install hint
            load_local_model(name)
    except BackendUnavailableError as exc:
        print(f"error: {exc}", flush=True)
        return WORKER_UNAVAILABLE_EXIT
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(128)
    print(_READY, flush=True)
    app = create_serving_app(LocalBackend())
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="off"))
    server.run(sockets=[listener])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
