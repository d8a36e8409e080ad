"""The Batch API of the test server (with the Files API it reads from and writes to).

A batch moves ``validating -> in_progress -> finalizing -> completed`` (or ``failed`` when its
input file is invalid, ``expired`` after ``batch_expire_after_lines`` lines, ``cancelling ->
cancelled`` when cancelled). With ``batch_progress="time"`` (the default) it runs by itself on
the server's loop, pausing ``batch_step_seconds`` while validating and finalizing; with
``"polls"`` each retrieve moves it one status on, so a test sees every status.

Each input line runs through the same answering path as an HTTP request (scripts, handler,
faults and spec checks apply; rate limits and latency do not) and is recorded in
``server.requests`` with ``x-chatstep-batch-id`` and ``x-chatstep-custom-id`` headers. Answers
go to the output file (2xx) or the error file, in OpenAI's line format.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatstep.testing.batch_lines import (
    BatchLine,
    expired_entry,
    line_entry,
    parse_lines,
    usage_of,
)
from chatstep.testing.files import FileStore
from chatstep.testing.wire import Outcome, Request, error_outcome

if TYPE_CHECKING:
    from chatstep.testing.state import ServerState

__all__ = ["BATCH_ENDPOINTS", "Resources"]

JSON = dict[str, Any]
Run = Callable[["ServerState", Request], Awaitable[Outcome]]
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/moderations", "/v1/completions")
"""Endpoints the test server runs batches for."""
_WINDOW_SECONDS = 24 * 3600
_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class _Batch:
    data: JSON
    """The ``batch`` object, updated as the batch moves on."""
    lines: list[BatchLine] = field(default_factory=list)
    outputs: list[JSON] = field(default_factory=list)
    errors: list[JSON] = field(default_factory=list)
    cancel_requested: bool = False
    expired: bool = False
    abandoned: bool = False
    """Set by ``reset()``: the runner stops without recording anything more."""
    task: asyncio.Task[None] | None = None
    authorization: str | None = None
    """The creating request's ``Authorization`` header (lines run with it, as on OpenAI)."""

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    def move(self, status: str, stamp: str | None = None) -> None:
        self.data["status"] = status
        if stamp is not None:
            self.data[stamp] = int(time.time())


