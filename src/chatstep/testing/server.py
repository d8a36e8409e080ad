"""``TestServer``: the OpenAI-compatible test app served by uvicorn on a local port.

Runs in a background thread (``with TestServer() as server:`` or ``start()``/``stop()``) or in
the foreground (``serve_forever()``, used by ``chatstep testing-server``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from types import TracebackType
from typing import Any

from chatstep.testing.app import create_app
from chatstep.testing.conditions import DEFAULT_FAULTS, Conditions, Latency
from chatstep.testing.ratelimit import DEFAULT_COMPLETION_TOKENS
from chatstep.testing.script import CHAT_PATH
from chatstep.testing.spec import SpecViolation
from chatstep.testing.state import Handler, RecordedRequest, ServerState, ServerStats
from chatstep.testing.synth import DEFAULT_MODELS

__all__ = ["TestServer"]

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


class TestServer:
    """An OpenAI-compatible server for tests: scripted answers, recorded requests, spec checks.

    ``validate`` checks every request and response body against the official OpenAI spec;
    ``api_key`` makes the server demand ``Authorization: Bearer <api_key>``; ``handler`` answers
    requests whose path has nothing queued; ``max_recorded`` keeps only the newest recorded
    requests. The service conditions (``rpm``, ``tpm``, ``latency``, ``fault_rate``, ``faults``,
    ``seed``, ``batch_progress``...) are described in :class:`chatstep.testing.Conditions`.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        validate: bool = True,
        api_key: str | None = None,
        models: Iterable[str] = DEFAULT_MODELS,
        handler: Handler | None = None,
        max_recorded: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        latency: Latency = None,
        fault_rate: float = 0.0,
        faults: Iterable[str] = DEFAULT_FAULTS,
        seed: int = 0,
        fault_timeout: float = 30.0,
        fault_retry_after: float = 0.1,
        default_completion_tokens: int = DEFAULT_COMPLETION_TOKENS,
        token_charge: str = "words",
        batch_progress: str = "time",
        batch_step_seconds: float = 0.02,
        batch_expire_after_lines: int | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._initial_handler = handler
        self._initial_conditions = Conditions(
            rpm=rpm,
            tpm=tpm,
            latency=latency,
            fault_rate=fault_rate,
            faults=tuple(faults),
            seed=seed,
            fault_timeout=fault_timeout,
            fault_retry_after=fault_retry_after,
            default_completion_tokens=default_completion_tokens,
            token_charge=token_charge,
            batch_progress=batch_progress,
            batch_step_seconds=batch_step_seconds,
            batch_expire_after_lines=batch_expire_after_lines,
        )
        self.state = ServerState(
            validate=validate,
            api_key=api_key,
            models=list(models),
            handler=handler,
            max_recorded=max_recorded,
        )
        self.state.configure(self._initial_conditions)
        self._socket: socket.socket | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (known once started)."""
        if self._socket is None:
            raise RuntimeError("TestServer.port: the server is not started; call start() first")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:8123``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI base URL, e.g. ``http://127.0.0.1:8123/v1``."""
        return f"{self.url}/v1"

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and without it every answer waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(128)
        sock.setblocking(False)
        return sock

    def _build(self) -> Any:
        import uvicorn

        config = uvicorn.Config(
            create_app(self.state),
            log_level="warning",
            access_log=False,
            http="h11",
            ws="none",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)

        def close_connection(client: Any, reset: bool) -> bool:
            for connection in list(server.server_state.connections):
                if getattr(connection, "client", None) == client:
                    transport = connection.transport
                    if reset:
                        transport.abort()
                    else:
                        transport.close()
                    return True
            return False

        self.state.connection_closer = close_connection
        return server

    def start(self) -> TestServer:
        """Start serving in a background thread; returns once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("TestServer.start: already started; call stop() first")
        # Load the spec now, so the first request is not slow (clients may have short timeouts).
        _ = self.state.validator
        self.state.stopping.clear()
        self._socket = self._bind()
        self._server = self._build()
        sockets = [self._socket]
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": sockets}, name="chatstep-test-server"
        )
        self._thread.daemon = True
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive():
                self._cleanup()
                raise RuntimeError("TestServer.start: uvicorn exited during startup (see log)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"TestServer.start: not serving after {_START_TIMEOUT}s")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving; pending delayed answers are cut short."""
        self.state.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(_STOP_TIMEOUT)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._thread = None
        self._server = None
        self.state.connection_closer = None

    def serve_forever(self, on_ready: Callable[[TestServer], None] | None = None) -> None:
        """Serve in the foreground until interrupted (Ctrl-C); ``on_ready`` runs once bound."""
        _ = self.state.validator
        self._socket = self._bind()
        self._server = self._build()
        if on_ready is not None:
            on_ready(self)
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._cleanup()

    def __enter__(self) -> TestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- scripting and inspection ----------------------------------------------------------

    def enqueue(self, *items: Any, path: str = CHAT_PATH) -> None:
        """Queue answers for the next requests to ``path`` (default: chat completions)."""
        self.state.script.enqueue(items, path)

    def pending(self, path: str | None = None) -> int:
        """How many queued items have not been used yet (for ``path``, or in all)."""
        return self.state.script.pending(path)

    @property
    def handler(self) -> Handler | None:
        """``handler(path, body) -> item | dict | None``, asked when a path's queue is empty."""
        return self.state.handler

    @handler.setter
    def handler(self, handler: Handler | None) -> None:
        self.state.handler = handler

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far, in arrival order (a snapshot)."""
        return self.state.requests

    @property
    def spec_violations(self) -> list[SpecViolation]:
        """Request and response bodies that did not match the OpenAI spec (a snapshot)."""
        return self.state.violations

    def allow_spec_violations(self) -> None:
        """Tell the pytest fixture that this test expects spec violations."""
        self.state.allow_violations()

    @property
    def stats(self) -> ServerStats:
        """Counters since the last reset: requests (by path), rate-limit 429s, faults by kind."""
        return self.state.stats

    @property
    def conditions(self) -> Conditions:
        """The service conditions in force (rate limits, latency, faults)."""
        return self.state.conditions.conditions

    def configure(self, **changes: Any) -> Conditions:
        """Change service conditions (``rpm=``, ``tpm=``, ``latency=``, ``fault_rate=``, ...).

        Fields not named keep their current value; rate-limit buckets start full again.
        ``reset()`` restores the conditions the server was created with.
        """
        unknown = sorted(set(changes) - set(Conditions.__dataclass_fields__))
        if unknown:
            raise TypeError(
                f"configure: unknown setting(s) {unknown}; "
                f"known: {sorted(Conditions.__dataclass_fields__)}"
            )
        if "faults" in changes:
            changes["faults"] = tuple(changes["faults"])
        conditions = replace(self.conditions, **changes)
        self.state.configure(conditions)
        return conditions

    def reset(self) -> None:
        """Forget script, requests, violations and counters; restore handler and conditions."""
        self.state.reset()
        self.state.handler = self._initial_handler
        self.state.configure(self._initial_conditions)
