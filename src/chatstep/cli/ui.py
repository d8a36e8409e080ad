"""``chatstep ui``: browse the call history and the map and batch journals (Datasette)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chatstep.cli.common import reports_errors

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``ui`` command to ``app``."""
    app.command("ui")(ui)


def ui(
    journal: Annotated[
        list[Path] | None,
        typer.Option(
            "--journal",
            "-j",
            help="A map run journal (OUTPUT.journal.sqlite3) or a directory of them; repeatable.",
        ),
    ] = None,
    history: Annotated[
        Path | None,
        typer.Option(help="The call history (default: history.sqlite3 in the user directory)."),
    ] = None,
    batch_journal: Annotated[
        Path | None,
        typer.Option(help="The batch journal (default: batches.sqlite3 in the user directory)."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to listen on (loopback only by default).")
    ] = ("127.0.0.1"),
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8001,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in a web browser once it is up.")
    ] = False,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Allow a non-loopback --host. The page has no login: anyone who reaches it "
            "reads every prompt and answer.",
        ),
    ] = False,
    log_level: Annotated[
        str, typer.Option(help="uvicorn log level: critical, error, warning, info or debug.")
    ] = "warning",
) -> None:
    """Browse calls, runs, errors, costs and batch jobs in a web page (needs the ui extra).

    Serves Datasette on http://HOST:PORT over the call history, the batch journal and the map
    journals given with --journal, all opened read-only (safe while a run writes them):
    full-text search over prompts and answers, facets, canned queries (runs, errors, cost per
    day, cache hits, batch jobs) and charts under /-/dashboards. Runs until interrupted.
    """
    from chatstep.batch.journal import BatchJournal
    from chatstep.storage.history import History
    from chatstep.ui.server import check_host, create_datasette, is_loopback, run_server
    from chatstep.ui.sources import collect_sources

    with reports_errors():
        check_host(host, allow_remote)
        sources, notes = collect_sources(
            history if history is not None else History().path,
            batch_journal if batch_journal is not None else BatchJournal().path,
            journal or [],
        )
        for note in notes:
            typer.echo(f"note: {note}", err=True)
        datasette = create_datasette(sources)
        shown = ", ".join(f"{s.name} ({s.path})" for s in sources)
        where = f"[{host}]" if ":" in host else host
        typer.echo(f"chatstep ui at http://{where}:{port}/ over {shown}", err=True)
        if not is_loopback(host):
            typer.echo(
                f"warning: {host} is not a loopback address and the page has no login: anyone "
                "who reaches it reads every logged prompt and answer",
                err=True,
            )
        run_server(datasette, host=host, port=port, open_browser=open_browser, log_level=log_level)
