"""``chatstep chat``: a conversation in the terminal, stored so it can be continued later."""

from __future__ import annotations

import os
import select
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chatstep.cli.common import EXIT_CODES, InputOption, parse_inputs, print_json, reports_errors

if TYPE_CHECKING:
    from chatstep.core.sync_conversation import Conversation

__all__ = ["CHAT_HELP", "STRATEGY_HELP", "open_conversation", "register"]

#: Typed alone on a line, these end an interactive chat.
EXIT_WORDS = frozenset({"/exit", "/quit"})

STRATEGY_HELP = (
    "When the conversation outgrows the model's context window: sliding_window (leave out the "
    "oldest turns) or summarize (replace them by a summary). Without one, an over-long "
    "conversation is an error (exit 3), never cut silently. Stored with the conversation."
)

CHAT_HELP = (
    "Chat with a model; the conversation is stored in the history database and can be "
    "continued (--cid ID, -c, or chatstep prompt -c).\n\n"
    "On a terminal: type a message, the answer streams back; /exit or Ctrl-D ends, Ctrl-C "
    "stops an answer (the turn is not stored) or, at the prompt, ends. With stdin piped, "
    "every line is one turn and each answer is printed on its own line.\n\n"
    "--list prints the stored conversations, newest first (--json: as JSON)."
)


def open_conversation(
    *,
    model: str | None,
    system: str | None,
    step_file: Path | None,
    inputs: dict[str, Any],
    cid: str | None,
    continue_latest: bool,
    strategy: str | None,
    local: bool,
    default_model: str,
) -> Conversation:
    """A new conversation, or the one ``cid`` / ``continue_latest`` names (shared with prompt).

    Raises ConfigError for an unknown id, or when there is no conversation to continue.
    """
    from chatstep.core.sync_conversation import Conversation
    from chatstep.errors import ConfigError

    if cid is not None or continue_latest:
        if system is not None or step_file is not None or inputs or local:
            raise ConfigError(
                "--system/--step/--input/--local",
                "a continued conversation keeps the system message and step it was started with",
                "drop them, or start a new conversation without -c/--cid",
            )
        from chatstep.storage.history import history_enabled

        if not history_enabled():
            raise ConfigError(
                "--continue/--cid",
                "CHATSTEP_HISTORY is off, so conversations live only as long as one command "
                "and there is none from an earlier one to continue",
                "unset CHATSTEP_HISTORY (or set it to on) before starting the conversation",
            )
        if cid is not None:
            return Conversation.load(cid, model=model, strategy=strategy)
        latest = Conversation.latest(model=model, strategy=strategy)
        if latest is None:
            raise ConfigError(
                "--continue", "there is no stored conversation yet", "start one without -c"
            )
        return latest
    step: Any = step_file
    if step is None:
        step = {"model": model or default_model, "prompt": "{{ inputs.text }}"}
    if local:
        from chatstep.steps.loading import load_step

        step = load_step(step).model_copy(update={"backend": "local"})
    return Conversation(
        model if step_file is not None else None,
        system=system,
        step=step,
        inputs=inputs,
        strategy=strategy,
    )


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _answer(conversation: Conversation, text: str, *, stream: bool) -> None:
    from chatstep.core.streaming import Delta

    def on_delta(delta: Delta) -> None:
        if delta.choice == 0 and delta.content:
            _write(delta.content)

    if stream:
        result = conversation.send(text, on_delta=on_delta)
        _write("\n")
    else:
        result = conversation.send(text)
        _write((result.content or "") + "\n")
    if result.tool_calls:
        calls: list[Any] = [{"name": c.name, "arguments": c.arguments} for c in result.tool_calls]
        print_json(calls)


def _read_turn(prompt: str) -> str:
    """One line from the terminal; EOFError on Ctrl-D; Ctrl-C raises KeyboardInterrupt.

    ``input()`` can miss a Ctrl-C that lands between writing the prompt and starting to read,
    and then waits for a line forever; here the signal also writes to a wakeup pipe that the
    wait watches, so it is never missed.
    """
    if os.name == "nt":
        return input(prompt)
    _write(prompt)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    previous = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    try:
        while True:
            # A signal's handler runs as soon as select returns, raising KeyboardInterrupt.
            ready, _, _ = select.select([sys.stdin, wake_read], [], [])
            if sys.stdin in ready:
                break
            os.read(wake_read, 512)
    finally:
        signal.set_wakeup_fd(previous)
        os.close(wake_read)
        os.close(wake_write)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\r\n")


