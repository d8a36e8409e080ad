"""The ``chatstep`` command: a thin typer app whose command groups live one per module.

Each command module exposes ``register(app)``. Heavy imports (the OpenAI SDK, llama.cpp) happen
inside commands, never at import time, so ``chatstep --help`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Annotated

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="chatstep",
    help="OpenAI-style chat completions as reliable pipeline steps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click hands these to every subcommand's context, so `-h` works on every command.
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from chatstep import __version__

        typer.echo(f"chatstep {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Print chatstep's version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """OpenAI-style chat completions as reliable pipeline steps."""
    from chatstep.cli.common import forget_stdin

    forget_stdin()


# One module per command group; each exposes register(app).
_COMMAND_MODULES: tuple[str, ...] = (
    "run",
    "prompt",
    "chat",
    "check",
    "endpoints",
    "map",
    "history",
    "batch",
    "finetune",
    "flow",
    "serve",
    "testing_server",
    "ui",
    "index",
)

for _name in _COMMAND_MODULES:
    if importlib.util.find_spec(f"chatstep.cli.{_name}") is not None:
        importlib.import_module(f"chatstep.cli.{_name}").register(app)


def main() -> None:
    """Console-script entry point."""
    app()
