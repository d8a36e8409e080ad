"""Mapping a step from one dataset file into another: what ``chatstep map`` runs.

The input streams in, output rows stream out in input order to ``<output>.partial``, renamed
over the output at the end. The journal defaults to ``<output>.journal.sqlite3``, so running
the same command again after a crash resumes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatstep.accounting.pricing import PriceTable
from chatstep.core.runner import AsyncRunner
from chatstep.mapping.datasets import count_rows, dataset_format, open_writer, read_rows
from chatstep.mapping.options import MapOptions, StepSource
from chatstep.mapping.progress import MapProgress, MapStats
from chatstep.mapping.run import MapRun

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
    """
    in_kind = dataset_format(input, input_format, option="--input")
    out_kind = dataset_format(output, output_format, option="--output")
    if Path(input).resolve() == Path(output).resolve():
        from chatstep.errors import ConfigError

        raise ConfigError("--output", "is the input file", "write the output to another file")
    journal = options.pop("journal", None)
    if journal is None:
        journal = default_journal_path(output)
    elif journal is False:
        journal = None
    opts = MapOptions(journal=journal, fixed_columns=out_kind != "jsonl", **options)
    # The total only feeds the progress display (its ETA); counting reads the input once more.
    total = count_rows(input, in_kind) if progress is not None else None
    run = MapRun(
        step,
        read_rows(input, in_kind),
        opts,
        runner=runner,
        progress=progress,
        total=total,
        price_table=price_table,
    )
    writer = open_writer(output, out_kind, types=run.shape.column_types)
    try:
        async for row in run:
            writer.write(row)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return run.stats


def map_file(step: StepSource, input: str | Path, output: str | Path, **options: Any) -> MapStats:
    """Synchronous :func:`amap_file`."""
    from chatstep.core.calls import run_sync

    return run_sync(amap_file(step, input, output, **options))
