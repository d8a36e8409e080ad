"""Spend from the history: grouping, filters, cached and unpriced calls, limits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from chatstep.storage.history import History, HistoryEntry
from chatstep.storage.spend import spend


def _entry(day: str, model: str, cost: float | None, **fields: object) -> HistoryEntry:
    entry = HistoryEntry(
        time=f"{day}T12:00:00.000+00:00",
        model=model,
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
        cost_usd=cost,
    )
    for name, value in fields.items():
        setattr(entry, name, value)
    return entry


@pytest.fixture
def history(tmp_path: Path) -> History:
    h = History(tmp_path / "h.sqlite3")
    h.record_many(
        [
            _entry("2026-11-01", "gpt-4o-mini", 0.01, step="triage", run_id="R1"),
            _entry("2026-11-01", "gpt-4o-mini", 0.02, step="triage", run_id="R1"),
            _entry("2026-11-01", "gpt-4o", 0.50, step="summarize"),
            _entry("2026-11-02", "gpt-4o-mini", 0.04, step="triage", run_id="R2"),
            _entry("2026-11-02", "gpt-4o-mini", None, cached=True, step="triage"),
            _entry("2026-11-02", "my-model", None, step="triage", error="boom"),
        ]
    )
    return h


def test_groups_by_day_and_model(history: History) -> None:
    report = spend(history, ["day", "model"])
    rows = [(g.day, g.model, g.calls, round(g.cost_usd, 6)) for g in report.groups]
    assert rows == [
        ("2026-11-02", "gpt-4o-mini", 2, 0.04),
        ("2026-11-02", "my-model", 1, 0.0),
        ("2026-11-01", "gpt-4o", 1, 0.5),
        ("2026-11-01", "gpt-4o-mini", 2, 0.03),
    ]
    total = report.total
    assert (total.calls, total.cached, total.errors, total.unpriced) == (6, 1, 1, 1)
    assert total.cost_usd == pytest.approx(0.57)
    # The cached answer's tokens were not paid for: not counted.
    assert total.prompt_tokens == 50


def test_groups_by_step_and_run_with_filters(history: History) -> None:
    report = spend(history, ["run"], step="triage")
    by_run = {g.run: (g.calls, round(g.cost_usd, 6)) for g in report.groups}
    assert by_run == {"R1": (2, 0.03), "R2": (1, 0.04), None: (2, 0.0)}
    assert spend(history, ["step"], model="gpt-4o").total.calls == 1
    assert spend(history, ["step"], run_id="R1").total.cost_usd == pytest.approx(0.03)


def test_since_and_limit(history: History) -> None:
    since = datetime(2026, 11, 2, tzinfo=timezone.utc)
    assert spend(history, ["day"], since=since).total.calls == 3
    report = spend(history, ["day", "model"], limit=1)
    assert len(report.groups) == 1
    assert report.more_groups == 3
    assert report.total.calls == 6
    with pytest.raises(ValueError, match="aware"):
        spend(history, since=datetime.now() - timedelta(days=1))
    with pytest.raises(ValueError, match="colour"):
        spend(history, ["colour"])  # type: ignore[list-item]


def test_no_history_file_is_an_empty_report(tmp_path: Path) -> None:
    report = spend(History(tmp_path / "none.sqlite3"))
    assert report.groups == []
    assert report.total.calls == 0
    assert not (tmp_path / "none.sqlite3").exists()
