"""The curated public surface, and import cost."""

from __future__ import annotations

import subprocess
import sys

import chatstep


def test_all_is_sorted_and_importable() -> None:
    assert chatstep.__all__ == sorted(chatstep.__all__)
    for name in chatstep.__all__:
        assert getattr(chatstep, name) is not None


def test_testing_all_is_sorted() -> None:
    import chatstep.testing

    assert chatstep.testing.__all__ == sorted(chatstep.testing.__all__)


def test_unknown_attribute() -> None:
    import pytest

    with pytest.raises(AttributeError):
        _ = chatstep.NoSuchThing  # type: ignore[attr-defined]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_import_does_not_load_the_openai_sdk() -> None:
    loaded = _modules_after("import chatstep")
    assert "openai" not in loaded
    assert "pydantic" not in loaded


def test_cli_help_does_not_load_the_openai_sdk() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom chatstep.cli.app import app\n"
        "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0\n"
        "for c in ['run', 'map', 'batch', 'flow', 'history']:\n"
        "    CliRunner().invoke(app, [c, '--help'])"
    )
    loaded = _modules_after(code)
    assert "openai" not in loaded
    assert "llama_cpp" not in loaded


def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "chatstep", "--help"], capture_output=True, text=True, check=True
    )
    assert "run" in out.stdout
