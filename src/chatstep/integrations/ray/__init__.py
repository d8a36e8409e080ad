"""Ray: a step mapped over a ``ray.data.Dataset``, or a dataset file sharded over Ray workers.

Needs the extra: ``pip install "chatstep[ray]"``. Every worker draws from one shared rate
budget (a detached Ray actor, or Redis), keeps a journal per shard and a lease per shard, so
a rerun resumes and no finished row is paid twice::

    import ray
    from chatstep.integrations.ray import map_dataset

    ds = ray.data.read_json("tickets.jsonl")
    out = map_dataset(ds, "steps/triage.yaml", select=["parsed.label"], id_column="id",
                      journal="triage.journal", concurrency=8)
    out.write_json("triaged")

``ChatstepMapper`` is the callable class behind it, for your own ``ds.map_batches``;
``map_file_ray`` is what ``chatstep map --engine ray`` runs.
"""

from __future__ import annotations

try:
    import ray as _ray  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        f'chatstep.integrations.ray needs Ray ({exc}): pip install "chatstep[ray]"'
    ) from exc

from chatstep.integrations.ray.budget import ActorBudget, budget_actor
from chatstep.integrations.ray.dataset import ChatstepMapper, map_dataset
from chatstep.integrations.ray.engine import default_shard_journal, map_file_ray

__all__ = [
    "ActorBudget",
    "ChatstepMapper",
    "budget_actor",
    "default_shard_journal",
    "map_dataset",
    "map_file_ray",
]
