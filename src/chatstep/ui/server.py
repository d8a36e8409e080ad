"""Datasette over chatstep's databases, read-only, on a loopback address unless told otherwise.

Every database is opened with ``?mode=ro`` and ``PRAGMA query_only``: the UI can never write,
and it reads a history or journal that a running ``chatstep map`` is writing in WAL mode.
Needs the ``[ui]`` extra (Datasette 0.x, datasette-pretty-json, datasette-dashboards).
"""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.errors import BackendUnavailableError, ConfigError
from chatstep.ui.metadata import datasette_metadata
from chatstep.ui.sources import Source, read_only_uri

if TYPE_CHECKING:
    from datasette.app import Datasette

__all__ = ["INSTALL_HINT", "check_host", "create_datasette", "is_loopback"]

INSTALL_HINT = "pip install 'chatstep[ui]'"

STATIC_DIR = Path(__file__).with_name("static")

#: Datasette settings: every query bounded in time and rows; long cells cut on list pages.
SETTINGS: dict[str, Any] = {
    "sql_time_limit_ms": 5000,
    "facet_time_limit_ms": 1000,
    "max_returned_rows": 1000,
    "default_page_size": 50,
    "truncate_cells_html": 300,
    "num_sql_threads": 3,
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback ``host`` unless ``allow_remote`` (the page has no login)."""
    if not allow_remote and not is_loopback(host):
        raise ConfigError(
            "--host",
            f"{host!r} is not a loopback address: the UI has no login, and anyone who can reach "
            "it reads every prompt and answer in the history",
            "keep the default 127.0.0.1 (use an SSH tunnel), or pass --allow-remote to "
            "expose it anyway",
        )


def _datasette_modules() -> tuple[Any, Any, Any]:
    try:
        from datasette.app import Datasette
        from datasette.database import Database
        from datasette.plugins import pm
    except ImportError as exc:
        raise BackendUnavailableError(
            f"chatstep ui needs Datasette ({exc}); install it with: {INSTALL_HINT}"
        ) from None
    return Datasette, Database, pm


def create_datasette(
    sources: Sequence[Source], *, metadata: dict[str, Any] | None = None
) -> Datasette:
    """A Datasette instance serving ``sources`` read-only, with the generated metadata.

    Raises :class:`BackendUnavailableError` when the ``[ui]`` extra is not installed.
    """
    datasette_class, database_class, plugins = _datasette_modules()

    class ReadOnlyDatabase(database_class):  # type: ignore[misc,valid-type]
        """A file opened ``?mode=ro`` with ``query_only``; asking it for a writer is a bug."""

        def connect(self, write: bool = False) -> sqlite3.Connection:
            if write:
                raise RuntimeError(f"chatstep ui opens {self.path} read-only")
            conn = sqlite3.connect(
                read_only_uri(Path(self.path)), uri=True, check_same_thread=False
            )
            conn.execute("PRAGMA query_only = 1")
            self._all_file_connections.append(conn)
            return conn

    from chatstep.ui import plugin

    if not plugins.is_registered(plugin):
        plugins.register(plugin, name=plugin.PLUGIN_NAME)
    ds = datasette_class(
        metadata=metadata if metadata is not None else datasette_metadata(sources),
        settings=SETTINGS,
        static_mounts=[("chatstep-static", str(STATIC_DIR))],
    )
    if "_memory" in ds.databases:
        ds.remove_database("_memory")
    for source in sources:
        ds.add_database(
            ReadOnlyDatabase(ds, path=str(source.path), is_mutable=True), name=source.name
        )
    return ds


def _open_when_up(server: Any, url: str, deadline: float = 30.0) -> None:
    """Open ``url`` in a browser once uvicorn reports it is listening (say so when it cannot)."""
    import sys
    import time
    import webbrowser

    stop = time.monotonic() + deadline
    while not server.started and not server.should_exit and time.monotonic() < stop:
        time.sleep(0.05)
    if not server.started or not webbrowser.open(url):
        sys.stderr.write(f"could not open a web browser: open {url} yourself\n")
        sys.stderr.flush()


def run_server(
    datasette: Datasette,
    *,
    host: str,
    port: int,
    open_browser: bool = False,
    log_level: str = "warning",
) -> None:
    """Serve ``datasette`` with uvicorn in the foreground until interrupted."""
    import threading

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(datasette.app(), host=host, port=port, log_level=log_level, lifespan="off")
    )
    if open_browser:
        where = f"[{host}]" if ":" in host else host
        threading.Thread(
            target=_open_when_up, args=(server, f"http://{where}:{port}/"), daemon=True
        ).start()
    server.run()
