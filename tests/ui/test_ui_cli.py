"""``chatstep ui`` refusals and the generated configuration; none of this needs Datasette, so it
runs in the core environment too."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatstep.batch.journal import BatchConnection, BatchJob, BatchJournal
from chatstep.cli.app import app
from chatstep.mapping.journal import RunJournal
from chatstep.storage.history import History, HistoryEntry
from chatstep.ui.metadata import datasette_metadata
from chatstep.ui.server import check_host, is_loopback
from chatstep.ui.sources import collect_sources, sniff_kind

runner = CliRunner()


def _history(path: Path) -> History:
    history = History(path, enabled=True)
    for n in range(3):
        history.record(
            HistoryEntry.from_exchange(
                "chat.completions",
                {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {n}"}]},
                {"usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
                run_id="map-1",
                cost_usd=0.001,
                cached=n == 2,
                error="RateLimitError: slow down" if n == 1 else None,
            )
        )
    return history


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    history_path = tmp_path / "history.sqlite3"
    _history(history_path).close()
    with RunJournal(tmp_path / "out.jsonl.journal.sqlite3", definition={"model": "m"}) as journal:
        journal.record(0, "h0", "ok", {"usage": {"total_tokens": 5}, "attempts": 2}, 0.002)
        journal.record(1, "h1", "failed", {"error": "E: bad", "status_code": 429}, None)
    batches = BatchJournal(tmp_path)
    batches.save(BatchJob("csb_1", "/v1/chat/completions", "m", 2, BatchConnection()))
    return history_path, tmp_path / "out.jsonl.journal.sqlite3", batches.path


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    check_host(host, allow_remote=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.com", "::"])
def test_other_hosts_need_allow_remote(host: str) -> None:
    assert not is_loopback(host)
    check_host(host, allow_remote=True)
    result = runner.invoke(app, ["ui", "--host", host])
    assert result.exit_code == 3
    assert "--allow-remote" in result.stderr
    assert "no login" in result.stderr


def test_nothing_to_show_is_an_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ui"])
    assert result.exit_code == 3
    assert "nothing to show" in result.stderr
    assert "history" in result.stderr


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    history_path, _, _ = _files(tmp_path)
    stray = tmp_path / "notes.txt"
    stray.write_text("not sqlite")
    for args in (["--journal", str(stray)], ["--journal", str(history_path)]):
        result = runner.invoke(app, ["ui", "--history", str(history_path), *args])
        assert result.exit_code == 3, result.output
        assert "--journal" in result.stderr
        assert "is not a map journal" in result.stderr
    result = runner.invoke(app, ["ui", "--journal", str(tmp_path / "missing.sqlite3")])
    assert result.exit_code == 3
    assert "neither a file nor a directory" in result.stderr


def test_sources_are_recognised_by_their_tables(tmp_path: Path) -> None:
    history_path, journal_path, batches_path = _files(tmp_path)
    assert sniff_kind(history_path) == "history"
    assert sniff_kind(journal_path) == "map_journal"
    assert sniff_kind(batches_path) == "batch_journal"
    sources, notes = collect_sources(history_path, tmp_path / "none.sqlite3", [tmp_path])
    assert [(s.name, s.kind) for s in sources] == [
        ("history", "history"),
        ("journal_out_jsonl", "map_journal"),
    ]
    assert notes == [f"no batch journal at {tmp_path / 'none.sqlite3'} yet"]


def test_every_generated_query_runs(tmp_path: Path) -> None:
    """Each canned query and chart query runs on real files, read-only, and gives sane rows."""
    history_path, journal_path, batches_path = _files(tmp_path)
    sources, _ = collect_sources(history_path, batches_path, [journal_path])
    metadata = datasette_metadata(sources)
    assert metadata["databases"]["history"]["tables"]["calls"]["fts_table"] == "calls_fts"
    results: dict[str, list[dict[str, object]]] = {}
    by_name = {s.name: s for s in sources}

    def run(db: str, sql: str) -> list[dict[str, object]]:
        conn = sqlite3.connect(f"file:{by_name[db].path}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, {"run_id": ""}).fetchall()]
        finally:
            conn.close()

    for db, config in metadata["databases"].items():
        for name, query in config["queries"].items():
            results[f"{db}/{name}"] = run(db, query["sql"])
    for dashboard in metadata["plugins"]["datasette-dashboards"].values():
        for chart in dashboard["charts"].values():
            assert run(chart["db"], chart["query"]), chart["title"]
        for flt in dashboard.get("filters", {}).values():
            assert run(flt["db"], flt["query"]) == [{"run_id": "map-1"}]
    [run_row] = results["history/runs"]
    assert (run_row["calls"], run_row["failed"], run_row["cached"]) == (3, 1, 1)
    assert run_row["cost_usd"] == "0.003000"
    [timeline] = results["history/run_timeline"]
    assert (timeline["rate_limited"], timeline["failed"], timeline["calls"]) == (1, 0, 3)
    assert [r["hit_rate"] for r in results["history/cache_hits"]] == [round(1 / 3, 4)]
    [summary] = results["journal_out_jsonl/summary"]
    assert (summary["rows"], summary["failed"], summary["retries"]) == (2, 1, 1)
    [bucket] = results["journal_out_jsonl/timeline"]
    assert (bucket["rate_limited"], bucket["retries"], bucket["tokens_per_minute"]) == (1, 1, 300)
    [job] = results["batches/jobs"]
    assert (job["id"], job["rows"]) == ("csb_1", 2)
    json.dumps(metadata)  # Datasette takes it as JSON-able data


def test_help_does_not_import_datasette() -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom chatstep.cli.app import app\n"
        "for args in (['--help'], ['ui', '--help']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('datasette', 'uvicorn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(
    importlib.util.find_spec("datasette") is not None, reason="the [ui] extra is installed"
)
def test_without_the_extra_the_fix_is_named(tmp_path: Path) -> None:
    history_path, _, _ = _files(tmp_path)
    result = runner.invoke(app, ["ui", "--history", str(history_path)])
    assert result.exit_code == 7
    assert "pip install 'chatstep[ui]'" in result.stderr
