"""``chatstep serve``: the embedded local model as an OpenAI-compatible HTTP server, or
(``--steps DIR``) step files as HTTP endpoints (:mod:`chatstep.cli.serve_steps`)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["API_KEY_ENV", "register"]

API_KEY_ENV = "CHATSTEP_SERVE_API_KEY"
_EXIT_USAGE = 2
_EXIT_UNAVAILABLE = 7


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""
    app.command("serve")(serve)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _auth_note(host: str, api_key: str | None) -> str:
    if api_key is not None:
        return "clients must send the --api-key as their API key"
    if _is_loopback(host):
        return "any API key"
    return "NO AUTHENTICATION: anyone who can reach it can use it"


def serve(
    host: Annotated[
        str,
        typer.Option(
            help="Interface to listen on. Beyond loopback (e.g. 0.0.0.0) it needs --api-key "
            "or --no-auth."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8080,
    log_level: Annotated[
        str, typer.Option(help="uvicorn log level: critical, error, warning, info or debug.")
    ] = "info",
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar=API_KEY_ENV,
            show_envvar=True,
            help="Require this key from clients (sent as `Authorization: Bearer KEY`, the "
            "OpenAI clients' api_key). Prefer the environment variable: options show in ps.",
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Serve beyond loopback without any key (anyone reaching it can use it).",
        ),
    ] = False,
    steps: Annotated[
        Path | None,
        typer.Option(
            "--steps",
            help="Serve every step file in this directory as POST /steps/{file name} (with "
            "GET /steps and /openapi.json) instead of the local models.",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="--steps: requests in flight at most.")
    ] = 16,
    rpm: Annotated[
        float | None,
        typer.Option("--rpm", help="--steps: requests per minute (default: learned from headers)."),
    ] = None,
    tpm: Annotated[
        float | None,
        typer.Option("--tpm", help="--steps: tokens per minute (default: learned from headers)."),
    ] = None,
    max_cost: Annotated[
        float | None,
        typer.Option("--max-cost", help="--steps: USD the server may spend (then 402)."),
    ] = None,
    max_body: Annotated[
        int, typer.Option("--max-body", min=1, help="--steps: largest request body, in bytes.")
    ] = 1024 * 1024,
    no_history: Annotated[
        bool, typer.Option("--no-history", help="--steps: do not log calls to the history.")
    ] = False,
) -> None:
    """Serve the local models as an OpenAI API under /v1, or step files over HTTP (--steps DIR).

    Point any OpenAI client at http://HOST:PORT/v1. On loopback any API key works unless
    --api-key is given. The model runs in a worker process: if it dies, the requests in flight
    get a 500 and the next request starts a new one. Runs in the foreground until interrupted.
    With --steps DIR, serves the step files instead (no model routes; needs no local extra
    when the steps call an HTTP endpoint); a bad step file exits 3 with FILE:LINE errors.
    Exits 2 for a non-loopback --host without --api-key or --no-auth, 7 without the local extra.
    """
    # Imported here so that `chatstep --help` never loads uvicorn or llama.cpp.
    from chatstep.backends.local.model import (
        INSTALL_HINT,
        LOCAL_MODEL_ID,
        MODEL_PATH_ENV,
        installed_models,
    )
    from chatstep.errors import BackendUnavailableError

    if api_key is not None and (not api_key.strip() or api_key != api_key.strip()):
        typer.echo(
            f"error: --api-key (or {API_KEY_ENV}) is empty or starts or ends with spaces "
            "(HTTP drops them from the header, so no client could match); give a key "
            "without spaces",
            err=True,
        )
        raise typer.Exit(_EXIT_USAGE)
    if not _is_loopback(host) and api_key is None and not no_auth:
        typer.echo(
            f"error: --host {host} serves beyond this machine: pass --api-key KEY (or set "
            f"{API_KEY_ENV}) so that clients must send it, or --no-auth to serve without "
            "authentication",
            err=True,
        )
        raise typer.Exit(_EXIT_USAGE)
    if steps is not None:
        from chatstep.cli.serve_steps import serve_steps

        serve_steps(
            steps,
            host=host,
            port=port,
            log_level=log_level,
            api_key=api_key,
            auth=_auth_note(host, api_key),
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            max_cost=max_cost,
            max_body=max_body,
            history=not no_history,
        )
        return
    try:
        import uvicorn

        from chatstep.serving.worker import ModelWorker, create_proxy_app
    except ImportError as exc:
        typer.echo(
            f"error: serving needs starlette, uvicorn and httpx ({exc}); install them with: "
            f"{INSTALL_HINT}",
            err=True,
        )
        raise typer.Exit(_EXIT_UNAVAILABLE) from exc
    worker = ModelWorker(log_level=log_level)
    try:
        # Load now: a missing model fails here with the install hint, and request one is fast.
        worker.start()
    except BackendUnavailableError as exc:
        worker.stop()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(_EXIT_UNAVAILABLE) from exc
    auth = _auth_note(host, api_key)
    names = [LOCAL_MODEL_ID] if os.environ.get(MODEL_PATH_ENV) else installed_models()
    typer.echo(
        f"Serving {', '.join(names)} at http://{host}:{port}/v1 (OpenAI-compatible, {auth})",
        err=True,
    )
    try:
        uvicorn.run(
            create_proxy_app(worker, api_key=api_key), host=host, port=port, log_level=log_level
        )
    finally:
        worker.stop()
