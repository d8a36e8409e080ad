"""A step mapped over a ``ray.data.Dataset``: :func:`map_dataset` and :class:`ChatstepMapper`.

Each Ray Data actor keeps one :class:`~chatstep.core.runner.AsyncRunner` and an event loop, and
sends a batch's rows through the ordinary map scheduler (``concurrency`` requests in flight,
retries, the pool's shared budget). A row that fails gets its error in the ``error`` column;
it never fails the job. With a ``journal``, each finished row is committed under its
``id_column`` value, and a rerun takes finished rows from it instead of paying again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from chatstep.core.runner import AsyncRunner
from chatstep.errors import ConfigError
from chatstep.integrations.ray.budget import DEFAULT_BUDGET, budget_actor, open_budget
from chatstep.integrations.ray.engine import TASK_CPUS
from chatstep.mapping.options import DEFAULT_CONCURRENCY, as_step
from chatstep.mapping.shard_run import row_keys, run_definition, run_shard, shared
from chatstep.mapping.shards import open_shard_journal
from chatstep.steps.loading import StepSource

__all__ = ["ChatstepMapper", "map_dataset"]

_DATASET_SHARD = "dataset"


class ChatstepMapper:
    """A callable class for ``ds.map_batches``: a batch of rows in, the same rows plus outputs out.

    Takes the arguments of :func:`map_dataset`; batches are ``dict[str, list | ndarray]``
    (``batch_format="numpy"`` or ``"default"``) or pandas frames, and come back as
    ``dict[str, list]`` with the selected output columns and ``error``.
    """

    def __init__(
        self,
        step: StepSource,
        *,
        select: Sequence[str] | None = None,
        id_column: str | None = None,
        budget: str | None = None,
        budget_fallback: int | None = None,
        journal: str | Path | None = None,
        journal_run: str = "dataset",
        run_id: str = "",
        cache: str | bool | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        **options: Any,
    ) -> None:
        self.step = as_step(step)
        self.id_column = id_column
        history = options.pop("history", False)
        self.options: dict[str, Any] = {
            "select": select, "concurrency": concurrency, "fixed_columns": True, **options,
        }  # fmt: skip
        self._loop = asyncio.new_event_loop()
        self._runner = AsyncRunner(cache=cache, history=history)
        self._budget = shared(
            self._loop.run_until_complete(open_budget(budget, split=budget_fallback))
        )
        self._store = open_shard_journal(journal, journal_run) if journal is not None else None
        self._run_id = run_id

    def __call__(self, batch: Any) -> dict[str, list[Any]]:
        rows = _rows_of(batch)
        if not rows:
            return {}
        keys = row_keys(rows, self.id_column)
        outcome = self._loop.run_until_complete(
            run_shard(
                self.step,
                rows,
                store=self._store,
                shard=_DATASET_SHARD,
                run_id=self._run_id,
                keys=keys,
                budget=self._budget,
                lease=False,
                runner=self._runner,
                **self.options,
            )
        )
        columns: dict[str, list[Any]] = {}
        for row in outcome.rows:
            for name in row:
                columns.setdefault(name, [])
        for row in outcome.rows:
            for name, values in columns.items():
                values.append(row.get(name))
        return columns


def _rows_of(batch: Any) -> list[dict[str, Any]]:
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # a pandas DataFrame
        records: list[dict[str, Any]] = batch.to_dict(orient="records")
        return [{k: _plain(v) for k, v in r.items()} for r in records]
    if isinstance(batch, Mapping):
        names = list(batch)
        size = len(batch[names[0]]) if names else 0
        return [{n: _plain(batch[n][i]) for n in names} for i in range(size)]
    raise ConfigError("batch", f"a {type(batch).__name__} is not a batch of rows")


def _plain(value: Any) -> Any:
    """A numpy scalar or array as a plain Python value (templates and JSON want those)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return value


def map_dataset(
    ds: Any,
    step: StepSource,
    *,
    select: Sequence[str] | None = None,
    id_column: str | None = None,
    budget: str | None = None,
    budget_fallback: int | None = None,
    journal: str | Path | None = None,
    restart: bool = False,
    cache: str | bool | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    workers: int = 2,
    batch_size: int = 64,
    **options: Any,
) -> Any:
    """``ds`` (a ``ray.data.Dataset``) with the step's outputs and ``error`` added to each row.

    ``select``: output paths (default per step); ``id_column``: the column naming each row
    in the ``journal`` (required with one: a directory on one machine, or ``redis://...``);
    ``budget``: ``redis://...`` or ``ray://NAME`` (default: a detached actor shared by every
    worker); ``budget_fallback``: when it cannot be reached, each worker goes on alone with
    ``1/budget_fallback`` of the limits instead of failing (``workers`` is the usual N);
    ``cache``: answers' cache (a path or ``redis://...``);
    ``concurrency``: requests in flight per worker; ``workers``: Ray Data actors;
    ``options``: further :class:`~chatstep.mapping.run.MapOptions` fields (``rpm``, ``tpm``,
    ``inputs``...). Lazy, like every Dataset: the work runs when the result is consumed.
    """
    from ray.data import ActorPoolStrategy

    loaded = as_step(step)
    journal_spec: str | None = None
    run_id = ""
    if journal is not None:
        if id_column is None:
            raise ConfigError(
                "id_column",
                "a journal keeps rows by id, and no id_column was given",
                "name a column whose value is unique and stable for each row",
            )
        journal_spec = str(journal)
        if not journal_spec.startswith(("redis://", "rediss://", "unix://")):
            journal_spec = str(Path(journal_spec).resolve())
        store = open_shard_journal(journal_spec, "dataset")
        try:
            run_id = store.claim(run_definition(loaded, options.get("inputs")), 0, restart)
        finally:
            store.close()
    if budget is None or budget.startswith("ray://"):
        budget_actor(budget or DEFAULT_BUDGET)
    kwargs: dict[str, Any] = {
        "select": select, "id_column": id_column, "budget": budget,
        "budget_fallback": budget_fallback, "journal": journal_spec,
        "run_id": run_id, "cache": cache, "concurrency": concurrency, **options,
    }  # fmt: skip
    return ds.map_batches(
        ChatstepMapper,
        fn_constructor_args=(loaded,),
        fn_constructor_kwargs=kwargs,
        batch_size=batch_size,
        compute=ActorPoolStrategy(size=workers),
        num_cpus=TASK_CPUS,
        batch_format="default",
    )
