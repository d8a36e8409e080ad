"""``chatstep prompt``: one call without a step file (``chatstep prompt "TEXT" -m MODEL``)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn

import typer

from chatstep.cli.common import EXIT_CODES, read_value, reports_errors
from chatstep.errors import ConfigError

__all__ = ["DEFAULT_MODEL", "PROMPT_HELP", "register"]

#: The model ``prompt`` asks when ``-m`` is not given (with no key: the embedded model answers).
DEFAULT_MODEL = "gpt-4o-mini"


def _usage_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_CODES["usage"])


def _split_words(words: list[str]) -> tuple[str | None, list[tuple[str, str]]]:
    """TEXT and the ``-o KEY VALUE`` pairs, in order, from the words typer left over.

    Typer cannot declare a repeatable two-word option, so ``prompt`` takes its extra words and
    reads them here. A wrong word is a usage error (exit 2).
    """
    text: str | None = None
    pairs: list[tuple[str, str]] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word in ("-o", "--option"):
            if index + 2 >= len(words):
                _usage_error(f"{word} needs two words: KEY VALUE (-o temperature 0.2)")
            pairs.append((words[index + 1], words[index + 2]))
            index += 3
            continue
        if word.startswith("-") and word != "-":
            _usage_error(f"no such option: {word} (see chatstep prompt --help)")
        if text is not None:
            _usage_error(f"got a second TEXT {word!r}: quote a prompt of several words")
        text = word
        index += 1
    return text, pairs


def _option_value(raw: str) -> Any:
    # A JSON object or list (response_format, logit_bias, stop...) is parsed; anything else
    # stays text and is converted by the step model as YAML text would be ("0.2" -> 0.2).
    if raw[:1] in "{[":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _literal_or_file(value: str, option: str) -> str:
    """``@-`` stdin, ``@file`` a file's text, ``@@text`` the text ``@text``; else ``value``."""
    if value.startswith("@@"):
        return value[1:]
    if value.startswith("@"):
        return read_value(value[1:], option)
    return value


def prompt(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="The model to ask.")] = DEFAULT_MODEL,
    system: Annotated[
        str | None,
        typer.Option("--system", "-s", help="A system message (or @FILE, @-).", show_default=False),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole result as JSON.")
    ] = False,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print text as it is generated.")
    ] = False,
    local: Annotated[bool, typer.Option("--local", help="Use the embedded local model.")] = False,
) -> None:
    """Send one prompt without a step file (see PROMPT_HELP)."""
    from chatstep.cli.run import run_and_print
    from chatstep.steps.definitions import ChatCompletion, Step
    from chatstep.steps.overrides import override_step

    text, options = _split_words(list(ctx.args))
    with reports_errors():
        if text is None or text in ("-", "@-"):
            if text is None and sys.stdin.isatty():
                typer.echo(
                    "error: give the prompt as TEXT, or pipe it in (chatstep prompt - < file)",
                    err=True,
                )
                raise typer.Exit(EXIT_CODES["usage"])
            text = read_value("-", "TEXT")
        else:
            text = _literal_or_file(text, "TEXT")
        if not text.strip():
            # An empty prompt is still a billed call that can only answer nothing useful.
            raise ConfigError(
                "TEXT", "the prompt is empty", "give the prompt as TEXT, or pipe non-empty text in"
            )
        inputs: dict[str, Any] = {"text": text}
        # The texts are inputs, not templates: braces in them are sent as written.
        fields: dict[str, Any] = {"model": model, "prompt": "{{ inputs.text }}"}
        if system is not None:
            inputs["system"] = _literal_or_file(system, "--system")
            fields["system_message"] = "{{ inputs.system }}"
        if local:
            fields["backend"] = "local"
        step: Step = ChatCompletion.model_validate(fields)
        changes = {}
        for key, raw in options:
            changes[key] = _option_value(raw)
        step = override_step(step, changes, label="-o")
        run_and_print(step, inputs, as_json=as_json, stream=stream)


PROMPT_HELP = (
    'Send one prompt without a step file: prompt "TEXT" [-m MODEL] [-s SYSTEM] '
    "[-o KEY VALUE]...\n\n"
    "TEXT: '-' or '@-' (or no TEXT, when piped) reads stdin, '@FILE' a file, '@@...' is a "
    "prompt that starts with @.\n\n"
    "-o KEY VALUE (repeatable) sets a step field, checked as in a step file (a bad one exits 3 "
    "naming it): -o temperature 0.2, -o max_tokens 100, "
    '-o response_format \'{"type": "json_object"}\'.\n\n'
    "Prints the answer as run does."
)


def register(app: typer.Typer) -> None:
    """Add ``prompt`` to the app."""
    app.command(
        "prompt",
        help=PROMPT_HELP,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(prompt)