class Resources:
    """Files and batches of one test server."""

    def __init__(self) -> None:
        self.files = FileStore()
        self._batches: dict[str, _Batch] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget files and batches; running batches stop where they are."""
        with self._lock:
            for batch in self._batches.values():
                batch.abandoned = True
            self._batches.clear()
        self.files.clear()

    async def answer(self, request: Request, state: ServerState, run: Run) -> Outcome | JSON:
        """Answer a Files or Batches API request; ``run`` answers one batch line."""
        if request.route.startswith("/v1/files"):
            return self.files.answer(request, state.next_id("file", "-"))
        if request.route == "/v1/batches":
            if request.method == "POST":
                return self._create(request, state, run)
            return self._list(request)
        batch_id = request.path_params.get("batch_id", "")
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            return error_outcome(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        if request.route.endswith("/cancel"):
            return self._cancel(batch)
        if state.conditions.conditions.batch_progress == "polls":
            await self._advance(batch, state, run)
        return dict(batch.data)

    # -- endpoints -------------------------------------------------------------------------

    def _create(self, request: Request, state: ServerState, run: Run) -> Outcome | JSON:
        body: Mapping[str, Any] = request.body or {}
        endpoint = str(body.get("endpoint", ""))
        if endpoint not in BATCH_ENDPOINTS:
            return error_outcome(
                400,
                f"The test server runs batches for {', '.join(BATCH_ENDPOINTS)}, not {endpoint}.",
                param="endpoint",
            )
        file_id = str(body.get("input_file_id", ""))
        stored = self.files.get(file_id)
        if stored is None:
            return error_outcome(404, f"No such File object: {file_id}", param="input_file_id")
        if stored.purpose != "batch":
            return error_outcome(
                400,
                f"File {file_id} has purpose '{stored.purpose}'; upload it with purpose 'batch'.",
                param="input_file_id",
            )
        now = int(time.time())
        data: JSON = {
            "id": state.next_id("batch", "_"),
            "object": "batch",
            "endpoint": endpoint,
            "input_file_id": file_id,
            "completion_window": str(body.get("completion_window", "24h")),
            "status": "validating",
            "created_at": now,
            "expires_at": now + _WINDOW_SECONDS,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
        }
        if body.get("metadata") is not None:
            data["metadata"] = dict(body["metadata"])
        batch = _Batch(data, authorization=request.authorization)
        with self._lock:
            self._batches[batch.id] = batch
        if state.conditions.conditions.batch_progress == "time":
            batch.task = asyncio.get_running_loop().create_task(self._run(batch, state, run))
        return dict(batch.data)

    def _list(self, request: Request) -> JSON:
        with self._lock:
            batches = list(self._batches.values())
        # Newest first; ties keep creation order reversed (ids grow).
        batches.sort(key=lambda b: (b.data["created_at"], b.id), reverse=True)
        after = request.query.get("after")
        if after is not None:
            ids = [b.id for b in batches]
            batches = batches[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        page = batches[:limit]
        out: JSON = {
            "object": "list",
            "data": [dict(b.data) for b in page],
            "has_more": len(batches) > limit,
        }
        if page:
            out["first_id"] = page[0].id
            out["last_id"] = page[-1].id
        return out

    def _cancel(self, batch: _Batch) -> Outcome | JSON:
        if batch.status not in ("validating", "in_progress"):
            return error_outcome(
                409, f"Batch {batch.id} is {batch.status} and can no longer be cancelled."
            )
        batch.cancel_requested = True
        batch.move("cancelling", "cancelling_at")
        return dict(batch.data)

    # -- running -----------------------------------------------------------------------------

    async def _run(self, batch: _Batch, state: ServerState, run: Run) -> None:
        """Time-driven progress: the whole life of a batch, in the background."""
        step = state.conditions.conditions.batch_step_seconds
        await asyncio.sleep(step)
        if batch.abandoned:
            return
        if not batch.cancel_requested and self._validate(batch):
            await self._run_lines(batch, state, run)
            if batch.abandoned:
                return
            if batch.status == "in_progress":
                batch.move("finalizing", "finalizing_at")
            if batch.status == "finalizing":
                await asyncio.sleep(step)
        if not batch.abandoned and batch.status != "failed":
            self._finish(batch, state)

    async def _advance(self, batch: _Batch, state: ServerState, run: Run) -> None:
        """Poll-driven progress: one status further per retrieve."""
        if batch.status in _ENDED:
            return
        if batch.status == "cancelling":
            self._finish(batch, state)
        elif batch.status == "validating":
            self._validate(batch)
        elif batch.status == "in_progress":
            await self._run_lines(batch, state, run)
            if batch.status == "in_progress":
                batch.move("finalizing", "finalizing_at")
        elif batch.status == "finalizing":
            self._finish(batch, state)

    def _validate(self, batch: _Batch) -> bool:
        stored = self.files.get(str(batch.data["input_file_id"]))
        content = stored.content if stored is not None else b""
        lines, errors = parse_lines(content, str(batch.data["endpoint"]))
        if errors:
            batch.data["errors"] = {"object": "list", "data": errors}
            batch.move("failed", "failed_at")
            return False
        batch.lines = lines
        batch.data["request_counts"] = {"total": len(lines), "completed": 0, "failed": 0}
        models = {str(line.body.get("model")) for line in lines if isinstance(line.body, Mapping)}
        if len(models) == 1:
            batch.data["model"] = models.pop()
        batch.move("in_progress", "in_progress_at")
        return True

    async def _run_lines(self, batch: _Batch, state: ServerState, run: Run) -> None:
        from chatstep.testing.state import RecordedRequest

        limit = state.conditions.conditions.batch_expire_after_lines
        counts = batch.data["request_counts"]
        for position, line in enumerate(batch.lines):
            if batch.cancel_requested or batch.abandoned or state.stopping.is_set():
                return
            if limit is not None and position >= limit:
                self._expire(batch, batch.lines[position:])
                return
            headers = {"x-chatstep-batch-id": batch.id, "x-chatstep-custom-id": line.custom_id}
            state.record(RecordedRequest("POST", line.url, headers, line.body))
            if isinstance(line.body, Mapping) and line.body.get("stream") is True:
                outcome = error_outcome(
                    400, "Streaming is not supported in a batch; drop 'stream'."
                )
            else:
                # Its lines run as the caller that created the batch, with that key.
                line_request = Request(
                    "POST",
                    line.url,
                    line.url,
                    line.body,
                    authorization=batch.authorization,
                    batch=batch.id,
                )
                outcome = await run(state, line_request)
            if batch.abandoned:
                return
            ok, entry = line_entry(
                line, outcome, state.next_request_id(), state.next_id("batch_req", "_")
            )
            (batch.outputs if ok else batch.errors).append(entry)
            counts["completed" if ok else "failed"] += 1

    def _expire(self, batch: _Batch, rest: list[BatchLine]) -> None:
        batch.errors.extend(expired_entry(line) for line in rest)
        batch.data["request_counts"]["failed"] += len(rest)
        batch.expired = True
        batch.move("finalizing", "finalizing_at")

    def _finish(self, batch: _Batch, state: ServerState) -> None:
        """Write the output and error files and settle the final status."""
        for kind, entries, key in (
            ("output", batch.outputs, "output_file_id"),
            ("error", batch.errors, "error_file_id"),
        ):
            if entries:
                content = "".join(json.dumps(entry) + "\n" for entry in entries).encode()
                stored = self.files.add(
                    state.next_id("file", "-"), f"{batch.id}_{kind}.jsonl", "batch_output", content
                )
                batch.data[key] = stored.id
        batch.data["usage"] = usage_of(batch.outputs)
        if batch.cancel_requested:
            batch.move("cancelled", "cancelled_at")
        elif batch.expired:
            batch.move("expired", "expired_at")
        else:
            batch.move("completed", "completed_at")
