"""The Fine-tuning API of the test server: ``/v1/fine_tuning/jobs`` (create, list, retrieve,
cancel, events), training on the files of the Files API.

A job moves ``validating_files -> queued -> running -> succeeded`` as OpenAI's do, with an event
at each step, metrics events while running, ``trained_tokens`` and a ``fine_tuned_model`` named
``ft:<base model snapshot>:chatstep-test:<suffix>:<id>``. The training file is checked line by
line as OpenAI checks it: a bad line (not JSON, no ``messages``, an unknown role, no assistant
message...) or fewer than 10 examples fails the job with an ``invalid_training_file`` error naming
the line. ``cancel`` ends a running job ``cancelled``. After a job succeeds, its model answers on
``/v1/chat/completions`` and is listed by ``/v1/models``; an ``ft:`` model the server never
trained is a 404 ``model_not_found``, as on OpenAI.

Conditions (see :class:`~chatstep.testing.Conditions`): ``fine_tune_progress="time"`` (the
default) runs a job by itself, ``fine_tune_step_seconds`` per status; ``"polls"`` moves it one
status on per retrieve. ``fine_tune_failure="message"`` makes running jobs fail with that error
(code ``internal_error``), as a training run that breaks on the provider's side.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatstep.testing.wire import Outcome, Request, error_outcome

if TYPE_CHECKING:
    from chatstep.testing.state import ServerState

__all__ = ["FINE_TUNABLE", "MIN_EXAMPLES", "FineTuningJobs", "check_training_lines"]

JSON = dict[str, Any]
MIN_EXAMPLES = 10
"""OpenAI's minimum number of training examples."""
FINE_TUNABLE: dict[str, str] = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
}
"""Models the test server fine-tunes: alias -> the snapshot a job reports (snapshots accepted)."""
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_ENDED = frozenset({"succeeded", "failed", "cancelled"})
_ORG = "chatstep-test"
_MAX_METRIC_EVENTS = 5


def _snapshot(model: str) -> str | None:
    if model in FINE_TUNABLE:
        return FINE_TUNABLE[model]
    if model in FINE_TUNABLE.values():
        return model
    return None


def _message_problem(message: Any, number: int) -> str | None:
    if not isinstance(message, Mapping):
        return f"message {number} is not an object"
    role = message.get("role")
    if role not in _ROLES:
        return f"message {number} has an unrecognized role {role!r}"
    content = message.get("content")
    calls = message.get("tool_calls") or message.get("function_call")
    if content is None and not (role == "assistant" and calls):
        return f"message {number} ({role}) has no content"
    if not isinstance(content, str | list | type(None)):
        return f"message {number} ({role}) has content that is not a string or a list of parts"
    return None


def _words(message: Mapping[str, Any]) -> int:
    content = message.get("content")
    text = content if isinstance(content, str) else json.dumps(content or "")
    calls = message.get("tool_calls")
    if calls:
        text += json.dumps(calls)
    return len(text.split()) + 4


