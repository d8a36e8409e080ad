"""The batch journal: jobs found by their id or a batch id, and no key ever written."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatstep.batch.journal import (
    BatchConnection,
    BatchJob,
    BatchJournal,
    BatchPart,
    key_secret_name,
)
from chatstep.core.connection import Connection
from chatstep.errors import ConfigError
from chatstep.secrets import SecretStore, StaticSecrets

KEY = "sk-test-journal-0123456789abcdef"


def _job(job_id: str = "csb_1", parts: int = 2) -> BatchJob:
    conn = Connection(
        backend="openai",
        api_key=KEY,
        base_url="http://127.0.0.1:9/v1",
        headers=(("Authorization", f"Bearer {KEY}"), ("x-team", "blue")),
    )
    job = BatchJob(
        id=job_id,
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        row_count=10 * parts,
        connection=BatchConnection.from_connection(conn, "OPENAI_API_KEY"),
    )
    for n in range(parts):
        job.parts.append(BatchPart(n, f"batch_{job_id}_{n}", f"file_{n}", 10 * n, 10))
    return job


def test_save_and_find_by_job_or_batch_id(tmp_path: Path) -> None:
    journal = BatchJournal(tmp_path)
    journal.save(_job())
    assert journal.get("csb_1").row_count == 20
    assert journal.get("batch_csb_1_1").id == "csb_1"
    assert journal.find("nope") is None
    with pytest.raises(ConfigError, match="no batch job 'nope'"):
        journal.get("nope")


def test_status_aggregates_parts(tmp_path: Path) -> None:
    job = _job()
    assert job.status == "validating"
    job.parts[0].update(
        {"status": "completed", "request_counts": {"total": 10, "completed": 9, "failed": 1}}
    )
    job.parts[1].update(
        {"status": "in_progress", "request_counts": {"total": 10, "completed": 3, "failed": 0}}
    )
    assert job.status == "in_progress"
    assert not job.done
    assert job.request_counts == {"total": 20, "completed": 12, "failed": 1}
    job.parts[1].update({"status": "cancelled"})
    assert job.status == "cancelled"
    assert job.done
    journal = BatchJournal(tmp_path)
    journal.save(job)
    assert journal.get("csb_1").status == "cancelled"
    assert [j.id for j in journal.list()] == ["csb_1"]


def test_the_key_is_never_written(tmp_path: Path) -> None:
    journal = BatchJournal(tmp_path)
    job = _job()
    journal.save(job)
    assert KEY not in journal.path.read_bytes().decode("utf-8", "replace")
    assert job.connection.headers == (("x-team", "blue"),)
    # The key comes back from the secret store, by name.
    conn = journal.get("csb_1").connection.resolve(
        SecretStore([StaticSecrets({"OPENAI_API_KEY": KEY})])
    )
    assert conn.api_key == KEY
    assert conn.base_url == "http://127.0.0.1:9/v1"


def test_a_missing_key_is_explained() -> None:
    connection = BatchConnection(api_key_secret=None)
    with pytest.raises(ConfigError, match="literal key is not stored"):
        connection.resolve(SecretStore([]))


@pytest.mark.parametrize(
    ("field", "name"),
    [
        (None, "OPENAI_API_KEY"),
        ("{{ secret('TEAM_KEY') }}", "TEAM_KEY"),
        ("{{ secrets.TEAM_KEY }}", "TEAM_KEY"),
        ("{{ secrets['TEAM-KEY'] }}", "TEAM-KEY"),
        ("sk-literal-0123456789", None),
    ],
)
def test_key_secret_name(field: str | None, name: str | None) -> None:
    assert key_secret_name(field) == name


def test_rows_of_a_failed_batch_carry_its_validation_error() -> None:
    from chatstep.batch.results import _missing

    job = _job(parts=1)
    job.parts[0].update(
        {
            "status": "failed",
            "errors": {
                "data": [{"code": "invalid_json_line", "message": "Line 3 is broken.", "line": 3}]
            },
        }
    )
    missing = _missing(job)
    assert missing(2)["code"] == "invalid_json_line"
    assert "Line 3 is broken." in missing(2)["message"]
    assert missing(0)["code"] == "batch_failed"
    assert "Line 3 is broken." in missing(0)["message"]
