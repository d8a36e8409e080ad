"""Prefect: chatstep steps as Prefect tasks, with connection settings in a Block.

Needs the extra: ``pip install "chatstep[prefect]"`` (Prefect 3)::

    from prefect import flow
    from chatstep.integrations.prefect import ChatstepConnection, chatstep_task

    summarize = chatstep_task("steps/summarize.yaml", retries=2)
    reply = chatstep_task({
        "model": "gpt-4o-mini",
        "prompt": "Reply to: {{ outputs.summarize.choices[0].message.content }}",
    })

    @flow
    def triage(text: str) -> str | None:
        summary = summarize(inputs={"text": text}, connection="prod-openai")
        return reply(outputs={"summarize": summary}, connection="prod-openai").content

Tasks return chatstep's result objects (``StepResult``: ``.content``, ``.parsed``,
``.tool_calls``, ``.response``...), which later tasks take as ``outputs``. Each call's token
usage and cost are logged and saved as a table artifact of the task run. ``run_chat_step`` is the
same call as a plain function, for your own ``@task`` or for use inside one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

try:
    from prefect import Task, task
    from prefect.artifacts import create_table_artifact
    from prefect.blocks.core import Block
    from prefect.cache_policies import NO_CACHE
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "chatstep.integrations.prefect needs Prefect 3, which is not installed "
        f'({exc}); install it with: pip install "chatstep[prefect]"'
    ) from exc
from pydantic import Field, SecretStr

from chatstep.core.result import AnyResult
from chatstep.steps.definitions import Step
from chatstep.steps.loading import StepSource, load_step

if TYPE_CHECKING:
    from chatstep.secrets import SecretStore

__all__ = ["ChatstepConnection", "chatstep_task", "run_chat_step", "usage_row"]


class ChatstepConnection(Block):  # type: ignore[misc]
    """Where chatstep calls: an OpenAI-compatible endpoint and its key.

    Fields left empty fall back to chatstep's own lookup (``OPENAI_API_KEY``...); a key or base
    URL written in the step itself wins.
    """

    _block_type_name = "Chatstep Connection"
    _block_type_slug = "chatstep-connection"
    _description = "API key and base URL of an OpenAI-compatible endpoint for chatstep steps."

    api_key: SecretStr | None = Field(default=None, description="API key (stored encrypted).")
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL; empty: OpenAI."
    )
    organization: str | None = Field(default=None, description="OpenAI organization id.")
    project: str | None = Field(default=None, description="OpenAI project id.")

    def secret_store(self) -> SecretStore:
        """chatstep's secret store with these settings ahead of its usual providers."""
        from chatstep.secrets import default_secret_store

        found = {
            "OPENAI_API_KEY": self.api_key.get_secret_value() if self.api_key else None,
            "OPENAI_BASE_URL": self.base_url,
            "OPENAI_ORG_ID": self.organization,
            "OPENAI_PROJECT_ID": self.project,
        }
        return default_secret_store().in_front(found, "Prefect block chatstep-connection")


def _connection(connection: ChatstepConnection | str | None) -> ChatstepConnection | None:
    if isinstance(connection, str):
        from chatstep.core.calls import run_sync

        # aload, not load: load returns a coroutine when called from async code.
        loaded: ChatstepConnection = run_sync(ChatstepConnection.aload(connection))
        return loaded
    return connection


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        run_logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = get_run_logger()
    except MissingContextError:
        return logging.getLogger("chatstep.prefect")
    return run_logger


def usage_row(result: AnyResult) -> dict[str, Any]:
    """One call's usage, cost and timing, as the artifact's table row."""
    usage = result.usage
    return {
        "step": result.step_id,
        "model": result.response.get("model"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "cost_usd": result.cost,
        "attempts": result.attempts,
        "latency_ms": round(result.latency_ms or 0.0, 1),
        "cached": result.cached,
    }


def _artifact_key(step: Step) -> str:
    # Artifact keys take lower-case letters, digits and dashes only.
    slug = re.sub(r"[^a-z0-9]+", "-", (step.id or "step").lower()).strip("-") or "step"
    return f"chatstep-usage-{slug}"


def _report(step: Step, result: AnyResult, artifact_key: str | None) -> None:
    row = usage_row(result)
    _logger().info(
        "chatstep usage: %s",
        ", ".join(f"{k}={v}" for k, v in row.items() if v is not None),
    )
    if TaskRunContext.get() is None and FlowRunContext.get() is None:
        return  # outside a flow or task run there is nothing to attach an artifact to
    create_table_artifact(
        table=[row],
        key=artifact_key or _artifact_key(step),
        description=f"Token usage and cost of chatstep step {step.id or '(unnamed)'}",
    )


def run_chat_step(
    step: StepSource,
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    *,
    connection: ChatstepConnection | str | None = None,
    artifact_key: str | None = None,
) -> AnyResult:
    """Run a step and return its result; usage is logged and saved as a table artifact.

    ``connection`` is a :class:`ChatstepConnection` or the name of a saved one. Wrap it in your
    own ``@task`` (``task(run_chat_step)``), or call it inside one.
    """
    from chatstep.core.calls import run_sync
    from chatstep.core.runner import AsyncRunner

    definition = load_step(step)
    block = _connection(connection)
    secrets = block.secret_store() if block is not None else None

    async def run() -> AnyResult:
        async with AsyncRunner(secrets=secrets) as runner:
            return await runner.run(definition, inputs, outputs)

    result = run_sync(run())
    _report(definition, result, artifact_key)
    return result


def chatstep_task(
    step: StepSource,
    *,
    name: str | None = None,
    connection: ChatstepConnection | str | None = None,
    artifact_key: str | None = None,
    **task_options: Any,
) -> Task[..., AnyResult]:
    """A Prefect task running ``step``: call it with ``inputs=``, ``outputs=``, ``connection=``.

    ``task_options`` go to ``prefect.task`` (``retries``, ``timeout_seconds``, ``tags``...).
    Prefect's result caching is off unless a ``cache_policy`` is given: a chat call is not a
    pure function of its inputs.
    """
    definition = load_step(step)
    default_connection = connection
    task_options.setdefault("cache_policy", NO_CACHE)
    task_name = name or definition.id or "chatstep"

    def call(
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
        connection: ChatstepConnection | str | None = None,
    ) -> AnyResult:
        return run_chat_step(
            definition,
            inputs,
            outputs,
            connection=connection if connection is not None else default_connection,
            artifact_key=artifact_key,
        )

    call.__name__ = re.sub(r"\W", "_", task_name)
    call.__qualname__ = call.__name__
    made: Task[..., AnyResult] = task(name=task_name, **task_options)(call)
    return made
