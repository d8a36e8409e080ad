"""chatstep's own Datasette plugin: links between runs and calls, and a last redaction pass.

Registered by :func:`chatstep.ui.server.create_datasette`; it reads the name of the history
database from the plugin configuration ``chatstep-ui`` that the generated metadata holds.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from datasette import hookimpl
from markupsafe import Markup, escape

from chatstep.errors import redact

__all__ = ["PLUGIN_NAME", "render_cell"]

PLUGIN_NAME = "chatstep-ui"


def _history(datasette: Any) -> str | None:
    config = datasette.plugin_config(PLUGIN_NAME) or {}
    name = config.get("history")
    return name if isinstance(name, str) else None


def render_cell(
    value: Any, column: str, table: str | None, database: str, datasette: Any
) -> Markup | None:
    """Link run ids to their calls and charts, call numbers to the call; re-redact text."""
    history = _history(datasette)
    if column == "call" and table is None and database == history and isinstance(value, int):
        href = datasette.urls.row(history, "calls", str(value))
        return Markup(f'<a href="{escape(href)}">{value}</a>')
    if not isinstance(value, str):
        return None
    if history is not None and column == "run_id" and value:
        query = urlencode({"run_id": value})
        calls = f"{datasette.urls.table(history, 'calls')}?{query}"
        charts = f"{datasette.urls.path('/-/dashboards/run')}?{query}"
        return Markup(
            f'<a href="{escape(calls)}">{escape(value)}</a> '
            f'<a class="chatstep-charts" href="{escape(charts)}">charts</a>'
        )
    # The history is redacted when written; this catches a key-shaped string stored elsewhere
    # (a journal's step definition, an old file) before it reaches an HTML page.
    cleaned = redact(value)
    return escape(cleaned) if cleaned != value else None


# Marked as a hook implementation without decorator syntax (datasette is untyped): it runs before
# other plugins (datasette-pretty-json is ``trylast``), so links and redaction win.
hookimpl(tryfirst=True)(render_cell)
