"""The provider's asynchronous-job endpoints (Files, and Batches or Fine-tuning on top), through
the official SDK, with chatstep's retries and errors.

The client and the SDK-error translation are the HTTP backend's (``backends.sdk_client``): the
SDK's own retries are off, SDK exceptions become chatstep errors, and Azure connections use the
SDK's Azure client. :class:`~chatstep.batch.client.BatchClient` and
:class:`~chatstep.finetune.client.FineTuneClient` add their endpoints to :class:`JobsClient`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Literal, TypeVar

from chatstep.backends.log_redaction import install_log_redaction
from chatstep.backends.sdk_client import call_sdk, make_client
from chatstep.core.connection import Connection
from chatstep.core.retry import RetryLoop, RetryPolicy

__all__ = ["JSON", "JobsClient", "as_dict"]

T = TypeVar("T")
JSON = dict[str, Any]
Self = TypeVar("Self", bound="JobsClient")


def as_dict(obj: Any) -> JSON:
    """An SDK object (or a dict) as the plain JSON dict the API sent."""
    if isinstance(obj, dict):
        return obj
    data = obj.to_dict() if hasattr(obj, "to_dict") else obj.model_dump(mode="json")
    return dict(data)


class JobsClient:
    """One SDK client on ``conn``: retried calls (:meth:`call`) and file uploads."""

    def __init__(self, conn: Connection, *, retry: RetryPolicy | None = None) -> None:
        install_log_redaction()
        self.conn = conn
        self.retry = retry or RetryPolicy(max_retries=conn.max_retries)
        self._client = make_client(conn, timeout=conn.timeout)

    async def __aenter__(self: Self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()

    async def _call(
        self,
        method: str,
        path: str,
        make: Callable[[], Coroutine[Any, Any, T]],
        before_retry: Callable[[], Awaitable[T | None]] | None = None,
    ) -> T:
        """``make()`` under the retry policy; ``before_retry`` may find what a failed call did."""
        loop: RetryLoop[T] = RetryLoop(self.retry, after_wait=before_retry)
        return await loop.run(lambda: call_sdk(method, path, make))

    async def _upload(self, path: Path, purpose: Literal["batch", "fine-tune"]) -> JSON:
        """Upload a JSON Lines file for ``purpose``; the file object."""

        async def make() -> Any:
            with path.open("rb") as handle:
                return await self._client.files.create(
                    file=(path.name, handle, "application/jsonl"), purpose=purpose
                )

        return as_dict(await self._call("POST", "/files", make))
