"""Fixtures for Batch API tests: a step file, rows, and a fast poll schedule."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatstep.batch.api import PollSchedule

#: Polls fast: the test server moves a batch along in well under a second.
FAST = PollSchedule(initial=0.05, factor=1.5, maximum=0.5)


@pytest.fixture
def step_file(tmp_path: Path) -> Path:
    path = tmp_path / "describe.yaml"
    path.write_text("model: gpt-4o-mini\nprompt: 'Item {{ inputs.n }}: {{ inputs.text }}'\n")
    return path


@pytest.fixture
def rows_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"n": {n}, "text": "text {n}"}}\n' for n in range(120)))
    return path


@pytest.fixture(autouse=True)
def _no_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSTEP_HISTORY", "off")
