"""``chatstep serve``: the embedded local model as an OpenAI-compatible HTTP server."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""
    app.command("serve")(serve)


def serve(
    host: Annotated[
        str, typer.Option(help="Interface to listen on; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8080,
    log_level: Annotated[
        str, typer.Option(help="uvicorn log level: critical, error, warning, info or debug.")
    ] = "info",
) -> None:
    """Serve the local model (gemma-3-270m) as an OpenAI-compatible API under /v1.

    Point any OpenAI client at http://HOST:PORT/v1 with any API key. Runs in the foreground
    until interrupted.
    """
    # Imported here so that `chatstep --help` never loads uvicorn or llama.cpp.
    from chatstep.backends.local.backend import LocalBackend
    from chatstep.backends.local.model import INSTALL_HINT, LOCAL_MODEL_ID, load_local_model
    from chatstep.errors import BackendUnavailableError

    try:
        import uvicorn

        from chatstep.serving import create_serving_app
    except ImportError as exc:
        typer.echo(
            f"error: serving needs starlette and uvicorn ({exc}); install them with: "
            f"{INSTALL_HINT}",
            err=True,
        )
        raise typer.Exit(1) from exc
    try:
        # Load now: a missing model fails here with the install hint, and request one is fast.
        load_local_model()
    except BackendUnavailableError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"Serving {LOCAL_MODEL_ID} at http://{host}:{port}/v1 (OpenAI-compatible, any API key)",
        err=True,
    )
    uvicorn.run(create_serving_app(LocalBackend()), host=host, port=port, log_level=log_level)
