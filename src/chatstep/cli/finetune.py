"""``chatstep finetune``: training files from rows, fine-tuning jobs, and the model they make.

``prepare`` renders and checks the examples and writes the JSONL; ``submit`` checks, uploads
and creates the job and prints its id (the same inputs again print the same job: nothing is
paid twice); ``status``, ``wait``, ``cancel`` and ``events`` take the id (``csf_...`` or the
provider's ``ftjob-...``); ``list`` shows the journal (``--remote``: the provider's jobs).
``wait`` prints the fine-tuned model's name on stdout, for ``--set model=...`` of a later step.
Exit codes beyond the common ones: 10 when ``wait`` saw the job end without succeeding (failed
or cancelled), 11 when ``wait --timeout`` passed with the job still running, 130 when
interrupted (the job keeps training).
"""

from __future__ import annotations

import sys
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
)

if TYPE_CHECKING:
    from chatstep.finetune.api import FineTuneJob

__all__ = ["EXIT_NOT_SUCCEEDED", "EXIT_WAIT_TIMEOUT", "register"]

EXIT_NOT_SUCCEEDED = EXIT_CODES["batch_not_completed"]
EXIT_WAIT_TIMEOUT = EXIT_CODES["wait_timeout"]

finetune_app = typer.Typer(
    name="finetune",
    help="Fine-tune a model on rows rendered through a step, and wait for the model.",
    no_args_is_help=True,
)

JobArg = Annotated[str, typer.Argument(help="A job id (csf_...) or the provider's (ftjob-...).")]
AsJSON = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _describe(job: FineTuneJob) -> str:
    extra = []
    if job.fine_tuned_model:
        extra.append(job.fine_tuned_model)
    if job.trained_tokens is not None:
        extra.append(f"{job.trained_tokens:,} trained tokens")
    problem = job.error_message()
    if problem and not job.succeeded:
        extra.append(problem)
    tail = f"  ({'; '.join(extra)})" if extra else ""
    return f"{job.id}  {job.status}  {job.job_id or '-'}  {job.model}{tail}"


def _show(job: FineTuneJob, as_json: bool) -> None:
    if as_json:
        print_json(job.to_dict())
    else:
        typer.echo(_describe(job))


def _metadata(pairs: list[str] | None) -> dict[str, str]:
    from chatstep.errors import ConfigError

    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--metadata {pair}", "is not key=value", "write --metadata k=v")
        out[key] = value
    return out


def _wait(job_ref: str, poll: float, max_poll: float, timeout: float | None, quiet: bool) -> Any:
    from chatstep.batch.api import PollSchedule
    from chatstep.finetune.api import poll_finetune

    last: list[str] = []

    def show(job: FineTuneJob) -> None:
        line = _describe(job)
        if not quiet and (not last or last[-1] != line):
            last.append(line)
            typer.echo(line, err=True)

    with reports_errors():
        try:
            return poll_finetune(
                job_ref,
                poll=PollSchedule(initial=poll, maximum=max(max_poll, poll)),
                timeout=timeout,
                on_progress=show,
            )
        except TimeoutError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_WAIT_TIMEOUT) from None
        except KeyboardInterrupt:
            pass
    typer.echo(
        f"fine-tuning job {job_ref} keeps training: `chatstep finetune wait {job_ref}` waits "
        f"again, `chatstep finetune cancel {job_ref}` cancels it",
        err=True,
    )
    raise typer.Exit(interrupted_exit_code())


def _finish(job: FineTuneJob, as_json: bool) -> None:
    """Print the model (or the job as JSON); exit 10 unless the job succeeded."""
    if as_json:
        print_json(job.to_dict())
    elif job.succeeded and job.fine_tuned_model:
        typer.echo(job.fine_tuned_model)
    if not job.succeeded:
        typer.echo(
            f"fine-tuning job {job.id} ended {job.status}: {job.error_message() or 'no reason'}",
            err=True,
        )
        raise typer.Exit(EXIT_NOT_SUCCEEDED)


