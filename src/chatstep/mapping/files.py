"""Mapping a step from one dataset file into another: what ``chatstep map`` runs.

The input streams in, output rows stream out in input order to a temporary file of this run's
own (``<output>.<pid>-<random>.partial``), renamed over the output at the end. The journal
defaults to ``<output>.journal.sqlite3``, so running the same command again after a crash
resumes it.

Before the first request a run locks the output and the journal (another run on either is
refused with :class:`~chatstep.errors.StorageError`, having touched nothing), opens the journal
and creates its temporary file, so an unwritable directory fails before anything is paid for.
A full disk mid-run stops the run with a :class:`~chatstep.errors.StorageError`; every row
finished until then is in the journal, and the same command resumes once there is space.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from chatstep.accounting.pricing import PriceTable
from chatstep.core.runner import AsyncRunner
from chatstep.errors import ConfigError
from chatstep.mapping.datasets import DatasetFile, count_rows, dataset_format
from chatstep.mapping.options import MapOptions, StepSource
from chatstep.mapping.progress import MapProgress, MapStats
from chatstep.mapping.run import MapRun
from chatstep.mapping.writers import open_writer, stale_partials
from chatstep.storage.files import ExclusiveLock

__all__ = ["amap_file", "default_journal_path", "map_file"]


def default_journal_path(output: str | Path) -> Path:
    """Where a run writing ``output`` keeps its journal unless told otherwise."""
    path = Path(output)
    return path.with_name(path.name + ".journal.sqlite3")


async def amap_file(
    step: StepSource,
    input: str | Path,
    output: str | Path,
    *,
    input_format: str | None = None,
    output_format: str | None = None,
    runner: AsyncRunner | None = None,
    progress: MapProgress | None = None,
    price_table: PriceTable | None = None,
    **options: Any,
) -> MapStats:
    """Map ``step`` over the rows of ``input`` into ``output``; returns the run's counters.

    ``options`` are the fields of :class:`~chatstep.mapping.run.MapOptions`; ``journal`` defaults
    to :func:`default_journal_path` (``journal=False``: no journal). When the run stops early
    (``max_cost``), the output holds the rows finished before the stop, and
    ``stats.stop_reason`` says why. On an error the output is not written; the journal keeps
    every finished row.

    Raises :class:`~chatstep.errors.StorageError` when the output or journal is in use by
    another run, or cannot be written (read-only, full disk), and
    :class:`~chatstep.errors.ConfigError` for a malformed input (naming file and line).
    """
    in_kind = dataset_format(input, input_format, option="--rows")
    out_kind = dataset_format(output, output_format, option="--output")
    if Path(input).resolve() == Path(output).resolve():
        raise ConfigError("--output", "is the input file", "write the output to another file")
    journal = options.pop("journal", None)
    if journal is None:
        journal = default_journal_path(output)
    elif journal is False:
        journal = None
    opts = MapOptions(journal=journal, fixed_columns=out_kind != "jsonl", **options)
    # Locks first (output, then journal), then the files: a refused run touches nothing.
    output_lock = ExclusiveLock(
        output,
        what="the output",
        fix="wait for the other run to finish, or write another --output",
    ).acquire()
    try:
        _drop_stale_partials(output)
        # The total only feeds the progress display (its ETA); counting reads the input again.
        total = count_rows(input, in_kind) if progress is not None else None
        run = MapRun(
            step,
            DatasetFile(Path(input), in_kind),
            opts,
            runner=runner,
            progress=progress,
            total=total,
            price_table=price_table,
        )
        try:
            run.open_journal()
            writer = open_writer(output, out_kind, types=run.shape.column_types)
        except BaseException:
            run.close()
            raise
        try:
            async for row in run:
                writer.write(row)
        except BaseException:
            writer.abort()  # best-effort, never raises: the run's own error is the one to see
            raise
        writer.commit()
    finally:
        output_lock.release()
    return run.stats


def _drop_stale_partials(output: str | Path) -> None:
    """Delete temporary files left by runs that died (only called under the output's lock)."""
    for stale in stale_partials(output):
        with contextlib.suppress(OSError):
            stale.unlink()


def map_file(step: StepSource, input: str | Path, output: str | Path, **options: Any) -> MapStats:
    """Synchronous :func:`amap_file`."""
    from chatstep.core.calls import run_sync

    return run_sync(amap_file(step, input, output, **options))
