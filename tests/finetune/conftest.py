"""Fixtures for fine-tuning tests: a chat step, labelled rows, and a fast poll schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatstep.batch.api import PollSchedule

#: Polls fast: the test server moves a job along in well under a second.
FAST = PollSchedule(initial=0.02, factor=1.5, maximum=0.2)

LABELS = ("bug", "billing", "praise")


@pytest.fixture
def step_file(tmp_path: Path) -> Path:
    path = tmp_path / "triage.yaml"
    path.write_text(
        "model: gpt-4o-mini\n"
        "messages:\n"
        "  - role: system\n"
        "    content: Label the ticket as bug, billing or praise.\n"
        "  - role: user\n"
        "    content: '{{ inputs.ticket }}'\n"
    )
    return path


def write_rows(path: Path, count: int, **extra: object) -> Path:
    rows = [
        {"ticket": f"ticket number {n}: the app did thing {n}", "label": LABELS[n % 3], **extra}
        for n in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def rows_file(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "labelled.jsonl", 12)


@pytest.fixture(autouse=True)
def _no_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSTEP_HISTORY", "off")
