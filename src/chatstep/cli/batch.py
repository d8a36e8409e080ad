"""``chatstep batch``: run a step over rows through the OpenAI Batch API (half price, 24h).

``submit`` prints the job id; ``status``, ``wait``, ``results`` and ``cancel`` take it (or one
of its ``batch_...`` ids); ``list`` shows the journal. Exit codes beyond the common ones:
9 when ``results`` has rows that failed (their errors are in the output), 10 when ``wait`` saw
the job end without completing (failed, expired or cancelled), 11 when ``wait --timeout``
passed with the job still running, 130 when interrupted.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chatstep.cli.common import (
    EXIT_CODES,
    RowsOption,
    SetOption,
    apply_overrides,
    interrupted_exit_code,
    parse_inputs,
    print_json,
    reports_errors,
    require_rows,
)

if TYPE_CHECKING:
    from chatstep.batch.api import BatchJob, BatchResults

__all__ = ["EXIT_NOT_COMPLETED", "EXIT_ROWS_FAILED", "EXIT_WAIT_TIMEOUT", "register"]

EXIT_ROWS_FAILED = EXIT_CODES["rows_failed"]
EXIT_NOT_COMPLETED = EXIT_CODES["batch_not_completed"]
EXIT_WAIT_TIMEOUT = EXIT_CODES["wait_timeout"]
EXIT_INTERRUPTED = EXIT_CODES["interrupted"]

batch_app = typer.Typer(
    name="batch",
    help="Run a step over rows through the OpenAI Batch API (half price, results within 24h).",
    no_args_is_help=True,
)

JobArg = Annotated[str, typer.Argument(help="A job id (csb_...) or one of its batch ids.")]
AsJSON = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class OnInterrupt(str, enum.Enum):
    """What Ctrl-C during ``wait`` does to the batch."""

    ask = "ask"
    cancel = "cancel"
    keep = "keep"


def _describe(job: BatchJob) -> str:
    counts = job.request_counts
    parts = f"{len(job.parts)} batches" if len(job.parts) != 1 else job.parts[0].batch_id
    return (
        f"{job.id}  {job.status}  {counts['completed']}/{job.row_count} done, "
        f"{counts['failed']} failed  ({parts}, {job.endpoint}, {job.model})"
    )


def _show(job: BatchJob, as_json: bool) -> None:
    """Print the job as JSON, or its one-line description."""
    if as_json:
        print_json(job.to_dict())
    else:
        typer.echo(_describe(job))


def _parse_metadata(pairs: list[str] | None) -> dict[str, str]:
    from chatstep.errors import ConfigError

    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--metadata {pair}", "is not key=value", "write --metadata k=v")
        out[key] = value
    return out


def _progress_printer(quiet: bool) -> Any:
    last: list[str] = []

    def show(job: BatchJob) -> None:
        line = _describe(job)
        if not quiet and (not last or last[-1] != line):
            last.append(line)
            typer.echo(line, err=True)

    return show


def _wait(
    job_ref: str,
    poll: float,
    max_poll: float,
    timeout: float | None,
    on_interrupt: OnInterrupt,
    quiet: bool,
) -> BatchJob:
    """Wait with progress on stderr; Ctrl-C asks (or cancels, or keeps) per ``on_interrupt``."""
    from chatstep.batch.api import PollSchedule, cancel_batch, poll_batch

    with reports_errors():
        try:
            return poll_batch(
                job_ref,
                poll=PollSchedule(initial=poll, maximum=max(max_poll, poll)),
                timeout=timeout,
                on_progress=_progress_printer(quiet),
                cancel_on_cancel=False,
            )
        except TimeoutError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_WAIT_TIMEOUT) from None
        except KeyboardInterrupt:
            pass  # handled below, outside reports_errors (which would exit at once)
    cancel = on_interrupt is OnInterrupt.cancel
    if on_interrupt is OnInterrupt.ask and sys.stdin.isatty():
        cancel = typer.confirm(f"\nCancel batch job {job_ref}?", default=False)
    with reports_errors():
        if cancel:
            job = cancel_batch(job_ref)
            typer.echo(f"cancelling: {_describe(job)}", err=True)
        else:
            typer.echo(
                f"batch job {job_ref} keeps running: `chatstep batch wait {job_ref}` waits again, "
                f"`chatstep batch cancel {job_ref}` cancels it",
                err=True,
            )
    raise typer.Exit(interrupted_exit_code())


def _finish_wait(job: BatchJob) -> None:
    if job.status != "completed":
        typer.echo(f"batch job {job.id} ended {job.status}", err=True)
        for part in job.parts:
            for error in part.errors[:3]:
                typer.echo(f"  {part.batch_id}: {error.get('message') or error}", err=True)
        raise typer.Exit(EXIT_NOT_COMPLETED)


def _write_results(job_ref: str, output: Path | None, as_json: bool) -> BatchResults:
    from chatstep.batch.api import batch_results

    with reports_errors():
        to_stdout = output is None or str(output) == "-"
        results = batch_results(job_ref, None if to_stdout else output)
    if to_stdout and not as_json:
        with results.path.open(encoding="utf-8") as lines:
            for line in lines:
                sys.stdout.write(line)
    cost = f"${results.cost:.6f} at the batch price" if results.cost is not None else "cost unknown"
    typer.echo(
        f"{results.rows} rows: {results.succeeded} succeeded, {results.failed} failed; {cost}"
        + ("" if to_stdout else f"; written to {results.path}"),
        err=True,
    )
    if as_json:
        print_json(results.to_dict())
    return results


def _rows_with(constants: dict[str, Any], path: Path) -> Iterator[dict[str, Any]]:
    """The rows of ``path`` (read as ``map`` reads them), each over the constant ``-i`` inputs."""
    from chatstep.mapping.datasets import read_rows

    for row in read_rows(path):
        yield {**constants, **row} if constants else row


def submit(
    rows: RowsOption = None,
    step_file: Annotated[
        Path | None,
        typer.Argument(
            help="A step definition; leave it out when ROWS already holds Batch request lines."
        ),
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="An input every row gets (a row's own column wins; it shows in the results): "
            "name=value, name:=JSON, name=@file or name=@-; repeatable.",
        ),
    ] = None,
    overrides: SetOption = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait, then write the results.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="With --wait: the results file.")
    ] = None,
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", help="key=value on the batch; repeatable.")
    ] = None,
    max_requests: Annotated[
        int, typer.Option("--max-requests", help="Requests per batch before splitting.")
    ] = 50_000,
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", help="Bytes per batch file before splitting.")
    ] = 200 * 1024 * 1024,
    poll: Annotated[float, typer.Option("--poll", help="With --wait: first poll delay.")] = 5.0,
    max_cost: Annotated[
        float | None,
        typer.Option(
            "--max-cost",
            help="USD cap: refuse (exit 8, nothing uploaded) if the rows' worst case at batch "
            "prices is more.",
            min=0,
        ),
    ] = None,
    as_json: AsJSON = False,
) -> None:
    """Render one request per row of ROWS, upload them and create the batch; print the job id."""
    from chatstep.batch.api import BatchLimits, submit_batch

    with reports_errors():
        rows = require_rows(rows, inputs)
        step = apply_overrides(step_file, overrides) if step_file is not None else None
        if step is None and (inputs or overrides):
            from chatstep.errors import ConfigError

            raise ConfigError(
                "-i" if inputs else "--set",
                "needs a step: ROWS without one are Batch request lines, sent as they are",
                "give the step file, or put the values in the request lines",
            )
        constants = parse_inputs(inputs)
        job = submit_batch(
            step,
            # A step's rows are read as map reads them (.jsonl, .csv, .parquet); request lines
            # (no step) are JSONL, read by the batch module.
            _rows_with(constants, rows) if step is not None else rows,
            source=str(rows),
            limits=BatchLimits(max_requests=max_requests, max_bytes=max_bytes),
            metadata=_parse_metadata(metadata),
            max_cost=max_cost,
        )
    if as_json:
        print_json(job.to_dict())
    else:
        typer.echo(job.id)
    typer.echo(f"submitted: {_describe(job)}", err=True)
    if wait:
        done = _wait(job.id, poll, 60.0, None, OnInterrupt.ask, quiet=False)
        _finish_wait(done)
        results = _write_results(job.id, output, as_json=False)
        if results.failed:
            raise typer.Exit(EXIT_ROWS_FAILED)


def status(job: JobArg, as_json: AsJSON = False) -> None:
    """Ask the API how the job is doing."""
    from chatstep.batch.api import batch_status

    with reports_errors():
        current = batch_status(job)
    _show(current, as_json)


def wait_command(
    job: JobArg,
    poll: Annotated[float, typer.Option("--poll", help="First poll delay, in seconds.")] = 5.0,
    max_poll: Annotated[
        float, typer.Option("--max-poll", help="Longest poll delay (it grows 1.5x a poll).")
    ] = 60.0,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up waiting after this many seconds.")
    ] = None,
    on_interrupt: Annotated[
        OnInterrupt,
        typer.Option(
            "--on-interrupt", help="Ctrl-C: ask (keep when not a terminal), cancel, keep."
        ),
    ] = OnInterrupt.ask,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
    as_json: AsJSON = False,
) -> None:
    """Wait for the job to end, showing progress; exit 0 only if it completed."""
    done = _wait(job, poll, max_poll, timeout, on_interrupt, quiet)
    _show(done, as_json)
    _finish_wait(done)


def results(
    job: JobArg,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the joined rows here (default: stdout)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary instead of the rows.")
    ] = False,
) -> None:
    """Download the job's output and error files and print one joined row per input row."""
    joined = _write_results(job, output, as_json)
    if joined.failed:
        raise typer.Exit(EXIT_ROWS_FAILED)


def cancel(job: JobArg, as_json: AsJSON = False) -> None:
    """Cancel the job's batches (they pass through cancelling; finished rows are kept)."""
    from chatstep.batch.api import cancel_batch

    with reports_errors():
        current = cancel_batch(job)
    _show(current, as_json)


def list_command(
    limit: Annotated[int, typer.Option("--limit", "-n", help="Newest jobs to show.")] = 20,
    as_json: AsJSON = False,
) -> None:
    """Jobs in the journal, newest first, as last seen (no API call)."""
    from chatstep.batch.api import list_batches

    with reports_errors():
        jobs = list_batches(limit=limit)
    if as_json:
        sys.stdout.write(json.dumps([j.to_dict() for j in jobs], indent=2) + "\n")
        return
    for job in jobs:
        typer.echo(_describe(job))


batch_app.command("submit")(submit)
batch_app.command("status")(status)
batch_app.command("wait")(wait_command)
batch_app.command("results")(results)
batch_app.command("cancel")(cancel)
batch_app.command("list")(list_command)


def register(app: typer.Typer) -> None:
    """Add the ``batch`` command group to the app."""
    app.add_typer(batch_app, name="batch")
