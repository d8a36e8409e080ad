"""A known fake key must appear in no exception, log record, result, repr, CLI output or file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatstep import AsyncRunner, ChatstepError, run_step
from chatstep.cli.app import app
from chatstep.testing import Fail, TestServer

KEY = "sk-proj-LEAKCHECK0123456789abcdefghijklmnop"


def _files_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_key_never_leaks(
    openai_server: TestServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    step = {"id": "s", "model": "gpt-4o-mini", "prompt": "x", "cache": True}

    # A failing call whose error body quotes the key, as OpenAI's 401 does.
    openai_server.enqueue(Fail(401, message=f"Incorrect API key provided: {KEY}."))
    with pytest.raises(ChatstepError) as info:
        run_step(step)
    texts = [str(info.value), repr(info.value), repr(info.value.args)]

    # A successful call: the result, its dict and repr.
    ok = run_step(step)
    texts += [repr(ok), json.dumps(ok.to_dict(), default=str), repr(ok.request)]

    # A key given in the step itself.
    texts.append(repr(AsyncRunner().prepare({**step, "api_key": KEY})[0]))

    # CLI output of a failing run.
    step_path = tmp_path / "s.yaml"
    step_path.write_text("model: gpt-4o-mini\nprompt: x\n")
    openai_server.enqueue(Fail(401, message=f"Incorrect API key provided: {KEY}."))
    out = CliRunner().invoke(app, ["run", str(step_path)])
    assert out.exit_code != 0
    texts += [out.stdout, out.stderr]

    texts += [r.getMessage() for r in caplog.records]
    texts += [str(r.args) for r in caplog.records]
    for text in texts:
        assert KEY not in text
        assert KEY[10:30] not in text

    # Nothing on disk either: history, cache, anything under the user dir.
    home = Path(str(tmp_path / "chatstep-home"))
    assert home.exists()
    assert KEY.encode() not in _files_under(home)
