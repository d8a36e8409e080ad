"""``create_batch``: a Flyte workflow that runs rows through chatstep's Batch API.

The workflow has one task, run by an async connector (task type ``chatstep-batch``):
``create`` reads the rows (a JSONL file or an iterator of JSON rows, both JSONL blobs to Flyte)
and submits them with :func:`chatstep.batch.api.asubmit_batch`; ``get`` polls the job and, once it
completed, joins the results to the rows and returns the joined file; ``delete`` (Flyte aborting
the task) cancels the batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator  # noqa: UP035  (flytekit matches typing.Iterator[JSON])

from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import FlyteContextManager, Workflow
from flytekit.configuration import SerializationSettings
from flytekit.core.base_task import PythonTask
from flytekit.core.interface import Interface
from flytekit.extend import TypeEngine
from flytekit.extend.backend.base_connector import (
    AsyncConnectorBase,
    AsyncConnectorExecutorMixin,
    ConnectorRegistry,
    Resource,
    ResourceMeta,
)
from flytekit.models.literals import LiteralMap
from flytekit.types.file import JSONLFile
from flytekit.types.iterator import JSON

from chatstep.batch.api import (
    BatchLimits,
    abatch_results,
    abatch_status,
    acancel_batch,
    asubmit_batch,
)
from chatstep.batch.journal import BatchJob
from chatstep.errors import ConfigError
from chatstep.integrations.flyte.tasks import _portable_step, flyte_secret_store
from chatstep.secrets import SecretStore
from chatstep.steps.definitions import Step
from chatstep.steps.loading import load_step

__all__ = ["BatchConnector", "BatchJobMeta", "ChatStepBatchTask", "create_batch"]

TASK_TYPE = "chatstep-batch"
_CONFIG_KEYS = frozenset({"metadata", "completion_window"})


@dataclass
class BatchJobMeta(ResourceMeta):  # type: ignore[misc]
    """What the connector needs to find the job again: the job (no key) and where its rows are."""

    job: str
    """The job as JSON (:meth:`BatchJob.to_dict`)."""
    input_uri: str
    organization: str = ""
    key_secret: str = ""


def _store(organization: str, key_secret: str) -> SecretStore:
    extra = {"OPENAI_ORG_ID": organization} if organization else {}
    store = flyte_secret_store(extra)
    if key_secret:
        # The named Flyte secret holds the key: look OPENAI_API_KEY up under that name first.
        store = store.in_front({"OPENAI_API_KEY": store.find(key_secret)})
    return store


def _summary(job: BatchJob) -> str:
    counts = job.request_counts
    return (
        f"batch job {job.id} {job.status}: {counts['completed']}/{job.row_count} done, "
        f"{counts['failed']} failed"
    )


class ChatStepBatchTask(AsyncConnectorExecutorMixin, PythonTask):  # type: ignore[misc]
    """Submits rows as a batch job, waits for it and returns the joined results file."""

    def __init__(
        self,
        name: str,
        step: Step | None,
        *,
        is_json_iterator: bool = True,
        organization: str | None = None,
        key_secret: str | None = None,
        config: Mapping[str, Any] | None = None,
        limits: BatchLimits | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(config or {}) - _CONFIG_KEYS)
        if unknown:
            raise ConfigError(
                "config", f"has unknown keys: {', '.join(unknown)}", "use metadata only"
            )
        if (config or {}).get("completion_window", "24h") != "24h":
            raise ConfigError("config.completion_window", "must be 24h (the only window)")
        self._custom: dict[str, Any] = {
            "step": _portable_step(step, name) if step is not None else None,
            "organization": organization or "",
            "key_secret": key_secret or "",
            "metadata": dict((config or {}).get("metadata") or {}),
            "limits": None if limits is None else limits.__dict__.copy(),
        }
        rows_type: Any = Iterator[JSON] if is_json_iterator else JSONLFile
        super().__init__(
            task_type=TASK_TYPE,
            name=name,
            interface=Interface(inputs={"jsonl_in": rows_type}, outputs={"results": JSONLFile}),
            **kwargs,
        )

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        return dict(self._custom)


class BatchConnector(AsyncConnectorBase):  # type: ignore[misc]
    """create: submit the rows; get: poll, then join the results; delete: cancel."""

    name = "chatstep batch connector"

    def __init__(self) -> None:
        super().__init__(task_type_name=TASK_TYPE, metadata_type=BatchJobMeta)

    async def create(
        self, task_template: Any, output_prefix: str = "", inputs: Any = None, **kwargs: Any
    ) -> BatchJobMeta:
        custom = task_template.custom
        uri = inputs.literals["jsonl_in"].scalar.blob.uri
        ctx = FlyteContextManager.current_context()
        local = ctx.file_access.get_random_local_path()
        await ctx.file_access.async_get_data(uri, local)
        step = load_step(custom["step"]) if custom.get("step") else None
        limits = BatchLimits(**custom["limits"]) if custom.get("limits") else None
        store = _store(custom.get("organization", ""), custom.get("key_secret", ""))
        job = await asubmit_batch(
            step,
            Path(local),
            secrets=store,
            limits=limits,
            metadata=custom.get("metadata") or None,
            source=uri,
        )
        return BatchJobMeta(
            job=json.dumps(job.to_dict()),
            input_uri=uri,
            organization=custom.get("organization", ""),
            key_secret=custom.get("key_secret", ""),
        )

    async def get(self, resource_meta: BatchJobMeta, **kwargs: Any) -> Resource:
        store = _store(resource_meta.organization, resource_meta.key_secret)
        job = await abatch_status(BatchJob.from_dict(json.loads(resource_meta.job)), secrets=store)
        if not job.done:
            return Resource(phase=TaskExecution.RUNNING, message=_summary(job))
        if job.status != "completed":
            errors = "; ".join(job.error_messages())
            return Resource(
                phase=TaskExecution.FAILED,
                message=_summary(job) + (f": {errors}" if errors else ""),
            )
        ctx = FlyteContextManager.current_context()
        out_dir = Path(ctx.file_access.get_random_local_directory())
        out_dir.mkdir(parents=True, exist_ok=True)
        rows: Path | None = None
        if job.directory is None or not (job.directory / "rows.jsonl").is_file():
            # Polled by another connector replica than the one that submitted: fetch the rows.
            rows = out_dir / "rows.jsonl"
            await ctx.file_access.async_get_data(resource_meta.input_uri, str(rows))
        results = await abatch_results(job, out_dir / "results.jsonl", rows=rows, secrets=store)
        # TypeEngine's public async converters (its dict -> LiteralMap helper is private).
        joined = await TypeEngine.async_to_literal(
            ctx, JSONLFile(str(results.path)), JSONLFile, TypeEngine.to_literal_type(JSONLFile)
        )
        outputs = LiteralMap(literals={"results": joined})
        message = f"{results.rows} rows: {results.succeeded} succeeded, {results.failed} failed"
        return Resource(phase=TaskExecution.SUCCEEDED, outputs=outputs, message=message)

    def delete(self, resource_meta: BatchJobMeta, **kwargs: Any) -> None:
        # Synchronous on purpose: flytekit's local Ctrl-C handler runs inside its event loop and
        # cannot asyncio.run() a coroutine there; the connector service runs it in a thread.
        from chatstep.core.calls import run_sync

        store = _store(resource_meta.organization, resource_meta.key_secret)
        job = BatchJob.from_dict(json.loads(resource_meta.job))
        run_sync(acancel_batch(job, secrets=store))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def create_batch(
    name: str,
    step: Step | str | Mapping[str, Any] | None = None,
    *,
    secret: Any = None,
    openai_organization: str | None = None,
    config: Mapping[str, Any] | None = None,
    is_json_iterator: bool = True,
    limits: BatchLimits | None = None,
) -> Workflow:
    """A workflow ``(jsonl_in) -> results``: rows in, the joined results file out.

    With ``step``, each row is the step's inputs; without, each row is a ready Batch request line
    (``custom_id``, ``method``, ``url``, ``body``), as flytekit's OpenAI plugin takes them.
    ``jsonl_in`` is an ``Iterator[JSON]`` (``is_json_iterator``) or a ``JSONLFile``. ``secret``
    (a flytekit ``Secret``) names the Flyte secret holding the key; by default it is
    ``FLYTE_OPENAI_API_KEY``, else ``OPENAI_API_KEY``. ``config`` may set ``metadata``.
    """
    from flytekit.models.security import Secret

    if isinstance(step, Secret):  # flytekit's signature is create_batch(name, secret, ...)
        secret, step = step, None
    definition: Step | None = None
    if step is not None:
        definition = load_step(step)
    key_secret = None
    if secret is not None:
        key_secret = getattr(secret, "key", None) or getattr(secret, "group", None)
    safe = _safe(name)
    task = ChatStepBatchTask(
        f"chatstep-batch-{safe}",
        definition,
        is_json_iterator=is_json_iterator,
        organization=openai_organization,
        key_secret=key_secret,
        config=config,
        limits=limits,
    )
    wf = Workflow(name=f"chatstep-batch-wf-{safe}")
    rows_type: Any = Iterator[JSON] if is_json_iterator else JSONLFile
    wf.add_workflow_input("jsonl_in", rows_type)
    node = wf.add_entity(task, jsonl_in=wf.inputs["jsonl_in"])
    wf.add_workflow_output("results", node.outputs["results"], python_type=JSONLFile)
    return wf


def register_batch_connector() -> None:
    """Register the batch connector (idempotent)."""
    ConnectorRegistry.register(BatchConnector(), override=True)
