"""The call history: recording, search, filters, redaction, switching off, migrations."""

from __future__ import annotations

import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from chatstep.errors import ChatstepError, register_secret
from chatstep.storage.history import SCHEMA_VERSION, History, HistoryEntry, migrate, new_id


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("CHATSTEP_HOME", str(path))
    monkeypatch.delenv("CHATSTEP_HISTORY", raising=False)
    return path


def chat(question: str, answer: str, model: str = "gpt-4o-mini") -> tuple[dict[str, Any], ...]:
    request = {"model": model, "messages": [{"role": "user", "content": question}]}
    response = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    return request, response


def files_bytes(path: Path) -> bytes:
    """The database and its WAL and shared-memory files, as they are on disk."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_record_get_and_recent(home: Path) -> None:
    with History() as history:
        assert history.recent() == []  # nothing yet, and no file created by reading
        assert not (home / "history.sqlite3").exists()
        request, response = chat("What is the capital of France?", "Paris")
        entry = HistoryEntry.from_exchange(
            "chat.completions",
            request,
            response,
            step="capital",
            base_url="https://api.openai.com/v1",
            latency_ms=123.4,
            cost_usd=0.000012,
            run_id="run-1",
        )
        history.record(entry)
        assert history.path == home / "history.sqlite3"
        stored = history.get(entry.id)
        assert stored == entry
        assert stored is not None
        assert stored.prompt_tokens == 12
        assert stored.total_tokens == 15
        assert stored.model == "gpt-4o-mini"
        assert history.get("no-such-id") is None
        assert history.count() == 1


def test_search_and_filters(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite3") as history:
        q1, a1 = chat("Translate 'cheese' to French", "fromage")
        q2, a2 = chat("Name a large red planet", "Mars", model="gpt-4.1")
        q3, _ = chat("Summarize the quarterly report", "")
        history.record(HistoryEntry.from_exchange("chat.completions", q1, a1, step="translate"))
        history.record(HistoryEntry.from_exchange("chat.completions", q2, a2, step="astronomy"))
        failed = HistoryEntry.from_exchange(
            "chat.completions", q3, None, step="summary", error="RateLimitError: 429 slow down"
        )
        history.record(failed)
        embed = HistoryEntry.from_exchange(
            "embeddings", {"model": "text-embedding-3-small", "input": ["zebra crossing"]}
        )
        history.record(embed)

        assert [e.step for e in history.search("fromage")] == ["translate"]  # response text
        assert [e.step for e in history.search("cheese french")] == ["translate"]  # every word
        assert [e.step for e in history.search("planet")] == ["astronomy"]
        assert [e.endpoint for e in history.search("zebra")] == ["embeddings"]
        assert history.search("cheese mars") == []
        assert history.search("   ") == []
        # FTS syntax in a query is taken literally, not as operators.
        assert history.search('"quarterly" OR -report:*') == []
        assert [e.step for e in history.search("quarterly")] == ["summary"]

        newest_first = [e.step for e in history.recent()]
        assert newest_first == [None, "summary", "astronomy", "translate"]
        assert [e.step for e in history.recent(limit=2)] == [None, "summary"]
        assert [e.step for e in history.recent(model="gpt-4.1")] == ["astronomy"]
        assert [e.step for e in history.recent(step="translate")] == ["translate"]
        errors = history.recent(errors_only=True)
        assert [e.error for e in errors] == ["RateLimitError: 429 slow down"]
        assert errors[0].response is None


def test_secrets_never_reach_the_database(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    register_secret("hunter2-custom-token")
    request = {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": "my key is sk-abc123def456ghi789jkl and hunter2-custom-token",
            }
        ],
    }
    response = {"choices": [{"message": {"content": "Do not share sk-abc123def456ghi789jkl!"}}]}
    entry = HistoryEntry.from_exchange(
        "chat.completions",
        request,
        response,
        error="AuthenticationError: Incorrect API key provided: sk-abc123def456ghi789jkl",
    )
    with History(path) as history:
        history.record(entry)
        data = files_bytes(path)
        assert b"abc123def456" not in data
        assert b"hunter2-custom-token" not in data
        stored = history.get(entry.id)
        assert stored is not None
        assert "sk-abc123" not in str(stored.request)
        assert "***" in stored.request["messages"][0]["content"]
        assert history.search("abc123def456ghi789jkl") == []
    # After a checkpoint everything lives in the main file: still nothing there.
    assert b"abc123def456" not in path.read_bytes()


def test_switched_off_by_environment_writes_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATSTEP_HISTORY", "off")
    request, response = chat("hello", "hi")
    with History() as history:
        assert not history.writes_enabled
        history.record(HistoryEntry.from_exchange("chat.completions", request, response))
    assert not home.exists()


def test_disabled_history_is_a_no_op(tmp_path: Path, home: Path) -> None:
    request, response = chat("hello", "hi")
    history = History.disabled()
    history.record(HistoryEntry.from_exchange("chat.completions", request, response))
    assert history.recent() == []
    assert history.search("hello") == []
    assert history.get("x") is None
    assert history.count() == 0
    history.close()
    assert not home.exists()
    assert list(tmp_path.iterdir()) == []


def test_reading_still_works_when_logging_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "h.sqlite3"
    request, response = chat("hello", "hi")
    with History(path) as history:
        history.record(HistoryEntry.from_exchange("chat.completions", request, response))
    monkeypatch.setenv("CHATSTEP_HISTORY", "0")
    with History(path) as readonly:
        readonly.record(HistoryEntry.from_exchange("chat.completions", request, response))
        assert readonly.count() == 1


def test_migration_from_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"")
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn) == 0
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"calls", "calls_fts"} <= tables
    assert migrate(conn) == SCHEMA_VERSION  # idempotent
    conn.close()
    with History(path) as history:
        request, response = chat("hello", "hi")
        history.record(HistoryEntry.from_exchange("chat.completions", request, response))
        assert history.count() == 1


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ChatstepError, match="newer than this chatstep"):
        migrate(conn)
    conn.close()
    # Recording into it logs a warning and moves on: the history never fails a call.
    with History(path) as history:
        history.record(HistoryEntry(request={"model": "m"}))


def test_many_threads_record_concurrently(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with History(tmp_path / "h.sqlite3") as history:

        def work(worker: int) -> None:
            try:
                for i in range(50):
                    request, response = chat(f"question {worker} {i}", f"answer{worker}x{i}")
                    history.record(
                        HistoryEntry.from_exchange(
                            "chat.completions", request, response, run_id=f"w{worker}"
                        )
                    )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert history.count() == 400
        assert len(history.recent(limit=1000, run_id="w3")) == 50
        assert [e.run_id for e in history.search("answer5x7")] == ["w5"]


def hold_write_lock(path: Path, seconds: float) -> threading.Thread:
    """Another connection takes the write lock now and keeps it for ``seconds``."""
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")

    def release() -> None:
        threading.Event().wait(seconds)
        blocker.execute("COMMIT")
        blocker.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_a_write_outlasting_the_busy_timeout_is_retried_not_dropped(tmp_path: Path) -> None:
    with History(tmp_path / "h.sqlite3") as history:
        history.record(HistoryEntry(request={"model": "m"}))  # creates the file, in WAL mode
        history.close()  # reconnect with the busy timeout below
        history.busy_timeout = 0  # SQLite alone would report "database is locked" at once
        blocker = hold_write_lock(history.path, 0.3)
        history.record(HistoryEntry(request={"model": "m"}, run_id="after-lock"))
        blocker.join()
        assert history.count() == 2
        assert len(history.recent(run_id="after-lock")) == 1


def test_a_lock_held_past_the_deadline_drops_the_write_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with History(tmp_path / "h.sqlite3") as history:
        history.record(HistoryEntry(request={"model": "m"}))
        history.close()  # reconnect with the short busy timeout below
        history.busy_timeout, history.busy_deadline = 0.01, 0.1
        blocker = hold_write_lock(history.path, 1.0)
        history.record(HistoryEntry(request={"model": "m"}))  # does not raise
        blocker.join()
        assert history.count() == 1
    assert "could not be written: database is locked" in caplog.text


def test_prune_deletes_calls_and_their_index_before_a_time(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    with History(tmp_path / "h.sqlite3") as history:
        for n, when in enumerate(
            ["2026-01-01T00:00:00.000+00:00", "2026-06-01T00:00:00.000+00:00"]
        ):
            request, response = chat(f"question {n}", f"answer{n} walrus")
            entry = HistoryEntry.from_exchange("chat.completions", request, response)
            entry.time = when
            history.record(entry)
        removed = history.prune(datetime(2026, 3, 1, tzinfo=timezone.utc), vacuum=True)
        assert removed == 1
        assert history.count() == 1
        assert [e.time[:10] for e in history.search("walrus")] == ["2026-06-01"]
        assert history.search("answer0") == []
        with pytest.raises(ValueError, match="aware datetime"):
            history.prune(datetime(2026, 3, 1))
    assert History(tmp_path / "absent.sqlite3").prune(datetime.now(timezone.utc)) == 0


def test_ids_are_unique_and_sort_by_time() -> None:
    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 26 for i in ids)
    # Same-millisecond ids have random tails, so only the 10-character time prefix sorts.
    prefixes = [i[:10] for i in ids]
    assert prefixes == sorted(prefixes)


def test_from_exchange_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError, match="colour"):
        HistoryEntry.from_exchange("chat.completions", {"model": "m"}, colour="red")


def test_user_dir_follows_chatstep_home_then_xdg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatstep.storage.paths import user_dir

    assert user_dir() == tmp_path / "home"
    assert (tmp_path / "home").is_dir()
    monkeypatch.delenv("CHATSTEP_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert user_dir() == tmp_path / "xdg" / "chatstep"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    if sys.platform.startswith("linux"):
        assert user_dir() == tmp_path / "user" / ".local" / "share" / "chatstep"