def prepare(
    step_file: Annotated[
        Path | None,
        typer.Argument(help="A chat step; leave it out when ROWS already hold chat examples."),
    ] = None,
    rows: RowsOption = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The training file to write (JSONL).")
    ] = Path("train.jsonl"),
    target: Annotated[
        str | None,
        typer.Option("--target", help="The column holding each row's assistant answer."),
    ] = None,
    target_template: Annotated[
        str | None,
        typer.Option(
            "--target-template", help="A template rendered per row as the assistant answer."
        ),
    ] = None,
    validation: Annotated[
        float | None,
        typer.Option(
            "--validation",
            help="Hold out examples for validation: a fraction (0.1) or a count (20).",
        ),
    ] = None,
    validation_output: Annotated[
        Path | None,
        typer.Option("--validation-output", help="Where held-out examples go."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Count tokens for this model (default: the step's)."),
    ] = None,
    max_example_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-example-tokens", help="Token limit per example (default: the model's).", min=1
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the validation split.")] = 0,
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="An input every row gets: name=value; repeatable."),
    ] = None,
    overrides: SetOption = None,
    as_json: AsJSON = False,
) -> None:
    """Render one training example per row, check them all, write the training file."""
    from chatstep.finetune.api import prepare_finetune

    with reports_errors():
        if rows is None:
            from chatstep.errors import ConfigError

            raise ConfigError("--rows", "is missing", "give the rows: --rows labelled.jsonl")
        step = apply_overrides(step_file, overrides) if step_file is not None else None
        constants = parse_inputs(inputs)
        source: Any = rows
        if constants:
            from chatstep.batch.files import read_rows

            source = ({**constants, **row} for row in read_rows(rows))
        held: float | int | None = validation
        if validation is not None and validation >= 1 and float(validation).is_integer():
            held = int(validation)
        data = prepare_finetune(
            step,
            source,
            output,
            target=target,
            target_template=target_template,
            model=model,
            validation=held,
            validation_output=validation_output,
            seed=seed,
            token_limit=max_example_tokens,
        )
    for warning in data.warnings[:20]:
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(data.to_dict())
        return
    typer.echo(str(data.training_file))
    held_out = (
        f", {data.validation_examples} held out in {data.validation_file}"
        if data.validation_file
        else ""
    )
    typer.echo(
        f"{data.examples} training examples{held_out}; {data.tokens:,} tokens an epoch, "
        f"longest {data.max_tokens:,} of {data.token_limit:,} ({data.model})",
        err=True,
    )


