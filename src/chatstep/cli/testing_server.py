"""``chatstep testing-server``: run the OpenAI-compatible test server in the foreground."""

from __future__ import annotations

import typer

__all__ = ["register", "run_testing_server"]


def run_testing_server(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on (0 picks a free one)."),
    validate: bool = typer.Option(
        True,
        "--validate/--no-validate",
        help="Check request and response bodies against the official OpenAI spec.",
    ),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="CHATSTEP_TESTING_API_KEY",
        help="Demand this bearer key (default: accept any request).",
        show_default=False,
    ),
) -> None:
    """Serve deterministic OpenAI-compatible answers (chat, embeddings, moderations, models)."""
    # Imported here so `chatstep --help` does not load starlette and uvicorn.
    from chatstep.testing.server import TestServer

    def announce(server: TestServer) -> None:
        typer.echo(
            f"chatstep test server on {server.base_url} "
            f"(spec validation {'on' if validate else 'off'}); Ctrl-C to stop",
            err=True,
        )

    TestServer(host=host, port=port, validate=validate, api_key=api_key).serve_forever(announce)


def register(app: typer.Typer) -> None:
    """Add the ``testing-server`` command to the chatstep CLI."""
    app.command("testing-server")(run_testing_server)
