"""``chatstep map``: run a step over every row of a dataset file, into another file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chatstep.cli.common import (
    EXIT_CODES,
    RowsOption,
    SetOption,
    apply_overrides,
    parse_inputs,
    reports_errors,
    require_rows,
)
from chatstep.errors import ConfigError

if TYPE_CHECKING:
    from chatstep.mapping.progress import MapStats

__all__ = ["EXIT_BUDGET", "EXIT_ROWS_FAILED", "register"]

#: Exit code when --max-cost stopped the run before the end of the input.
EXIT_BUDGET = EXIT_CODES["budget"]
#: Exit code when every row finished but some failed (their errors are in the output).
EXIT_ROWS_FAILED = EXIT_CODES["rows_failed"]


def map_command(
    step_file: Annotated[Path, typer.Argument(help="A step definition (.yaml, .yml or .json).")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write: .jsonl, .csv or .parquet.")
    ],
    rows: RowsOption = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="An input every row gets (a row's own column wins): name=value, name:=JSON, "
            "name=@file or name=@-; repeatable.",
        ),
    ] = None,
    overrides: SetOption = None,
    select: Annotated[
        list[str] | None,
        typer.Option(
            "--select",
            "-s",
            help="An output to add, by path (content, parsed, parsed.label, usage, cost, "
            "tool_calls, response.choices[0].finish_reason...); repeatable.",
        ),
    ] = None,
    nested: Annotated[
        bool,
        typer.Option(
            "--nested/--flatten",
            help="Keep dict outputs nested (JSON Lines only) or flatten them to path.key columns.",
        ),
    ] = True,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Put before output column names, e.g. out_.")
    ] = "",
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", help="Requests in flight at most.")
    ] = 16,
    rpm: Annotated[
        float | None,
        typer.Option("--rpm", help="Requests per minute (default: learned from the server)."),
    ] = None,
    tpm: Annotated[
        float | None,
        typer.Option("--tpm", help="Tokens per minute (default: learned from the server)."),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            help="Share the rate budget with other runs: redis://HOST:PORT/DB "
            "(fails if unreachable).",
        ),
    ] = None,
    budget_fallback: Annotated[
        int | None,
        typer.Option(
            "--budget-fallback",
            help="If the --budget store is unreachable, go on alone with 1/N of the limits "
            "(N: the number of runs sharing it) instead of stopping.",
        ),
    ] = None,
    journal: Annotated[
        str | None,
        typer.Option(
            "--journal",
            help="Run journal (default: OUTPUT.journal.sqlite3; --engine ray: the directory "
            "OUTPUT.shards/, or redis://HOST:PORT/DB for workers on several machines).",
        ),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Forget the journal's finished rows; start over.")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Send again the rows that failed before.")
    ] = False,
    max_cost: Annotated[
        float | None,
        typer.Option("--max-cost", help="Stop before the dollars spent would pass this."),
    ] = None,
    cache: Annotated[
        str | None,
        typer.Option(
            "--cache",
            help="Cache answers: 'sqlite' (default file), a file path, or redis://host:port/db.",
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use a cache.")] = False,
    no_history: Annotated[
        bool, typer.Option("--no-history", help="Do not log calls to the history.")
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="local (this process) or ray (shards on a Ray cluster; needs chatstep's "
            "ray extra).",
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option("--address", help="--engine ray: the cluster (auto, HOST:PORT, ray://...)."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", help="--engine ray: shard tasks running at once.")
    ] = 4,
    shard_rows: Annotated[
        int, typer.Option("--shard-rows", help="--engine ray: rows per shard (keep it on resume).")
    ] = 1000,
    lease_ttl: Annotated[
        float,
        typer.Option(
            "--lease-ttl",
            help="--engine ray: seconds a shard's lease lives unrenewed (a killed worker's "
            "shard is taken over after this).",
        ),
    ] = 30.0,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Show progress on stderr (default: a bar on a terminal, lines otherwise).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a step over every row of ROWS (each row is the step's inputs) into OUTPUT.

    Output rows keep the input's order and columns and add the selected outputs and an
    error column. Finished rows are journaled: after a crash, the same command resumes.
    """
    from chatstep.mapping.files import map_file
    from chatstep.mapping.progress import LineProgress, make_progress

    if engine == "ray":
        with reports_errors():
            stats = _map_on_ray(
                apply_overrides(step_file, overrides),
                require_rows(rows, inputs),
                output,
                address=address,
                workers=workers,
                shard_rows=shard_rows,
                budget=budget,
                budget_fallback=budget_fallback,
                lease_ttl=lease_ttl,
                journal=journal,
                restart=restart,
                inputs=parse_inputs(inputs),
                select=select,
                flatten=not nested,
                prefix=prefix,
                concurrency=concurrency,
                rpm=rpm,
                tpm=tpm,
                retry_failed=retry_failed,
                max_cost=max_cost,
                cache=None if no_cache else cache,
                history=not no_history,
            )
        typer.echo(
            f"{stats.done} rows done, {stats.failed} failed, {stats.from_journal} from the "
            f"journal; {stats.requests} requests, {stats.rate_limited} rate-limited",
            err=True,
        )
        _exit_for(stats)
        return
    if engine != "local":
        with reports_errors():
            raise ConfigError("--engine", f"unknown engine {engine!r}", "use local or ray")
    # --no-progress still prints the summary line at the end (also when stopped by a signal).
    shown = LineProgress(interval=math.inf) if progress is False else make_progress(progress)
    with reports_errors():
        rows = require_rows(rows, inputs)
        try:
            stats = map_file(
                apply_overrides(step_file, overrides),
                rows,
                output,
                inputs=parse_inputs(inputs),
                select=select,
                flatten=not nested,
                prefix=prefix,
                concurrency=concurrency,
                rpm=rpm,
                tpm=tpm,
                budget=budget,
                budget_fallback=budget_fallback,
                journal=Path(journal) if journal is not None else None,
                restart=restart,
                retry_failed=retry_failed,
                max_cost=max_cost,
                cache=None if no_cache else cache,
                history=not no_history,
                progress=shown,
            )
        except KeyboardInterrupt:
            typer.echo(
                "stopped: the finished rows are in the journal; the same command resumes",
                err=True,
            )
            raise
    _exit_for(stats)


def _exit_for(stats: MapStats) -> None:
    if stats.stop_reason is not None:
        typer.echo(f"stopped early: {stats.stop_reason}", err=True)
        raise typer.Exit(EXIT_BUDGET)
    if stats.failed:
        typer.echo(
            f"{stats.failed} rows failed; their errors are in the output's error column "
            "(--retry-failed sends them again)",
            err=True,
        )
        raise typer.Exit(EXIT_ROWS_FAILED)


def _map_on_ray(step: Any, rows: Any, output: Path, **options: Any) -> MapStats:
    """``map_file_ray``, imported only now: Ray is heavy, and an extra."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--engine",
            "the ray engine needs Ray, which is not installed",
            "pip install 'chatstep[ray]'",
        ) from None
    from chatstep.integrations.ray.engine import map_file_ray

    return map_file_ray(step, rows, output, **options)


def register(app: typer.Typer) -> None:
    """Add ``map`` to the app."""
    app.command("map")(map_command)
