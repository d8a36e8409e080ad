"""A dry run: what a step will cost over a dataset, before anything is sent.

:func:`estimate_cost` validates the step, renders it for every row (streamed: constant memory),
counts each request's prompt tokens with the model's tokenizer
(:func:`~chatstep.accounting.tokens.estimate_prompt_tokens`) and prices the sums:

- **worst case**: every prompt token uncached, plus every output token the request allows
  (``max_completion_tokens`` / ``max_tokens``, or the default, times ``n``) — what a
  ``max_cost`` cap reserves;
- **typical**: prompt tokens plus the expected output per request, given by the caller or
  taken from the history (the mean ``completion_tokens`` of the step's earlier answered calls);

each on the realtime API and on the Batch API. Costs are linear in tokens, so tokens are summed
per model and priced once at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.errors import ConfigError

if TYPE_CHECKING:
    from chatstep.accounting.pricing import PriceTable
    from chatstep.secrets import SecretStore
    from chatstep.steps.loading import StepSource
    from chatstep.storage.history import History

__all__ = ["CostEstimate", "estimate_cost", "expected_output_from_history"]

#: How many of the step's newest answered calls the history's expected output is averaged over.
HISTORY_SAMPLE = 200


@dataclass
class _ModelTokens:
    requests: int = 0
    prompt: int = 0
    max_output: int = 0


@dataclass
class CostEstimate:
    """What a step would cost over ``rows`` rows (USD; ``None`` where a model has no price).

    ``prompt_tokens`` and ``max_output_tokens`` are summed over every row;
    ``expected_output_tokens`` is per request (``expected_from`` says where it came from:
    ``"given"``, ``"history"`` or None when unknown, which leaves the typical costs None).
    """

    step_id: str | None
    rows: int
    prompt_tokens: int
    max_output_tokens: int
    expected_output_tokens: float | None
    expected_from: str | None
    worst_case_usd: float | None
    typical_usd: float | None
    batch_worst_case_usd: float | None
    batch_typical_usd: float | None
    largest_row_tokens: int = 0
    """The largest single request's worst case: prompt plus output allowance, in tokens."""
    models: dict[str, int] = field(default_factory=dict)
    """Requests per model."""
    unpriced: list[str] = field(default_factory=list)
    """Models with no price (their rows make every USD figure None)."""
    local: bool = False
    """The step runs on the embedded model: it costs nothing."""

    def per_row(self, value: float | None) -> float | None:
        """A dataset figure divided by the number of rows (the mean row)."""
        return None if value is None or self.rows == 0 else value / self.rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with per-row means next to the dataset totals."""
        figures = {
            "worst_case_usd": self.worst_case_usd,
            "typical_usd": self.typical_usd,
            "batch_worst_case_usd": self.batch_worst_case_usd,
            "batch_typical_usd": self.batch_typical_usd,
        }
        return {
            "step_id": self.step_id,
            "rows": self.rows,
            "prompt_tokens": self.prompt_tokens,
            "max_output_tokens": self.max_output_tokens,
            "expected_output_tokens": self.expected_output_tokens,
            "expected_from": self.expected_from,
            "largest_row_tokens": self.largest_row_tokens,
            "models": self.models,
            "unpriced": self.unpriced,
            "local": self.local,
            "dataset": figures,
            "per_row": {name: self.per_row(value) for name, value in figures.items()},
        }


def expected_output_from_history(
    step_id: str | None, history: History | None = None
) -> tuple[float, int] | None:
    """(mean completion tokens, calls) over the step's newest answered, uncached calls."""
    if not step_id:
        return None
    from chatstep.storage.history import History

    log = history if history is not None else History()
    entries = [
        e
        for e in log.recent(limit=HISTORY_SAMPLE, step=step_id)
        if e.error is None and not e.cached and e.completion_tokens is not None
    ]
    if not entries:
        return None
    return sum(int(e.completion_tokens or 0) for e in entries) / len(entries), len(entries)


def _rows_of(rows: str | Path | Iterable[Mapping[str, Any]] | None) -> Iterable[Mapping[str, Any]]:
    if rows is None:
        return [{}]
    if isinstance(rows, str | Path):
        from chatstep.mapping.datasets import read_rows

        return read_rows(rows, option="--rows")
    return rows