def submit(
    training_file: Annotated[Path, typer.Argument(help="The training file (chat JSONL).")],
    model: Annotated[str, typer.Option("--model", "-m", help="The base model to fine-tune.")],
    validation_file: Annotated[
        Path | None, typer.Option("--validation-file", help="A validation file (chat JSONL).")
    ] = None,
    n_epochs: Annotated[
        int | None, typer.Option("--epochs", help="Epochs (default: the provider's auto).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Batch size (default: auto).")
    ] = None,
    learning_rate_multiplier: Annotated[
        float | None,
        typer.Option(
            "--learning-rate-multiplier", help="Learning-rate multiplier (default: auto)."
        ),
    ] = None,
    suffix: Annotated[
        str | None, typer.Option("--suffix", help="Up to 64 characters in the model's name.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="The training seed.")] = None,
    metadata: Annotated[
        list[str] | None, typer.Option("--metadata", help="key=value on the job; repeatable.")
    ] = None,
    new: Annotated[
        bool, typer.Option("--new", help="Create a new job even if these inputs were submitted.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait, then print the fine-tuned model.")
    ] = False,
    poll: Annotated[float, typer.Option("--poll", help="With --wait: first poll delay.")] = 10.0,
    as_json: AsJSON = False,
) -> None:
    """Check the training file, upload it, create the job; print the job id."""
    from chatstep.finetune.api import submit_finetune

    with reports_errors():
        job = submit_finetune(
            training_file,
            model=model,
            validation_file=validation_file,
            n_epochs=n_epochs,
            batch_size=batch_size,
            learning_rate_multiplier=learning_rate_multiplier,
            suffix=suffix,
            seed=seed,
            metadata=_metadata(metadata),
            force=new,
        )
    if wait:
        typer.echo(f"submitted: {_describe(job)}", err=True)
        _finish(_wait(job.id, poll, 120.0, None, quiet=False), as_json)
        return
    if as_json:
        _show(job, as_json)
    else:
        typer.echo(job.id)
    typer.echo(f"submitted: {_describe(job)}", err=True)


def status(job: JobArg, as_json: AsJSON = False) -> None:
    """Ask the API how the job is doing."""
    from chatstep.finetune.api import finetune_status

    with reports_errors():
        current = finetune_status(job)
    _show(current, as_json)


def wait_command(
    job: JobArg,
    poll: Annotated[float, typer.Option("--poll", help="First poll delay, in seconds.")] = 10.0,
    max_poll: Annotated[
        float, typer.Option("--max-poll", help="Longest poll delay (it grows 1.5x a poll).")
    ] = 120.0,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up waiting after this many seconds.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
    as_json: AsJSON = False,
) -> None:
    """Wait for the job to end; print the fine-tuned model; exit 0 only if it succeeded."""
    _finish(_wait(job, poll, max_poll, timeout, quiet), as_json)


def cancel(job: JobArg, as_json: AsJSON = False) -> None:
    """Cancel the job (a job that already ended is shown as it ended)."""
    from chatstep.finetune.api import cancel_finetune

    with reports_errors():
        current = cancel_finetune(job)
    _show(current, as_json)


def events(
    job: JobArg,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="Newest events to show (1-100).")
    ] = 20,
    as_json: AsJSON = False,
) -> None:
    """The job's newest events, oldest first (status changes, training loss)."""
    from datetime import datetime, timezone

    from chatstep.finetune.api import finetune_events

    with reports_errors():
        found = finetune_events(job, limit=limit)
    if as_json:
        print_json(found)
        return
    for event in found:
        stamp = datetime.fromtimestamp(int(event.get("created_at") or 0), tz=timezone.utc)
        level = str(event.get("level") or "info")
        typer.echo(f"{stamp:%Y-%m-%d %H:%M:%S}  {level:<5}  {event.get('message')}")


def list_command(
    limit: Annotated[int, typer.Option("--limit", "-n", help="Newest jobs to show.")] = 20,
    remote: Annotated[
        bool, typer.Option("--remote", help="Ask the provider (default connection) instead.")
    ] = False,
    as_json: AsJSON = False,
) -> None:
    """Jobs in the journal, newest first, as last seen (no API call unless --remote)."""
    from chatstep.finetune.api import list_finetunes

    if remote:
        _list_remote(limit, as_json)
        return
    with reports_errors():
        jobs = list_finetunes(limit=limit)
    if as_json:
        print_json([j.to_dict() for j in jobs])
        return
    for job in jobs:
        typer.echo(_describe(job))


def _list_remote(limit: int, as_json: bool) -> None:
    from chatstep.core.blocking import run_sync
    from chatstep.finetune.api import finetune_connection
    from chatstep.finetune.client import FineTuneClient
    from chatstep.secrets import default_secret_store

    async def fetch() -> list[dict[str, Any]]:
        conn, _ = finetune_connection(default_secret_store(), "gpt-4o-mini")
        async with FineTuneClient(conn) as client:
            return await client.recent(limit=limit)

    with reports_errors():
        jobs = run_sync(fetch())
    if as_json:
        print_json(jobs)
        return
    for job in jobs:
        model = job.get("fine_tuned_model") or "-"
        sys.stdout.write(f"{job.get('id')}  {job.get('status')}  {job.get('model')}  {model}\n")


finetune_app.command("prepare")(prepare)
finetune_app.command("submit")(submit)
finetune_app.command("status")(status)
finetune_app.command("wait")(wait_command)
finetune_app.command("cancel")(cancel)
finetune_app.command("events")(events)
finetune_app.command("list")(list_command)


def register(app: typer.Typer) -> None:
    """Add the ``finetune`` command group to the app."""
    app.add_typer(finetune_app, name="finetune")
