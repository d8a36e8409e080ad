"""The user directory: CHATSTEP_HOME, then platformdirs, and an existing older directory kept."""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs
import pytest

from chatstep.storage import paths
from chatstep.storage.paths import legacy_data_dir, platform_data_dir, user_dir


def test_chatstep_home_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSTEP_HOME", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert user_dir() == tmp_path / "mine"
    assert (tmp_path / "mine").is_dir()


def test_default_is_platformdirs_user_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHATSTEP_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    expected = Path(platformdirs.user_data_dir("chatstep", appauthor=False))
    assert platform_data_dir() == expected
    assert user_dir() == expected
    assert expected.is_dir()
    if sys.platform.startswith("linux"):
        assert expected == tmp_path / "xdg" / "chatstep"


def test_a_relative_xdg_data_home_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG applies on Linux")
    monkeypatch.delenv("CHATSTEP_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert user_dir() == tmp_path / "user" / ".local" / "share" / "chatstep"


def test_an_existing_directory_keeps_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHATSTEP_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    old = legacy_data_dir()
    old.mkdir(parents=True)
    (old / "history.sqlite3").write_bytes(b"kept")
    assert (user_dir() / "history.sqlite3").read_bytes() == b"kept"


def test_an_older_directory_elsewhere_is_used_in_place_until_the_new_one_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where the two rules disagree (Windows without LOCALAPPDATA, say), the older directory
    # stays in use; nothing is moved.
    monkeypatch.delenv("CHATSTEP_HOME")
    old, new = tmp_path / "old" / "chatstep", tmp_path / "new" / "chatstep"
    monkeypatch.setattr(paths, "legacy_data_dir", lambda: old)
    monkeypatch.setattr(paths, "platform_data_dir", lambda: new)
    old.mkdir(parents=True)
    assert user_dir() == old
    assert not new.exists()
    new.mkdir(parents=True)
    assert user_dir() == new


@pytest.mark.parametrize(
    "args",
    [
        ["finetune", "list"],
        ["chat", "--list"],
        ["prompt", "--cid", "x", "hello"],
    ],
)
def test_an_unusable_chatstep_home_is_an_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    from typer.testing import CliRunner

    from chatstep.cli.app import app
    from chatstep.cli.common import EXIT_CODES
    from chatstep.errors import StorageError

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CHATSTEP_HOME", str(blocker / "home"))
    with pytest.raises(StorageError, match="CHATSTEP_HOME"):
        user_dir()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == EXIT_CODES["storage"], result.output
    assert "Traceback" not in result.output
    assert "CHATSTEP_HOME" in result.output
