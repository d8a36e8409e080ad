"""``chatstep prompt``: one call without a step file (``chatstep prompt "TEXT" -m MODEL``)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from chatstep.cli.common import EXIT_CODES, read_value, reports_errors
from chatstep.errors import ConfigError

if TYPE_CHECKING:
    from chatstep.core.sync_conversation import Conversation

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
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help=f"The model to ask (default {DEFAULT_MODEL}; with -c/--cid the conversation's).",
            show_default=False,
        ),
    ] = None,
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
    continue_latest: Annotated[
        bool, typer.Option("--continue", "-c", help="Continue the latest conversation.")
    ] = False,
    cid: Annotated[
        str | None,
        typer.Option("--cid", help="Continue the conversation with this id.", show_default=False),
    ] = None,
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
        if continue_latest or cid is not None:
            if options or local:
                raise ConfigError(
                    "-o/--local",
                    "a continued conversation keeps the settings it was started with",
                    "drop them, or start a new conversation without -c/--cid",
                )
            _continue(text, model, system, cid, continue_latest, as_json=as_json, stream=stream)
            return
        inputs: dict[str, Any] = {"text": text}
        # The texts are inputs, not templates: braces in them are sent as written.
        fields: dict[str, Any] = {"model": model or DEFAULT_MODEL, "prompt": "{{ inputs.text }}"}
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
        if isinstance(step, ChatCompletion) and step.n in (None, 1):
            # Stored as a conversation, so `prompt -c` can continue it.
            from chatstep.core.sync_conversation import Conversation

            del inputs["text"]
            with Conversation(step=step, inputs=inputs) as conversation:
                _print_turn(conversation, text, as_json=as_json, stream=stream)
            return
        run_and_print(step, inputs, as_json=as_json, stream=stream)


def _print_turn(conversation: Conversation, text: str, *, as_json: bool, stream: bool) -> None:
    """Send one turn and print the answer as ``run`` does (spend on stderr)."""
    from chatstep.cli.common import echo_spend
    from chatstep.cli.run import print_result
    from chatstep.core.streaming import Delta

    def on_delta(delta: Delta) -> None:
        if delta.choice == 0 and delta.content:
            sys.stdout.write(delta.content)
            sys.stdout.flush()

    printing = stream and not as_json
    result = conversation.send(
        text, stream=True if stream else None, on_delta=on_delta if printing else None
    )
    print_result(result, as_json=as_json, streamed=printing)
    if not as_json:
        echo_spend(result.usage.get("total_tokens"), result.cost)


def _continue(
    text: str,
    model: str | None,
    system: str | None,
    cid: str | None,
    continue_latest: bool,
    *,
    as_json: bool,
    stream: bool,
) -> None:
    from chatstep.cli.chat import open_conversation

    conversation = open_conversation(
        model=model,
        system=system,
        step_file=None,
        inputs={},
        cid=cid,
        continue_latest=continue_latest,
        strategy=None,
        local=False,
        default_model=DEFAULT_MODEL,
    )
    with conversation:
        _print_turn(conversation, text, as_json=as_json, stream=stream)


PROMPT_HELP = (
    'Send one prompt without a step file: prompt "TEXT" [-m MODEL] [-s SYSTEM] '
    "[-o KEY VALUE]...\n\n"
    "TEXT: '-' or '@-' (or no TEXT, when piped) reads stdin, '@FILE' a file, '@@...' is a "
    "prompt that starts with @.\n\n"
    "-o KEY VALUE (repeatable) sets a step field, checked as in a step file (a bad one exits 3 "
    "naming it): -o temperature 0.2, -o max_tokens 100, "
    '-o response_format \'{"type": "json_object"}\'.\n\n'
    "Prints the answer as run does. Each prompt (one choice: not -o n 2+) is stored as a "
    "conversation: -c/--continue "
    "sends TEXT as its next turn (the latest one), --cid ID a given one (chatstep chat --list "
    "lists them); the model stays the conversation's unless -m is given."
)


def register(app: typer.Typer) -> None:
    """Add ``prompt`` to the app."""
    app.command(
        "prompt",
        help=PROMPT_HELP,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(prompt)
