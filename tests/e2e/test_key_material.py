"""No key material anywhere: not the key, not its first or last 8 characters, not its masked form.

An endpoint that echoes the key in a 200 answer, and a 401 that masks it as OpenAI does
(``sk-host***********3Io5``), go through run, map, batch and history; then every file under the
test's directory (CHATSTEP_HOME, outputs, journals, batch files), the CLI's stdout and stderr and
the DEBUG log records are searched.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatstep import APIError, AuthenticationError, run_step
from chatstep.backends.log_redaction import install_log_redaction
from chatstep.cli.app import app
from chatstep.errors import redact, redact_secrets, register_secret
from chatstep.testing import TestServer

KEY = "sk-hostileZ9Q7Lm2Xv4Pq8Rt6Wy1Ue3Io5"
MASKED = f"{KEY[:7]}{'*' * (len(KEY) - 11)}{KEY[-4:]}"
FRAGMENTS = (KEY, KEY[:8], KEY[-8:], MASKED, "*" + KEY[-4:], KEY[:7] + "*")

runner = CliRunner()


def _leaks(text: str) -> list[str]:
    return [fragment for fragment in FRAGMENTS if fragment in text]


def _files_with_leaks(root: Path) -> dict[str, list[str]]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            leaks = _leaks(path.read_bytes().decode("utf-8", "replace"))
            if leaks:
                found[str(path)] = leaks
    return found


@pytest.fixture
def keyed_server(openai_server: TestServer, monkeypatch: pytest.MonkeyPatch) -> TestServer:
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return openai_server


def test_redact_masked_shapes_and_fragments() -> None:
    register_secret(KEY)
    assert redact(f"Incorrect API key provided: {MASKED}. See") == (
        "Incorrect API key provided: ***. See"
    )
    assert redact("key sk-...6789 and sk-abc1************6789") == "key *** and ***"
    # Any 4+ character end of a registered secret next to a mask, even without "sk-".
    assert redact(f"key {KEY[3:9]}…{KEY[-5:]}") == "key ***"
    assert redact(f"tail ...{KEY[-4:]}") == "tail ***"
    # Ordinary text with masks stays.
    assert redact("Loading... done; 2**10 is **bold**") == "Loading... done; 2**10 is **bold**"
    # Answers keep key-shaped text that is not a registered secret.
    assert redact_secrets("pip install sk-learn-tutorials") == "pip install sk-learn-tutorials"
    assert redact_secrets(f"echo {KEY}") == "echo ***"


def test_api_error_body_is_redacted_before_it_is_stored() -> None:
    register_secret(KEY)
    error = APIError("boom", body={"error": {"message": f"bad key {KEY}", "extra": [MASKED]}})
    assert not _leaks(repr(vars(error)))
    assert not _leaks(repr(pickle.dumps(error)))
    assert error.body == {"error": {"message": "bad key ***", "extra": ["***"]}}


def test_debug_logs_of_http_libraries_never_show_credentials(
    keyed_server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    run_step({"model": "gpt-4o-mini", "prompt": "hi"})
    # Older SDK versions log the request options with their headers: the filter catches those.
    install_log_redaction()
    logging.getLogger("openai._base_client").debug(
        "Request options: %s", {"headers": {"Authorization": f"Bearer {KEY}", "X-A": "b"}}
    )
    logging.getLogger("httpcore.http11").debug("send_request_headers %s", f"api-key: {KEY}")
    messages = [record.getMessage() for record in caplog.records]
    assert any(name.startswith(("httpx", "httpcore")) for name in (r.name for r in caplog.records))
    assert all(not _leaks(message) for message in messages), messages
    assert any("Request options" in message for message in messages)


def test_no_key_material_after_run_map_batch_and_history(
    keyed_server: TestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    step = tmp_path / "s.yaml"
    step.write_text("model: gpt-4o-mini\nprompt: 'Say {{ inputs.n }}'\ncache: true\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"n": {n}}}\n' for n in range(4)))
    outputs: list[str] = []

    def invoke(*args: str) -> int:
        result = runner.invoke(app, list(args))
        outputs.extend([result.stdout, result.stderr])
        return result.exit_code

    # A 200 that echoes the key, through run (cached), map and batch.
    keyed_server.configure(fault_rate=1.0, faults=("echo_key",))
    assert invoke("run", str(step), "-i", "n=1") == 0
    assert invoke("run", str(step), "-i", "n=1", "--json") == 0
    assert invoke("map", str(step), "--rows", str(rows), "-o", str(tmp_path / "out.jsonl")) == 0
    assert "***" in (tmp_path / "out.jsonl").read_text()
    batch_out = tmp_path / "batch.jsonl"
    assert (
        invoke("batch", "submit", str(step), "--rows", str(rows), "--wait", "--poll", "0.05") == 0
    )
    assert invoke("batch", "results", "--output", str(batch_out), _last_job(outputs)) == 0

    # A 401 that masks the key, as OpenAI's does.
    keyed_server.configure(faults=("masked_key_401",))
    rows.write_text("".join(f'{{"n": {n}}}\n' for n in range(10, 14)))
    assert invoke("run", str(step), "-i", "n=20") != 0
    # (map is left out here: a map whose every row gets a 401 hangs at shutdown, a mapping bug
    # reported separately.)
    assert (
        invoke("batch", "submit", str(step), "--rows", str(rows), "--wait", "--poll", "0.05") != 0
    )
    with pytest.raises(AuthenticationError) as info:
        run_step({"model": "gpt-4o-mini", "prompt": "x"})
    outputs += [str(info.value), repr(vars(info.value)), repr(pickle.dumps(info.value))]

    assert invoke("history", "--json", "-n", "100") == 0
    assert invoke("history", "--errors") == 0
    keyed_server.reset()

    assert _files_with_leaks(tmp_path) == {}
    assert [text for text in outputs if _leaks(text)] == []
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if _leaks(m)] == []


def _last_job(outputs: list[str]) -> str:
    for text in reversed(outputs):
        for word in text.split():
            if word.startswith("csb_"):
                return word
    raise AssertionError(f"no batch job id in {outputs}")
