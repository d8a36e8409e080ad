"""Prices from the ``genai-prices`` package's bundled snapshot (offline; never fetched).

``genai-prices`` ships its price data inside the wheel, with dated price changes and request
variants (the Batch API's ``processing: batch``). chatstep reads only that bundled snapshot: it
never calls ``UpdatePrices``, so no price is ever downloaded at run time. Upgrading the package
is how prices are refreshed; :data:`SOURCE` names the version in use.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chatstep.accounting.pricing import ModelPrice

__all__ = ["SOURCE", "lookup"]

#: Where the default prices come from (the package and its version).
SOURCE = f"genai-prices {version('genai-prices')}"

# genai-prices keys (USD per 1M tokens) -> chatstep's ModelPrice fields.
_FIELDS = {
    "input_mtok": "input",
    "output_mtok": "output",
    "cache_read_mtok": "cached_input",
    "input_audio_mtok": "input_audio",
    "output_audio_mtok": "output_audio",
}
# The package prices the moderation endpoint as a model with no token prices: it is free.
_FREE_MODELS = {"moderation"}


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, Decimal | int | float):
        return float(value)
    base = getattr(value, "base", None)  # tiered prices: the first tier's price
    return float(base) if base is not None else None


def _convert(model_id: str, prices: Any) -> ModelPrice | None:
    from chatstep.accounting.pricing import ModelPrice

    fields = {ours: _number(getattr(prices, theirs, None)) for theirs, ours in _FIELDS.items()}
    if fields["input"] is None and fields["output"] is None:
        return ModelPrice(0.0, 0.0) if model_id in _FREE_MODELS else None
    return ModelPrice(
        input=fields["input"] or 0.0,
        output=fields["output"] or 0.0,
        cached_input=fields["cached_input"],
        input_audio=fields["input_audio"],
        output_audio=fields["output_audio"],
    )


@lru_cache(maxsize=512)
def lookup(model: str, batch: bool = False) -> ModelPrice | None:
    """OpenAI's price for ``model`` today (``batch``: the Batch API's), or None when unknown.

    A batch price is the package's ``processing: batch`` variant when it has one; else None,
    and the caller applies the Batch API's flat discount.
    """
    from genai_prices.data_snapshot import get_snapshot

    try:
        _, info = get_snapshot().find_provider_model(model, None, "openai", None)
    except LookupError:
        return None
    variants = info.price_variants or ()
    if batch and not any(v.when.get("processing") == "batch" for v in variants):
        return None
    context = {"processing": "batch"} if batch else None
    return _convert(info.id, info.get_prices(datetime.now(timezone.utc), context))
