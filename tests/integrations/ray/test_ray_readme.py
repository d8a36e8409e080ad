"""The README's Ray section runs (tests/test_readme.py leaves ``readme-test: ray`` blocks to this
venv): its console line as a subprocess on the test cluster, twice (the rerun resumes), and its
Python block in-process."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
_BLOCK = re.compile(r"<!-- readme-test: ray -->\n```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)


def _blocks(lang: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = [m["body"] for m in _BLOCK.finditer(text) if m["lang"] == lang]
    assert found, f"README.md has no `readme-test: ray` {lang} block"
    return found


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_ray_command_maps_then_resumes(
    ray_env: dict[str, str], workdir: Path, default_server: Any
) -> None:
    (body,) = _blocks("console")
    commands = [shlex.split(line[2:]) for line in body.splitlines() if line.startswith("$ ")]
    assert commands
    for words in commands:
        assert words[:2] == ["chatstep", "map"]
        for attempt in ("first", "rerun"):
            done = subprocess.run(
                [sys.executable, "-m", "chatstep", *words[1:]],
                env=ray_env, capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            assert done.returncode == 0, f"{attempt}: {done.stderr}"
        assert "5 from the journal; 0 requests" in done.stderr
    rows = [json.loads(line) for line in (workdir / "triaged.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [1, 2, 3, 4, 5]
    assert all(row["error"] is None and "response_urgency" in row["parsed"] for row in rows)


def test_readme_map_dataset_example(cluster: Any, workdir: Path, capsys: Any) -> None:
    (body,) = _blocks("python")
    exec(compile(body, "README.md:ray", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out.split("\n")
    lines = [line.split() for line in printed if line[:1].isdigit()]
    assert [int(words[0]) for words in lines] == [1, 2, 3, 4, 5]
    assert all(words[1] in ("reply_immediately", "reply_later") for words in lines)
