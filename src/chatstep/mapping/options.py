"""What a map run is given: its options, the step (and its fingerprint), and the rows."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.core.retry import RetryPolicy
from chatstep.errors import ConfigError
from chatstep.mapping.journal import RunJournal
from chatstep.steps.definitions import Step
from chatstep.steps.loading import StepSource, load_step

if TYPE_CHECKING:
    from chatstep.storage.cache import ResponseCache
    from chatstep.storage.history import History

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_WINDOW",
    "MapOptions",
    "RowSource",
    "StepSource",
    "as_step",
    "iterate_rows",
    "step_definition",
]

RowSource = Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]] | str | Path

DEFAULT_CONCURRENCY = 16
DEFAULT_WINDOW = 1000


@dataclass
class MapOptions:
    """How a step is mapped over rows. ``None`` means: no limit / the default."""

    inputs: Mapping[str, Any] | None = None
    """Inputs every row gets (``-i name=value`` on ``chatstep map``); a row's own column of the
    same name wins. They are part of the journal's fingerprint, not of the output rows."""
    select: Sequence[str] | None = None
    """Output paths (``content``, ``parsed.label``, ``usage.total_tokens``...); default per step."""
    flatten: bool = False
    """Dict outputs as ``path.key`` columns instead of nested values."""
    prefix: str = ""
    """Put before every output column's name (to keep them apart from input columns)."""
    concurrency: int = DEFAULT_CONCURRENCY
    rpm: float | None = None
    """Requests per minute; None: learned from the server's x-ratelimit headers."""
    tpm: float | None = None
    """Tokens per minute (prompt + max_tokens x n); None: learned from headers."""
    learn_limits: bool = True
    budget: str | None = None
    """A rate budget shared with other processes: ``redis://host:port/db``; None: this run's own."""
    budget_fallback: int | None = None
    """When the shared budget cannot be reached: None, stop (fail closed); N, go on alone with
    1/N of the rate limits (configured, or learned from headers), N being the pool's size."""
    journal: str | Path | RunJournal | None = None
    """Where finished rows are recorded (resume after a crash); None: not recorded."""
    restart: bool = False
    """Forget the journal's finished rows and start over."""
    retry_failed: bool = False
    """Send again the rows the journal has as failed."""
    max_cost: float | None = None
    """Stop admitting rows before the dollars spent (journal included) would pass this."""
    cache: ResponseCache | str | Path | bool | None = None
    """Cache answers: True (the default SQLite file), a spec (a path, ``redis://...``) or a
    cache; None: as each step says (``cache: true``); False: never, whatever the step says."""
    cache_ttl: float | None = None
    history: History | bool = True
    """Log every call to the history (True: the default history file)."""
    retry: RetryPolicy | None = None
    """Retry policy of the run's own AsyncRunner (default: :class:`RetryPolicy`)."""
    window: int = DEFAULT_WINDOW
    """Rows that may finish ahead of the next row handed out (bounds memory)."""
    fixed_columns: bool = False
    """Give every output row the same columns (CSV and Parquet need it)."""

    def runner_cache(self) -> ResponseCache | str | bool | None:
        """The ``cache`` setting as :class:`AsyncRunner` takes it."""
        return str(self.cache) if isinstance(self.cache, Path) else self.cache

    def check(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("--concurrency", f"must be at least 1, got {self.concurrency}")
        if self.max_cost is not None and self.max_cost < 0:
            raise ConfigError("--max-cost", f"must not be negative, got {self.max_cost}")
        self.window = max(self.window, self.concurrency)
        if self.budget_fallback is not None and self.budget_fallback < 1:
            raise ConfigError(
                "--budget-fallback",
                f"must be at least 1 (the pool's size), got {self.budget_fallback}",
            )
        if self.budget is not None and not self.budget.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(
                "--budget",
                f"{self.budget.split('://')[0]!r} is not a shared budget store",
                "give a redis:// URL (redis://127.0.0.1:6379/0), or leave it out",
            )


as_step = load_step


# Fields that cannot change an answer, so changing them does not invalidate a journal.
_NOT_FINGERPRINTED = frozenset(
    {"api_key", "description", "cache", "cache_ttl", "timeout", "max_retries"}
)


def step_definition(step: Step) -> dict[str, Any]:
    """The step as the journal fingerprints it: the fields set that can change an answer."""
    data = step.model_dump(mode="json", exclude_unset=True, exclude=set(_NOT_FINGERPRINTED))
    data["type"] = step.kind
    return data


async def iterate_rows(rows: RowSource) -> AsyncIterator[Mapping[str, Any]]:
    row: Mapping[str, Any]
    if isinstance(rows, str | Path):
        from chatstep.mapping.datasets import read_rows

        for row in read_rows(rows):
            yield row
    elif isinstance(rows, AsyncIterable):
        async for row in rows:
            yield row
    else:
        for row in rows:
            yield row
