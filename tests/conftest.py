"""Shared fixtures: an isolated user directory and a clean OpenAI environment for every test."""

from __future__ import annotations

from pathlib import Path

import pytest

_OPENAI_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "FLYTE_OPENAI_API_KEY",
)

FAKE_KEY = "sk-test-FAKEKEY0123456789abcdefFAKE"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _OPENAI_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "chatstep-home"
    monkeypatch.setenv("CHATSTEP_HOME", str(home))
    monkeypatch.setenv("CHATSTEP_SECRETS_DIR", str(tmp_path / "no-secrets-dir"))
    monkeypatch.chdir(tmp_path)
