"""Files chatstep writes for a run (outputs, journals): exclusive locks and OS failures.

A lock is an OS lock (``filelock``: ``flock`` on POSIX, ``msvcrt`` locking on Windows) on a
``<name>.lock`` file next to what it guards; the OS drops it when its process dies, even by
``kill -9``. A failed write (read-only directory, full disk, file size limit) becomes one
:class:`~chatstep.errors.StorageError` naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chatstep.errors import StorageError

__all__ = ["ExclusiveLock", "lock_path", "sqlite_storage_error", "storage_error"]

_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}
_RESUME = "; the journal keeps every finished row, so the same command resumes"


def storage_error(path: str | Path, exc: OSError, action: str) -> StorageError:
    """A :class:`StorageError` for an OS failure while ``action`` (``"write"``...) on ``path``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in _SPACE:
        fix = "free some space (or raise the file size limit)" + _RESUME
    elif exc.errno in _PERMISSION:
        fix = "make the directory writable, or write somewhere else"
    else:
        fix = "fix the cause" + _RESUME
    return StorageError(str(path), f"cannot {action}: {reason}", fix)


def sqlite_storage_error(path: str | Path, exc: sqlite3.Error, action: str) -> StorageError:
    """A :class:`StorageError` for a SQLite failure (full disk, read-only file...)."""
    message = str(exc)
    lowered = message.lower()
    if "full" in lowered:
        fix = "free some space" + _RESUME
    elif "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        fix = "make the file and its directory writable, or give another --journal"
    else:
        fix = "check the file; --restart starts the journal over"
    return StorageError(str(path), f"cannot {action}: {message}", fix)


def lock_path(path: str | Path) -> Path:
    """The lock file guarding ``path``: ``<path>.lock``."""
    target = Path(path)
    return target.with_name(target.name + ".lock")


def _check_lock_file_writable(path: Path) -> None:
    """Raise the StorageError of a lock file that cannot be opened for writing (read-only
    directory...), which ``filelock`` reports as a lock held by someone else."""
    import os

    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as exc:
        raise storage_error(path, exc, "create the lock file") from None


class ExclusiveLock:
    """A non-blocking, cross-process lock on ``path`` (through ``<path>.lock``).

    :meth:`acquire` raises :class:`StorageError` at once when another process holds it.
    """

    def __init__(self, path: str | Path, *, what: str, fix: str) -> None:
        self.path = Path(path)
        self.what = what
        self.fix = fix
        self._lock: Any = None

    def acquire(self) -> ExclusiveLock:
        """Take the lock, or raise :class:`StorageError` ("in use")."""
        import filelock

        lock = filelock.FileLock(str(lock_path(self.path)), timeout=0)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except filelock.Timeout:
            _check_lock_file_writable(lock_path(self.path))  # filelock says Timeout for EACCES
            raise StorageError(
                str(self.path), f"{self.what} is in use by another running chatstep", self.fix
            ) from None
        except OSError as exc:
            raise storage_error(lock_path(self.path), exc, "create the lock file") from None
        self._lock = lock
        return self

    def release(self) -> None:
        """Let the lock go (idempotent)."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.release(force=True)
            self._lock = None

    @contextlib.contextmanager
    def held(self) -> Iterator[ExclusiveLock]:
        """``with lock.held():`` acquire ... release."""
        self.acquire()
        try:
            yield self
        finally:
            self.release()
