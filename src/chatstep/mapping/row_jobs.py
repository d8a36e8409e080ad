"""What a map run passes between its producer, its workers and its hand-out: a row's job (its
prepared request and reserved cost), a finished row waiting for its turn, the run-wide context,
and which errors stop the whole run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatstep.errors import (
    APIError,
    AuthenticationError,
    BudgetExceededError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)

if TYPE_CHECKING:
    from chatstep.accounting.budget import CostBudget
    from chatstep.core.connection import Connection
    from chatstep.core.request import Request
    from chatstep.core.runner import AsyncRunner
    from chatstep.mapping.journal import FinishedRanges, JournalCursor, RunJournal
    from chatstep.steps.definitions import Step

__all__ = ["ReadySlot", "RowJob", "RunContext", "is_fatal"]


@dataclass
class RowJob:
    """A row on its way to a worker: its prepared request and the cost held for it (USD)."""

    index: int
    row: Mapping[str, Any]
    input_hash: str
    step: Step
    request: Request
    conn: Connection
    reserved: float = 0.0


@dataclass
class ReadySlot:
    """A finished row waiting for its turn: its record, or the journal's record as JSON text.

    ``stop``: the run ends before this row (``--max-cost``, or an error that stops the run).
    """

    row: Mapping[str, Any]
    record: dict[str, Any] | None = None
    journal_json: str | None = None
    stop: bool = False


def is_fatal(error: APIError) -> bool:
    """Errors every other row would meet too: stop the run rather than fail each row."""
    if isinstance(error, AuthenticationError | PermissionDeniedError):
        return True
    if isinstance(error, NotFoundError) and error.code in ("model_not_found", None):
        return True
    return error.status_code == 429 and error.code == "insufficient_quota"


@dataclass
class RunContext:
    """What the producer and the workers of one run share; ``abort`` stops them both."""

    runner: AsyncRunner
    journal: RunJournal | None
    budget: CostBudget
    finished: JournalCursor
    """The journal's finished rows, read in input order beside the input."""
    abort: APIError | BudgetExceededError | StorageError | None = None
    skip: FinishedRanges | None = None
    """Resuming from rows read twice: the rows the producer skips (the journal has them)."""
