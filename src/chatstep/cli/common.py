"""What every command shares: exit codes, one-line errors, input parsing, JSON printing.

Exit codes (documented in the README):

====  =====================================================================
0     success
1     an unexpected error (a bug: please report it)
2     usage error (unknown option, missing argument)
3     configuration: invalid step, template, missing input or secret
4     the API refused the request (400, 401, 403, 404...): retrying will not help
5     the API stayed unavailable after retries (429, 5xx, timeouts, connection, invalid answers)
6     the answer did not have the asked-for shape (invalid JSON, schema mismatch, truncated)
7     a backend is not available here (e.g. the [local] extra is not installed)
8     a cost cap (``map --max-cost``, ``max_cost``) stopped the run before every request was sent
9     ``map``, ``batch``: the run finished but some rows failed (their errors are in the output)
10    ``batch``: the batch failed, expired or was cancelled
11    ``batch wait``: --timeout passed before the batch finished
12    storage: an output, journal or lock file cannot be written (read-only, full disk, in use)
130   interrupted (Ctrl-C)
143   terminated (SIGTERM, how orchestrators stop a task): handled like Ctrl-C
====  =====================================================================
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chatstep.errors import (
    APIConnectionError,
    APIError,
    BackendUnavailableError,
    BudgetExceededError,
    ChatstepError,
    ConfigError,
    InternalServerError,
    InvalidResponseError,
    OutputError,
    RateLimitError,
    StorageError,
    redact,
)

if TYPE_CHECKING:
    from chatstep.steps.definitions import Step
    from chatstep.steps.loading import StepSource

__all__ = [
    "EXIT_CODES",
    "MAX_VALUE_BYTES",
    "InputOption",
    "RowsOption",
    "SetOption",
    "apply_overrides",
    "echo_spend",
    "exit_code_for",
    "forget_stdin",
    "handles_sigterm",
    "interrupted_exit_code",
    "parse_assignments",
    "parse_inputs",
    "parse_overrides",
    "print_json",
    "read_value",
    "reports_errors",
    "require_rows",
    "spend_line",
]

EXIT_CODES = {
    "ok": 0,
    "unexpected": 1,
    "usage": 2,
    "config": 3,
    "api_refused": 4,
    "api_unavailable": 5,
    "output": 6,
    "backend": 7,
    "budget": 8,
    "rows_failed": 9,
    "batch_not_completed": 10,
    "wait_timeout": 11,
    "storage": 12,
    "interrupted": 130,
    "terminated": 143,
}


def spend_line(tokens: Any, cost: float | None) -> str | None:
    """The end-of-run total printed on stderr: ``spent: 1,234 tokens, $0.000123``.

    None when nothing was billed (no tokens, or a free run: embedded model, cache hits).
    """
    if cost == 0.0 or (cost is None and not tokens):
        return None
    count = f"{int(tokens):,} tokens" if isinstance(tokens, int | float) else "? tokens"
    money = f"${cost:.6f}" if cost is not None else "cost unknown (the model has no price)"
    return f"spent: {count}, {money}"


def echo_spend(tokens: Any, cost: float | None) -> None:
    """Print :func:`spend_line` on stderr, if there is one."""
    line = spend_line(tokens, cost)
    if line is not None:
        typer.echo(line, err=True)


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an error."""
    if isinstance(exc, BudgetExceededError):
        return EXIT_CODES["budget"]
    if isinstance(exc, ConfigError):
        return EXIT_CODES["config"]
    # APITimeoutError is an APIConnectionError, as in the openai SDK.
    unavailable = RateLimitError | InternalServerError | APIConnectionError | InvalidResponseError
    if isinstance(exc, unavailable):
        return EXIT_CODES["api_unavailable"]
    if isinstance(exc, APIError):
        return EXIT_CODES["api_refused"]
    if isinstance(exc, OutputError):
        return EXIT_CODES["output"]
    if isinstance(exc, BackendUnavailableError):
        return EXIT_CODES["backend"]
    if isinstance(exc, BudgetExceededError):
        return EXIT_CODES["budget"]
    if isinstance(exc, StorageError):
        return EXIT_CODES["storage"]
    return EXIT_CODES["unexpected"]