def check_training_lines(content: bytes, minimum: int) -> tuple[int, int, str | None]:
    """(examples, tokens, the first problem or None) of a chat-format JSONL training file.

    Tokens are counted as the rate limiter does (words, plus 4 per message): the test server
    carries no tokenizer.
    """
    examples = tokens = 0
    for number, raw in enumerate(content.decode("utf-8", "replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            return examples, tokens, f"Line {number} is not valid JSON."
        messages = line.get("messages") if isinstance(line, Mapping) else None
        if not isinstance(messages, list) or not messages:
            return examples, tokens, f"Line {number} has no 'messages' list."
        for index, message in enumerate(messages, start=1):
            problem = _message_problem(message, index)
            if problem is not None:
                return examples, tokens, f"Line {number}, {problem}."
        if not any(m.get("role") == "assistant" for m in messages):
            return examples, tokens, f"Line {number} has no assistant message to train on."
        examples += 1
        tokens += sum(_words(m) for m in messages)
    if examples < minimum:
        return (
            examples,
            tokens,
            f"The file has {examples} example(s); it must have at least {minimum}.",
        )
    return examples, tokens, None


def _hyperparameters(body: Mapping[str, Any]) -> JSON:
    """The hyperparameters asked for (``method.supervised`` or the deprecated top level)."""
    method = body.get("method")
    given: Any = None
    if isinstance(method, Mapping):
        kind = method.get(str(method.get("type")))
        given = kind.get("hyperparameters") if isinstance(kind, Mapping) else None
    if given is None:
        given = body.get("hyperparameters")
    return dict(given) if isinstance(given, Mapping) else {}


@dataclass
class _Job:
    data: JSON
    """The ``fine_tuning.job`` object, updated as the job moves on."""
    asked: JSON = field(default_factory=dict)
    """Hyperparameters as asked (``auto`` resolved when training starts)."""
    events: list[JSON] = field(default_factory=list)
    examples: int = 0
    tokens: int = 0
    abandoned: bool = False
    task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def status(self) -> str:
        return str(self.data["status"])


class FineTuningJobs:
    """Fine-tuning jobs of one test server."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._models: set[str] = set()
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget every job and fine-tuned model; running jobs stop where they are."""
        with self._lock:
            for job in self._jobs.values():
                job.abandoned = True
            self._jobs.clear()
            self._models.clear()

    def knows_model(self, model: str) -> bool:
        """Whether ``model`` is a fine-tuned model a job of this server produced."""
        with self._lock:
            return model in self._models

    def models(self) -> list[str]:
        """The fine-tuned models produced so far."""
        with self._lock:
            return sorted(self._models)

    async def answer(self, request: Request, state: ServerState) -> Outcome | JSON:
        """Answer a ``/v1/fine_tuning/jobs...`` request."""
        if request.route == "/v1/fine_tuning/jobs":
            return self._create(request, state) if request.method == "POST" else self._list(request)
        job_id = request.path_params.get("fine_tuning_job_id", "")
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return error_outcome(
                404,
                f"Could not find fine-tune job: {job_id}",
                code="fine_tune_not_found",
                param="fine_tuning_job_id",
            )
        if request.route.endswith("/cancel"):
            return self._cancel(job, state)
        if request.route.endswith("/events"):
            return _page(list(reversed(job.events)), request)
        if _progress(state) == "polls":
            self._advance(job, state)
        return dict(job.data)

    # -- endpoints -------------------------------------------------------------------------

    def _create(self, request: Request, state: ServerState) -> Outcome | JSON:
        body: Mapping[str, Any] = request.body or {}
        model = str(body.get("model", ""))
        snapshot = _snapshot(model)
        if snapshot is None:
            return error_outcome(
                400,
                f"Model {model} is not available for fine-tuning or does not exist. The test "
                f"server fine-tunes {', '.join(FINE_TUNABLE)}.",
                code="model_not_available",
                param="model",
            )
        files = state.resources.files
        for name in ("training_file", "validation_file"):
            file_id = body.get(name)
            if name == "validation_file" and file_id is None:
                continue
            stored = files.get(str(file_id))
            if stored is None:
                return error_outcome(400, f"File {file_id} not found.", param=name)
            if stored.purpose != "fine-tune":
                return error_outcome(
                    400,
                    f"File {file_id} has purpose '{stored.purpose}'; fine-tuning files must be "
                    "uploaded with purpose 'fine-tune'.",
                    code="invalid_file_purpose",
                    param=name,
                )
        job_id = state.next_id("ftjob", "-")
        seed = body.get("seed")
        data: JSON = {
            "object": "fine_tuning.job",
            "id": job_id,
            "model": snapshot,
            "created_at": int(time.time()),
            "finished_at": None,
            "fine_tuned_model": None,
            "organization_id": "org-chatstep-test",
            "result_files": [],
            "status": "validating_files",
            "validation_file": body.get("validation_file"),
            "training_file": str(body["training_file"]),
            "hyperparameters": _hyperparameters(body),
            "trained_tokens": None,
            "error": None,
            "seed": seed if isinstance(seed, int) else int(job_id[-6:]),
            "estimated_finish": None,
            "integrations": [],
            "metadata": body.get("metadata"),
            "user_provided_suffix": body.get("suffix"),
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": _hyperparameters(body)},
            },
        }
        job = _Job(data, asked=_hyperparameters(body))
        self._event(job, state, f"Created fine-tuning job: {job_id}")
        self._event(job, state, f"Validating training file: {data['training_file']}")
        with self._lock:
            self._jobs[job_id] = job
        if _progress(state) == "time":
            job.task = asyncio.get_running_loop().create_task(self._run(job, state))
        return dict(job.data)

    def _list(self, request: Request) -> JSON:
        wanted = {
            key[len("metadata[") : -1]: value
            for key, value in request.query.items()
            if key.startswith("metadata[") and key.endswith("]")
        }
        with self._lock:
            jobs = list(self._jobs.values())
        jobs = [
            j
            for j in jobs
            if all((j.data.get("metadata") or {}).get(k) == v for k, v in wanted.items())
        ]
        jobs.sort(key=lambda j: (j.data["created_at"], j.id), reverse=True)
        return _page([dict(j.data) for j in jobs], request)

    def _cancel(self, job: _Job, state: ServerState) -> Outcome | JSON:
        if job.status in _ENDED:
            return error_outcome(
                400,
                f"Job {job.id} has already {job.status} and cannot be cancelled.",
                code="invalid_state",
            )
        self._end(job, state, "cancelled", "Fine-tuning job cancelled")
        return dict(job.data)

    # -- running -----------------------------------------------------------------------------

    async def _run(self, job: _Job, state: ServerState) -> None:
        """Time-driven progress: the whole life of a job, in the background."""
        step = state.conditions.conditions.fine_tune_step_seconds
        while job.status not in _ENDED and not job.abandoned and not state.stopping.is_set():
            await asyncio.sleep(step)
            if job.abandoned:
                return
            self._advance(job, state)

    def _advance(self, job: _Job, state: ServerState) -> None:
        """One status further."""
        if job.status == "validating_files":
            self._validate(job, state)
        elif job.status == "queued":
            self._start(job, state)
        elif job.status == "running":
            failure = state.conditions.conditions.fine_tune_failure
            if failure is not None:
                job.data["error"] = {"code": "internal_error", "message": failure, "param": None}
                self._end(job, state, "failed", f"Fine-tuning job failed: {failure}", "error")
            else:
                self._succeed(job, state)

    def _validate(self, job: _Job, state: ServerState) -> None:
        files = state.resources.files
        for name, minimum in (("training_file", MIN_EXAMPLES), ("validation_file", 1)):
            file_id = job.data.get(name)
            if file_id is None:
                continue
            stored = files.get(str(file_id))
            content = stored.content if stored is not None else b""
            examples, tokens, problem = check_training_lines(content, minimum)
            if problem is not None:
                kind = name.replace("_", " ")
                message = f"The job failed due to an invalid {kind}. {problem}"
                job.data["error"] = {
                    "code": f"invalid_{name}",
                    "message": message,
                    "param": name,
                }
                self._end(job, state, "failed", message, "error")
                return
            if name == "training_file":
                job.examples, job.tokens = examples, tokens
        self._event(job, state, "Files validated, moving job to queued state")
        job.data["status"] = "queued"

    def _start(self, job: _Job, state: ServerState) -> None:
        asked = job.asked
        resolved = {
            "n_epochs": asked.get("n_epochs", "auto"),
            "batch_size": asked.get("batch_size", "auto"),
            "learning_rate_multiplier": asked.get("learning_rate_multiplier", "auto"),
        }
        if resolved["n_epochs"] == "auto":
            resolved["n_epochs"] = 3
        if resolved["batch_size"] == "auto":
            resolved["batch_size"] = 1
        if resolved["learning_rate_multiplier"] == "auto":
            resolved["learning_rate_multiplier"] = 1.8
        job.data["hyperparameters"] = resolved
        job.data["method"] = {"type": "supervised", "supervised": {"hyperparameters": resolved}}
        job.data["status"] = "running"
        self._event(job, state, "Fine-tuning job started")

    def _succeed(self, job: _Job, state: ServerState) -> None:
        params = job.data["hyperparameters"]
        epochs, batch = int(params["n_epochs"]), int(params["batch_size"])
        total = max(1, math.ceil(job.examples / batch)) * epochs
        marks = sorted({max(1, round(total * k / _MAX_METRIC_EVENTS)) for k in range(1, 6)})
        rows = ["step,train_loss,train_accuracy"]
        for number, step in enumerate(marks):
            loss = round(2.0 * 0.7**number, 4)
            accuracy = round(min(0.99, 0.5 + 0.1 * number), 4)
            rows.append(f"{step},{loss},{accuracy}")
            self._event(
                job,
                state,
                f"Step {step}/{total}: training loss={loss}",
                kind="metrics",
                data={
                    "step": step,
                    "train_loss": loss,
                    "train_mean_token_accuracy": accuracy,
                    "total_steps": total,
                },
            )
        suffix = job.data.get("user_provided_suffix") or ""
        short = hashlib.sha256(job.id.encode()).hexdigest()[:8]
        model = f"ft:{job.data['model']}:{_ORG}:{suffix}:{short}"
        results = state.resources.files.add(
            state.next_id("file", "-"),
            "step_metrics.csv",
            "fine-tune-results",
            ("\n".join(rows) + "\n").encode(),
        )
        job.data["result_files"] = [results.id]
        job.data["trained_tokens"] = job.tokens * epochs
        job.data["fine_tuned_model"] = model
        with self._lock:
            self._models.add(model)
        self._event(job, state, f"New fine-tuned model created: {model}")
        self._end(job, state, "succeeded", "The job has successfully completed")

    def _end(
        self, job: _Job, state: ServerState, status: str, message: str, level: str = "info"
    ) -> None:
        job.data["status"] = status
        job.data["finished_at"] = int(time.time())
        self._event(job, state, message, level=level)

    @staticmethod
    def _event(
        job: _Job,
        state: ServerState,
        message: str,
        *,
        level: str = "info",
        kind: str = "message",
        data: JSON | None = None,
    ) -> None:
        event: JSON = {
            "object": "fine_tuning.job.event",
            "id": state.next_id("ftevent", "-"),
            "created_at": int(time.time()),
            "level": level,
            "message": message,
            "type": kind,
        }
        if data is not None:
            event["data"] = data
        job.events.append(event)


def _progress(state: ServerState) -> str:
    return state.conditions.conditions.fine_tune_progress


def _page(items: list[JSON], request: Request) -> JSON:
    """One page of ``items`` (newest first), after the ``after`` id, ``limit`` long."""
    after = request.query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    try:
        limit = max(1, min(100, int(request.query.get("limit", "20"))))
    except ValueError:
        limit = 20
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}
