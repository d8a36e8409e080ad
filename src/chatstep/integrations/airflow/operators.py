"""Apache Airflow operators: :class:`ChatStepOperator` and :class:`ChatStepBatchOperator`.

Needs the extra: ``pip install "chatstep[airflow]"`` (Airflow 3)::

    from chatstep.integrations.airflow import ChatStepBatchOperator, ChatStepOperator

    summarize = ChatStepOperator(
        task_id="summarize",
        step={"model": "gpt-4o-mini", "prompt": "News of {{ inputs.day }}: {{ inputs.text }}"},
        inputs={"day": "{{ ds }}", "text": "{{ ti.xcom_pull(task_ids='fetch') }}"},
    )
    reply = ChatStepOperator(
        task_id="reply",
        step="steps/reply.yaml",  # reads outputs.summarize.choices[0].message.content
        outputs_from=["summarize"],
    )
    triage = ChatStepBatchOperator(
        task_id="triage",
        step="steps/triage.yaml",
        rows="/data/reviews/{{ ds }}.jsonl",       # or a list of dicts
        output_file="/data/triaged/{{ ds }}.jsonl",
    )

**ChatStepOperator.** Two template engines, one pass each: Airflow renders the templated fields
(``inputs``, ``outputs_from``, ``conn_id``) with its own context (``ds``, ``params``, ``ti``...),
then chatstep renders the step's templates with those inputs, earlier chatstep tasks' outputs and
secrets. A value inserted by either is never rendered again. XCom: the return value is the
answer (parsed JSON, else the text, else the tool calls; for moderation the per-input results,
for embeddings the vectors) and the whole response is pushed under the key
``chatstep_response``, which ``outputs_from`` reads. Token usage and cost are written to the log.

**ChatStepBatchOperator.** ``execute`` renders every row through the step (as ``chatstep batch
submit`` does), uploads and creates the batch(es), then **defers**: a
:class:`~chatstep.integrations.airflow.triggers.ChatStepBatchTrigger` polls the job on the
triggerer, so no worker slot is held for the hours a batch can take. When the job ends the task
resumes on a worker, downloads the results and joins them to the rows in input order, one JSON
row each (``content``, ``parsed``, ``usage``, ``cost``, ``error``...), written to
``output_file`` (default: ``results.jsonl`` in the job's directory under the chatstep user
directory of that worker). ``deferrable=False`` polls on the worker instead. XCom
``return_value``: ``{"job_id", "output", "rows", "succeeded", "failed", "cost_usd"}``; the job id
is also pushed under ``chatstep_batch_job`` as soon as it is submitted, so ``chatstep batch
status|cancel <job id>`` can reach it from anywhere with the same key. The task resumes on
whichever worker is free, so ``rows`` must be readable there too (shared storage, or rows given
inline). A batch that ends ``failed``, ``expired`` or ``cancelled`` fails the task, naming the
job and the API's errors. When ``wait_timeout`` passes, the task fails and the batch keeps
running (cancel it with ``chatstep batch cancel``).

Both read the key from an Airflow Connection (``conn_id``, default ``openai_default``) through
:class:`~chatstep.integrations.airflow.hook.ChatStepHook`; a key or base URL set in the step wins.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    from airflow.sdk import BaseOperator
    from airflow.sdk.exceptions import AirflowException
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "chatstep.integrations.airflow.operators needs Apache Airflow 3, which is not installed "
        f'({exc}); install it with: pip install "chatstep[airflow]"'
    ) from exc

from chatstep.batch.api import BatchLimits, PollSchedule, abatch_results, apoll_batch, asubmit_batch
from chatstep.batch.journal import BatchJob
from chatstep.core.result import AnyResult, EmbeddingResult, ModerationResult, StepResult
from chatstep.durations import parse_duration
from chatstep.integrations.airflow.hook import DEFAULT_CONN_ID, ChatStepHook
from chatstep.integrations.airflow.triggers import ChatStepBatchTrigger, job_summary
from chatstep.steps.definitions import Step
from chatstep.steps.loading import load_step

if TYPE_CHECKING:
    from chatstep.secrets import SecretStore

__all__ = [
    "JOB_XCOM_KEY",
    "RESPONSE_XCOM_KEY",
    "ChatStepBatchOperator",
    "ChatStepOperator",
    "answer_of",
]

RESPONSE_XCOM_KEY = "chatstep_response"
JOB_XCOM_KEY = "chatstep_batch_job"


def answer_of(result: AnyResult) -> Any:
    """The JSON-able answer of a result: what the operator returns (XCom ``return_value``)."""
    if isinstance(result, StepResult):
        if result.parsed is not None:
            return result.parsed
        if result.content is not None:
            return result.content
        return [{"name": c.name, "arguments": c.arguments} for c in result.tool_calls]
    if isinstance(result, ModerationResult):
        return result.results
    if isinstance(result, EmbeddingResult):
        return result.vectors
    raise TypeError(f"not a chatstep result: {type(result).__name__}")


class ChatStepOperator(BaseOperator):  # type: ignore[misc]
    """Run a chatstep step (a step object, a dict, or a YAML/JSON file) as an Airflow task."""

    template_fields: Sequence[str] = ("inputs", "outputs_from", "conn_id")
    template_fields_renderers = {"inputs": "json"}
    ui_color = "#d9f2e6"

    def __init__(
        self,
        *,
        step: Step | Mapping[str, Any] | str | Path,
        inputs: Mapping[str, Any] | None = None,
        outputs_from: Sequence[str] | Mapping[str, str] | None = None,
        conn_id: str | None = DEFAULT_CONN_ID,
        response_xcom_key: str = RESPONSE_XCOM_KEY,
        **kwargs: Any,
    ) -> None:
        """``outputs_from``: task ids (or ``{name: task_id}``) of earlier ChatStepOperators whose
        responses the step reads as ``outputs.<name>``. ``conn_id`` None: no Airflow Connection.
        """
        super().__init__(**kwargs)
        # Loaded when the DAG is parsed, so a broken step is a DAG import error, not a task
        # failure hours later.
        self.step = load_step(step)
        self.inputs: Any = dict(inputs or {})
        self.outputs_from: Any = outputs_from
        self.conn_id = conn_id
        self.response_xcom_key = response_xcom_key

    def _secrets(self) -> SecretStore:
        return ChatStepHook(self.conn_id).secret_store()

    def _upstream_outputs(self, context: Mapping[str, Any]) -> dict[str, Any]:
        sources = self.outputs_from
        if not sources:
            return {}
        pairs = dict(sources) if isinstance(sources, Mapping) else {t: t for t in sources}
        outputs: dict[str, Any] = {}
        for name, task_id in pairs.items():
            value = context["ti"].xcom_pull(task_ids=task_id, key=self.response_xcom_key)
            if value is None:
                raise ValueError(
                    f"outputs_from: task {task_id!r} pushed no XCom {self.response_xcom_key!r}; "
                    "name an upstream ChatStepOperator that ran before this task"
                )
            outputs[name] = value
        return outputs

    def execute(self, context: Any) -> Any:
        """Run the step; push the whole response to XCom and return the answer."""
        from chatstep.core.sync_runner import Runner

        inputs = dict(self.inputs or {})
        outputs = self._upstream_outputs(context)
        with Runner(secrets=self._secrets()) as runner:
            result = runner.run(self.step, inputs, outputs)
        usage = result.usage
        self.log.info(
            "chatstep usage: model=%s prompt_tokens=%s completion_tokens=%s total_tokens=%s "
            "cost_usd=%s attempts=%s latency_ms=%.0f",
            result.response.get("model"),
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            usage.get("total_tokens"),
            "unknown" if result.cost is None else f"{result.cost:.6f}",
            result.attempts,
            result.latency_ms or 0.0,
        )
        context["ti"].xcom_push(key=self.response_xcom_key, value=result.response)
        return answer_of(result)


def _api_errors(job: BatchJob) -> str:
    errors = job.error_messages()
    return f": {'; '.join(errors)}" if errors else ""


class ChatStepBatchOperator(BaseOperator):  # type: ignore[misc]
    """Submit rows through a step as a batch job, wait (deferred), join and write the results."""

    template_fields: Sequence[str] = ("rows", "output_file", "conn_id", "metadata")
    ui_color = "#d9e8f2"

    def __init__(
        self,
        *,
        step: Step | Mapping[str, Any] | str | Path | None,
        rows: str | Path | Sequence[Mapping[str, Any]],
        output_file: str | Path | None = None,
        conn_id: str | None = DEFAULT_CONN_ID,
        deferrable: bool = True,
        poll_interval: float | str | timedelta = 60.0,
        wait_timeout: float | str | timedelta | None = None,
        metadata: Mapping[str, str] | None = None,
        limits: BatchLimits | None = None,
        **kwargs: Any,
    ) -> None:
        """``step`` None: the rows are already Batch API request lines. ``poll_interval``: time
        between status checks; ``wait_timeout``: give up waiting (the batch keeps running) after
        this long. Both take seconds, ``"30s"``/``"2h"``, ISO 8601 (``"PT1H"``) or a timedelta.
        """
        super().__init__(**kwargs)
        # Loaded when the DAG is parsed, so a broken step is a DAG import error.
        self.step = load_step(step) if step is not None else None
        self.rows: Any = rows
        self.output_file: Any = output_file
        self.conn_id = conn_id
        self.deferrable = deferrable
        try:
            self.poll_interval = parse_duration(poll_interval)
            wait = None if wait_timeout is None else parse_duration(wait_timeout)
        except ValueError as exc:
            raise ValueError(f"ChatStepBatchOperator: {exc}") from None
        self.wait_timeout = None if wait is None else timedelta(seconds=wait)
        self.metadata: Any = dict(metadata or {})
        self.limits = limits

    def _rows(self) -> Any:
        rows = self.rows
        return Path(rows) if isinstance(rows, str) else rows

    def execute(self, context: Any) -> Any:
        """Submit the job, then defer to the trigger (or poll here when not deferrable)."""
        from chatstep.core.calls import run_sync

        secrets = ChatStepHook(self.conn_id).secret_store()
        rows = self._rows()
        job = run_sync(
            asubmit_batch(
                self.step,
                rows,
                secrets=secrets,
                limits=self.limits,
                metadata=self.metadata or None,
                source=str(rows) if isinstance(rows, Path) else None,
            )
        )
        self.log.info(
            "chatstep submitted batch job %s: %d rows in %d batch(es) %s",
            job.id,
            job.row_count,
            len(job.parts),
            [p.batch_id for p in job.parts],
        )
        context["ti"].xcom_push(key=JOB_XCOM_KEY, value=job.id)
        if self.deferrable:
            self.defer(
                trigger=ChatStepBatchTrigger(job.to_dict(), self.conn_id, self.poll_interval),
                method_name="execute_complete",
                timeout=self.wait_timeout,
            )
        timeout = None if self.wait_timeout is None else self.wait_timeout.total_seconds()
        schedule = PollSchedule(initial=min(5.0, self.poll_interval), maximum=self.poll_interval)
        try:
            job = run_sync(apoll_batch(job, poll=schedule, timeout=timeout, secrets=secrets))
        except TimeoutError as exc:
            raise AirflowException(str(exc)) from None
        return self._finish(job, secrets)

    def execute_complete(self, context: Any, event: Mapping[str, Any]) -> Any:
        """Resume after the trigger fired: fail on a failed job, else join the results."""
        job = BatchJob.from_dict(event["job"])
        if event["status"] == "error":
            raise AirflowException(
                f"polling batch job {job.id} failed: {event.get('message')} "
                f"(the batch may still be running: chatstep batch status {job.id})"
            )
        return self._finish(job, ChatStepHook(self.conn_id).secret_store())

    def _finish(self, job: BatchJob, secrets: SecretStore) -> dict[str, Any]:
        from chatstep.core.calls import run_sync

        if job.status != "completed":
            raise AirflowException(job_summary(job) + _api_errors(job))
        started = time.monotonic()
        results = run_sync(
            abatch_results(job, self.output_file, rows=self._rows(), secrets=secrets)
        )
        cost = "unknown" if results.cost is None else f"{results.cost:.6f}"
        self.log.info(
            "chatstep batch job %s: %d rows, %d succeeded, %d failed, cost_usd=%s (batch "
            "price); results joined in %.1fs to %s",
            job.id,
            results.rows,
            results.succeeded,
            results.failed,
            cost,
            time.monotonic() - started,
            results.path,
        )
        return {
            "job_id": job.id,
            "output": str(results.path),
            "rows": results.rows,
            "succeeded": results.succeeded,
            "failed": results.failed,
            "cost_usd": results.cost,
        }
