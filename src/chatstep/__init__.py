"""chatstep: OpenAI-style chat completions as reliable, typed, templated pipeline steps.

The public API is below; everything else is private. Names are imported on first use, so
``import chatstep`` and ``chatstep --help`` stay fast and never load the OpenAI SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from chatstep.accounting.estimate import CostEstimate, estimate_cost
    from chatstep.accounting.pricing import Cost, PriceTable
    from chatstep.batch.api import (
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
    from chatstep.core.calls import arun_step, astream_step, run_step
    from chatstep.core.request import Request
    from chatstep.core.result import EmbeddingResult, ModerationResult, StepResult, ToolCall
    from chatstep.core.retry import RetryPolicy
    from chatstep.core.runner import Runner
    from chatstep.core.streaming import Delta
    from chatstep.errors import (
        APIConnectionError,
        APIError,
        APITimeoutError,
        AuthenticationError,
        BackendUnavailableError,
        BadRequestError,
        BudgetExceededError,
        ChatstepError,
        ConfigError,
        InternalServerError,
        InvalidJSONError,
        NotFoundError,
        OutputError,
        PermissionDeniedError,
        RateLimitError,
        SchemaMismatchError,
        SecretNotFoundError,
        TemplateError,
        TruncatedOutputError,
    )
    from chatstep.flows.api import Flow, FlowRun, TaskRun, arun_flow, load_flow, run_flow
    from chatstep.mapping.run import MapStats, amap_step, map_step
    from chatstep.secrets import SecretStore
    from chatstep.steps.definitions import ChatCompletion, Embedding, Moderation, Step
    from chatstep.steps.loading import load_step
    from chatstep.steps.messages import Message

_EXPORTS: dict[str, str] = {
    "APIConnectionError": "chatstep.errors",
    "APIError": "chatstep.errors",
    "APITimeoutError": "chatstep.errors",
    "AuthenticationError": "chatstep.errors",
    "BackendUnavailableError": "chatstep.errors",
    "BadRequestError": "chatstep.errors",
    "BatchJob": "chatstep.batch.api",
    "BatchLimits": "chatstep.batch.api",
    "BatchResults": "chatstep.batch.api",
    "BudgetExceededError": "chatstep.errors",
    "ChatCompletion": "chatstep.steps.definitions",
    "ChatstepError": "chatstep.errors",
    "ConfigError": "chatstep.errors",
    "Cost": "chatstep.accounting.pricing",
    "CostEstimate": "chatstep.accounting.estimate",
    "Delta": "chatstep.core.streaming",
    "Embedding": "chatstep.steps.definitions",
    "EmbeddingResult": "chatstep.core.result",
    "Flow": "chatstep.flows.api",
    "FlowRun": "chatstep.flows.api",
    "InvalidJSONError": "chatstep.errors",
    "MapStats": "chatstep.mapping.run",
    "Message": "chatstep.steps.messages",
    "Moderation": "chatstep.steps.definitions",
    "ModerationResult": "chatstep.core.result",
    "NotFoundError": "chatstep.errors",
    "OutputError": "chatstep.errors",
    "PermissionDeniedError": "chatstep.errors",
    "PollSchedule": "chatstep.batch.api",
    "PriceTable": "chatstep.accounting.pricing",
    "RateLimitError": "chatstep.errors",
    "Request": "chatstep.core.request",
    "RetryPolicy": "chatstep.core.retry",
    "Runner": "chatstep.core.runner",
    "SchemaMismatchError": "chatstep.errors",
    "SecretNotFoundError": "chatstep.errors",
    "SecretStore": "chatstep.secrets",
    "InternalServerError": "chatstep.errors",
    "Step": "chatstep.steps.definitions",
    "StepResult": "chatstep.core.result",
    "TaskRun": "chatstep.flows.api",
    "TemplateError": "chatstep.errors",
    "ToolCall": "chatstep.core.result",
    "TruncatedOutputError": "chatstep.errors",
    "abatch_results": "chatstep.batch.api",
    "amap_step": "chatstep.mapping.run",
    "arun_flow": "chatstep.flows.api",
    "arun_step": "chatstep.core.calls",
    "astream_step": "chatstep.core.calls",
    "asubmit_batch": "chatstep.batch.api",
    "await_batch": "chatstep.batch.api",
    "batch_results": "chatstep.batch.api",
    "batch_status": "chatstep.batch.api",
    "cancel_batch": "chatstep.batch.api",
    "estimate_cost": "chatstep.accounting.estimate",
    "list_batches": "chatstep.batch.api",
    "load_flow": "chatstep.flows.api",
    "load_step": "chatstep.steps.loading",
    "map_step": "chatstep.mapping.run",
    "run_flow": "chatstep.flows.api",
    "run_step": "chatstep.core.calls",
    "submit_batch": "chatstep.batch.api",
    "wait_batch": "chatstep.batch.api",
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
    "BudgetExceededError",
    "ChatCompletion",
    "ChatstepError",
    "ConfigError",
    "Cost",
    "CostEstimate",
    "Delta",
    "Embedding",
    "EmbeddingResult",
    "Flow",
    "FlowRun",
    "InternalServerError",
    "InvalidJSONError",
    "MapStats",
    "Message",
    "Moderation",
    "ModerationResult",
    "NotFoundError",
    "OutputError",
    "PermissionDeniedError",
    "PollSchedule",
    "PriceTable",
    "RateLimitError",
    "Request",
    "RetryPolicy",
    "Runner",
    "SchemaMismatchError",
    "SecretNotFoundError",
    "SecretStore",
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
    "estimate_cost",
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