def estimate_cost(
    step: StepSource,
    rows: str | Path | Iterable[Mapping[str, Any]] | None = None,
    *,
    inputs: Mapping[str, Any] | None = None,
    expected_output_tokens: float | None = None,
    price_table: PriceTable | None = None,
    history: History | None = None,
    secrets: SecretStore | None = None,
) -> CostEstimate:
    """Validate ``step``, render it for every row without sending, and price the result.

    ``rows``: a dataset file (JSONL, CSV, Parquet: as ``map`` reads it), an iterable of
    mappings, or None for one request from ``inputs`` alone; ``inputs`` are merged under every
    row. ``expected_output_tokens`` (per request) sets the typical output; else the history's
    mean for this step id is used, if any. Raises :class:`ConfigError` (the row's index in the
    field path) for a step or row that would not render; nothing is sent.
    """
    from chatstep.accounting.pricing import default_price_table
    from chatstep.accounting.tokens import completion_budget, estimate_prompt_tokens
    from chatstep.core.connection import resolve_connection
    from chatstep.core.render import make_context, render_step
    from chatstep.core.request import build_request
    from chatstep.secrets import default_secret_store
    from chatstep.steps.loading import load_step

    definition = load_step(step)
    store = secrets if secrets is not None else default_secret_store()
    table = price_table if price_table is not None else default_price_table()
    given = dict(inputs or {})
    per_model: dict[str, _ModelTokens] = {}
    count = 0
    largest = 0
    local: bool | None = None
    retrieved = None
    spec = getattr(definition, "retrieve", None)
    if spec is not None:  # nothing is searched: chunks of the index's full size stand in
        from chatstep.retrieval.retrieve import placeholder_chunks

        retrieved = placeholder_chunks(spec)
    for index, row in enumerate(_rows_of(rows)):
        if not isinstance(row, Mapping):
            raise ConfigError(f"rows[{index}]", f"is a {type(row).__name__}, not a mapping")
        where = f"rows[{index}]" if rows is not None else ""
        context = make_context({**given, **row}, None, store, retrieved)
        rendered = render_step(definition, context, prefix=where)
        request = build_request(rendered, stream=False)
        if local is None:  # one connection for the whole dataset, as map and batch use
            local = resolve_connection(rendered, store).backend == "local"
        prompt = estimate_prompt_tokens(request.body, request.endpoint)
        completes = request.endpoint in ("chat.completions", "completions")
        output = completion_budget(request.body) if completes else 0
        tokens = per_model.setdefault(request.model, _ModelTokens())
        tokens.requests += 1
        tokens.prompt += prompt
        tokens.max_output += output
        largest = max(largest, prompt + output)
        count += 1
    expected_from: str | None = None
    expected = expected_output_tokens
    if expected is not None:
        if expected < 0:
            raise ConfigError("expected_output_tokens", f"must be >= 0, got {expected!r}")
        expected_from = "given"
    else:
        found = expected_output_from_history(definition.id, history)
        if found is not None:
            expected, expected_from = found[0], "history"
    return _priced(
        definition.id,
        count,
        per_model,
        expected,
        expected_from,
        table,
        bool(local),
        largest,
    )


def _priced(
    step_id: str | None,
    rows: int,
    per_model: dict[str, _ModelTokens],
    expected: float | None,
    expected_from: str | None,
    table: PriceTable,
    local: bool,
    largest: int,
) -> CostEstimate:
    unpriced = sorted(m for m in per_model if not local and table.price(m) is None)

    def total(batch: bool, typical: bool) -> float | None:
        if unpriced or (typical and expected is None):
            return None
        usd = 0.0
        for model, tokens in per_model.items():
            output = tokens.requests * (expected or 0.0) if typical else tokens.max_output
            usage = {"prompt_tokens": tokens.prompt, "completion_tokens": output}
            cost = table.cost(model, usage, batch=batch, local=local, estimated=True)
            usd += cost.total_usd if cost is not None else 0.0
        return usd

    return CostEstimate(
        step_id=step_id,
        rows=rows,
        prompt_tokens=sum(t.prompt for t in per_model.values()),
        max_output_tokens=sum(t.max_output for t in per_model.values()),
        expected_output_tokens=expected,
        expected_from=expected_from,
        worst_case_usd=total(batch=False, typical=False),
        typical_usd=total(batch=False, typical=True),
        batch_worst_case_usd=total(batch=True, typical=False),
        batch_typical_usd=total(batch=True, typical=True),
        largest_row_tokens=largest,
        models={m: t.requests for m, t in per_model.items()},
        unpriced=unpriced,
        local=local,
    )
