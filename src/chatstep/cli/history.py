"""``chatstep history``: list, search and show logged calls; prune old ones."""

from __future__ import annotations

import enum
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, cast

import typer

from chatstep.cli.common import print_json, reports_errors

if TYPE_CHECKING:
    from chatstep.storage.spend import SpendKey

__all__ = ["SpendBy", "register"]

history_app = typer.Typer(
    help="Every call chatstep made: list, full-text search, spend (--cost), show one, prune.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _summary(text: str | None, width: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


class SpendBy(str, enum.Enum):
    """What ``history --cost`` groups by."""

    day = "day"
    model = "model"
    step = "step"
    run = "run"


def _print_spend(
    *,
    by: list[str],
    since: str | None,
    model: str | None,
    step: str | None,
    run: str | None,
    limit: int,
    as_json: bool,
    search: str | None,
) -> None:
    from datetime import datetime, timedelta, timezone

    from rich import box
    from rich.console import Console
    from rich.table import Table

    from chatstep.durations import parse_duration
    from chatstep.errors import ConfigError
    from chatstep.storage.spend import spend

    if search:
        raise ConfigError(
            "--search", "does not combine with --cost", "filter with --model, --step, --run"
        )
    start = None
    if since is not None:
        try:
            start = datetime.now(timezone.utc) - timedelta(seconds=parse_duration(since))
        except ValueError as exc:
            raise ConfigError("--since", str(exc), "for example --since 30d") from None
    report = spend(
        by=[cast("SpendKey", key) for key in by],
        since=start,
        model=model,
        step=step,
        run_id=run,
        limit=limit,
    )
    if as_json:
        print_json(report.to_dict())
        return
    total = report.total
    show_unpriced = total.unpriced > 0
    table = Table(box=box.SIMPLE_HEAD, show_footer=True)
    for index, key in enumerate(report.by):
        table.add_column(key, footer="total" if index == 0 else "")
    numbers = [
        ("calls", "calls"),
        ("cached", "cached"),
        ("errors", "errors"),
        ("prompt_tokens", "prompt tok"),
        ("completion_tokens", "output tok"),
    ]
    for _, title in numbers:
        table.add_column(title, justify="right")
    table.add_column("cost $", justify="right")
    if show_unpriced:
        table.add_column("unpriced", justify="right")
    for group in report.groups:
        cells = [getattr(group, key) or "-" for key in report.by]
        cells += [str(getattr(group, name)) for name, _ in numbers]
        cells.append(f"{group.cost_usd:.6f}")
        if show_unpriced:
            cells.append(str(group.unpriced))
        table.add_row(*cells)
    footers = [str(getattr(total, name)) for name, _ in numbers] + [f"{total.cost_usd:.6f}"]
    if show_unpriced:
        footers.append(str(total.unpriced))
    for column, footer in zip(table.columns[len(report.by) :], footers, strict=True):
        column.footer = footer
    console = Console(width=None if sys.stdout.isatty() else 200, highlight=False)
    console.print(table)
    if report.more_groups:
        typer.echo(f"{report.more_groups} more groups not shown (--limit); the total counts them")
    if show_unpriced:
        typer.echo(
            f"{total.unpriced} calls have no price (model not in the price table): "
            "their cost is not in the total",
            err=True,
        )


@history_app.callback()
def list_calls(
    ctx: typer.Context,
    query: Annotated[
        str | None,
        typer.Option("--search", "-q", help="Full-text search over prompts and answers."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="At most this many calls (--cost: groups).")
    ] = 20,
    model: Annotated[str | None, typer.Option(help="Only calls to this model.")] = None,
    step: Annotated[str | None, typer.Option(help="Only calls of this step id.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Only calls of this run id.")] = None,
    errors: Annotated[bool, typer.Option("--errors", help="Only failed calls.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print whole entries as JSON.")] = False,
    show_cost: Annotated[
        bool,
        typer.Option(
            "--cost", help="Show spend instead: dollars and tokens by day, model, step and run."
        ),
    ] = False,
    by: Annotated[
        list[SpendBy] | None,
        typer.Option("--by", help="With --cost: group by these (repeatable; default: all four)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="With --cost: only calls of the last 30d, 12h, 90m, or ISO (P7D)."
        ),
    ] = None,
) -> None:
    """List recent calls, or search them (newest first; search: best match first); --cost
    totals the spend instead."""
    if ctx.invoked_subcommand is not None:
        return
    if show_cost or by or since:
        with reports_errors():
            _print_spend(
                by=[SpendBy(b).value for b in by or SpendBy],
                since=since,
                model=model,
                step=step,
                run=run,
                limit=limit,
                as_json=as_json,
                search=query,
            )
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
