"""The README's ``chatstep ui`` command, run as written (plus a free ``--port``): ``--open`` hands
the page's address to the browser (``$BROWSER``, here a script that records it), and that address
serves the map journal found by ``--journal .``.

tests/test_readme.py leaves this block alone (it would serve forever); this test runs it instead.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .conftest import Filled, free_port, need, wait_until_serving

README = Path(__file__).resolve().parents[2] / "README.md"
_UI_BLOCK = re.compile(r"<!-- readme-test: ui -->\n```console\n(?P<body>.*?)```", re.S)


def _readme_command() -> list[str]:
    match = _UI_BLOCK.search(README.read_text(encoding="utf-8"))
    assert match is not None, "README.md has no `<!-- readme-test: ui -->` console block"
    [line] = [ln for ln in match["body"].splitlines() if ln.startswith("$ ")]
    words = shlex.split(line[2:])
    assert words[:2] == ["chatstep", "ui"]
    return words[1:]


def test_readme_command_serves_and_opens_the_page(filled: Filled, tmp_path: Path) -> None:
    need("datasette")
    opened = tmp_path / "opened.txt"
    recorder = tmp_path / "browser.py"
    recorder.write_text(f"import sys\nopen({str(opened)!r}, 'w').write(sys.argv[1])\n")
    port = free_port()
    env = filled.env()
    env["BROWSER"] = f"{shlex.quote(sys.executable)} {shlex.quote(str(recorder))} %s"
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatstep", *_readme_command(), "--port", str(port)],
            cwd=filled.journal.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_serving(proc, url, log)
        while not opened.exists() or not opened.read_text():
            assert proc.poll() is None, log.read_text()
            assert "could not open a web browser" not in log.read_text()
            time.sleep(0.05)  # polling interval for the browser script's file
        assert opened.read_text() == url
        with urllib.request.urlopen(url + "journal_summaries_jsonl/summary.json?_shape=array") as r:
            assert b'"failed": 1' in r.read()
    finally:
        proc.terminate()
        proc.wait()
