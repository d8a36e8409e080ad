"""Batch results: download the output and error files and join them to the input rows.

One joined row per input row, in input order (see :func:`chatstep.batch.files.join_results`);
rows a batch never answered carry an error saying why (cancelled, expired, failed). Costs are
priced at the Batch API's discount.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.batch.client import client_for, job_for, refresh_job
from chatstep.batch.files import join_results, read_rows
from chatstep.batch.journal import BatchJob, BatchJournal, JobRef
from chatstep.errors import ConfigError

if TYPE_CHECKING:
    from chatstep.batch.submit import Rows
    from chatstep.secrets import SecretStore

__all__ = ["BatchResults", "abatch_results"]


@dataclass(frozen=True)
class BatchResults:
    """A joined results file: one JSON row per input row, in input order."""

    job: BatchJob
    path: Path
    rows: int
    succeeded: int
    failed: int
    cost: float | None
    """Dollars at the batch discount, summed over priced rows; None when no model is priced."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                yield json.loads(line)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job.id,
            "status": self.job.status,
            "path": str(self.path),
            "rows": self.rows,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cost": self.cost,
        }


_ENDED = {
    "failed": ("batch_failed", "the batch failed before this request ran"),
    "cancelled": ("batch_cancelled", "the batch was cancelled before this request ran"),
    "expired": ("batch_expired", "the batch expired (24h window) before this request ran"),
    "completed": ("no_result", "the batch completed without an answer for this request"),
}


def _missing(job: BatchJob) -> Callable[[int], dict[str, Any]]:
    def missing(index: int) -> dict[str, Any]:
        part = job.part_for_row(index)
        status = part.status if part is not None else "failed"
        code, message = _ENDED.get(status, ("no_result", "no answer for this request"))
        if part is not None and part.errors:
            line = index - part.first_row + 1
            own = [e for e in part.errors if e.get("line") == line]
            first = (own or part.errors)[0]
            detail = first.get("message") or first.get("code")
            message = f"{message}: {detail}" if detail else message
            if own and first.get("code"):
                code = str(first["code"])
        where = f" (batch {part.batch_id})" if part is not None else ""
        return {"status_code": None, "code": code, "message": message + where, "type": None}

    return missing


def _pricer(job: BatchJob, price_table: Any) -> Callable[[Mapping[str, Any]], float | None]:
    if price_table is None:
        try:
            from chatstep.accounting.pricing import default_price_table
        except ImportError:  # pragma: no cover - pricing ships with chatstep
            return lambda body: None
        price_table = default_price_table()

    def cost(body: Mapping[str, Any]) -> float | None:
        usage = body.get("usage")
        if not isinstance(usage, Mapping):
            return None
        priced = price_table.cost(str(body.get("model") or job.model), usage, batch=True)
        return None if priced is None else float(priced.total_usd)

    return cost


async def abatch_results(
    job: JobRef,
    output: str | Path | None = None,
    *,
    rows: Rows | None = None,
    secrets: SecretStore | None = None,
    journal: BatchJournal | None = None,
    api_key: str | None = None,
    price_table: Any = None,
) -> BatchResults:
    """Download the output and error files and join them to the input rows, in input order.

    Writes one JSON row per input row to ``output`` (default: ``results.jsonl`` in the job's
    directory). ``rows`` gives the input rows when the job's own copy is not on this machine.
    Rows a batch never answered (cancelled, expired, failed) carry an error saying so.
    """
    journal = journal or BatchJournal()
    current = job_for(job, journal)
    async with client_for(current, secrets, api_key) as client:
        if not current.done:
            await refresh_job(client, current, journal)
        if not current.done:
            raise ConfigError(
                "job",
                f"batch job {current.id} is still {current.status}",
                f"wait for it first: chatstep batch wait {current.id}",
            )
        directory = current.directory or journal.job_dir(current.id)
        directory.mkdir(parents=True, exist_ok=True)
        files: list[Path] = []
        error_files: list[Path] = []
        for part in current.parts:
            for kind, file_id in (("output", part.output_file_id), ("errors", part.error_file_id)):
                if file_id:
                    dest = directory / f"{kind}-{part.index:04d}.jsonl"
                    if not dest.exists():
                        await client.download(file_id, dest)
                    files.append(dest)
                    if kind == "errors":
                        error_files.append(dest)
    source: Rows
    if rows is not None:
        source = rows
    else:
        source = directory / "rows.jsonl"
        if not source.is_file():
            raise ConfigError(
                "rows",
                f"the input rows of job {current.id} are not on this machine ({source})",
                "pass rows= (the same rows, in the same order) to join the results to",
            )
    dest = Path(output) if output is not None else directory / "results.jsonl"
    summary = await asyncio.to_thread(
        join_results,
        read_rows(source),
        current.custom_id,
        files,
        dest,
        missing=_missing(current),
        cost=_pricer(current, price_table),
        chat=current.endpoint in ("/v1/chat/completions", "/v1/completions"),
        response_format=current.response_format,
        error_files=error_files,
        endpoint=current.endpoint,
    )
    return BatchResults(
        current, dest, summary.rows, summary.succeeded, summary.failed, summary.cost
    )
