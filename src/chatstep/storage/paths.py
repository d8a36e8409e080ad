"""Where chatstep keeps its per-user files (response cache, call history, price overrides).

``$CHATSTEP_HOME`` wins when set (tests point it at a temporary directory). Otherwise the
platform's user data directory is used: ``$XDG_DATA_HOME/chatstep`` or
``~/.local/share/chatstep`` on Linux and other Unixes, ``~/Library/Application Support/chatstep``
on macOS, ``%LOCALAPPDATA%\\chatstep`` on Windows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["user_dir"]

APP_NAME = "chatstep"


def _platform_data_dir() -> Path:
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.environ.get("APPDATA")
        return Path(base) if base else Path.home() / "AppData" / "Local"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    # The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg)
    return Path.home() / ".local" / "share"


def user_dir() -> Path:
    """The chatstep user directory, created on first use."""
    home = os.environ.get("CHATSTEP_HOME", "").strip()
    path = Path(home).expanduser() if home else _platform_data_dir() / APP_NAME
    path.mkdir(parents=True, exist_ok=True)
    return path
