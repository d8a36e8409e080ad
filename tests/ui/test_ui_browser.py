"""``chatstep ui`` in a real Chromium: search, runs, errors, a call's JSON, charts, batch jobs.

The history and journals come from a real ``chatstep map`` and ``chatstep batch`` against the
test server (see conftest.py). The runs page's screenshot goes to docs/ui-runs.png for the README.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from chatstep.storage.history import History, HistoryEntry

from .conftest import FAILED_MESSAGE, PROMPTS, SEARCHED, Filled

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "ui-runs.png"


def _rows(page: Any) -> list[dict[str, str]]:
    """The result table as dicts of column name -> visible text."""
    page.wait_for_load_state()
    table = page.locator("table.rows-and-columns")
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    out = []
    for row in table.locator("tbody tr").all():
        cells = [c.strip() for c in row.locator("td").all_inner_texts()]
        out.append(dict(zip(headers, cells, strict=True)))
    return out


def test_search_finds_a_prompt(page: Any, ui_url: str) -> None:
    page.goto(ui_url + "/")
    page.get_by_role("link", name="Search calls").click()
    page.fill("input[name=_search]", SEARCHED)
    page.press("input[name=_search]", "Enter")
    page.wait_for_url("**_search=*")
    rows = _rows(page)
    assert len(rows) == 1
    assert PROMPTS[3] in rows[0]["request"]
    assert "1 row where search matches" in page.inner_text("h3")


def test_runs_page_lists_the_run_with_rows_and_cost(page: Any, ui_url: str, filled: Filled) -> None:
    page.goto(ui_url + "/")
    page.get_by_role("link", name="Runs", exact=True).click()
    page.wait_for_url("**/history/runs")
    [(calls, failed, cost)] = filled.history_rows(
        f"SELECT count(*), sum(error IS NOT NULL), printf('%.6f', sum(cost_usd)) FROM calls "
        f"WHERE run_id = '{filled.run_id}'"
    )
    assert (calls, failed) == (len(PROMPTS), 1)
    assert float(cost) > 0
    [run] = [r for r in _rows(page) if r["run_id"].startswith(filled.run_id)]
    assert (run["calls"], run["failed"], run["cost_usd"]) == (str(calls), "1", cost)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    # The run id links to its calls, with facets.
    page.get_by_role("link", name=filled.run_id).click()
    page.wait_for_url("**/history/calls?run_id=*")
    assert len(_rows(page)) == len(PROMPTS)
    assert "gpt-4o-mini" in page.inner_text(".facet-info-name:has-text('model') ~ ul")


def test_failed_row_shows_its_error(page: Any, ui_url: str, filled: Filled) -> None:
    page.goto(ui_url + "/history/errors")
    [failure] = _rows(page)
    assert FAILED_MESSAGE in failure["error"]
    assert failure["run_id"].startswith(filled.run_id)
    # The call number opens the call itself, whose page shows the error in full.
    page.get_by_role("link", name=failure["call"], exact=True).click()
    page.wait_for_url("**/history/calls/*")
    assert "BadRequestError" in page.inner_text("td.col-error")
    # The map journal says the same, per input row.
    page.goto(ui_url + "/")
    page.get_by_role("link", name="Map run summaries.jsonl.journal.sqlite3").click()
    page.wait_for_url("**/journal_summaries_jsonl/summary")
    [summary] = _rows(page)
    assert (summary["rows"], summary["ok"], summary["failed"]) == ("6", "5", "1")
    page.goto(ui_url + "/journal_summaries_jsonl/failed_rows")
    [row] = _rows(page)
    assert (row["row"], row["status_code"]) == ("1", "400")
    assert FAILED_MESSAGE in row["error"]


def test_a_calls_json_is_readable(page: Any, ui_url: str, filled: Filled) -> None:
    [(seq, request)] = filled.history_rows(
        "SELECT seq, request FROM calls WHERE error IS NULL ORDER BY seq LIMIT 1"
    )
    page.goto(f"{ui_url}/history/calls/{seq}")
    shown = page.locator("td.col-request pre").inner_text()
    assert "\n" in shown
    assert '    "model": "gpt-4o-mini"' in shown
    assert json.loads(shown) == json.loads(request)
    answer = json.loads(page.locator("td.col-response pre").inner_text())
    assert answer["choices"][0]["message"]["role"] == "assistant"


def test_charts_draw_from_local_scripts(page: Any, ui_url: str, filled: Filled) -> None:
    page.goto(ui_url + "/history/runs")
    page.get_by_role("link", name="charts").first.click()
    page.wait_for_url(f"**/-/dashboards/run?run_id={filled.run_id}")
    for chart in ("done", "outcomes", "tpm", "usd"):
        page.wait_for_selector(f"#chart-{chart} canvas, #chart-{chart} svg")
    page.wait_for_selector("#chart-calls p")
    assert page.inner_text("#chart-calls p") == str(len(PROMPTS))
    page.goto(ui_url + "/-/dashboards/daily")
    page.wait_for_selector("#chart-cost canvas, #chart-cost svg")
    page.goto(ui_url + "/-/dashboards/journal-journal_summaries_jsonl")
    page.wait_for_selector("#chart-outcomes canvas, #chart-outcomes svg")
    assert page.inner_text("#chart-failed p") == "1"


def test_batch_jobs_are_listed(page: Any, ui_url: str, filled: Filled) -> None:
    page.goto(ui_url + "/")
    page.get_by_role("link", name="Batch jobs").click()
    page.wait_for_url("**/batches/jobs")
    [job] = _rows(page)
    assert (job["id"], job["status"], job["rows"]) == (filled.job_id, "completed", "6")


def test_calls_written_while_serving_show_up(ui_url: str, filled: Filled) -> None:
    """The UI reads the WAL history live: a writer's new calls appear without a restart."""
    history = History(filled.home / "history.sqlite3", enabled=True)
    try:
        entry = HistoryEntry.from_exchange(
            "chat.completions",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "late arrival"}]},
            run_id="run-written-live",
        )
        history.record(entry)
        with urllib.request.urlopen(ui_url + "/history/runs.json?_shape=array") as response:
            runs = {r["run_id"]: r for r in json.load(response)}
        assert runs["run-written-live"]["calls"] == 1
    finally:
        history.close()