_terminated = threading.Event()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM takes Ctrl-C's path: inside ``asyncio.run`` the main task is cancelled (so
    ``finally`` blocks flush the history and close the journal), elsewhere KeyboardInterrupt."""
    _terminated.set()
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)  # asyncio's cancels the main task; the default raises
        return
    raise KeyboardInterrupt


def interrupted_exit_code() -> int:
    """143 when SIGTERM stopped the command, 130 for Ctrl-C."""
    return EXIT_CODES["terminated"] if _terminated.is_set() else EXIT_CODES["interrupted"]


@contextmanager
def handles_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM is handled like Ctrl-C (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def reports_errors() -> Iterator[None]:
    """Print a chatstep error as one line on stderr and exit with its code; SIGTERM and
    Ctrl-C stop the block the same way (exit 143 and 130)."""
    try:
        with handles_sigterm():
            yield
    except ChatstepError as exc:
        typer.echo(f"error: {type(exc).__name__}: {redact(str(exc))}", err=True)
        raise typer.Exit(exit_code_for(exc)) from None
    except KeyboardInterrupt:
        code = interrupted_exit_code()
        typer.echo("terminated" if code == EXIT_CODES["terminated"] else "interrupted", err=True)
        raise typer.Exit(code) from None


#: Largest value read from a file or stdin for one ``@`` option, in characters.
MAX_VALUE_BYTES = 64 * 1024 * 1024


class _Stdin:
    """Stdin is read once; the option that read it is remembered for a clear second-use error."""

    read_by: str | None = None


def forget_stdin() -> None:
    """Start a new command: nothing has read stdin yet."""
    _Stdin.read_by = None


InputOption = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        "-i",
        help="An input value: name=value, name:=JSON, name=@file or name=@- (stdin); repeatable.",
    ),
]
RowsOption = Annotated[
    Path | None,
    typer.Option(
        "--rows",
        "-r",
        help="The rows (required): a .jsonl, .csv or .parquet file; each row is the inputs.",
        show_default=False,
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a step field: field=value, field:=JSON, field=@file or field=@-; "
        "dotted paths reach nested fields (response_format.type=json_object); repeatable.",
    ),
]


def read_value(source: str, option: str) -> str:
    """The text ``@file`` or ``@-`` (stdin) names, at most :data:`MAX_VALUE_BYTES`."""
    if source == "-":
        if _Stdin.read_by is not None:
            raise ConfigError(
                option,
                f"stdin was already read by {_Stdin.read_by}",
                "read stdin once; give the other values as @file",
            )
        _Stdin.read_by = option
        data = sys.stdin.read(MAX_VALUE_BYTES + 1)
        where = "stdin"
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(option, f"file {source!r} does not exist")
        with path.open(encoding="utf-8") as file:
            data = file.read(MAX_VALUE_BYTES + 1)
        where = repr(source)
    if len(data) > MAX_VALUE_BYTES:
        raise ConfigError(option, f"{where} holds more than {MAX_VALUE_BYTES} characters")
    return data


def parse_assignments(
    pairs: list[str] | None, option: str, *, dotted: bool = False
) -> dict[str, Any]:
    """``name=value`` (a string), ``name:=JSON`` (a JSON value), ``name=@file`` (the file's
    text) or ``name=@-`` (stdin's text), as given to ``option`` (``-i``, ``--set``).

    ``dotted`` allows ``a.b`` names (field paths). Raises ConfigError naming the option.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if ":=" in pair and pair.index(":=") < pair.index("=") + 1:
            key, raw = pair.split(":=", 1)
            try:
                out[key] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{option} {key}", f"is not valid JSON: {exc.msg}") from None
        elif "=" in pair:
            key, value = pair.split("=", 1)
            if value.startswith("@"):
                value = read_value(value[1:], f"{option} {key}")
            out[key] = value
        elif option == "-i" and Path(pair).is_file():
            raise ConfigError(
                f"-i {pair}",
                "is a file, not NAME=VALUE: -i gives one input value",
                "give a file of rows to map or batch submit with --rows FILE; pass a file's "
                "text as an input with -i NAME=@FILE",
            )
        else:
            raise ConfigError(
                f"{option} {pair}",
                "is not name=value",
                f"write {option} name=value, {option} name:=JSON or {option} name=@file",
            )
        # Field names are identifiers; a dotted path's first name may be a flow task id (a-b).
        names = key.split(".") if dotted else [key]
        if not all(
            name.replace("-", "_").isidentifier() if dotted else name.isidentifier()
            for name in names
        ):
            raise ConfigError(
                f"{option} {key}",
                "is not a valid field path" if dotted else "is not a valid input name",
                "use letters, digits and _" + (", dots between fields" if dotted else ""),
            )
    return out


def parse_inputs(pairs: list[str] | None) -> dict[str, Any]:
    """``-i`` values: ``name=value``, ``name:=JSON``, ``name=@file`` or ``name=@-`` (stdin)."""
    return parse_assignments(pairs, "-i")


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``--set`` values: ``field.path=value``, ``field.path:=JSON``, ``=@file`` or ``=@-``."""
    return parse_assignments(pairs, "--set", dotted=True)


def apply_overrides(step: StepSource, pairs: list[str] | None) -> Step:
    """``step`` (a Step or a step file) loaded, with ``--set`` overrides applied and validated."""
    from chatstep.steps.loading import load_step
    from chatstep.steps.overrides import override_step

    loaded = load_step(step)
    return override_step(loaded, parse_overrides(pairs)) if pairs else loaded


def require_rows(rows: Path | None, inputs: list[str] | None) -> Path:
    """The ``--rows`` file of ``map`` and ``batch submit``; without one, a file given to ``-i``
    gets the error that points at ``--rows`` (exit 3), else a usage error (exit 2)."""
    if rows is not None:
        return rows
    parse_inputs(inputs)
    typer.echo("error: missing --rows FILE: the rows to run the step over", err=True)
    raise typer.Exit(EXIT_CODES["usage"])


def print_json(value: Any) -> None:
    """Print a JSON-able value, indented."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")
