"""Where chatstep keeps its per-user files (response cache, call history, price overrides).

``$CHATSTEP_HOME`` wins when set (tests point it at a temporary directory). Otherwise it is the
platform's user data directory as `platformdirs <https://platformdirs.readthedocs.io>`_ finds
it: ``$XDG_DATA_HOME/chatstep`` or ``~/.local/share/chatstep`` on Linux and other Unixes,
``~/Library/Application Support/chatstep`` on macOS, ``%LOCALAPPDATA%\\chatstep`` on Windows.

Existing files are never stranded: when that directory does not exist yet but the one chatstep
computed by hand before platformdirs (:func:`legacy_data_dir`) does, the old directory keeps
being used, in place. Nothing is moved: a move could race another chatstep process that has the
history or the cache open.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

__all__ = ["APP_NAME", "legacy_data_dir", "platform_data_dir", "user_dir"]

APP_NAME = "chatstep"


def platform_data_dir() -> Path:
    """The platform's per-user data directory for chatstep (not created)."""
    path = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False, roaming=False))
    # The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    return path if path.is_absolute() else Path.home() / ".local" / "share" / APP_NAME


def legacy_data_dir() -> Path:
    """The directory chatstep computed itself before it used platformdirs (not created)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.environ.get("APPDATA")
        root = Path(base) if base else Path.home() / "AppData" / "Local"
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME", "").strip()
        root = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return root / APP_NAME


def user_dir() -> Path:
    """The chatstep user directory, created on first use.

    Raises :class:`~chatstep.errors.StorageError` (naming the directory and ``CHATSTEP_HOME``)
    when it cannot be created: a path through a file, a read-only or missing parent.
    """
    home = os.environ.get("CHATSTEP_HOME", "").strip()
    if home:
        path = Path(home).expanduser()
    else:
        path = platform_data_dir()
        legacy = legacy_data_dir()
        if not path.exists() and legacy != path and legacy.is_dir():
            path = legacy
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from chatstep.errors import StorageError

        source = "CHATSTEP_HOME" if home else "the user data directory"
        raise StorageError(
            str(path),
            f"chatstep's directory ({source}) cannot be created: {exc.strerror or exc}",
            "set CHATSTEP_HOME to a writable directory",
        ) from exc
    return path
