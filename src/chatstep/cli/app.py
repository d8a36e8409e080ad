"""The ``chatstep`` command: a thin typer app whose command groups live one per module.

Each command module exposes ``register(app)``. Heavy imports (the OpenAI SDK, llama.cpp) happen
inside commands, never at import time, so ``chatstep --help`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="chatstep",
    help="OpenAI-style chat completions as reliable pipeline steps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per command group; each exposes register(app).
_COMMAND_MODULES: tuple[str, ...] = (
    "run",
    "check",
    "endpoints",
    "map",
    "history",
    "batch",
    "flow",
    "serve",
    "testing_server",
)

for _name in _COMMAND_MODULES:
    if importlib.util.find_spec(f"chatstep.cli.{_name}") is not None:
        importlib.import_module(f"chatstep.cli.{_name}").register(app)


def main() -> None:
    """Console-script entry point."""
    app()
