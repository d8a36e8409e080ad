"""What every command shares: exit codes, one-line errors, input parsing, JSON printing.

Exit codes (documented in the README):

====  =====================================================================
0     success
1     an unexpected error (a bug: please report it)
2     usage error (unknown option, missing argument)
3     configuration: invalid step, template, missing input or secret
4     the API refused the request (400, 401, 403, 404...): retrying will not help
5     the API stayed unavailable after retries (429, 5xx, timeouts, connection)
6     the answer did not have the asked-for shape (invalid JSON, schema mismatch, truncated)
7     a backend is not available here (e.g. the [local] extra is not installed)
8     ``map``: --max-cost stopped the run before every row was sent
9     ``map``, ``batch``: the run finished but some rows failed (their errors are in the output)
10    ``batch``: the batch failed, expired or was cancelled
11    ``batch wait``: --timeout passed before the batch finished
130   interrupted (Ctrl-C)
====  =====================================================================
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from chatstep.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    BackendUnavailableError,
    BudgetExceededError,
    ChatstepError,
    ConfigError,
    InternalServerError,
    OutputError,
    RateLimitError,
    redact,
)

__all__ = [
    "EXIT_CODES",
    "echo_spend",
    "exit_code_for",
    "parse_inputs",
    "print_json",
    "reports_errors",
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
    "interrupted": 130,
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
    if isinstance(exc, RateLimitError | InternalServerError | APITimeoutError | APIConnectionError):
        return EXIT_CODES["api_unavailable"]
    if isinstance(exc, APIError):
        return EXIT_CODES["api_refused"]
    if isinstance(exc, OutputError):
        return EXIT_CODES["output"]
    if isinstance(exc, BackendUnavailableError):
        return EXIT_CODES["backend"]
    return EXIT_CODES["unexpected"]


@contextmanager
def reports_errors() -> Iterator[None]:
    """Print a chatstep error as one line on stderr and exit with its code."""
    try:
        yield
    except ChatstepError as exc:
        typer.echo(f"error: {type(exc).__name__}: {redact(str(exc))}", err=True)
        raise typer.Exit(exit_code_for(exc)) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_CODES["interrupted"]) from None


def parse_inputs(pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` (a string), ``key:=json`` (a JSON value) or ``key=@file`` (file text)."""
    inputs: dict[str, Any] = {}
    for pair in pairs or []:
        if ":=" in pair and pair.index(":=") < pair.index("=") + 1:
            key, raw = pair.split(":=", 1)
            try:
                inputs[key] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"-i {key}", f"is not valid JSON: {exc.msg}") from None
        elif "=" in pair:
            key, value = pair.split("=", 1)
            if value.startswith("@"):
                path = Path(value[1:])
                if not path.is_file():
                    raise ConfigError(f"-i {key}", f"file {str(path)!r} does not exist")
                value = path.read_text(encoding="utf-8")
            inputs[key] = value
        else:
            raise ConfigError(
                f"-i {pair}",
                "is not key=value",
                "write -i name=value, -i name:=JSON or -i name=@file",
            )
        if not key.isidentifier():
            raise ConfigError(f"-i {key}", "is not a valid input name", "use letters, digits and _")
    return inputs


def print_json(value: Any) -> None:
    """Print a JSON-able value, indented."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")
