"""What a call costs, from a price table in USD per million tokens.

The built-in table (:data:`BUILTIN_PRICES`, checked on :data:`PRICES_CHECKED`) holds OpenAI's
standard-tier list prices. A user file merges over it: ``$CHATSTEP_HOME/prices.toml`` (Python
>= 3.11, or the ``tomli`` package on 3.10) or ``$CHATSTEP_HOME/prices.json``, or any path given
to :meth:`PriceTable.load`. Both formats hold one table::

    [models."my-finetune"]          # {"models": {"my-finetune": {"input": 0.3, ...}}}
    input = 0.30                    # USD per 1M uncached input tokens (required for new models)
    cached_input = 0.15             # USD per 1M cached input tokens (optional: input price)
    output = 1.20                   # USD per 1M output tokens (required for new models)
    context_window = 128000         # tokens per request (optional; see accounting.context)

A model id matches its own entry, or the longest entry it extends with a date suffix only
(``gpt-4o-2024-08-06`` is priced as ``gpt-4o``; ``gpt-4-0613`` as ``gpt-4``). Anything else is
unknown and costs ``None``: a price is never guessed.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatstep.errors import ConfigError
from chatstep.storage.paths import user_dir

__all__ = [
    "BUILTIN_PRICES",
    "PRICES_CHECKED",
    "Cost",
    "ModelPrice",
    "PriceTable",
    "estimate_cost",
]

#: The day the built-in prices were checked against OpenAI's published prices.
PRICES_CHECKED = "2026-11-22"


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens; ``cached_input`` None means cached tokens cost the ``input`` price."""

    input: float
    output: float
    cached_input: float | None = None

    @property
    def cached_rate(self) -> float:
        """The price of a cached input token (per 1M)."""
        return self.input if self.cached_input is None else self.cached_input


def _p(input: float, cached_input: float | None, output: float) -> ModelPrice:
    return ModelPrice(input=input, cached_input=cached_input, output=output)


_FREE = _p(0.0, 0.0, 0.0)

# Standard tier, USD per 1M tokens: (input, cached input, output).
# [page] = the model's page on OpenAI's developer docs; [list] = OpenAI's pricing page as quoted
# by several independent price trackers (the page itself was not in our reference corpus).
BUILTIN_PRICES: dict[str, ModelPrice] = {
    "gpt-5": _p(1.25, 0.125, 10.00),  # [page]
    "gpt-5-mini": _p(0.25, 0.025, 2.00),  # [page]
    "gpt-5-nano": _p(0.05, 0.005, 0.40),  # [page]
    "gpt-4.1": _p(2.00, 0.50, 8.00),  # [list]
    "gpt-4.1-mini": _p(0.40, 0.10, 1.60),  # [list]
    "gpt-4.1-nano": _p(0.10, 0.025, 0.40),  # [list]
    "gpt-4o": _p(2.50, 1.25, 10.00),  # [list]
    "gpt-4o-mini": _p(0.15, 0.075, 0.60),  # [list]
    "o1": _p(15.00, 7.50, 60.00),  # [list]
    "o3": _p(2.00, 0.50, 8.00),  # [list]
    "o3-mini": _p(1.10, 0.55, 4.40),  # [list]
    "o4-mini": _p(1.10, 0.275, 4.40),  # [list]
    "gpt-4-turbo": _p(10.00, None, 30.00),  # [list]
    "gpt-4": _p(30.00, None, 60.00),  # [page]
    "gpt-3.5-turbo": _p(0.50, None, 1.50),  # [list]
    "text-embedding-3-small": _p(0.02, None, 0.0),  # [list]
    "text-embedding-3-large": _p(0.13, None, 0.0),  # [list]
    "text-embedding-ada-002": _p(0.10, None, 0.0),  # [list]
    # The moderation endpoint is free.
    "omni-moderation": _FREE,
    "omni-moderation-latest": _FREE,
    "text-moderation": _FREE,
    "text-moderation-latest": _FREE,
    "text-moderation-stable": _FREE,
}

#: The Batch API bills every token class at half price.
BATCH_DISCOUNT = 0.5

# What may follow a table entry in a model id: a snapshot date (2024-08-06) or the older MMDD.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})")


