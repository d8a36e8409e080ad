"""Flyte tests: run in their own virtualenv (ci/integration.sh flyte), skipped elsewhere."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

if importlib.util.find_spec("flytekit") is None:
    collect_ignore_glob = ["test_*.py"]

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "flyte"


def load_example(name: str) -> ModuleType:
    """Import ``examples/flyte/<name>.py`` fresh, as its own module."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"chatstep_example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _no_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSTEP_HISTORY", "off")
