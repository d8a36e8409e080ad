"""Progress of a map run: a rich progress bar on a terminal, a quiet line now and then otherwise.

Both show rows done / failed / total, requests per second, tokens per minute, dollars spent and
the time left. They read :class:`MapStats`, which the scheduler keeps up to date; the scheduler
calls :meth:`MapProgress.refresh` a few times a second.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

__all__ = [
    "LineProgress",
    "MapProgress",
    "MapStats",
    "RichProgress",
    "final_line",
    "make_progress",
    "summary_line",
]


@dataclass
class MapStats:
    """Counters of a map run (rows from the journal count as done or failed too)."""

    total: int | None = None
    """Rows in the input, when known in advance."""
    done: int = 0
    """Rows finished with a result."""
    failed: int = 0
    """Rows finished with an error (kept in the output and the journal)."""
    from_journal: int = 0
    """Rows (done or failed) taken from the journal of an earlier run, not sent again."""
    journaled: int = 0
    """Rows the journal had finished when this run started."""
    cache_hits: int = 0
    requests: int = 0
    """HTTP requests sent, retries included."""
    rate_limited: int = 0
    """429 answers received."""
    token_factor: float = 1.0
    """Tokens the server charged per token chatstep estimated (learned from rate headers)."""
    tokens: int = 0
    """Tokens used (from the answers' usage) in this run."""
    cost: float = 0.0
    """Dollars spent in this run."""
    journal_cost: float = 0.0
    """Dollars spent by earlier runs of the same journal."""
    stop_reason: str | None = None
    """Why the run stopped before the end of the input (e.g. ``--max-cost``), else None."""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (until it finished)."""
        return (self.finished or time.monotonic()) - self.started

    @property
    def finished_rows(self) -> int:
        return self.done + self.failed

    @property
    def rows_this_run(self) -> int:
        """Rows finished by this run (not taken from the journal)."""
        return self.finished_rows - self.from_journal

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def tokens_per_minute(self) -> float:
        return self.tokens * 60.0 / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at this run's pace, None when unknown."""
        if self.total is None or self.rows_this_run <= 0 or self.elapsed <= 0:
            return None
        left = max(self.total - self.finished_rows, 0)
        return left * self.elapsed / self.rows_this_run

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "from_journal": self.from_journal,
            "cache_hits": self.cache_hits,
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "tokens": self.tokens,
            "cost_usd": round(self.cost, 6),
            "total_cost_usd": round(self.cost + self.journal_cost, 6),
            "elapsed_s": round(self.elapsed, 3),
            "stop_reason": self.stop_reason,
        }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _count(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}"


def summary_line(stats: MapStats) -> str:
    """One line: rows, failures, rates, dollars, time left."""
    total = "?" if stats.total is None else str(stats.total)
    return (
        f"{stats.finished_rows}/{total} rows, {stats.failed} failed, "
        f"{stats.requests_per_second:.1f} req/s, {_count(stats.tokens_per_minute)} tok/min, "
        f"${stats.cost + stats.journal_cost:.4f}, ETA {_duration(stats.eta_seconds)}"
    )


def final_line(stats: MapStats) -> str:
    """One line summing up a finished run."""
    resumed = f" ({stats.from_journal} from the journal)" if stats.from_journal else ""
    cached = f", {stats.cache_hits} from the cache" if stats.cache_hits else ""
    return (
        f"{stats.finished_rows} rows{resumed}, {stats.failed} failed{cached}, "
        f"{stats.requests} requests ({stats.rate_limited} rate-limited), "
        f"{stats.requests_per_second:.1f} req/s, ${stats.cost + stats.journal_cost:.4f}, "
        f"{_duration(stats.elapsed)} elapsed"
    )


class MapProgress(Protocol):
    """Shows a run's progress."""

    def start(self, stats: MapStats) -> None: ...

    def refresh(self, stats: MapStats) -> None: ...

    def finish(self, stats: MapStats) -> None: ...


class LineProgress:
    """A plain line on ``stream`` every ``interval`` seconds, and one at the end (for logs)."""

    def __init__(self, stream: IO[str] | None = None, interval: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._last = 0.0

    def _say(self, text: str) -> None:
        self.stream.write(f"chatstep map: {text}\n")
        self.stream.flush()

    def start(self, stats: MapStats) -> None:
        self._last = time.monotonic()
        if stats.journaled:
            self._say(f"resuming: {stats.journaled} rows already finished in the journal")

    def refresh(self, stats: MapStats) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._say(summary_line(stats))

    def finish(self, stats: MapStats) -> None:
        self._say(final_line(stats))


class RichProgress:
    """A rich progress bar with the run's counters beside it."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = console if console is not None else Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]map[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed[/red]"),
            TextColumn("{task.fields[rates]}"),
            TextColumn("[green]${task.fields[cost]:.4f}[/green]"),
            TextColumn("ETA {task.fields[eta]}"),
            console=self.console,
            transient=False,
        )
        self._task: Any = None

    def _fields(self, stats: MapStats) -> dict[str, Any]:
        rates = f"{stats.requests_per_second:.1f} req/s {_count(stats.tokens_per_minute)} tok/min"
        return {
            "failed": stats.failed,
            "rates": rates,
            "cost": stats.cost + stats.journal_cost,
            "eta": _duration(stats.eta_seconds),
        }

    def start(self, stats: MapStats) -> None:
        self._progress.start()
        self._task = self._progress.add_task(
            "map", total=stats.total, completed=stats.finished_rows, **self._fields(stats)
        )

    def refresh(self, stats: MapStats) -> None:
        if self._task is not None:
            self._progress.update(
                self._task, completed=stats.finished_rows, total=stats.total, **self._fields(stats)
            )

    def finish(self, stats: MapStats) -> None:
        self.refresh(stats)
        self._progress.stop()


def make_progress(enabled: bool | None = None, stream: IO[str] | None = None) -> MapProgress | None:
    """A bar on a terminal, lines otherwise; ``enabled=False`` shows nothing."""
    if enabled is False:
        return None
    target = stream if stream is not None else sys.stderr
    if target.isatty():
        return RichProgress()
    return LineProgress(target)
