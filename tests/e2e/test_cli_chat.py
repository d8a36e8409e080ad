"""``chatstep chat`` on a real terminal (a pty), piped, and ``chatstep prompt -c/--cid``."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.cli.common import EXIT_CODES
from chatstep.testing import Delay, TestServer

runner = CliRunner()

#: A bound on a hang, not a speed check: a loaded 2-core machine is slow to start Python.
HANG_BOUND = float(os.environ.get("CHAT_HANG_BOUND", "120"))


class Terminal:
    """``python -m chatstep ARGS`` on a pseudo-terminal: its controlling tty, as in a shell."""

    def __init__(self, *args: str) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec at once (the parent has threads)
            # -X faulthandler: a hung chat dumps its threads when the test aborts it.
            argv = [sys.executable, "-X", "faulthandler", "-m", "chatstep", *args]
            os.execv(sys.executable, argv)
        self.pid, self.fd = pid, fd
        self.output = ""
        self._seen = 0

    def expect(self, text: str) -> str:
        """Read until ``text`` appears after the last match; returns what came before it."""
        deadline = time.monotonic() + HANG_BOUND
        while text not in self.output[self._seen :]:
            ready, _, _ = select.select([self.fd], [], [], max(deadline - time.monotonic(), 0))
            assert ready, f"no {text!r} on the terminal; it showed:\n{self.output}"
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            assert chunk, f"the terminal closed before {text!r}; it showed:\n{self.output}"
            self.output += chunk.decode("utf-8", "replace")
        start = self.output.index(text, self._seen)
        before = self.output[self._seen : start]
        self._seen = start + len(text)
        return before

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def exit_code(self) -> int:
        """Drain the terminal until the child exits; its exit code."""
        deadline = time.monotonic() + HANG_BOUND
        while True:
            ready, _, _ = select.select([self.fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                os.kill(self.pid, signal.SIGABRT)  # faulthandler prints where it hangs
                time.sleep(1)
                self.output += os.read(self.fd, 65536).decode("utf-8", "replace")
                raise AssertionError(f"the chat did not exit; it showed:\n{self.output}")
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.output += chunk.decode("utf-8", "replace")
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def test_chat_on_a_terminal_streams_answers_and_ends_on_exit(openai_env: TestServer) -> None:
    term = Terminal("chat", "-s", "Be brief.")
    term.expect("Type /exit")
    term.expect("> ")
    term.type("hello there\n")
    term.expect("echo: hello there")
    term.expect("> ")
    term.type("and again\n")
    term.expect("echo: and again")
    term.expect("> ")
    term.type("/exit\n")
    assert term.exit_code() == 0
    assert "Traceback" not in term.output
    assert openai_env.requests[-1].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "echo: hello there"},
        {"role": "user", "content": "and again"},
    ]
    assert openai_env.requests[-1].body["stream"] is True


def test_ctrl_d_ends_and_the_chat_continues_with_cid(openai_env: TestServer) -> None:
    term = Terminal("chat")
    term.expect("(conversation ")
    cid = term.expect(")")
    term.expect("> ")
    term.type("first\n")
    term.expect("echo: first")
    term.expect("> ")
    term.type("\x04")  # Ctrl-D on an empty line: end of input
    assert term.exit_code() == 0
    assert "Traceback" not in term.output

    again = Terminal("chat", "--cid", cid)
    again.expect("> ")
    again.type("second\n")
    again.expect("echo: second")
    again.expect("> ")
    again.type("/exit\n")
    assert again.exit_code() == 0
    sent = [m["content"] for m in openai_env.requests[-1].body["messages"]]
    assert sent == ["first", "echo: first", "second"]


def test_ctrl_c_stops_an_answer_then_ends_at_the_prompt(openai_env: TestServer) -> None:
    openai_env.enqueue(Delay(30))
    term = Terminal("chat")
    term.expect("> ")
    term.type("slow one\n")
    deadline = time.monotonic() + HANG_BOUND
    while not openai_env.requests:  # the answer is being waited for
        assert time.monotonic() < deadline, term.output
        time.sleep(0.01)
    term.type("\x03")  # Ctrl-C, as the terminal sends it: SIGINT to the chat
    term.expect("answer stopped; this turn was not stored")
    term.expect("> ")
    term.type("quick\n")
    term.expect("echo: quick")
    term.expect("> ")
    term.type("\x03")
    assert term.exit_code() == EXIT_CODES["interrupted"]
    assert "Traceback" not in term.output
    sent = [m["content"] for m in openai_env.requests[-1].body["messages"]]
    assert sent == ["quick"]  # the stopped turn was not kept


def test_sigterm_is_not_a_traceback(openai_env: TestServer) -> None:
    term = Terminal("chat")
    term.expect("> ")
    os.kill(term.pid, signal.SIGTERM)
    assert term.exit_code() == EXIT_CODES["terminated"]
    assert "Traceback" not in term.output


def test_piped_lines_are_turns(openai_env: TestServer) -> None:
    out = runner.invoke(app, ["chat", "-m", "gpt-4.1-mini"], input="one\n\ntwo\n")
    assert out.exit_code == 0, out.output
    assert out.stdout == "echo: one\necho: two\n"
    assert [m["content"] for m in openai_env.requests[-1].body["messages"]] == [
        "one",
        "echo: one",
        "two",
    ]
    listed = runner.invoke(app, ["chat", "--list", "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert row["model"] == "gpt-4.1-mini"
    assert row["messages"] == 4
    plain = runner.invoke(app, ["chat", "--list"])
    assert row["id"] in plain.stdout


def test_chat_from_a_step_with_a_strategy(openai_env: TestServer, tmp_path: Path) -> None:
    step = tmp_path / "tutor.yaml"
    step.write_text(
        "model: gpt-4o-mini\ncontext_window: 70\n"
        "system_message: 'You tutor {{ inputs.subject }}.'\n"
    )
    lines = "".join(f"question {n} about sets and maps\n" for n in range(6))
    args = ["chat", "--step", str(step), "-i", "subject=math", "--strategy", "sliding_window"]
    out = runner.invoke(app, args, input=lines)
    assert out.exit_code == 0, out.output
    sent = openai_env.requests[-1].body["messages"]
    assert sent[0] == {"role": "system", "content": "You tutor math."}
    assert sent[-1]["content"] == "question 5 about sets and maps"
    assert len(sent) < 12  # the oldest turns were left out

    too_long = runner.invoke(app, ["chat", "--step", str(step), "-i", "subject=x"], input=lines)
    assert too_long.exit_code == EXIT_CODES["config"]
    assert "70 tokens" in too_long.stderr
    assert "Traceback" not in too_long.output


def test_prompt_continue_and_cid(openai_env: TestServer) -> None:
    first = runner.invoke(app, ["prompt", "one", "-m", "gpt-4.1-mini", "-s", "S"])
    assert first.exit_code == 0, first.output
    assert first.stdout == "echo: one\n"
    assert len(openai_env.requests[-1].body["messages"]) == 2  # as before: system + prompt

    second = runner.invoke(app, ["prompt", "-c", "two"])
    assert second.exit_code == 0, second.output
    body = openai_env.requests[-1].body
    assert body["model"] == "gpt-4.1-mini"  # the conversation's model
    assert [m["content"] for m in body["messages"]] == ["S", "one", "echo: one", "two"]

    listed = json.loads(runner.invoke(app, ["chat", "--list", "--json"]).stdout)
    cid = listed[0]["id"]
    runner.invoke(app, ["prompt", "other"])  # a new conversation is now the latest
    third = runner.invoke(app, ["prompt", "--cid", cid, "three", "-m", "gpt-4o"])
    assert third.exit_code == 0, third.output
    body = openai_env.requests[-1].body
    assert body["model"] == "gpt-4o"
    assert [m["content"] for m in body["messages"]][-2:] == ["echo: two", "three"]


def test_prompt_continue_refusals(openai_env: TestServer) -> None:
    nothing = runner.invoke(app, ["prompt", "-c", "hi"])
    assert nothing.exit_code == EXIT_CODES["config"]
    assert "no stored conversation yet" in nothing.stderr
    unknown = runner.invoke(app, ["prompt", "--cid", "01NOPE", "hi"])
    assert unknown.exit_code == EXIT_CODES["config"]
    assert "01NOPE" in unknown.stderr
    runner.invoke(app, ["prompt", "hi"])
    with_system = runner.invoke(app, ["prompt", "-c", "-s", "new system", "hi"])
    assert with_system.exit_code == EXIT_CODES["config"]
    with_option = runner.invoke(app, ["prompt", "-c", "hi", "-o", "temperature", "1"])
    assert with_option.exit_code == EXIT_CODES["config"]
    assert len(openai_env.requests) == 1


def test_chat_refuses_options_it_would_ignore(openai_env: TestServer) -> None:
    runner.invoke(app, ["prompt", "hi"])
    for args in (["chat", "-c", "--local"], ["chat", "-c", "-i", "a=1"], ["chat", "--json"]):
        out = runner.invoke(app, args, input="x\n")
        assert out.exit_code == EXIT_CODES["config"], args
        assert "Traceback" not in out.output
    assert len(openai_env.requests) == 1


def test_continuing_with_history_off_says_why_there_is_nothing(
    openai_env: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It said "there is no stored conversation yet" right after `chatstep prompt` had run.
    monkeypatch.setenv("CHATSTEP_HISTORY", "off")
    assert runner.invoke(app, ["prompt", "hi"]).exit_code == 0
    for args in (["prompt", "-c", "again"], ["prompt", "--cid", "01", "again"], ["chat", "-c"]):
        out = runner.invoke(app, args, input="x\n")
        assert out.exit_code == EXIT_CODES["config"], args
        assert "CHATSTEP_HISTORY is off" in out.stderr
    assert len(openai_env.requests) == 1


def test_piped_invalid_utf8_names_the_line(openai_env: TestServer) -> None:
    out = runner.invoke(app, ["chat"], input=b"hello\n\n   \n\xff\xfe bad\n")
    assert out.exit_code == EXIT_CODES["config"], out.output
    assert "line 4" in out.stderr
    assert "UTF-8" in out.stderr
    assert "Traceback" not in out.output
    assert len(openai_env.requests) == 1  # blank lines are skipped, not sent
