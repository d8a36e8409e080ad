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
    rpm: int | None = typer.Option(None, help="Requests-per-minute limit (429 beyond it)."),
    tpm: int | None = typer.Option(None, help="Tokens-per-minute limit (429 beyond it)."),
    latency: float | None = typer.Option(None, help="Seconds before each model answer."),
    fault_rate: float = typer.Option(
        0.0, help="Share of model requests (0-1) that get an injected fault."
    ),
    fault: list[str] = typer.Option(  # noqa: B008 - typer declares options this way
        ["429", "500", "503", "reset"],
        "--fault",
        help="A fault kind to inject (repeat): 429 500 503 reset timeout malformed "
        "truncated_stream.",
    ),
    seed: int = typer.Option(0, help="Seed of the fault and latency draws."),
    batch_step_seconds: float = typer.Option(
        1.0, help="How long a batch stays validating, and finalizing."
    ),
) -> None:
    """Serve deterministic OpenAI-compatible answers: chat, embeddings, files, batches..."""
    # Imported here so `chatstep --help` does not load starlette and uvicorn.
    from chatstep.testing.server import TestServer

    def announce(server: TestServer) -> None:
        typer.echo(
            f"chatstep test server on {server.base_url} "
            f"(spec validation {'on' if validate else 'off'}); Ctrl-C to stop",
            err=True,
        )

    try:
        server = TestServer(
            host=host,
            port=port,
            validate=validate,
            api_key=api_key,
            rpm=rpm,
            tpm=tpm,
            latency=latency,
            fault_rate=fault_rate,
            faults=fault,
            seed=seed,
            batch_step_seconds=batch_step_seconds,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        server.serve_forever(announce)
    except KeyboardInterrupt:
        # uvicorn re-raises Ctrl-C after its graceful shutdown; stopping is the normal way out.
        typer.echo("chatstep test server stopped", err=True)
    except OSError as exc:
        # The bind: a port already in use, or an address this machine does not have.
        typer.echo(
            f"error: cannot listen on {host}:{port}: {exc.strerror or exc}; pick another "
            "--port (0 picks a free one) or --host",
            err=True,
        )
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    """Add the ``testing-server`` command to the chatstep CLI."""
    app.command("testing-server")(run_testing_server)
