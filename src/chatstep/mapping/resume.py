"""Resuming a map: the journal's finished rows skipped unread, then handed out beside the input.

The producer skips runs of finished rows by index (:class:`~chatstep.mapping.journal.
FinishedRanges`), reading a dataset file's lines without parsing them, so the first unfinished
row is sent at once; the hand-out reads the rows again beside the journal
(:class:`JournaledRows`) to write the finished rows' records in input order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, cast

from chatstep.errors import ConfigError, JournalMismatchError, StorageError
from chatstep.mapping.datasets import DatasetFile, RowOrSkipped, skip_rows
from chatstep.mapping.journal import FinishedRanges, JournalCursor, JournalEntry
from chatstep.mapping.options import RowSource

__all__ = ["JournaledRows", "input_changed", "read_again", "resumed_rows"]


def input_changed(index: int) -> JournalMismatchError:
    return JournalMismatchError(
        "--rows",
        f"row {index} differs from the row the journal recorded: the input "
        "changed since the journal was started",
        "re-run with --restart, or give this run another --journal or --output",
    )


def read_again(rows: RowSource) -> Iterator[Mapping[str, Any]] | None:
    """The rows read once more, if they can be (a resume reads them twice); else None."""
    if isinstance(rows, DatasetFile):
        return iter(rows)
    if isinstance(rows, Sequence) and not isinstance(rows, str | bytes):
        return iter(cast("Sequence[Mapping[str, Any]]", rows))
    return None


def _skipping(rows: RowSource, skip: FinishedRanges) -> Iterator[RowOrSkipped]:
    """The rows, each run of finished ones as its length (a dataset file's are not parsed)."""
    if isinstance(rows, DatasetFile):
        return rows.skipping(skip)
    return skip_rows(cast("Sequence[dict[str, Any]]", rows), skip)


async def resumed_rows(rows: RowSource, skip: FinishedRanges) -> AsyncIterator[RowOrSkipped]:
    """:func:`_skipping` as an async iterator (the producer's)."""
    for row in _skipping(rows, skip):
        yield row


class JournaledRows:
    """The input read a second time beside the journal, for the rows the producer skipped."""

    def __init__(self, rows: Iterator[Mapping[str, Any]], journal: JournalCursor) -> None:
        self._rows = enumerate(rows)
        self._journal = journal

    def at(self, index: int) -> tuple[Mapping[str, Any], JournalEntry]:
        """Input row ``index`` and its journal entry (rising indexes only)."""
        for position, row in self._rows:
            if position == index:
                entry = self._journal.lookup(index)
                if entry is None:  # the producer saw it there: only a third party removes it
                    raise StorageError("journal", f"row {index} vanished from the journal")
                return row, entry
        raise ConfigError("--rows", f"row {index} vanished from the input during the run")