@dataclass(frozen=True)
class Cost:
    """The cost of one call (or a sum of calls), in USD."""

    input_usd: float = 0.0
    cached_input_usd: float = 0.0
    output_usd: float = 0.0
    total_usd: float = 0.0

    @classmethod
    def of(cls, input_usd: float, cached_input_usd: float, output_usd: float) -> Cost:
        """A cost whose total is the sum of its parts."""
        return cls(
            input_usd, cached_input_usd, output_usd, input_usd + cached_input_usd + output_usd
        )

    def __add__(self, other: Cost) -> Cost:
        return Cost.of(
            self.input_usd + other.input_usd,
            self.cached_input_usd + other.cached_input_usd,
            self.output_usd + other.output_usd,
        )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _usage_counts(usage: Mapping[str, Any]) -> tuple[int, int, int]:
    """(prompt, cached, completion) from a Chat Completions, Embeddings or Responses usage."""
    prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    return prompt, min(cached, prompt), completion


class PriceTable:
    """Prices by model id, with longest-prefix matching of dated snapshots."""

    def __init__(
        self,
        prices: Mapping[str, ModelPrice] | None = None,
        *,
        checked: str = PRICES_CHECKED,
        context_windows: Mapping[str, int] | None = None,
    ) -> None:
        self._prices: dict[str, ModelPrice] = dict(BUILTIN_PRICES if prices is None else prices)
        self.checked = checked
        self.context_windows: dict[str, int] = dict(context_windows or {})
        """Context windows (tokens) the price file sets, over the built-in ones."""
        # Longest first, so gpt-4o-mini-2024-07-18 meets gpt-4o-mini before gpt-4o.
        self._keys = sorted(self._prices, key=len, reverse=True)

    @classmethod
    def builtin(cls) -> PriceTable:
        """The built-in table alone."""
        return cls()

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """The built-in table with a user price file merged over it.

        ``path`` None looks for ``prices.toml`` then ``prices.json`` in :func:`user_dir`; a
        missing default file is fine, a missing explicit one is a :class:`ConfigError`.
        """
        table = cls()
        if path is None:
            home = user_dir()
            candidates = [home / "prices.toml", home / "prices.json"]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                return table
            path = found
        path = Path(path)
        try:
            return table.merged(_read_price_file(path))
        except ConfigError as err:
            if err.field.startswith(str(path)):
                raise
            raise ConfigError(f"{path}: {err.field}", err.problem, err.fix) from err

    def merged(self, overrides: Mapping[str, Mapping[str, Any] | ModelPrice]) -> PriceTable:
        """A new table with ``overrides`` merged over this one, field by field."""
        prices = dict(self._prices)
        windows = dict(self.context_windows)
        for model, entry in overrides.items():
            if isinstance(entry, Mapping) and "context_window" in entry:
                windows[model] = _context_window(model, entry["context_window"])
                entry = {k: v for k, v in entry.items() if k != "context_window"}
                if not entry:
                    continue  # a window alone needs no price
            prices[model] = _merge_entry(model, prices.get(model), entry)
        return PriceTable(prices, checked=self.checked, context_windows=windows)

    def context_window(self, model: str) -> int | None:
        """The context window of ``model`` in tokens (price file, then built-in), or None."""
        from chatstep.accounting.context import context_window_for

        return context_window_for(model, self.context_windows)

    def models(self) -> list[str]:
        """The model ids (families) the table prices, sorted."""
        return sorted(self._prices)

    def price(self, model: str) -> ModelPrice | None:
        """The price entry for ``model``, or None when it is not in the table."""
        name = model.strip()
        if name.lower().startswith("openai/"):
            name = name[len("openai/") :]
        exact = self._prices.get(name)
        if exact is not None:
            return exact
        for key in self._keys:
            if name.startswith(key) and _SNAPSHOT_SUFFIX.fullmatch(name[len(key) :]):
                return self._prices[key]
        return None

    def cost(
        self,
        model: str,
        usage: Mapping[str, Any] | None,
        *,
        batch: bool = False,
        local: bool = False,
    ) -> Cost | None:
        """The cost of a call from its response ``usage``; None for a model not in the table.

        ``prompt_tokens`` includes ``prompt_tokens_details.cached_tokens``, which are billed at
        the cached rate; ``completion_tokens`` includes reasoning tokens. ``batch`` halves every
        rate (Batch API). ``local`` (the embedded model) is free whatever its name.
        """
        if local:
            return Cost()
        price = self.price(model)
        if price is None:
            return None
        prompt, cached, completion = _usage_counts(usage or {})
        factor = (BATCH_DISCOUNT if batch else 1.0) / 1_000_000
        return Cost.of(
            (prompt - cached) * price.input * factor,
            cached * price.cached_rate * factor,
            completion * price.output * factor,
        )

    def estimate_cost(
        self,
        model: str,
        prompt_tokens: int,
        max_completion_tokens: int,
        *,
        batch: bool = False,
        local: bool = False,
    ) -> Cost | None:
        """The most a call can cost before it is sent: no cache hits, every output token used."""
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max_completion_tokens}
        return self.cost(model, usage, batch=batch, local=local)


