"""The Files and Batches endpoints, through the official SDK, with chatstep's retries and errors.

The client and the SDK-error translation are the HTTP backend's (``backends.sdk_client``):
the SDK's own retries are off, SDK exceptions become chatstep errors, and Azure connections use the
SDK's Azure client.
Reading calls (retrieve, list, download) and uploads are retried by the retry policy. Creating a
batch is not idempotent, so before a retry the client first looks for a batch the failed call
may have created anyway (by the job and part ids in its metadata).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.backends.jobs_client import JSON, JobsClient, as_dict
from chatstep.batch.journal import BatchJob, BatchJournal, JobRef
from chatstep.errors import APIError, redact_secrets

if TYPE_CHECKING:
    from chatstep.secrets import SecretStore

__all__ = ["BatchClient", "cancel_parts", "client_for", "job_for", "refresh_job"]


class BatchClient(JobsClient):
    """Uploads, creates, polls, cancels and downloads batches on one connection."""

    async def upload(self, path: Path) -> JSON:
        """Upload a Batch input file (``purpose="batch"``)."""
        return await self._upload(path, "batch")

    async def create(
        self,
        input_file_id: str,
        endpoint: str,
        metadata: dict[str, str],
        completion_window: str = "24h",
    ) -> JSON:
        """Create a batch; ``metadata`` identifies it if a retry has to look for it."""

        async def make() -> Any:
            return await self._client.batches.create(
                input_file_id=input_file_id,
                endpoint=endpoint,  # type: ignore[arg-type]
                completion_window=completion_window,  # type: ignore[arg-type]
                metadata=metadata,
            )

        async def created_anyway() -> Any:
            for batch in await self.recent(limit=100):
                if batch.get("input_file_id") == input_file_id and batch.get("metadata") == (
                    metadata
                ):
                    return batch
            return None

        return as_dict(await self._call("POST", "/batches", make, created_anyway))

    async def retrieve(self, batch_id: str) -> JSON:
        path = f"/batches/{batch_id}"
        return as_dict(
            await self._call("GET", path, lambda: self._client.batches.retrieve(batch_id))
        )

    async def cancel(self, batch_id: str) -> JSON:
        """Ask for cancellation; a batch that already ended is returned as it is."""
        path = f"/batches/{batch_id}/cancel"
        try:
            return as_dict(
                await self._call("POST", path, lambda: self._client.batches.cancel(batch_id))
            )
        except APIError as exc:
            # Cancelling a batch that already finished is refused (400/409): nothing to do.
            if exc.status_code in (400, 409):
                return await self.retrieve(batch_id)
            raise

    async def recent(self, limit: int = 20) -> list[JSON]:
        """The most recent batches of the key's organization/project (first page)."""

        async def make() -> Any:
            return await self._client.batches.list(limit=limit)

        page = await self._call("GET", "/batches", make)
        return [as_dict(b) for b in getattr(page, "data", [])]

    async def download(self, file_id: str, dest: Path) -> Path:
        """Stream a file's content to ``dest`` (written whole or not at all).

        Lines are redacted on the way (an endpoint may echo the key into an answer), so the
        file on disk holds no secret.
        """
        path = f"/files/{file_id}/content"
        partial = dest.with_name(dest.name + ".part")

        async def make() -> None:
            async with self._client.files.with_streaming_response.content(file_id) as response:
                with partial.open("w", encoding="utf-8", newline="") as out:
                    async for line in response.iter_lines():
                        out.write(redact_secrets(line) + "\n")

        await self._call("GET", path, make)
        partial.replace(dest)
        return dest


def job_for(ref: JobRef, journal: BatchJournal) -> BatchJob:
    """The job itself, or the journaled job a job id or batch id names."""
    return ref if isinstance(ref, BatchJob) else journal.get(ref)


def client_for(
    job: BatchJob,
    secrets: SecretStore | None = None,
    api_key: str | None = None,
) -> BatchClient:
    """A client on the job's connection, its key looked up again (or given)."""
    from chatstep.secrets import default_secret_store

    store = secrets if secrets is not None else default_secret_store()
    return BatchClient(job.connection.resolve(store, api_key))


async def refresh_job(client: BatchClient, job: BatchJob, journal: BatchJournal) -> None:
    """Retrieve every part still running, then save the job."""
    for part in job.parts:
        if not part.done:
            part.update(await client.retrieve(part.batch_id))
    journal.save(job)


async def cancel_parts(client: BatchClient, job: BatchJob, journal: BatchJournal) -> None:
    """Ask to cancel every part still running, then save the job."""
    for part in job.parts:
        if not part.done and part.status != "cancelling":
            part.update(await client.cancel(part.batch_id))
    journal.save(job)
