"""chatstep: OpenAI-style chat completions as reliable, typed, templated pipeline steps.

The public API is below; everything else is private. Names are imported on first use, so
``import chatstep`` and ``chatstep --help`` stay fast and never load the OpenAI SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from chatstep.batch import (
        BatchJob,
        BatchLimits,
        BatchResults,
        PollSchedule,
        abatch_results,
        asubmit_batch,
        await_batch,
        batch_results,
        batch_status,
        cancel_batch,
        list_batches,
        submit_batch,
        wait_batch,
    )
    from chatstep.calls import arun_step, astream_step, run_step
    from chatstep.errors import (
        APIConnectionError,
        APIError,
        APITimeoutError,
        AuthenticationError,
        BackendUnavailableError,
        BadRequestError,
        ChatstepError,
        ConfigError,
        InvalidJSONError,
        NotFoundError,
        OutputError,
        PermissionDeniedError,
        RateLimitError,
        SchemaMismatchError,
        SecretNotFound,
        ServerError,
        TemplateError,
        TruncatedOutputError,
    )
    from chatstep.flows import Flow, FlowRun, TaskRun, arun_flow, load_flow, run_flow
    from chatstep.loading import load_step
    from chatstep.mapping import MapStats, amap_step, map_step
    from chatstep.messages import Message
    from chatstep.pipeline import Runner
    from chatstep.request import Request
    from chatstep.result import EmbeddingResult, ModerationResult, StepResult, ToolCall
    from chatstep.retry import RetryPolicy
    from chatstep.secrets import SecretStore
    from chatstep.steps import ChatCompletion, Embedding, Moderation, Step
    from chatstep.streaming import Delta

_EXPORTS: dict[str, str] = {
    "APIConnectionError": "chatstep.errors",
    "APIError": "chatstep.errors",
    "APITimeoutError": "chatstep.errors",
    "AuthenticationError": "chatstep.errors",
    "BackendUnavailableError": "chatstep.errors",
    "BadRequestError": "chatstep.errors",
    "BatchJob": "chatstep.batch",
    "BatchLimits": "chatstep.batch",
    "BatchResults": "chatstep.batch",
    "ChatCompletion": "chatstep.steps",
    "ChatstepError": "chatstep.errors",
    "ConfigError": "chatstep.errors",
    "Delta": "chatstep.streaming",
    "Embedding": "chatstep.steps",
    "EmbeddingResult": "chatstep.result",
    "Flow": "chatstep.flows",
    "FlowRun": "chatstep.flows",
    "InvalidJSONError": "chatstep.errors",
    "MapStats": "chatstep.mapping",
    "Message": "chatstep.messages",
    "Moderation": "chatstep.steps",
    "ModerationResult": "chatstep.result",
    "NotFoundError": "chatstep.errors",
    "OutputError": "chatstep.errors",
    "PermissionDeniedError": "chatstep.errors",
    "PollSchedule": "chatstep.batch",
    "RateLimitError": "chatstep.errors",
    "Request": "chatstep.request",
    "RetryPolicy": "chatstep.retry",
    "Runner": "chatstep.pipeline",
    "SchemaMismatchError": "chatstep.errors",
    "SecretNotFound": "chatstep.errors",
    "SecretStore": "chatstep.secrets",
    "ServerError": "chatstep.errors",
    "Step": "chatstep.steps",
    "StepResult": "chatstep.result",
    "TaskRun": "chatstep.flows",
    "TemplateError": "chatstep.errors",
    "ToolCall": "chatstep.result",
    "TruncatedOutputError": "chatstep.errors",
    "abatch_results": "chatstep.batch",
    "amap_step": "chatstep.mapping",
    "arun_flow": "chatstep.flows",
    "arun_step": "chatstep.calls",
    "astream_step": "chatstep.calls",
    "asubmit_batch": "chatstep.batch",
    "await_batch": "chatstep.batch",
    "batch_results": "chatstep.batch",
    "batch_status": "chatstep.batch",
    "cancel_batch": "chatstep.batch",
    "list_batches": "chatstep.batch",
    "load_flow": "chatstep.flows",
    "load_step": "chatstep.loading",
    "map_step": "chatstep.mapping",
    "run_flow": "chatstep.flows",
    "run_step": "chatstep.calls",
    "submit_batch": "chatstep.batch",
    "wait_batch": "chatstep.batch",
}

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BackendUnavailableError",
    "BadRequestError",
    "BatchJob",
    "BatchLimits",
    "BatchResults",
    "ChatCompletion",
    "ChatstepError",
    "ConfigError",
    "Delta",
    "Embedding",
    "EmbeddingResult",
    "Flow",
    "FlowRun",
    "InvalidJSONError",
    "MapStats",
    "Message",
    "Moderation",
    "ModerationResult",
    "NotFoundError",
    "OutputError",
    "PermissionDeniedError",
    "PollSchedule",
    "RateLimitError",
    "Request",
    "RetryPolicy",
    "Runner",
    "SchemaMismatchError",
    "SecretNotFound",
    "SecretStore",
    "ServerError",
    "Step",
    "StepResult",
    "TaskRun",
    "TemplateError",
    "ToolCall",
    "TruncatedOutputError",
    "abatch_results",
    "amap_step",
    "arun_flow",
    "arun_step",
    "astream_step",
    "asubmit_batch",
    "await_batch",
    "batch_results",
    "batch_status",
    "cancel_batch",
    "list_batches",
    "load_flow",
    "load_step",
    "map_step",
    "run_flow",
    "run_step",
    "submit_batch",
    "wait_batch",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chatstep' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
