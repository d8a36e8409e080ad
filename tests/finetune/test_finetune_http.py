"""Fine-tuning end to end against the test server: prepare, submit, wait, use the model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatstep import (
    FineTuneJob,
    acancel_finetune,
    afinetune_status,
    apoll_finetune,
    asubmit_finetune,
    cancel_finetune,
    finetune_events,
    finetune_status,
    list_finetunes,
    load_step,
    poll_finetune,
    prepare_finetune,
    run_step,
    submit_finetune,
)
from chatstep.errors import APIError, ConfigError, TrainingDataError
from chatstep.testing import Fail, TestServer

from .conftest import FAST, write_rows

JOBS = "/v1/fine_tuning/jobs"


def _calls(server: TestServer, method: str, path: str) -> list[Any]:
    return [r for r in server.requests if r.method == method and r.path == path]


def _training(tmp_path: Path, step_file: Path, count: int = 12) -> Path:
    rows = write_rows(tmp_path / f"rows{count}.jsonl", count)
    return prepare_finetune(step_file, rows, tmp_path / "train.jsonl", target="label").training_file


def test_submit_wait_and_use_the_model_in_a_step(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", 15)
    data = prepare_finetune(step_file, rows, tmp_path / "train.jsonl", target="label", validation=3)
    job = submit_finetune(data, model="gpt-4o-mini", n_epochs=2, suffix="triage", seed=7)
    assert job.id.startswith("csf_")
    assert job.job_id is not None
    assert job.job_id.startswith("ftjob-")

    (created,) = _calls(openai_env, "POST", JOBS)
    assert created.body["model"] == "gpt-4o-mini"
    assert created.body["method"] == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 2}},
    }
    assert created.body["suffix"] == "triage"
    assert created.body["seed"] == 7
    assert created.body["metadata"] == {"chatstep_job": job.id}
    uploads = _calls(openai_env, "POST", "/v1/files")
    assert [u.body["purpose"] for u in uploads] == ["fine-tune", "fine-tune"]
    assert created.body["validation_file"] == job.validation_file_id

    seen: list[str] = []
    done = poll_finetune(job.id, poll=FAST, on_progress=lambda j: seen.append(j.status))
    assert done.succeeded
    assert seen[-1] == "succeeded"
    assert done.fine_tuned_model is not None
    assert done.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:chatstep-test:triage:")
    assert done.hyperparameters == {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 1.8}
    assert done.trained_tokens is not None
    assert done.trained_tokens > 0
    assert done.result_files

    tuned = load_step(step_file).model_copy(update={"model": done.fine_tuned_model})
    result = run_step(tuned, {"ticket": "it crashed"})
    assert result.content == "echo: it crashed"
    assert _calls(openai_env, "POST", "/v1/chat/completions")[-1].body["model"] == (
        done.fine_tuned_model
    )
    # The journal remembers the ended job: status asks nothing more.
    before = len(openai_env.requests)
    assert finetune_status(job.job_id).fine_tuned_model == done.fine_tuned_model
    assert len(openai_env.requests) == before


def test_a_model_never_trained_is_not_found(openai_env: TestServer, step_file: Path) -> None:
    with pytest.raises(APIError) as caught:
        run_step({"model": "ft:gpt-4o-mini-2024-07-18:someone::abc", "prompt": "x"})
    assert caught.value.status_code == 404


def test_the_same_inputs_make_one_job(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    train = _training(tmp_path, step_file)
    first = submit_finetune(train, model="gpt-4o-mini", n_epochs=3)
    again = submit_finetune(train, model="gpt-4o-mini", n_epochs=3)
    assert again.id == first.id
    assert again.job_id == first.job_id
    assert len(_calls(openai_env, "POST", JOBS)) == 1
    assert len(_calls(openai_env, "POST", "/v1/files")) == 1
    # Other settings are another job; force makes a second one of the same inputs.
    other = submit_finetune(train, model="gpt-4o-mini", n_epochs=4)
    forced = submit_finetune(train, model="gpt-4o-mini", n_epochs=3, force=True)
    assert len({first.id, other.id, forced.id}) == 3
    assert len(_calls(openai_env, "POST", JOBS)) == 3
    assert [j.id for j in list_finetunes()] == [forced.id, other.id, first.id]


def test_the_same_inputs_make_one_job_across_processes(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    train = _training(tmp_path, step_file)
    code = (
        "import sys\nfrom chatstep import submit_finetune\n"
        "print(submit_finetune(sys.argv[1], model='gpt-4o-mini').id)\n"
    )

    def start() -> subprocess.Popen[str]:
        command = [sys.executable, "-c", code, str(train)]
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)

    # Two at once (one claims, the other finds the claim), then a re-run after both.
    together = [start(), start()]
    ids = [process.communicate()[0].strip() for process in together]
    assert [process.returncode for process in together] == [0, 0]
    ids.append(start().communicate()[0].strip())
    assert len(set(ids)) == 1
    assert ids[0].startswith("csf_")
    assert len(_calls(openai_env, "POST", JOBS)) == 1
    done = poll_finetune(ids[0], poll=FAST)
    assert done.succeeded


def test_a_failed_job_is_submitted_again(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    openai_env.configure(fine_tune_failure="the training run ran out of capacity")
    train = _training(tmp_path, step_file)
    failed = poll_finetune(submit_finetune(train, model="gpt-4o-mini"), poll=FAST)
    assert failed.status == "failed"
    assert not failed.succeeded
    assert failed.error_message() == "the training run ran out of capacity"
    assert failed.fine_tuned_model is None
    openai_env.configure(fine_tune_failure=None)
    retried = submit_finetune(train, model="gpt-4o-mini")
    assert retried.id != failed.id
    assert poll_finetune(retried, poll=FAST).succeeded


def test_a_bad_line_fails_the_job_naming_the_line(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    train = _training(tmp_path, step_file)
    lines = train.read_text().splitlines()
    lines[4] = json.dumps({"messages": [{"role": "robot", "content": "beep"}]})
    train.write_text("\n".join(lines) + "\n")
    with pytest.raises(TrainingDataError, match=r"line 5, messages\[0\]\.role: is 'robot'"):
        submit_finetune(train, model="gpt-4o-mini")
    assert _calls(openai_env, "POST", "/v1/files") == []  # refused before uploading

    # Unchecked, the provider fails it, naming the line as OpenAI does.
    job = poll_finetune(submit_finetune(train, model="gpt-4o-mini", check=False), poll=FAST)
    assert job.status == "failed"
    assert job.error is not None
    assert job.error["code"] == "invalid_training_file"
    assert "Line 5, message 1 has an unrecognized role 'robot'" in job.error["message"]
    events = finetune_events(job)
    assert events[-1]["level"] == "error"


def test_too_few_examples_fail_on_the_server_too(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    train = tmp_path / "small.jsonl"
    example = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    }
    train.write_text(json.dumps(example) + "\n")
    with pytest.raises(TrainingDataError, match="holds 1 example"):
        submit_finetune(train, model="gpt-4o-mini")
    job = poll_finetune(submit_finetune(train, model="gpt-4o-mini", check=False), poll=FAST)
    assert job.error is not None
    assert "at least 10" in job.error["message"]


def test_cancel_while_queued_and_events(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    openai_env.configure(fine_tune_progress="polls")
    train = _training(tmp_path, step_file)

    async def scenario() -> FineTuneJob:
        job = await asubmit_finetune(train, model="gpt-4o-mini")
        assert job.status == "validating_files"
        job = await afinetune_status(job)
        assert job.status == "queued"
        cancelled = await acancel_finetune(job.id)
        assert cancelled.status == "cancelled"
        assert cancelled.done
        assert (await acancel_finetune(job.id)).status == "cancelled"  # ended: nothing asked
        return job

    job = asyncio.run(scenario())
    messages = [e["message"] for e in finetune_events(job, limit=100)]
    assert messages == [
        f"Created fine-tuning job: {job.job_id}",
        f"Validating training file: {job.training_file_id}",
        "Files validated, moving job to queued state",
        "Fine-tuning job cancelled",
    ]
    assert finetune_events(job, limit=2)[-1]["message"] == "Fine-tuning job cancelled"


def test_every_status_is_seen_when_polled(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    openai_env.configure(fine_tune_progress="polls")
    train = _training(tmp_path, step_file)
    seen: list[str] = []

    async def scenario() -> FineTuneJob:
        job = await asubmit_finetune(train, model="gpt-4o-mini")
        return await apoll_finetune(job, poll=FAST, on_progress=lambda j: seen.append(j.status))

    done = asyncio.run(scenario())
    assert seen == ["queued", "running", "succeeded"]
    metrics = [e for e in finetune_events(done, limit=100) if e["type"] == "metrics"]
    assert metrics
    assert metrics[-1]["data"]["step"] == metrics[-1]["data"]["total_steps"]


def test_cancelling_an_ended_job_returns_it(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    job = poll_finetune(
        submit_finetune(_training(tmp_path, step_file), model="gpt-4o-mini"), poll=FAST
    )
    job.status = "running"  # as an old journal entry would say
    assert cancel_finetune(job).status == "succeeded"


def test_a_server_error_on_create_is_retried_without_a_second_job(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    openai_env.enqueue(Fail(500), path=JOBS)
    job = submit_finetune(_training(tmp_path, step_file), model="gpt-4o-mini")
    assert job.job_id is not None
    assert len(_calls(openai_env, "POST", JOBS)) == 2
    assert len(_calls(openai_env, "GET", JOBS)) == 1  # looked for a job the 500 made anyway


def test_settings_are_checked_before_anything_is_sent(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    train = _training(tmp_path, step_file)
    with pytest.raises(ConfigError, match="n_epochs: is 0"):
        submit_finetune(train, model="gpt-4o-mini", n_epochs=0)
    with pytest.raises(ConfigError, match="batch_size: is 300"):
        submit_finetune(train, model="gpt-4o-mini", batch_size=300)
    with pytest.raises(ConfigError, match="suffix: is 65 characters"):
        submit_finetune(train, model="gpt-4o-mini", suffix="x" * 65)
    assert openai_env.requests == []


def test_a_model_the_provider_cannot_tune_is_an_api_error(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    train = _training(tmp_path, step_file)
    with pytest.raises(APIError, match="not available for fine-tuning"):
        submit_finetune(train, model="o3")
    (failed,) = list_finetunes()
    assert failed.done
    assert failed.submit_error is not None
    assert "not available for fine-tuning" in failed.submit_error


def test_a_submission_whose_process_died_is_taken_over(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    from chatstep.finetune.journal import FineTuneJournal

    train = _training(tmp_path, step_file)
    job = submit_finetune(train, model="gpt-4o-mini")
    journal = FineTuneJournal()
    # As if its process had died after claiming the job, before the provider created it.
    job.job_id, job.status, job.owner = None, "submitting", "nohost:1"
    journal.save(job)
    resumed = submit_finetune(train, model="gpt-4o-mini")
    assert resumed.id == job.id
    assert resumed.job_id is not None
    # It first looked for the job its dead submitter may have created (found it: no new job).
    assert len(_calls(openai_env, "POST", JOBS)) == 1
    assert len(_calls(openai_env, "GET", JOBS)) == 1
