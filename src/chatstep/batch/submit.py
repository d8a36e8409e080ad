"""Submitting a batch job: render one request per row, split at the limits, upload, create.

Every row goes through ``AsyncRunner.prepare`` (the same rendering as a single call) into a Batch
input line; :class:`~chatstep.batch.files.PartWriter` starts a new part file before a limit is
crossed. The job is journaled before the first upload, and each part as soon as it is created,
so a crash leaves nothing unaccounted for; a failure part-way cancels the parts already created.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.batch.client import BatchClient
from chatstep.batch.files import (
    BatchLimits,
    PartWriter,
    embedding_inputs,
    given_request_line,
    read_rows,
    request_line,
)
from chatstep.batch.journal import (
    BatchConnection,
    BatchJob,
    BatchJournal,
    BatchPart,
    key_secret_name,
    new_job_id,
)
from chatstep.core.structured_output import wants_json
from chatstep.errors import APIError, ConfigError
from chatstep.mapping.writers import finite_json

if TYPE_CHECKING:
    from chatstep.core.connection import Connection
    from chatstep.core.retry import RetryPolicy
    from chatstep.core.runner import StepSource
    from chatstep.secrets import SecretStore

__all__ = ["Rows", "asubmit_batch"]

Rows = str | Path | Iterable[Mapping[str, Any]]
"""Rows: a .jsonl, .csv or .parquet file, or an iterable of mappings."""
_MAX_USER_METADATA = 14


@dataclass
class _Rendered:
    endpoint: str = ""
    model: str = ""
    conn: Connection | None = None
    key_secret: str | None = "OPENAI_API_KEY"
    step_id: str | None = None
    rows: int = 0
    response_format: dict[str, Any] | None = None
    worst_case: float = 0.0
    """USD: every row's worst case at Batch API prices (summed only under a ``max_cost``)."""

    def add_worst_case(
        self, prices: Any, endpoint: str, body: Mapping[str, Any], index: int, max_cost: float
    ) -> None:
        """Add row ``index``'s worst case at batch prices; refuse once the sum passes the cap."""
        from chatstep.accounting.budget import CostBudget, worst_case_cost
        from chatstep.core.request import Request

        kind = endpoint.removeprefix("/v1/").replace("/", ".")
        request = Request(kind, dict(body))  # type: ignore[arg-type]
        estimate = worst_case_cost(prices, request, None, field="max_cost", batch=True)
        if self.worst_case + estimate > max_cost:
            budget = CostBudget(max_cost, reserved=self.worst_case)
            raise budget.exceeded(
                estimate, f"row {index}", held_by=f"the worst case of rows 0-{index - 1}"
            )
        self.worst_case += estimate

    def saw_format(self, body: Mapping[str, Any]) -> None:
        """Keep the rows' JSON output format; rows that differ leave results unparsed."""
        given = body.get("response_format")
        fmt = dict(given) if isinstance(given, Mapping) and wants_json(given) else None
        if self.rows == 0:
            self.response_format = fmt
        elif fmt != self.response_format:
            self.response_format = None  # rows differ: leave every row's answer unparsed


def _refuse_per_call_features(step: Any) -> None:
    # The Batch API sends every line to one endpoint, unattended: no other endpoint can answer
    # a line and nothing moderates around it, so dropping these fields would be silent.
    for name, what in (
        ("guard", "moderation guard"),
        ("fallbacks", "fallbacks"),
        ("retrieve", "retrieval (an embeddings call per line)"),
    ):
        if getattr(step, name, None):
            raise ConfigError(
                name,
                f"the Batch API cannot apply a step's {what} (each line goes to one endpoint, "
                "unattended)",
                f"remove {name} from the step for batch, or run it with map instead",
            )


def _render_rows(
    step: StepSource | None,
    rows: Rows,
    secrets: SecretStore,
    writer: PartWriter,
    rows_copy: Path,
    max_cost: float | None = None,
) -> _Rendered:
    """Render every row into the writer's part files and copy the rows; returns what they share.

    Under ``max_cost`` each row's worst case is added up, and the submission is refused (before
    anything is uploaded) as soon as the sum passes it.
    """
    from chatstep.accounting.context import check_context_window
    from chatstep.core.runner import AsyncRunner, as_step

    out = _Rendered()
    definition = as_step(step) if step is not None else None
    runner = AsyncRunner(secrets=secrets, history=False)
    if definition is not None:
        _refuse_per_call_features(definition)
        out.key_secret = key_secret_name(definition.api_key)
        out.step_id = definition.id
    seen: set[str] = set()
    with rows_copy.open("w", encoding="utf-8") as copy:
        for index, row in enumerate(read_rows(rows)):
            where = f"rows[{index}]"
            if definition is None:
                custom_id, url, line = given_request_line(row, where)
                if custom_id in seen:
                    raise ConfigError(
                        f"{where}.custom_id", f"{custom_id!r} is used twice", "make it unique"
                    )
                seen.add(custom_id)
                body = row["body"]
                endpoint, model = url, str(body["model"])
                if url.endswith("/chat/completions"):
                    window = runner.price_table.context_window(model)
                    check_context_window(body, window, prefix=f"{where}.body")
            else:
                try:
                    _, request, conn = runner.prepare(definition, row, stream=False)
                except ConfigError as err:
                    field = f"{where} -> {err.field}" if err.field else where
                    raise ConfigError(field, err.problem, err.fix) from None
                _check_connection(out.conn, conn, where)
                out.conn = conn
                body = request.body
                endpoint, model = "/v1" + request.path, request.model
                line = request_line(f"row-{index}", request)
            if out.endpoint and endpoint != out.endpoint:
                raise ConfigError(
                    f"{where}.url",
                    f"targets {endpoint}, but earlier rows target {out.endpoint}",
                    "a batch has one endpoint: split the input by endpoint",
                )
            if out.model and model != out.model:
                raise ConfigError(
                    f"{where}.model",
                    f"is {model!r}, but earlier rows use {out.model!r}",
                    "a batch runs one model: split the input by model",
                )
            out.endpoint = out.endpoint or endpoint
            out.model = out.model or model
            inputs = embedding_inputs(body) if endpoint == "/v1/embeddings" else 0
            if endpoint == "/v1/chat/completions":
                out.saw_format(body)
            if max_cost is not None:
                out.add_worst_case(runner.price_table, endpoint, body, index, max_cost)
            writer.add(line, inputs)
            copy.write(finite_json(row) + "\n")  # the rows as map would write them
            out.rows += 1
    if out.rows == 0:
        raise ConfigError("input", "has no rows", "give at least one JSON object")
    return out


