"""The test server's Fine-tuning API, through the OpenAI SDK: statuses, checks, events, models."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import openai
import pytest

from chatstep.testing import TestServer

ENDED = {"succeeded", "failed", "cancelled"}


def _example(n: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"question {n}"},
            {"role": "assistant", "content": f"answer {n}"},
        ]
    }


def _upload(client: openai.OpenAI, lines: list[Any], purpose: str = "fine-tune") -> str:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    uploaded = client.files.create(
        file=("train.jsonl", io.BytesIO(text.encode())),
        purpose=purpose,  # type: ignore[arg-type]
    )
    return uploaded.id


def _wait(client: openai.OpenAI, job_id: str) -> Any:
    for _ in range(500):
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ENDED:
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not end")


def test_a_job_trains_and_its_model_answers(client: openai.OpenAI) -> None:
    training = _upload(client, [_example(n) for n in range(10)])
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training)
    assert job.status == "validating_files"
    assert job.fine_tuned_model is None
    done = _wait(client, job.id)
    assert done.status == "succeeded"
    assert done.model == "gpt-4o-mini-2024-07-18"
    assert done.fine_tuned_model is not None
    assert done.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:chatstep-test::")
    assert done.hyperparameters.n_epochs == 3  # auto, resolved when training starts
    assert done.trained_tokens == 10 * (2 + 4 + 2 + 4) * 3
    (results,) = done.result_files
    assert client.files.retrieve(results).purpose == "fine-tune-results"
    assert done.fine_tuned_model in [m.id for m in client.models.list().data]
    assert client.models.retrieve(done.fine_tuned_model).id == done.fine_tuned_model
    answer = client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "echo: hi"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["{oops"] + [_example(n) for n in range(10)], "Line 1 is not valid JSON."),
        (
            [_example(n) for n in range(3)]
            + [{"messages": [{"role": "robot", "content": "x"}]}]
            + [_example(n) for n in range(9)],
            "Line 4, message 1 has an unrecognized role 'robot'.",
        ),
        (
            [_example(n) for n in range(10)] + [{"messages": [{"role": "user", "content": "q"}]}],
            "Line 11 has no assistant message to train on.",
        ),
        ([_example(n) for n in range(9)], "The file has 9 example(s); it must have at least 10."),
    ],
)
def test_a_bad_training_file_fails_the_job_naming_the_line(
    client: openai.OpenAI, lines: list[Any], message: str
) -> None:
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=_upload(client, lines))
    done = _wait(client, job.id)
    assert done.status == "failed"
    assert done.fine_tuned_model is None
    assert done.error is not None
    assert done.error.code == "invalid_training_file"
    assert done.error.message.endswith(message)
    assert done.error.param == "training_file"


def test_create_is_checked_against_the_spec_and_the_files(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    training = _upload(client, [_example(n) for n in range(10)])
    openai_server.allow_spec_violations()
    with pytest.raises(openai.BadRequestError, match="n_epochs"):
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini",
            training_file=training,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}},
        )
    with pytest.raises(openai.BadRequestError, match="suffix"):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training, suffix="x" * 65)
    with pytest.raises(openai.BadRequestError, match="not available for fine-tuning"):
        client.fine_tuning.jobs.create(model="o3", training_file=training)
    with pytest.raises(openai.BadRequestError, match="File file-nope not found"):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-nope")
    batch_file = _upload(client, [_example(1)], purpose="batch")
    with pytest.raises(openai.BadRequestError, match="purpose 'fine-tune'"):
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=batch_file)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")


def test_polled_progress_cancel_list_and_events(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.configure(fine_tune_progress="polls")
    training = _upload(client, [_example(n) for n in range(10)])
    first = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=training, metadata={"team": "a"}
    )
    second = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training)
    statuses = [client.fine_tuning.jobs.retrieve(first.id).status for _ in range(4)]
    assert statuses == ["queued", "running", "succeeded", "succeeded"]
    assert client.fine_tuning.jobs.cancel(second.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError, match="already cancelled"):
        client.fine_tuning.jobs.cancel(second.id)
    listed = client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in listed.data] == [second.id]
    assert listed.has_more
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "a"}).data] == [first.id]
    events = client.fine_tuning.jobs.list_events(first.id, limit=100).data
    assert events[0].message == "The job has successfully completed"  # newest first
    assert events[-1].message == f"Created fine-tuning job: {first.id}"
    page = client.fine_tuning.jobs.list_events(first.id, limit=2, after=events[1].id)
    assert [e.id for e in page.data] == [events[2].id, events[3].id]


def test_a_training_failure_can_be_injected(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.configure(fine_tune_failure="GPU on fire")
    training = _upload(client, [_example(n) for n in range(10)])
    done = _wait(client, client.fine_tuning.jobs.create(model="gpt-4o", training_file=training).id)
    assert done.status == "failed"
    assert done.error is not None
    assert done.error.message == "GPU on fire"
    assert done.model == "gpt-4o-2024-08-06"
