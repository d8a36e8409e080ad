"""What a call costs, in USD, from OpenAI's prices (``genai-prices``) and the user's overrides.

Default prices come from the ``genai-prices`` package's bundled, dated snapshot (offline: it is
never refreshed at run time; :data:`PRICES_CHECKED` names the version). A user file merges over
them: ``$CHATSTEP_HOME/prices.toml`` (Python >= 3.11, or the ``tomli`` package on 3.10) or
``$CHATSTEP_HOME/prices.json``, or any path given to :meth:`PriceTable.load`. Both formats hold
one table, USD per million tokens::

    [models."my-finetune"]          # {"models": {"my-finetune": {"input": 0.3, ...}}}
    input = 0.30                    # uncached text input (required for new models)
    cached_input = 0.15             # cached input (optional: the input price)
    output = 1.20                   # text output (required for new models)
    input_audio = 40.0              # audio input tokens (optional: the input price)
    output_audio = 80.0             # audio output tokens (optional: the output price)
    context_window = 128000         # tokens per request (optional; see accounting.context)

A model id matches its own entry, or the longest entry it extends with a date suffix only
(``gpt-4o-2024-08-06`` is priced as ``gpt-4o``); the package matches OpenAI's model ids the same
way. Anything else is unknown and costs ``None``: a price is never guessed.

What is billed (:meth:`PriceTable.cost`): ``prompt_tokens`` minus cached and audio tokens at the
input price, ``prompt_tokens_details.cached_tokens`` at the cached price,
``prompt_tokens_details.audio_tokens`` at the audio input price,
``completion_tokens`` (reasoning included) minus ``completion_tokens_details.audio_tokens`` at the
output price, and those audio tokens at the audio output price. The Batch API uses the package's
batch prices where it has them, else half of every rate (:data:`BATCH_DISCOUNT`).
"""

from __future__ import annotations

import importlib
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chatstep.errors import ConfigError
from chatstep.storage.paths import user_dir

__all__ = [
    "BATCH_DISCOUNT",
    "PRICES_CHECKED",
    "Cost",
    "ModelPrice",
    "PriceTable",
    "estimate_cost",
]


def _source() -> str:
    from chatstep.accounting.price_data import SOURCE

    return SOURCE


