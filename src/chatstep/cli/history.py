"""``chatstep history``: list, search and show logged calls; prune old ones."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from chatstep.cli.common import print_json, reports_errors

__all__ = ["register"]

history_app = typer.Typer(
    help="Every call chatstep made: list, full-text search, show one, prune old ones.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _summary(text: str | None, width: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@history_app.callback()
def list_calls(
    ctx: typer.Context,
    query: Annotated[
        str | None,
        typer.Option("--search", "-q", help="Full-text search over prompts and answers."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many calls.")] = 20,
    model: Annotated[str | None, typer.Option(help="Only calls to this model.")] = None,
    step: Annotated[str | None, typer.Option(help="Only calls of this step id.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Only calls of this run id.")] = None,
    errors: Annotated[bool, typer.Option("--errors", help="Only failed calls.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print whole entries as JSON.")] = False,
) -> None:
    """List recent calls, or search them (newest first; search: best match first)."""
    if ctx.invoked_subcommand is not None:
        return
    from chatstep.storage.history import History, prompt_text, response_text

    with reports_errors():
        history = History()
        if query:
            entries = history.search(query, limit=limit)
        else:
            entries = history.recent(
                limit=limit, model=model, step=step, errors_only=errors, run_id=run
            )
        if as_json:
            print_json([asdict(e) for e in entries])
            return
        for e in entries:
            cost = f"${e.cost_usd:.6f}" if e.cost_usd is not None else "-"
            outcome = (
                f"ERROR {_summary(e.error, 40)}" if e.error else _summary(response_text(e.response))
            )
            typer.echo(
                f"{e.id}  {e.time[:19]}  {e.model or '-'}  {e.total_tokens or 0} tok  {cost}"
                f"{'  (cached)' if e.cached else ''}\n"
                f"    > {_summary(prompt_text(e.request))}\n    < {outcome}"
            )


@history_app.command("show")
def show(
    entry_id: Annotated[str, typer.Argument(help="The id printed by chatstep history.")],
) -> None:
    """Print one logged call as JSON."""
    from chatstep.errors import ConfigError
    from chatstep.storage.history import History

    with reports_errors():
        entry = History().get(entry_id)
        if entry is None:
            raise ConfigError(
                "id", f"no logged call has id {entry_id!r}", "list ids with chatstep history"
            )
        print_json(asdict(entry))


@history_app.command("prune")
def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Delete calls logged longer ago than this: 30d, 12h, 90m, or ISO 8601 (P30D).",
        ),
    ],
    vacuum: Annotated[
        bool, typer.Option("--vacuum", help="Then give the freed space back to the disk.")
    ] = False,
) -> None:
    """Delete old calls from the history (the file grows by every call otherwise)."""
    from datetime import datetime, timedelta, timezone

    from chatstep.durations import parse_duration
    from chatstep.errors import ConfigError
    from chatstep.storage.history import History

    with reports_errors():
        try:
            seconds = parse_duration(older_than)
        except ValueError as exc:
            raise ConfigError("--older-than", str(exc), "for example --older-than 30d") from None
        before = datetime.now(timezone.utc) - timedelta(seconds=seconds)
        history = History()
        removed = history.prune(before, vacuum=vacuum)
        typer.echo(
            f"removed {removed} call(s) logged before {before.isoformat(timespec='seconds')}; "
            f"{history.count()} remain in {history.path}"
        )


def register(app: typer.Typer) -> None:
    """Add ``history`` to the app."""
    app.add_typer(history_app, name="history")
