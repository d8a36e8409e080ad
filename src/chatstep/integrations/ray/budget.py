"""The pool's shared rate budget inside Ray, without Redis: one detached, named async actor.

The actor holds a :class:`~chatstep.mapping.pool_budget.PoolBudget` (the arithmetic of the
Redis script, on the actor's one clock); every worker reaches it by name through
:class:`ActorBudget`, which has the methods
:class:`~chatstep.mapping.shared_budget.SharedRateLimiter` calls. An actor that cannot be
found or has died fails closed (:class:`~chatstep.errors.StorageError`), unless the caller
opted into a share of the budget (:func:`open_budget` with ``split``): then each worker keeps
``1/split`` of the limits alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import ray

from chatstep.errors import ConfigError, StorageError
from chatstep.mapping.pool_budget import PoolBudget, header_values

__all__ = ["DEFAULT_BUDGET", "NAMESPACE", "ActorBudget", "budget_actor", "open_budget"]

#: The actor's name when ``--budget`` is not given (``ray://NAME`` names another).
DEFAULT_BUDGET = "ray://chatstep-budget"
#: The Ray namespace the budget actor lives in (so every job of the cluster finds it).
NAMESPACE = "chatstep"
# The actor only does arithmetic, so it asks for no CPU: even 0.01 would leave its node short
# of the whole CPU Ray Data's read tasks ask for (seen: a 3-node test cluster whose three CPUs
# were each nibbled by an actor, and a read_json that waited for ever).
_ACTOR_CPUS = 0


class _BudgetActor:
    """A :class:`PoolBudget` in one async actor (calls are served one at a time, in order)."""

    def __init__(self) -> None:
        self._pool = PoolBudget()

    async def take(
        self, scope: str, tokens: float, rpm: float, tpm: float
    ) -> tuple[float, tuple[float, float]]:
        return self._pool.take(scope, tokens, rpm, tpm)

    async def learn(
        self, scope: str, values: list[float], age: float, reserved: tuple[float, float]
    ) -> None:
        self._pool.learn(scope, values, age, reserved)

    async def hold(self, scope: str, seconds: float) -> None:
        self._pool.hold(scope, seconds)

    async def ping(self) -> bool:
        return True


_RemoteBudget: Any = ray.remote(_BudgetActor)


def _actor_name(spec: str) -> str:
    name = spec.removeprefix("ray://").strip("/")
    if not name:
        raise ConfigError(
            "--budget", "ray:// names no actor", "give ray://NAME, e.g. ray://chatstep-budget"
        )
    return name


def budget_actor(spec: str = DEFAULT_BUDGET) -> Any:
    """The budget actor named by ``spec`` (``ray://NAME``), created (detached) if absent."""
    return _RemoteBudget.options(
        name=_actor_name(spec),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=_ACTOR_CPUS,
        max_restarts=0,  # a restarted actor would forget what was spent: fail closed instead
    ).remote()


class ActorBudget:
    """A worker's handle on the budget actor ``ray://NAME`` (the RedisBudget interface)."""

    def __init__(self, spec: str = DEFAULT_BUDGET) -> None:
        self.spec = spec
        self.name = _actor_name(spec)
        self._actor: Any = None

    def _unreachable(self, exc: BaseException) -> StorageError:
        return StorageError(
            self.spec,
            f"the shared rate budget actor cannot be reached ({type(exc).__name__})",
            "start the run from its driver again (it creates the actor), or give "
            "--budget redis://...; chatstep does not run unlimited when its shared budget is down",
        )

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            if self._actor is None:
                self._actor = ray.get_actor(self.name, namespace=NAMESPACE)
            return await getattr(self._actor, method).remote(*args)
        except (ValueError, ray.exceptions.RayError) as exc:
            raise self._unreachable(exc) from None

    async def check(self) -> None:
        """Raise :class:`StorageError` unless the actor answers."""
        await self._call("ping")

    async def acquire(
        self, scope: str, tokens: float, *, rpm: float | None, tpm: float | None
    ) -> tuple[float, tuple[float, float]]:
        wait, (requests, reserved) = await self._call("take", scope, tokens, rpm or 0.0, tpm or 0.0)
        return float(wait), (float(requests), float(reserved))

    async def observe(
        self,
        scope: str,
        headers: Mapping[str, str],
        age: float = 0.0,
        reserved: tuple[float, float] = (-1.0, -1.0),
    ) -> None:
        values = header_values(headers)
        if any(v >= 0 for v in values):
            await self._call("learn", scope, values, age, reserved)

    async def pause(self, scope: str, seconds: float) -> None:
        await self._call("hold", scope, seconds)

    async def aclose(self) -> None:
        """The actor outlives the worker (detached): nothing to close."""


async def open_budget(spec: str | None, *, split: int | None = None) -> Any:
    """The budget a worker draws from: ``redis://`` (RedisBudget), else the actor.

    Checked before use. Unreachable: :class:`StorageError`, or with ``split`` (the number of
    workers) a budget of this worker's own holding ``1/split`` of the limits.
    """
    from chatstep.mapping.shared_budget import RedisBudget

    text = spec or DEFAULT_BUDGET
    budget: Any
    if text.startswith(("redis://", "rediss://", "unix://")):
        budget = RedisBudget(text)
    elif text.startswith("ray://"):
        budget = ActorBudget(text)
    else:
        raise ConfigError(
            "--budget",
            f"{text.split('://')[0]!r} is not a shared budget store",
            "give redis://HOST:PORT/DB or ray://NAME (the default: a Ray actor)",
        )
    try:
        await budget.check()
    except StorageError:
        with contextlib.suppress(Exception):
            await budget.aclose()
        if not split:
            raise
        return PoolBudget(divide=split)
    return budget
