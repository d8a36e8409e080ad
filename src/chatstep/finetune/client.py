"""The Fine-tuning endpoints (and the Files upload they read), through the official SDK.

The client and the SDK-error translation are the HTTP backend's, as for batches: the SDK's own
retries are off and chatstep's retry policy decides. Creating a job is not idempotent, so before
a retry the client looks for a job the failed call may have created anyway (by the
``chatstep_job`` id in its metadata).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.backends.jobs_client import JSON, JobsClient, as_dict
from chatstep.errors import APIError

if TYPE_CHECKING:
    from chatstep.finetune.journal import FineTuneJob
    from chatstep.secrets import SecretStore

__all__ = ["FineTuneClient", "client_for"]


class FineTuneClient(JobsClient):
    """Uploads training files; creates, retrieves, lists, cancels jobs and reads their events."""

    async def upload(self, path: Path) -> JSON:
        """Upload a training or validation file (``purpose="fine-tune"``)."""
        return await self._upload(path, "fine-tune")

    async def create(self, params: Mapping[str, Any], metadata: dict[str, str]) -> JSON:
        """Create a job from ``params`` (the create body but metadata); ``metadata`` finds it
        again if a retry has to look for it."""

        async def make() -> Any:
            return await self._client.fine_tuning.jobs.create(**params, metadata=metadata)

        async def created_anyway() -> Any:
            return await self.find(metadata)

        return as_dict(await self._call("POST", "/fine_tuning/jobs", make, created_anyway))

    async def find(self, metadata: dict[str, str]) -> JSON | None:
        """The newest job carrying ``metadata``, or None."""
        for job in await self.recent(limit=100, metadata=metadata):
            if job.get("metadata") == metadata:
                return job
        return None

    async def retrieve(self, job_id: str) -> JSON:
        path = f"/fine_tuning/jobs/{job_id}"
        return as_dict(
            await self._call("GET", path, lambda: self._client.fine_tuning.jobs.retrieve(job_id))
        )

    async def cancel(self, job_id: str) -> JSON:
        """Ask for cancellation; a job that already ended is returned as it is."""
        path = f"/fine_tuning/jobs/{job_id}/cancel"
        try:
            return as_dict(
                await self._call("POST", path, lambda: self._client.fine_tuning.jobs.cancel(job_id))
            )
        except APIError as exc:
            if exc.status_code in (400, 409):
                return await self.retrieve(job_id)
            raise

    async def recent(self, limit: int = 20, metadata: dict[str, str] | None = None) -> list[JSON]:
        """The newest jobs of the key's organization (first page), optionally by metadata."""

        async def make() -> Any:
            if metadata:
                return await self._client.fine_tuning.jobs.list(limit=limit, metadata=metadata)
            return await self._client.fine_tuning.jobs.list(limit=limit)

        page = await self._call("GET", "/fine_tuning/jobs", make)
        return [as_dict(j) for j in getattr(page, "data", [])]

    async def events(self, job_id: str, limit: int = 20) -> list[JSON]:
        """The job's newest ``limit`` events, newest first (as the API pages them)."""

        async def make() -> Any:
            return await self._client.fine_tuning.jobs.list_events(job_id, limit=limit)

        page = await self._call("GET", f"/fine_tuning/jobs/{job_id}/events", make)
        return [as_dict(e) for e in getattr(page, "data", [])]


def client_for(
    job: FineTuneJob, secrets: SecretStore | None = None, api_key: str | None = None
) -> FineTuneClient:
    """A client on the job's connection, its key looked up again (or given)."""
    from chatstep.secrets import default_secret_store

    store = secrets if secrets is not None else default_secret_store()
    return FineTuneClient(job.connection.resolve(store, api_key))