_default_table: list[PriceTable] = []


def default_price_table() -> PriceTable:
    """The process-wide table: built-in prices merged with the user's price file (loaded once)."""
    if not _default_table:
        _default_table.append(PriceTable.load())
    return _default_table[0]


def estimate_cost(
    model: str, prompt_tokens: int, max_completion_tokens: int, *, batch: bool = False
) -> Cost | None:
    """:meth:`PriceTable.estimate_cost` on :func:`default_price_table`, for budget checks."""
    return default_price_table().estimate_cost(
        model, prompt_tokens, max_completion_tokens, batch=batch
    )


def _read_price_file(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise ConfigError(
            str(path), "price file not found", "check the path, or remove it to use built-in prices"
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        data = _parse_toml(path, text)
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(str(path), f"is not valid JSON ({exc})", "fix the syntax") from exc
    else:
        raise ConfigError(str(path), "unknown price file type", "use a .toml or .json file")
    models = data.get("models") if isinstance(data, Mapping) else None
    if not isinstance(models, Mapping):
        raise ConfigError(
            f"{path}: models",
            "is missing or not a table",
            'put prices under [models."<model id>"] (TOML) or {"models": {...}} (JSON)',
        )
    for model, entry in models.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"{path}: models.{model}",
                "is not a table",
                "give it input, output and optionally cached_input, in USD per 1M tokens",
            )
    return {str(k): v for k, v in models.items()}


def _toml_module(path: Path) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:  # pragma: no cover - Python 3.10 only
        return importlib.import_module("tomli")
    except ImportError as exc:  # pragma: no cover - Python 3.10 only
        raise ConfigError(
            str(path),
            "TOML price files need Python >= 3.11 or the 'tomli' package",
            "pip install tomli, or write prices.json instead",
        ) from exc


def _parse_toml(path: Path, text: str) -> Any:
    toml = _toml_module(path)
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"is not valid TOML ({exc})", "fix the syntax") from exc


_FIELDS = ("input", "cached_input", "output")


def _context_window(model: str, raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    raise ConfigError(
        f"models.{model}.context_window",
        f"must be a positive whole number of tokens, got {raw!r}",
        "write it as a plain integer, e.g. 128000",
    )


def _merge_entry(
    model: str, base: ModelPrice | None, entry: Mapping[str, Any] | ModelPrice
) -> ModelPrice:
    if isinstance(entry, ModelPrice):
        return entry
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"models.{model}.{unknown[0]}",
            "is not a price field",
            "use input, cached_input and output (USD per 1M tokens)",
        )
    numbers: dict[str, float] = {}
    cached_input: float | None = base.cached_input if base is not None else None
    for name in _FIELDS:
        if name not in entry:
            continue
        raw = entry[name]
        if name == "cached_input" and raw is None:
            cached_input = None
            continue
        ok = isinstance(raw, (int, float)) and not isinstance(raw, bool)
        if not ok or not math.isfinite(raw) or raw < 0:
            raise ConfigError(
                f"models.{model}.{name}",
                f"must be a non-negative number of USD per 1M tokens, got {raw!r}",
                "write it as a plain number, e.g. 2.5",
            )
        numbers[name] = float(raw)
    if "cached_input" in numbers:
        cached_input = numbers["cached_input"]
    if base is None:
        missing = [n for n in ("input", "output") if n not in numbers]
        if missing:
            raise ConfigError(
                f"models.{model}.{missing[0]}",
                "is required for a model that is not in the built-in table",
                "give both input and output prices",
            )
        return ModelPrice(numbers["input"], numbers["output"], cached_input)
    return ModelPrice(
        input=numbers.get("input", base.input),
        output=numbers.get("output", base.output),
        cached_input=cached_input,
    )