def _check_connection(first: Connection | None, conn: Connection, where: str) -> None:
    if conn.backend != "openai":
        raise ConfigError(
            "backend",
            "the Batch API needs an OpenAI-compatible endpoint, and this step runs on the "
            "embedded local model",
            "set OPENAI_API_KEY (or base_url), or run the rows with `chatstep map` instead",
        )
    if first is not None and conn.identity() != first.identity():
        raise ConfigError(
            where,
            "renders to another connection (key, base_url, organization or project) than the "
            "first row",
            "a batch runs on one connection: do not template connection fields per row",
        )


async def asubmit_batch(
    step: StepSource | None,
    rows: Rows,
    *,
    secrets: SecretStore | None = None,
    journal: BatchJournal | None = None,
    limits: BatchLimits | None = None,
    metadata: Mapping[str, str] | None = None,
    retry: RetryPolicy | None = None,
    source: str | None = None,
    max_cost: float | None = None,
) -> BatchJob:
    """Render one request per row, upload, create the batch (or batches), journal the job.

    ``step`` None means the rows already are Batch request lines (``custom_id``, ``method``,
    ``url``, ``body``) and are sent as they are, on the default connection. ``max_cost`` (USD)
    refuses the whole submission up front (BudgetExceededError, nothing uploaded) when the
    rows' summed worst case at Batch API prices is more.
    """
    from chatstep.accounting.budget import check_max_cost

    max_cost = check_max_cost(max_cost)
    if metadata is not None and len(metadata) > _MAX_USER_METADATA:
        raise ConfigError(
            "metadata",
            f"has {len(metadata)} keys; a batch takes 16 and chatstep uses 2 of them",
            f"keep at most {_MAX_USER_METADATA} keys",
        )
    from chatstep.secrets import default_secret_store

    journal = journal or BatchJournal()
    store = secrets if secrets is not None else default_secret_store()
    job_id = new_job_id()
    job_dir = journal.job_dir(job_id)
    if source is None and isinstance(rows, str | Path):
        source = str(rows)
    try:
        with tempfile.TemporaryDirectory(prefix="chatstep-batch-") as tmp:
            writer = PartWriter(Path(tmp), limits or BatchLimits(), prefix=job_id)
            try:
                shared = _render_rows(step, rows, store, writer, job_dir / "rows.jsonl", max_cost)
            finally:
                part_files = writer.close()
            conn = shared.conn or _default_connection(store, shared.model)
            job = BatchJob(
                id=job_id,
                endpoint=shared.endpoint,
                model=shared.model,
                row_count=shared.rows,
                connection=BatchConnection.from_connection(conn, shared.key_secret),
                step_id=shared.step_id,
                source=source,
                custom_ids="row" if step is not None else "given",
                metadata=dict(metadata or {}),
                response_format=shared.response_format,
            )
            journal.save(job)
            await _create_parts(job, conn, part_files, journal, retry)
    except BaseException:
        if journal.find(job_id) is None:
            shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return job


def _default_connection(secrets: SecretStore, model: str) -> Connection:
    from chatstep.core.connection import resolve_connection
    from chatstep.steps.definitions import ChatCompletion

    conn = resolve_connection(ChatCompletion(model=model, prompt="-", backend="openai"), secrets)
    _check_connection(None, conn, "rows")
    return conn


async def _create_parts(
    job: BatchJob,
    conn: Connection,
    part_files: list[Any],
    journal: BatchJournal,
    retry: RetryPolicy | None,
) -> None:
    async with BatchClient(conn, retry=retry) as client:
        try:
            for number, part_file in enumerate(part_files):
                uploaded = await client.upload(part_file.path)
                tags = {
                    **job.metadata,
                    "chatstep_job": job.id,
                    "chatstep_part": f"{number + 1}/{len(part_files)}",
                }
                batch = await client.create(str(uploaded["id"]), job.endpoint, tags)
                part = BatchPart(
                    index=number,
                    batch_id=str(batch["id"]),
                    input_file_id=str(uploaded["id"]),
                    first_row=part_file.first_row,
                    row_count=part_file.row_count,
                )
                part.update(batch)
                job.parts.append(part)
                journal.save(job)
        except BaseException as exc:
            # Half a job is worse than none: cancel the parts already created, then fail.
            job.submit_error = f"{type(exc).__name__}: {exc}"
            for part in job.parts:
                with contextlib.suppress(APIError):
                    part.update(await client.cancel(part.batch_id))
            journal.save(job)
            raise