#: Where the default prices come from: the ``genai-prices`` version whose snapshot is used.
PRICES_CHECKED = _source()


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens. An optional rate left None costs what its text counterpart costs."""

    input: float
    output: float
    cached_input: float | None = None
    input_audio: float | None = None
    output_audio: float | None = None

    @property
    def cached_rate(self) -> float:
        """The price of a cached input token (per 1M)."""
        return self.input if self.cached_input is None else self.cached_input

    def scaled(self, factor: float) -> ModelPrice:
        """Every rate times ``factor`` (the Batch API's flat discount)."""

        def times(value: float | None) -> float | None:
            return None if value is None else value * factor

        return ModelPrice(
            self.input * factor,
            self.output * factor,
            times(self.cached_input),
            times(self.input_audio),
            times(self.output_audio),
        )


#: The Batch API's discount where the price data has no batch price: every rate halved.
BATCH_DISCOUNT = 0.5

# What may follow a table entry in a model id: a snapshot date (2024-08-06) or the older MMDD.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})")


@dataclass(frozen=True)
class Cost:
    """What a call (or a sum of calls) cost, in USD, by token class.

    ``input_usd`` is uncached text input, ``cached_input_usd`` cached input, ``output_usd`` text
    output (reasoning included), ``input_audio_usd`` / ``output_audio_usd`` audio tokens;
    ``total_usd`` is their sum. ``batch`` says Batch API prices were used; ``estimated`` that
    the token counts were counted locally (a stream cut before the server's usage arrived).
    """

    input_usd: float = 0.0
    cached_input_usd: float = 0.0
    output_usd: float = 0.0
    total_usd: float = 0.0
    input_audio_usd: float = 0.0
    output_audio_usd: float = 0.0
    batch: bool = False
    estimated: bool = False

    @classmethod
    def of(
        cls,
        input_usd: float,
        cached_input_usd: float,
        output_usd: float,
        input_audio_usd: float = 0.0,
        output_audio_usd: float = 0.0,
        *,
        batch: bool = False,
        estimated: bool = False,
    ) -> Cost:
        """A cost whose total is the sum of its parts."""
        total = input_usd + cached_input_usd + output_usd + input_audio_usd + output_audio_usd
        return cls(
            input_usd,
            cached_input_usd,
            output_usd,
            total,
            input_audio_usd,
            output_audio_usd,
            batch=batch,
            estimated=estimated,
        )

    def __add__(self, other: Cost) -> Cost:
        return Cost.of(
            self.input_usd + other.input_usd,
            self.cached_input_usd + other.cached_input_usd,
            self.output_usd + other.output_usd,
            self.input_audio_usd + other.input_audio_usd,
            self.output_audio_usd + other.output_audio_usd,
            batch=self.batch and other.batch,
            estimated=self.estimated or other.estimated,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able breakdown (the keys of this class)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cost:
        """The inverse of :meth:`to_dict` (unknown keys are ignored)."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class TokenCounts:
    """A usage split into billed classes (each token in exactly one)."""

    text_input: int
    cached_input: int
    audio_input: int
    text_output: int
    audio_output: int


def usage_counts(usage: Mapping[str, Any]) -> TokenCounts:
    """The billed classes of a Chat Completions, Embeddings or Responses ``usage``."""
    prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    out_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    details = details if isinstance(details, Mapping) else {}
    out_details = out_details if isinstance(out_details, Mapping) else {}
    cached = min(_int(details.get("cached_tokens")), prompt)
    audio_in = min(_int(details.get("audio_tokens")), prompt - cached)
    audio_out = min(_int(out_details.get("audio_tokens")), completion)
    return TokenCounts(
        prompt - cached - audio_in, cached, audio_in, completion - audio_out, audio_out
    )


class PriceTable:
    """Prices by model id: user entries first (longest-prefix matching of dated snapshots),
    then the ``genai-prices`` snapshot (unless ``defaults=False``)."""

    def __init__(
        self,
        prices: Mapping[str, ModelPrice] | None = None,
        *,
        checked: str | None = None,
        defaults: bool = True,
        context_windows: Mapping[str, int] | None = None,
    ) -> None:
        self._prices: dict[str, ModelPrice] = dict(prices or {})
        self.checked = checked if checked is not None else PRICES_CHECKED
        self.defaults = defaults
        self.context_windows: dict[str, int] = dict(context_windows or {})
        """Context windows (tokens) the price file sets, over the built-in ones."""
        # Longest first, so gpt-4o-mini-2024-07-18 meets gpt-4o-mini before gpt-4o.
        self._keys = sorted(self._prices, key=len, reverse=True)

    @classmethod
    def builtin(cls) -> PriceTable:
        """The default prices alone (the ``genai-prices`` snapshot, no user file)."""
        return cls()

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """The default prices with a user price file merged over them.

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
        """A new table with ``overrides`` merged over this one's prices, field by field."""
        prices = dict(self._prices)
        windows = dict(self.context_windows)
        for model, entry in overrides.items():
            if isinstance(entry, Mapping) and "context_window" in entry:
                windows[model] = _context_window(model, entry["context_window"])
                entry = {k: v for k, v in entry.items() if k != "context_window"}
                if not entry:
                    continue  # a window alone needs no price
            prices[model] = _merge_entry(model, self.price(model), entry)
        return PriceTable(
            prices, checked=self.checked, defaults=self.defaults, context_windows=windows
        )

    def context_window(self, model: str) -> int | None:
        """The context window of ``model`` in tokens (price file, then built-in), or None."""
        from chatstep.accounting.context import context_window_for

        return context_window_for(model, self.context_windows)

    def models(self) -> list[str]:
        """The model ids this table's own entries (the user's overrides) price, sorted."""
        return sorted(self._prices)

    def _own(self, name: str) -> ModelPrice | None:
        exact = self._prices.get(name)
        if exact is not None:
            return exact
        for key in self._keys:
            if name.startswith(key) and _SNAPSHOT_SUFFIX.fullmatch(name[len(key) :]):
                return self._prices[key]
        return None

    def price(self, model: str, *, batch: bool = False) -> ModelPrice | None:
        """The price entry for ``model`` (``batch``: Batch API rates), or None when unknown."""
        name = model.strip()
        if name.lower().startswith("openai/"):
            name = name[len("openai/") :]
        if not name:
            return None
        own = self._own(name)
        if own is not None:
            return own.scaled(BATCH_DISCOUNT) if batch else own
        if not self.defaults:
            return None
        from chatstep.accounting.price_data import lookup

        if batch:
            priced = lookup(name, True)
            if priced is not None:
                return priced
            standard = lookup(name, False)
            return None if standard is None else standard.scaled(BATCH_DISCOUNT)
        return lookup(name, False)

    def cost(
        self,
        model: str,
        usage: Mapping[str, Any] | None,
        *,
        batch: bool = False,
        local: bool = False,
        estimated: bool = False,
    ) -> Cost | None:
        """The cost of a call from its response ``usage``; None for a model with no price.

        See the module docstring for which tokens are billed at which rate. ``batch`` prices
        at Batch API rates. ``local`` (the embedded model) is free whatever its name.
        ``estimated`` marks the cost as counted locally, not reported by the server.
        """
        if local:
            return Cost(batch=batch, estimated=estimated)
        price = self.price(model, batch=batch)
        if price is None:
            return None
        n = usage_counts(usage or {})
        per = 1 / 1_000_000
        audio_in = price.input if price.input_audio is None else price.input_audio
        audio_out = price.output if price.output_audio is None else price.output_audio
        return Cost.of(
            n.text_input * price.input * per,
            n.cached_input * price.cached_rate * per,
            n.text_output * price.output * per,
            n.audio_input * audio_in * per,
            n.audio_output * audio_out * per,
            batch=batch,
            estimated=estimated,
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
        return self.cost(model, usage, batch=batch, local=local, estimated=True)


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


_FIELDS = ("input", "cached_input", "output", "input_audio", "output_audio")
_OPTIONAL = ("cached_input", "input_audio", "output_audio")


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
            "use input, cached_input, output, input_audio and output_audio (USD per 1M tokens)",
        )
    numbers: dict[str, float | None] = {}
    for name in _FIELDS:
        if name not in entry:
            continue
        raw = entry[name]
        if name in _OPTIONAL and raw is None:
            numbers[name] = None  # explicitly "same as the text price"
            continue
        ok = isinstance(raw, (int, float)) and not isinstance(raw, bool)
        if not ok or not math.isfinite(raw) or raw < 0:
            raise ConfigError(
                f"models.{model}.{name}",
                f"must be a non-negative number of USD per 1M tokens, got {raw!r}",
                "write it as a plain number, e.g. 2.5",
            )
        numbers[name] = float(raw)
    if base is None:
        missing = [n for n in ("input", "output") if n not in numbers]
        if missing:
            raise ConfigError(
                f"models.{model}.{missing[0]}",
                "is required for a model that has no default price",
                "give both input and output prices",
            )
        base = ModelPrice(0.0, 0.0)
    merged = {**base.__dict__, **numbers}
    return ModelPrice(**merged)
