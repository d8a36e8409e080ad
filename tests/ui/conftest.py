"""Fixtures for ``chatstep ui``: a history and journals filled by a real map and batch run
against the test server, ``chatstep ui`` running as a subprocess, and Debian's Chromium driven by
Playwright.

Where the ``[ui]`` extra, Playwright or Chromium is missing the browser tests skip; with
``CHATSTEP_UI_REQUIRED=1`` (set by ``ci/integration.sh ui``) they fail instead, so the UI venv
can never pass by skipping everything.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from chatstep.testing import Fail, Respond, TestServer

REQUIRED = os.environ.get("CHATSTEP_UI_REQUIRED", "") == "1"
FAKE_KEY = "sk-test-ui-FAKEKEY-7f3a9c1e5b2d8a4f"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROMPTS = [f"Summarize review {n}: the paperclip{'s' * n} held" for n in range(6)]
SEARCHED = "paperclipsss"  # only row 3's prompt has this word
FAILED_MESSAGE = "row one is not a review"


def need(module: str) -> ModuleType:
    """Import ``module``; skip the test without it (fail when the UI tests are required)."""
    if REQUIRED:
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"needs {module} (the [ui] extra / playwright)")


def chromium_path() -> str:
    """Debian's Chromium (Playwright's own browser download cannot work offline)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if REQUIRED:
            pytest.fail("chromium is not installed: apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


@dataclass
class Filled:
    """A chatstep user directory and a map journal filled by real runs."""

    home: Path
    journal: Path
    run_id: str
    job_id: str

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        # The key is in the UI's environment too: it must still reach no page.
        env.update(CHATSTEP_HOME=str(self.home), OPENAI_API_KEY=FAKE_KEY)
        return env

    def history_rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.home / "history.sqlite3")
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()


def _chatstep(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatstep", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="session")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    """Six rows mapped (row 1 fails with a 400) and one batch job, against the test server."""
    need("datasette")  # before the runs: everything that uses them serves them with Datasette
    root = tmp_path_factory.mktemp("ui")
    home = root / "home"
    rows = root / "reviews.jsonl"
    rows.write_text("".join(json.dumps({"text": p}) + "\n" for p in PROMPTS))
    step = root / "summarize.yaml"
    step.write_text("id: summarize\nmodel: gpt-4o-mini\nprompt: '{{ inputs.text }}'\n")
    with TestServer() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env.update(
            CHATSTEP_HOME=str(home),
            CHATSTEP_SECRETS_DIR=str(root / "no-secrets"),
            OPENAI_BASE_URL=server.base_url,
            OPENAI_API_KEY=FAKE_KEY,
        )
        server.enqueue(Respond(content="a fine summary"), Fail(400, message=FAILED_MESSAGE))
        output = root / "summaries.jsonl"
        args = ["map", str(step), "--rows", str(rows), "-o", str(output), "--concurrency", "1"]
        mapped = _chatstep(args, env)
        assert mapped.returncode == 9, mapped.stderr  # finished, one row failed
        args = ["batch", "submit", str(step), "--rows", str(rows), "--wait", "--poll", "0.05"]
        submitted = _chatstep([*args, "-o", str(root / "batch.jsonl")], env)
        assert submitted.returncode == 0, submitted.stderr
    journal = root / "summaries.jsonl.journal.sqlite3"
    conn = sqlite3.connect(journal)
    run_id = conn.execute("SELECT value FROM meta WHERE key = 'run_id'").fetchone()[0]
    conn.close()
    conn = sqlite3.connect(home / "batches.sqlite3")
    job_id = conn.execute("SELECT id FROM jobs").fetchone()[0]
    conn.close()
    return Filled(home=home, journal=journal, run_id=run_id, job_id=job_id)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Poll ``url`` until it answers; fail with the server's output if the process ends first."""
    while True:
        if proc.poll() is not None:
            pytest.fail(f"chatstep ui exited with {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)  # polling interval, not a synchronisation


@pytest.fixture(scope="session")
def ui_url(filled: Filled) -> Iterator[str]:
    """``chatstep ui`` over the filled history, batch journal and map journal."""
    need("datasette")
    port = free_port()
    journal_dir = filled.journal.parent
    # Output goes to a file: a pipe nobody reads would block the server once it fills up.
    log = journal_dir / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatstep", "ui", "--port", str(port), "-j", str(journal_dir)],
            env=filled.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, url + "/-/versions.json", log)
        yield url
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium (Debian's) under Playwright, with a fresh profile."""
    sync_api = need("playwright.sync_api")
    executable = chromium_path()
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 720},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context: Any, ui_url: str) -> Iterator[Any]:
    """A browser tab; every request it makes must stay on the UI's own loopback address."""
    tab = browser_context.new_page()
    requested: list[str] = []
    tab.on("request", lambda request: requested.append(request.url))
    try:
        yield tab
    finally:
        tab.close()
    outside = [u for u in requested if not u.startswith(ui_url) and not u.startswith("data:")]
    assert outside == [], f"the page reached beyond the UI: {outside}"
