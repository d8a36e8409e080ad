"""``chatstep serve --steps DIR``: every step file in DIR as ``POST /steps/{id}``.

Standalone: it serves the steps only (no ``/v1`` model routes) and needs starlette and uvicorn
(the ``serve`` extra), not the ``local`` extra, unless a step runs on the embedded model.
"""

from __future__ import annotations

from pathlib import Path

import typer

from chatstep.cli.common import EXIT_CODES

__all__ = ["serve_steps"]


def serve_steps(
    directory: Path,
    *,
    host: str,
    port: int,
    log_level: str,
    api_key: str | None,
    auth: str,
    concurrency: int,
    rpm: float | None,
    tpm: float | None,
    max_cost: float | None,
    max_body: int,
    history: bool,
) -> None:
    """Check every step file, then serve them until interrupted (exit 3 for a bad file)."""
    from chatstep.errors import ConfigError

    try:
        import uvicorn

        from chatstep.serving.steps import steps_app
    except ImportError as exc:
        typer.echo(
            f"error: serving needs starlette and uvicorn ({exc}); install them with: "
            "pip install 'chatstep[serve]'",
            err=True,
        )
        raise typer.Exit(EXIT_CODES["backend"]) from exc
    try:
        app = steps_app(
            directory,
            api_key=api_key,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            max_cost=max_cost,
            max_body_bytes=max_body,
            history=history,
        )
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CODES["config"]) from None
    ids = sorted(app.state.step_service.steps)
    shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    typer.echo(
        f"Serving {len(ids)} step{'s' if len(ids) != 1 else ''} ({shown}) at "
        f"http://{host}:{port}/steps/{{id}} (OpenAPI: /openapi.json; {auth})",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level)
