"""Apache Airflow: :class:`ChatStepOperator` runs a chatstep step as an Airflow task.

Needs the extra: ``pip install "chatstep[airflow]"`` (Airflow 3)::

    from chatstep.integrations.airflow.operators import ChatStepOperator

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

Two template engines, one pass each: Airflow renders the templated fields (``inputs``,
``outputs_from``, ``conn_id``) with its own context (``ds``, ``params``, ``ti``...), then
chatstep renders the step's templates with those inputs, earlier chatstep tasks' outputs and
secrets. A value inserted by either is never rendered again.

The connection is an Airflow Connection (default ``openai_default``), read the way Airflow's
OpenAI provider reads it: password = API key, host = base URL, and ``organization`` /
``project`` from ``extra`` (or its ``openai_client_kwargs``). A key or base URL set in the step
wins; with no such connection, chatstep's own lookup applies (``OPENAI_API_KEY``...).

XCom: the return value is the answer (parsed JSON, else the text, else the tool calls; for
moderation the per-input results, for embeddings the vectors) and the whole response is pushed
under the key ``chatstep_response``, which ``outputs_from`` reads. Token usage and cost are
written to the task log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    from airflow.sdk import BaseHook, BaseOperator
    from airflow.sdk.exceptions import AirflowNotFoundException
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "chatstep.integrations.airflow.operators needs Apache Airflow 3, which is not installed "
        f'({exc}); install it with: pip install "chatstep[airflow]"'
    ) from exc

from chatstep.core.result import AnyResult, EmbeddingResult, ModerationResult, StepResult
from chatstep.steps.definitions import Step
from chatstep.steps.loading import load_step

if TYPE_CHECKING:
    from chatstep.secrets import SecretStore

__all__ = [
    "DEFAULT_CONN_ID",
    "RESPONSE_XCOM_KEY",
    "ChatStepOperator",
    "answer_of",
    "connection_secret_store",
    "connection_values",
]

DEFAULT_CONN_ID = "openai_default"
RESPONSE_XCOM_KEY = "chatstep_response"


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


def connection_values(conn: Any) -> dict[str, str]:
    """The chatstep secrets an Airflow Connection holds, read as Airflow's OpenAI provider does:
    password = key, host = base URL, ``organization`` / ``project`` from ``extra`` (or its
    ``openai_client_kwargs``)."""
    extra = conn.extra_dejson or {}
    client = extra.get("openai_client_kwargs") or {}
    found = {
        "OPENAI_API_KEY": conn.password,
        "OPENAI_BASE_URL": conn.host,
        "OPENAI_ORG_ID": extra.get("organization") or client.get("organization"),
        "OPENAI_PROJECT_ID": extra.get("project") or client.get("project"),
    }
    return {k: str(v) for k, v in found.items() if v}


def connection_secret_store(conn_id: str | None, log: Any) -> SecretStore:
    """The secret store for a task: its Airflow Connection first (when it exists).

    A missing ``openai_default`` falls back to chatstep's own lookup (``OPENAI_API_KEY``...); a
    missing connection named explicitly is Airflow's own error.
    """
    values: dict[str, str] = {}
    if conn_id:
        try:
            values = connection_values(BaseHook.get_connection(conn_id))
        except AirflowNotFoundException:
            if conn_id != DEFAULT_CONN_ID:
                raise
            log.info(
                "No Airflow connection %r: using chatstep's own settings (OPENAI_API_KEY...)",
                conn_id,
            )
    from chatstep.secrets import default_secret_store

    return default_secret_store().in_front(values, f"Airflow connection {conn_id!r}")


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
        return connection_secret_store(self.conn_id, self.log)

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
        from chatstep.core.calls import run_sync
        from chatstep.core.runner import AsyncRunner

        inputs = dict(self.inputs or {})
        outputs = self._upstream_outputs(context)
        secrets = self._secrets()

        async def run() -> AnyResult:
            async with AsyncRunner(secrets=secrets) as runner:
                return await runner.run(self.step, inputs, outputs)

        result = run_sync(run())
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
