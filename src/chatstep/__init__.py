"""chatstep: OpenAI-style chat completions as reliable, typed, templated pipeline steps.

The public API is below; everything else is private: the subpackages (``steps``, ``core``,
``mapping``, ``batch``, ``flows``...) are implementation modules whose names may change. The
public surface is this module, :mod:`chatstep.testing` and ``chatstep.integrations.*``.

Names are imported on first use, so ``import chatstep`` and ``chatstep --help`` stay fast and
never load the OpenAI SDK. One table, ``_EXPORTS``, says where each name lives and drives the
lazy ``__getattr__``. ``__all__`` and the ``TYPE_CHECKING`` imports stay literal because type
checkers and linters only read literals; ``tests/test_public_api.py`` proves all three agree.

Naming rule: a synchronous function ``x`` has an async twin ``ax`` (``run_step`` /
``arun_step``, ``poll_batch`` / ``apoll_batch``); the synchronous :class:`Runner` has an
:class:`AsyncRunner` twin, as ``openai.OpenAI`` has ``openai.AsyncOpenAI``, and
:class:`Conversation` has :class:`AsyncConversation`.
"""

from __future__ import annotations

import importlib
import warnings
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
        abatch_status,
        acancel_batch,
        apoll_batch,
        asubmit_batch,
        batch_results,
        batch_status,
        cancel_batch,
        list_batches,
        poll_batch,
        submit_batch,
    )
    from chatstep.core.calls import (
        arun_step,
        astream_step,
        run_step,
    )
    from chatstep.core.context_strategies import (
        SlidingWindow,
        Summarize,
    )
    from chatstep.core.conversation import (
        AsyncConversation,
    )
    from chatstep.core.request import (
        Request,
    )
    from chatstep.core.result import (
        EmbeddingResult,
        ModerationResult,
        StepResult,
        ToolCall,
    )
    from chatstep.core.retry import (
        RetryPolicy,
    )
    from chatstep.core.runner import (
        AsyncRunner,
    )
    from chatstep.core.streaming import (
        Delta,
    )
    from chatstep.core.sync_conversation import (
        Conversation,
    )
    from chatstep.core.sync_runner import (
        Runner,
    )
    from chatstep.errors import (
        APIConnectionError,
        APIError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BackendUnavailableError,
        BadRequestError,
        BudgetExceededError,
        ChatstepError,
        ConfigError,
        ConflictError,
        FlaggedContentError,
        InternalServerError,
        InvalidJSONError,
        InvalidResponseError,
        JournalMismatchError,
        MapRowsFailedError,
        NotFoundError,
        OutputError,
        PermissionDeniedError,
        RateLimitError,
        SchemaMismatchError,
        SecretNotFoundError,
        ShardLeaseError,
        StorageError,
        TemplateError,
        TrainingDataError,
        TruncatedOutputError,
        UnprocessableEntityError,
    )
    from chatstep.finetune.api import (
        FineTuneData,
        FineTuneJob,
        acancel_finetune,
        afinetune_events,
        afinetune_status,
        apoll_finetune,
        asubmit_finetune,
        cancel_finetune,
        finetune_events,
        finetune_status,
        list_finetunes,
        poll_finetune,
        prepare_finetune,
        submit_finetune,
    )
    from chatstep.flows.api import (
        Flow,
        FlowRun,
        TaskRun,
        arun_flow,
        load_flow,
        run_flow,
    )
    from chatstep.mapping.run import (
        MapStats,
        amap_step,
        map_step,
    )
    from chatstep.retrieval.build import (
        BuildReport,
        abuild_index,
        build_index,
    )
    from chatstep.secrets import (
        SecretStore,
    )
    from chatstep.serving.steps import (
        steps_app,
    )
    from chatstep.steps.definitions import (
        ChatCompletion,
        Completion,
        Embedding,
        Fallback,
        Guard,
        Moderation,
        Retrieve,
        Step,
    )
    from chatstep.steps.loading import (
        load_step,
    )
    from chatstep.steps.messages import (
        Message,
    )

