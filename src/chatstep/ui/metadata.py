"""The Datasette configuration ``chatstep ui`` generates for its databases.

Datasette 0.x metadata (``datasette>=0.64,<1.0``; 1.0 moves these keys to ``datasette.yaml``):
full-text search and facets on the history's calls, canned queries (runs, one run, errors,
cost per day and model, cache hits, batch jobs, a journal's failed rows) and
``datasette-dashboards`` charts (one run over time; cost by day and model; one per map journal).
Nothing here imports Datasette.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from chatstep.ui import queries
from chatstep.ui.sources import Source

__all__ = ["HISTORY_FACETS", "datasette_metadata"]

#: Facets offered on the history's ``calls`` table.
HISTORY_FACETS = ("model", "step", "run_id", "cached", "endpoint")

_TIME_X = {"field": "bucket", "type": "temporal", "title": "time (UTC)"}


def _query(title: str, sql: str, description: str) -> dict[str, Any]:
    return {"title": title, "sql": sql.strip(), "description": description, "hide_sql": True}


def _cumulative(field: str, title: str) -> dict[str, Any]:
    return {
        "transform": [
            {
                "window": [{"op": "sum", "field": field, "as": "so_far"}],
                "sort": [{"field": "bucket"}],
            }
        ],
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": _TIME_X,
            "y": {"field": "so_far", "type": "quantitative", "title": title},
        },
    }


def _outcomes(fields: Sequence[str]) -> dict[str, Any]:
    return {
        "transform": [{"fold": list(fields), "as": ["outcome", "n"]}],
        "mark": "bar",
        "encoding": {
            "x": _TIME_X,
            "y": {"field": "n", "type": "quantitative", "title": "per bucket"},
            "color": {"field": "outcome", "type": "nominal"},
        },
    }


def _line(field: str, title: str) -> dict[str, Any]:
    return {
        "mark": {"type": "line", "point": True},
        "encoding": {"x": _TIME_X, "y": {"field": field, "type": "quantitative", "title": title}},
    }


def _chart(db: str, title: str, sql: str, display: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": title,
        "db": db,
        "query": sql.strip(),
        "library": "vega-lite",
        "display": display,
    }


def _metric(db: str, title: str, sql: str, field: str, prefix: str = "") -> dict[str, Any]:
    display = {"field": field, "prefix": prefix}
    return {"title": title, "db": db, "query": sql.strip(), "library": "metric", "display": display}


def _history(db: str) -> tuple[dict[str, Any], dict[str, Any]]:
    summary = queries.RUN_SUMMARY
    timeline = queries.RUN_TIMELINE
    run_dashboard = {
        "title": "One run over time",
        "description": "Calls finished, failures and 429s, tokens per minute and dollars of one "
        "run (the newest when none is picked), from the call history.",
        "filters": {
            "run_id": {"name": "Run", "type": "select", "db": db, "query": queries.LATEST_RUNS}
        },
        "layout": [
            ["calls", "failed", "cost"],
            ["done", "done", "outcomes"],
            ["tpm", "tpm", "usd"],
        ],
        "charts": {
            "calls": _metric(db, "Calls", summary, "calls"),
            "failed": _metric(db, "Failed", summary, "failed"),
            "cost": _metric(db, "Dollars", summary, "cost_usd", prefix="$"),
            "done": _chart(db, "Calls finished", timeline, _cumulative("calls", "calls")),
            "outcomes": _chart(
                db, "Failures and 429s", timeline, _outcomes(("failed", "rate_limited"))
            ),
            "tpm": _chart(
                db, "Tokens per minute", timeline, _line("tokens_per_minute", "tokens/min")
            ),
            "usd": _chart(db, "Dollars spent", timeline, _cumulative("cost_usd", "dollars")),
        },
    }
    day = {"field": "day", "type": "temporal", "timeUnit": "yearmonthdate", "title": "day"}
    model = {"field": "model", "type": "nominal"}
    daily_dashboard = {
        "title": "Cost and cache by day",
        "description": "Dollars and tokens by day and model, and how often the cache answered.",
        "layout": [["cost", "cost"], ["tokens", "hits"]],
        "charts": {
            "cost": _chart(
                db,
                "Dollars by day and model",
                queries.COST_PER_DAY,
                {
                    "mark": "bar",
                    "encoding": {
                        "x": day,
                        "y": {"aggregate": "sum", "field": "cost_usd", "title": "dollars"},
                        "color": model,
                    },
                },
            ),
            "tokens": _chart(
                db,
                "Tokens by day and model",
                queries.COST_PER_DAY,
                {
                    "mark": "bar",
                    "encoding": {
                        "x": day,
                        "y": {"aggregate": "sum", "field": "tokens", "title": "tokens"},
                        "color": model,
                    },
                },
            ),
            "hits": _chart(
                db,
                "Cache-hit rate",
                queries.CACHE_HITS,
                {
                    "mark": {"type": "line", "point": True},
                    "encoding": {
                        "x": day,
                        "y": {
                            "field": "hit_rate",
                            "type": "quantitative",
                            "axis": {"format": "%"},
                            "title": "answered from the cache",
                        },
                        "color": model,
                    },
                },
            ),
        },
    }
    database = {
        "description": "Every call chatstep made (requests and responses, keys redacted).",
        "tables": {
            "calls": {
                "fts_table": "calls_fts",
                "fts_pk": "seq",
                "facets": list(HISTORY_FACETS),
                "sort_desc": "seq",
                "size": 50,
            },
            "calls_fts": {"hidden": True},
        },
        "queries": {
            "runs": _query(
                "Runs",
                queries.RUNS,
                "Map and flow runs, newest first: calls, failures, cache hits, dollars, tokens.",
            ),
            "run": _query(
                "One run's calls",
                queries.RUN,
                "Every call of one run (the newest when run_id is empty), in order.",
            ),
            "errors": _query("Errors", queries.ERRORS, "Calls that failed for good, newest first."),
            "cost_per_day": _query(
                "Cost per day and model", queries.COST_PER_DAY, "Calls, tokens and dollars."
            ),
            "cache_hits": _query(
                "Cache hits", queries.CACHE_HITS, "Share of calls answered from the cache."
            ),
            "run_timeline": _query(
                "One run over time",
                queries.RUN_TIMELINE,
                "A run's calls in time buckets (width in bucket_seconds).",
            ),
        },
    }
    return database, {"run": run_dashboard, "daily": daily_dashboard}


def _journal(source: Source) -> tuple[dict[str, Any], dict[str, Any]]:
    db = source.name
    summary, timeline = queries.JOURNAL_SUMMARY, queries.JOURNAL_TIMELINE
    dashboard = {
        "title": f"Map run: {source.path.name}",
        "description": f"Rows of the map journal {source.path}, as they finished.",
        "layout": [["rows", "failed", "cost"], ["done", "done", "outcomes"], ["tpm", "tpm", "usd"]],
        "charts": {
            "rows": _metric(db, "Rows finished", summary, "rows"),
            "failed": _metric(db, "Failed", summary, "failed"),
            "cost": _metric(db, "Dollars", summary, "cost_usd", prefix="$"),
            "done": _chart(db, "Rows finished", timeline, _cumulative("rows", "rows")),
            "outcomes": _chart(
                db,
                "Retries, failures and 429s",
                timeline,
                _outcomes(("retries", "failed", "rate_limited")),
            ),
            "tpm": _chart(
                db, "Tokens per minute", timeline, _line("tokens_per_minute", "tokens/min")
            ),
            "usd": _chart(db, "Dollars spent", timeline, _cumulative("cost_usd", "dollars")),
        },
    }
    database = {
        "description": f"Map run journal {source.path}: one row per finished input row.",
        "tables": {"rows": {"facets": ["status"], "sort": "idx", "size": 50}},
        "queries": {
            "summary": _query("Summary", summary, "Rows, failures, retries, dollars, tokens."),
            "failed_rows": _query(
                "Failed rows", queries.JOURNAL_FAILED_ROWS, "Input rows that failed, with errors."
            ),
            "timeline": _query("Over time", timeline, "Rows in time buckets."),
        },
    }
    return database, {f"journal-{db}": dashboard}


def _batches() -> dict[str, Any]:
    return {
        "description": "Batch API jobs submitted with chatstep batch.",
        "tables": {"jobs": {"facets": ["status"], "sort_desc": "created_at"}},
        "queries": {
            "jobs": _query("Batch jobs", queries.BATCH_JOBS, "Jobs, newest first, with counts."),
        },
    }


def _front_page(sources: Sequence[Source]) -> str:
    links: list[tuple[str, str]] = []
    for source in sources:
        db = escape(source.name)
        if source.kind == "history":
            links += [
                (f"/{db}/runs", "Runs"),
                (f"/{db}/errors", "Errors"),
                (f"/{db}/cost_per_day", "Cost per day and model"),
                (f"/{db}/cache_hits", "Cache hits"),
                (f"/{db}/calls", "Search calls"),
            ]
        elif source.kind == "batch_journal":
            links.append((f"/{db}/jobs", "Batch jobs"))
        else:
            links.append((f"/{db}/summary", f"Map run {escape(source.path.name)}"))
    links.append(("/-/dashboards", "Charts"))
    items = " · ".join(f'<a href="{href}">{label}</a>' for href, label in links)
    return f"<p>{items}</p>"


def datasette_metadata(sources: Sequence[Source]) -> dict[str, Any]:
    """Datasette metadata (0.x form) for ``sources``: tables, queries, facets, dashboards."""
    databases: dict[str, Any] = {}
    dashboards: dict[str, Any] = {}
    for source in sources:
        if source.kind == "history":
            databases[source.name], charts = _history(source.name)
            dashboards.update(charts)
        elif source.kind == "map_journal":
            databases[source.name], charts = _journal(source)
            dashboards.update(charts)
        else:
            databases[source.name] = _batches()
    history = next((s.name for s in sources if s.kind == "history"), None)
    return {
        "title": "chatstep",
        "description_html": _front_page(sources),
        "extra_css_urls": ["/chatstep-static/ui.css"],
        "databases": databases,
        "plugins": {"datasette-dashboards": dashboards, "chatstep-ui": {"history": history}},
    }
