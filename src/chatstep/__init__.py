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
:class:`AsyncRunner` twin, as ``openai.OpenAI`` has ``openai.AsyncOpenAI``.
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
        TruncatedOutputError,
        UnprocessableEntityError,
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
    from chatstep.secrets import (
        SecretStore,
    )
    from chatstep.steps.definitions import (
        ChatCompletion,
        Embedding,
        Fallback,
        Guard,
        Moderation,
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
        "TruncatedOutputError",
        "UnprocessableEntityError",
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
    "chatstep.secrets": ("SecretStore",),
    "chatstep.steps.definitions": (
        "ChatCompletion",
        "Embedding",
        "Fallback",
        "Guard",
        "Moderation",
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
    "AsyncRunner",
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
    "ConflictError",
    "Cost",
    "CostEstimate",
    "Delta",
    "Embedding",
    "EmbeddingResult",
    "Fallback",
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
    "RetryPolicy",
    "Runner",
    "SchemaMismatchError",
    "SecretNotFoundError",
    "SecretStore",
    "ShardLeaseError",
    "Step",
    "StepResult",
    "StorageError",
    "TaskRun",
    "TemplateError",
    "ToolCall",
    "TruncatedOutputError",
    "UnprocessableEntityError",
    "abatch_results",
    "abatch_status",
    "acancel_batch",
    "amap_step",
    "apoll_batch",
    "arun_flow",
    "arun_step",
    "astream_step",
    "asubmit_batch",
    "batch_results",
    "batch_status",
    "cancel_batch",
    "estimate_cost",
    "list_batches",
    "load_flow",
    "load_step",
    "map_step",
    "poll_batch",
    "run_flow",
    "run_step",
    "submit_batch",
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
