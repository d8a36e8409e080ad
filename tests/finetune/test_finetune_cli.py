"""``chatstep finetune`` through the CLI against the test server: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.cli.finetune import EXIT_NOT_SUCCEEDED, EXIT_WAIT_TIMEOUT
from chatstep.testing import TestServer

from .conftest import write_rows

runner = CliRunner()
FAST = ["--poll", "0.02", "--max-poll", "0.1"]


def _prepare(step_file: Path, rows: Path, out: Path) -> None:
    done = runner.invoke(
        app,
        [
            "finetune",
            "prepare",
            str(step_file),
            "--rows",
            str(rows),
            "--target",
            "label",
            "-o",
            str(out),
        ],
    )
    assert done.exit_code == 0, done.output


def test_prepare_submit_wait_then_run_with_the_model(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", 14)
    out = tmp_path / "train.jsonl"
    prepared = runner.invoke(
        app,
        [
            "finetune",
            "prepare",
            str(step_file),
            "--rows",
            str(rows),
            "--target",
            "label",
            "-o",
            str(out),
            "--validation",
            "2",
        ],
    )
    assert prepared.exit_code == 0, prepared.output
    assert prepared.stdout.strip() == str(out)
    assert "12 training examples, 2 held out in" in prepared.stderr

    validation = tmp_path / "train.validation.jsonl"
    submitted = runner.invoke(
        app,
        [
            "finetune",
            "submit",
            str(out),
            "-m",
            "gpt-4o-mini",
            "--epochs",
            "2",
            "--validation-file",
            str(validation),
            "--suffix",
            "cli",
        ],
    )
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    assert job_id.startswith("csf_")

    waited = runner.invoke(app, ["finetune", "wait", job_id, *FAST])
    assert waited.exit_code == 0, waited.output
    model = waited.stdout.strip()
    assert model.startswith("ft:gpt-4o-mini-2024-07-18:chatstep-test:cli:")
    assert "succeeded" in waited.stderr

    ran = runner.invoke(
        app, ["run", str(step_file), "-i", "ticket=hello", "--set", f"model={model}"]
    )
    assert ran.exit_code == 0, ran.output
    assert ran.stdout.strip() == "echo: hello"

    again = runner.invoke(
        app,
        [
            "finetune",
            "submit",
            str(out),
            "-m",
            "gpt-4o-mini",
            "--epochs",
            "2",
            "--validation-file",
            str(validation),
            "--suffix",
            "cli",
        ],
    )
    assert again.stdout.strip() == job_id  # the same inputs: the same job

    status = runner.invoke(app, ["finetune", "status", job_id, "--json"])
    assert json.loads(status.stdout)["fine_tuned_model"] == model
    listed = runner.invoke(app, ["finetune", "list"])
    assert listed.stdout.startswith(f"{job_id}  succeeded  ftjob-")
    remote = runner.invoke(app, ["finetune", "list", "--remote", "--json"])
    assert [j["fine_tuned_model"] for j in json.loads(remote.stdout)] == [model]
    events = runner.invoke(app, ["finetune", "events", job_id, "-n", "100"])
    assert events.exit_code == 0, events.output
    lines = events.stdout.splitlines()
    assert "Created fine-tuning job" in lines[0]
    assert lines[-1].endswith("The job has successfully completed")


def test_prepare_errors_exit_3_naming_rows(step_file: Path, tmp_path: Path) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", 12, label="")
    out = runner.invoke(
        app, ["finetune", "prepare", str(step_file), "--rows", str(rows), "--target", "label"]
    )
    assert out.exit_code == 3
    assert "12 of 12 examples are not valid" in out.stderr
    assert "rows[0].messages[2].content: is empty" in out.stderr
    assert "Traceback" not in out.output
    missing = runner.invoke(app, ["finetune", "prepare", str(step_file), "--target", "label"])
    assert missing.exit_code == 3
    assert "--rows: is missing" in missing.stderr


def test_wait_exits_10_when_the_job_fails(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    openai_env.configure(fine_tune_failure="capacity")
    out = tmp_path / "train.jsonl"
    _prepare(step_file, write_rows(tmp_path / "rows.jsonl", 10), out)
    submitted = runner.invoke(app, ["finetune", "submit", str(out), "-m", "gpt-4o-mini"])
    job_id = submitted.stdout.strip()
    waited = runner.invoke(app, ["finetune", "wait", job_id, *FAST])
    assert waited.exit_code == EXIT_NOT_SUCCEEDED == 10
    assert waited.stdout == ""
    assert f"fine-tuning job {job_id} ended failed: capacity" in waited.stderr


def test_wait_timeout_exits_11_and_cancel(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    openai_env.configure(fine_tune_progress="polls")
    out = tmp_path / "train.jsonl"
    _prepare(step_file, write_rows(tmp_path / "rows.jsonl", 10), out)
    job_id = runner.invoke(app, ["finetune", "submit", str(out), "-m", "gpt-4o-mini"]).stdout
    job_id = job_id.strip()
    # Each poll moves it one status on: the wait polls twice, then its timeout passes.
    timed = runner.invoke(
        app, ["finetune", "wait", job_id, "--poll", "5", "--timeout", "0.05", "-q"]
    )
    assert timed.exit_code == EXIT_WAIT_TIMEOUT == 11
    assert "keeps training" in timed.stderr
    cancelled = runner.invoke(app, ["finetune", "cancel", job_id])
    assert cancelled.exit_code == 0, cancelled.output
    assert f"{job_id}  cancelled" in cancelled.stdout
    waited = runner.invoke(app, ["finetune", "wait", job_id, *FAST])
    assert waited.exit_code == 10


def test_unknown_job_and_bad_file(openai_env: TestServer, tmp_path: Path) -> None:
    unknown = runner.invoke(app, ["finetune", "status", "csf_nothing"])
    assert unknown.exit_code == 3
    assert "no fine-tuning job 'csf_nothing'" in unknown.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n" * 10)
    refused = runner.invoke(app, ["finetune", "submit", str(bad), "-m", "gpt-4o-mini"])
    assert refused.exit_code == 3
    assert "line 1, messages: is missing or empty" in refused.stderr
    assert openai_env.requests == []