def _interactive(conversation: Conversation) -> None:
    from chatstep.cli.common import exit_code_for, interrupted_exit_code
    from chatstep.errors import ChatstepError, redact

    typer.echo(
        f"Chatting with {conversation.model} (conversation {conversation.id}). "
        "Type /exit or press Ctrl-D to end.",
        err=True,
    )
    while True:
        try:
            text = _read_turn("> ")
        except EOFError:
            typer.echo("", err=True)
            return
        except KeyboardInterrupt:
            typer.echo("", err=True)
            raise typer.Exit(interrupted_exit_code()) from None
        if text.strip() in EXIT_WORDS:
            return
        if not text.strip():
            continue
        try:
            _answer(conversation, text, stream=True)
        except KeyboardInterrupt:
            if interrupted_exit_code() != EXIT_CODES["interrupted"]:
                raise  # SIGTERM: end, as every command does
            typer.echo("\n(answer stopped; this turn was not stored)", err=True)
        except ChatstepError as exc:
            # One failed turn does not end the chat; the turn was not stored.
            code = exit_code_for(exc)
            typer.echo(f"error: {type(exc).__name__}: {redact(str(exc))} (exit {code})", err=True)


def _stdin_lines() -> Iterator[str]:
    """Piped stdin, line by line, decoded as UTF-8 (ConfigError naming the line if not)."""
    from chatstep.errors import ConfigError

    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:  # a text stream without bytes underneath
        yield from sys.stdin
        return
    for number, data in enumerate(raw, start=1):
        try:
            yield data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                "stdin",
                f"line {number} is not valid UTF-8 (byte {exc.start + 1}: "
                f"{data[exc.start : exc.start + 1]!r})",
                "pipe UTF-8 text (iconv -t UTF-8 converts it); the turns before it were stored",
            ) from None


def _piped(conversation: Conversation) -> None:
    for line in _stdin_lines():
        text = line.rstrip("\r\n")
        if text.strip() in EXIT_WORDS:
            return
        if text.strip():
            _answer(conversation, text, stream=False)


def _list(as_json: bool) -> None:
    from chatstep.storage.conversations import ConversationStore

    store = ConversationStore.default()
    rows = store.recent(limit=50)
    if as_json:
        print_json(
            [
                {
                    "id": r.id,
                    "name": r.name,
                    "model": r.model,
                    "created": r.created,
                    "updated": r.updated,
                    "messages": r.message_count,
                }
                for r in rows
            ]
        )
        return
    for r in rows:
        name = f"  {r.name}" if r.name else ""
        typer.echo(f"{r.id}  {r.updated[:19]}  {r.model}  {r.message_count} messages{name}")


def chat(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="The model (default gpt-4o-mini, or the step's).",
            show_default=False,
        ),
    ] = None,
    system: Annotated[
        str | None,
        typer.Option(
            "--system", "-s", help="A system message for a new conversation.", show_default=False
        ),
    ] = None,
    step_file: Annotated[
        Path | None,
        typer.Option(
            "--step",
            help="A chat step file: model, parameters, system message; its "
            "prompt, if any, wraps each turn as {{ inputs.text }}.",
            show_default=False,
        ),
    ] = None,
    inputs: InputOption = None,
    cid: Annotated[
        str | None,
        typer.Option(
            "--cid",
            help="Continue the conversation with this id (or id prefix).",
            show_default=False,
        ),
    ] = None,
    continue_latest: Annotated[
        bool, typer.Option("--continue", "-c", help="Continue the latest conversation.")
    ] = False,
    strategy: Annotated[
        str | None, typer.Option("--strategy", help=STRATEGY_HELP, show_default=False)
    ] = None,
    local: Annotated[bool, typer.Option("--local", help="Use the embedded local model.")] = False,
    list_them: Annotated[
        bool, typer.Option("--list", help="List the stored conversations and exit.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --list: print JSON.")] = False,
) -> None:
    """Chat with a model in the terminal (see CHAT_HELP)."""
    from chatstep.cli.prompt import DEFAULT_MODEL
    from chatstep.errors import ConfigError

    with reports_errors():
        if list_them:
            _list(as_json)
            return
        if as_json:
            raise ConfigError("--json", "only goes with --list", "add --list, or drop --json")
        conversation = open_conversation(
            model=model,
            system=system,
            step_file=step_file,
            inputs=parse_inputs(inputs),
            cid=cid,
            continue_latest=continue_latest,
            strategy=strategy,
            local=local,
            default_model=DEFAULT_MODEL,
        )
        with conversation:
            if sys.stdin.isatty():
                _interactive(conversation)
            else:
                _piped(conversation)


def register(app: typer.Typer) -> None:
    """Add ``chat`` to the app."""
    app.command("chat", help=CHAT_HELP)(chat)