_EXPORTS: dict[str, tuple[str, ...]] = {
    "chatstep.accounting.estimate": (
        "CostEstimate",
        "estimate_cost",
    ),
    "chatstep.accounting.pricing": (
        "Cost",
        "PriceTable",
    ),
    "chatstep.batch.api": (
        "BatchJob",
        "BatchLimits",
        "BatchResults",
        "PollSchedule",
        "abatch_results",
        "abatch_status",
        "acancel_batch",
        "apoll_batch",
        "asubmit_batch",
        "batch_results",
        "batch_status",
        "cancel_batch",
        "list_batches",
        "poll_batch",
        "submit_batch",
    ),
    "chatstep.core.calls": (
        "arun_step",
        "astream_step",
        "run_step",
    ),
    "chatstep.core.context_strategies": (
        "SlidingWindow",
        "Summarize",
    ),
    "chatstep.core.conversation": ("AsyncConversation",),
    "chatstep.core.request": ("Request",),
    "chatstep.core.result": (
        "EmbeddingResult",
        "ModerationResult",
        "StepResult",
        "ToolCall",
    ),
    "chatstep.core.retry": ("RetryPolicy",),
    "chatstep.core.runner": ("AsyncRunner",),
    "chatstep.core.streaming": ("Delta",),
    "chatstep.core.sync_conversation": ("Conversation",),
    "chatstep.core.sync_runner": ("Runner",),
    "chatstep.errors": (
        "APIConnectionError",
        "APIError",
        "APIStatusError",
        "APITimeoutError",
        "AuthenticationError",
        "BackendUnavailableError",
        "BadRequestError",
        "BudgetExceededError",
        "ChatstepError",
        "ConfigError",
        "ConflictError",
        "FlaggedContentError",
        "InternalServerError",
        "InvalidJSONError",
        "InvalidResponseError",
        "JournalMismatchError",
        "MapRowsFailedError",
        "NotFoundError",
        "OutputError",
        "PermissionDeniedError",
        "RateLimitError",
        "SchemaMismatchError",
        "SecretNotFoundError",
        "ShardLeaseError",
        "StorageError",
        "TemplateError",
        "TrainingDataError",
        "TruncatedOutputError",
        "UnprocessableEntityError",
    ),
    "chatstep.finetune.api": (
        "FineTuneData",
        "FineTuneJob",
        "acancel_finetune",
        "afinetune_events",
        "afinetune_status",
        "apoll_finetune",
        "asubmit_finetune",
        "cancel_finetune",
        "finetune_events",
        "finetune_status",
        "list_finetunes",
        "poll_finetune",
        "prepare_finetune",
        "submit_finetune",
    ),
    "chatstep.flows.api": (
        "Flow",
        "FlowRun",
        "TaskRun",
        "arun_flow",
        "load_flow",
        "run_flow",
    ),
    "chatstep.mapping.run": (
        "MapStats",
        "amap_step",
        "map_step",
    ),
    "chatstep.retrieval.build": ("BuildReport", "abuild_index", "build_index"),
    "chatstep.secrets": ("SecretStore",),
    "chatstep.serving.steps": ("steps_app",),
    "chatstep.steps.definitions": (
        "ChatCompletion",
        "Completion",
        "Embedding",
        "Fallback",
        "Guard",
        "Moderation",
        "Retrieve",
        "Step",
    ),
    "chatstep.steps.loading": ("load_step",),
    "chatstep.steps.messages": ("Message",),
}
"""Module -> the public names it defines."""

_MODULE_OF: dict[str, str] = {name: module for module, names in _EXPORTS.items() for name in names}

_RENAMED: dict[str, str] = {
    "await_batch": "apoll_batch",
    "wait_batch": "poll_batch",
}
"""Old public name -> new name; the old one still imports, with a DeprecationWarning."""

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncConversation",
    "AsyncRunner",
    "AuthenticationError",
    "BackendUnavailableError",
    "BadRequestError",
    "BatchJob",
    "BatchLimits",
    "BatchResults",
    "BudgetExceededError",
    "BuildReport",
    "ChatCompletion",
    "ChatstepError",
    "Completion",
    "ConfigError",
    "ConflictError",
    "Conversation",
    "Cost",
    "CostEstimate",
    "Delta",
    "Embedding",
    "EmbeddingResult",
    "Fallback",
    "FineTuneData",
    "FineTuneJob",
    "FlaggedContentError",
    "Flow",
    "FlowRun",
    "Guard",
    "InternalServerError",
    "InvalidJSONError",
    "InvalidResponseError",
    "JournalMismatchError",
    "MapRowsFailedError",
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
    "Retrieve",
    "RetryPolicy",
    "Runner",
    "SchemaMismatchError",
    "SecretNotFoundError",
    "SecretStore",
    "ShardLeaseError",
    "SlidingWindow",
    "Step",
    "StepResult",
    "StorageError",
    "Summarize",
    "TaskRun",
    "TemplateError",
    "ToolCall",
    "TrainingDataError",
    "TruncatedOutputError",
    "UnprocessableEntityError",
    "abatch_results",
    "abatch_status",
    "abuild_index",
    "acancel_batch",
    "acancel_finetune",
    "afinetune_events",
    "afinetune_status",
    "amap_step",
    "apoll_batch",
    "apoll_finetune",
    "arun_flow",
    "arun_step",
    "astream_step",
    "asubmit_batch",
    "asubmit_finetune",
    "batch_results",
    "batch_status",
    "build_index",
    "cancel_batch",
    "cancel_finetune",
    "estimate_cost",
    "finetune_events",
    "finetune_status",
    "list_batches",
    "list_finetunes",
    "load_flow",
    "load_step",
    "map_step",
    "poll_batch",
    "poll_finetune",
    "prepare_finetune",
    "run_flow",
    "run_step",
    "steps_app",
    "submit_batch",
    "submit_finetune",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        new = _RENAMED.get(name)
        if new is None:
            raise AttributeError(f"module 'chatstep' has no attribute {name!r}")
        warnings.warn(
            f"chatstep.{name} was renamed chatstep.{new}; the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return __getattr__(new)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
