"""Price table lookups, cost arithmetic and user price files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatstep.accounting import pricing
from chatstep.accounting.pricing import PRICES_CHECKED, Cost, ModelPrice, PriceTable
from chatstep.errors import ConfigError


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CHATSTEP_HOME", str(home))
    monkeypatch.setattr(pricing, "_default_table", [])
    return home


def usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, object]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


DOCUMENTED = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "o1",
    "o3",
    "o4-mini",
    "gpt-3.5-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "omni-moderation-latest",
]


@pytest.mark.parametrize("model", DOCUMENTED)
def test_default_prices_cover_the_documented_models(model: str) -> None:
    assert PRICES_CHECKED.startswith("genai-prices ")
    price = PriceTable().price(model)
    assert price is not None, model
    assert price.input >= 0
    assert price.output >= 0
    # Cached input is never dearer than fresh input.
    assert price.cached_rate <= price.input


def test_default_prices_are_the_published_ones() -> None:
    # Spot checks against OpenAI's published prices (USD per 1M tokens), so a data change that
    # breaks the mapping (units, fields) cannot pass silently.
    table = PriceTable()
    assert table.price("gpt-4o") == ModelPrice(input=2.50, output=10.0, cached_input=1.25)
    assert table.price("gpt-4.1-mini") == ModelPrice(input=0.40, output=1.60, cached_input=0.10)
    assert table.price("gpt-4") == ModelPrice(input=30.0, output=60.0)
    assert table.price("omni-moderation-latest") == ModelPrice(0.0, 0.0)
    assert table.price("omni-moderation-2024-09-26") == ModelPrice(0.0, 0.0)


def test_prices_are_read_offline_from_the_bundled_snapshot() -> None:
    # Pricing never refreshes genai-prices' data: no auto-update snapshot is ever installed.
    from genai_prices import data_snapshot

    PriceTable().cost("gpt-4o", usage(1000, 100))
    assert data_snapshot._custom_snapshot is None
    assert data_snapshot.get_snapshot().from_auto_update is False


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("openai/gpt-5-mini", "gpt-5-mini"),
    ],
)
def test_dated_snapshots_match_their_family(model: str, family: str) -> None:
    table = PriceTable()
    assert table.price(model) == table.price(family)
    # A user entry for the family prices its snapshots too.
    custom = table.merged({family: {"input": 7.0, "output": 9.0}})
    assert custom.price(model) == custom.price(family)
    assert custom.price(model).input == 7.0  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["gpt-5.9-imaginary", "llama3.2:1b", "my-model", ""])
def test_unknown_models_are_not_guessed(model: str) -> None:
    table = PriceTable()
    assert table.price(model) is None
    assert table.cost(model, usage(1000, 100)) is None


def test_cost_splits_cached_tokens_out_of_prompt_tokens() -> None:
    # gpt-4o: $2.50 input, $1.25 cached input, $10.00 output per 1M tokens.
    cost = PriceTable().cost("gpt-4o-2024-08-06", usage(1_000_000, 200_000, cached=400_000))
    assert cost is not None
    assert cost.input_usd == pytest.approx(600_000 * 2.50 / 1e6)
    assert cost.cached_input_usd == pytest.approx(400_000 * 1.25 / 1e6)
    assert cost.output_usd == pytest.approx(200_000 * 10.00 / 1e6)
    assert cost.total_usd == pytest.approx(1.5 + 0.5 + 2.0)


def test_reasoning_tokens_are_already_in_completion_tokens() -> None:
    table = PriceTable()
    plain = table.cost("o3", usage(1000, 5000))
    reasoning = table.cost("o3", usage(1000, 5000, reasoning=4000))
    assert plain == reasoning


def test_batch_halves_every_rate() -> None:
    # gpt-5's batch price in the data is half of every rate; a user-priced model is halved too.
    table = PriceTable().merged({"acme": {"input": 2.0, "cached_input": 1.0, "output": 4.0}})
    own = table.cost("acme", usage(10_000, 2_000, cached=5_000), batch=True)
    assert own is not None
    assert own.batch
    assert own.total_usd == pytest.approx((5_000 * 2.0 + 5_000 * 1.0 + 2_000 * 4.0) / 2e6)
    full = table.cost("gpt-5", usage(10_000, 2_000, cached=5_000))
    half = table.cost("gpt-5", usage(10_000, 2_000, cached=5_000), batch=True)
    assert full is not None
    assert half is not None
    assert half.total_usd == pytest.approx(full.total_usd / 2)


def test_models_without_cache_discount_bill_cached_tokens_at_input_price() -> None:
    cost = PriceTable().cost("gpt-3.5-turbo", usage(1_000_000, 0, cached=1_000_000))
    assert cost is not None
    assert cost.cached_input_usd == pytest.approx(0.50)


def test_free_models_and_local_models() -> None:
    table = PriceTable()
    moderation = table.cost("omni-moderation-latest", {"prompt_tokens": 500})
    assert moderation is not None
    assert moderation.total_usd == 0.0
    local = table.cost("gemma-3-270m-it", usage(100, 100), local=True)
    assert local is not None
    assert local.total_usd == 0.0


def test_embeddings_usage_has_no_completion() -> None:
    cost = PriceTable().cost(
        "text-embedding-3-small", {"prompt_tokens": 1_000_000, "total_tokens": 1_000_000}
    )
    assert cost is not None
    assert cost.total_usd == pytest.approx(0.02)


def test_responses_api_usage_names_are_understood() -> None:
    responses_usage = {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 200},
        "output_tokens": 300,
    }
    chat_usage = usage(1000, 300, cached=200)
    table = PriceTable()
    assert table.cost("gpt-4.1", responses_usage) == table.cost("gpt-4.1", chat_usage)


def test_estimate_cost_is_the_uncached_maximum() -> None:
    estimate = PriceTable().estimate_cost("gpt-4.1-mini", 2_000, 500)
    assert estimate is not None
    assert estimate.total_usd == pytest.approx((2_000 * 0.40 + 500 * 1.60) / 1e6)
    assert pricing.estimate_cost("gpt-4.1-mini", 2_000, 500) == estimate
    assert pricing.estimate_cost("no-such-model", 2_000, 500) is None


def test_costs_add_up() -> None:
    a = Cost.of(1.0, 0.5, 2.0)
    b = Cost.of(0.25, 0.0, 1.0)
    total = a + b
    assert total == Cost.of(1.25, 0.5, 3.0)
    assert total.total_usd == pytest.approx(4.75)


def test_toml_file_in_user_dir_merges_over_builtin(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "prices.toml").write_text(
        '[models."gpt-4o"]\noutput = 12.0\n[models."acme-llm"]\ninput = 0.3\noutput = 1.2\n',
        encoding="utf-8",
    )
    table = PriceTable.load()
    # Only the given field changes; the rest of gpt-4o stays the default.
    assert table.price("gpt-4o") == ModelPrice(input=2.50, output=12.0, cached_input=1.25)
    assert table.price("acme-llm") == ModelPrice(input=0.3, output=1.2)
    assert table.price("gpt-5") == PriceTable.builtin().price("gpt-5")
    cost = table.cost("acme-llm-2025-01-01", usage(1_000_000, 1_000_000))
    assert cost is not None
    assert cost.total_usd == pytest.approx(1.5)
    assert pricing.default_price_table().price("acme-llm") is not None


def test_json_file_at_explicit_path(tmp_path: Path) -> None:
    path = tmp_path / "team-prices.json"
    data = {"models": {"local-free": {"input": 0, "output": 0}, "gpt-4.1": {"cached_input": None}}}
    path.write_text(json.dumps(data), encoding="utf-8")
    table = PriceTable.load(path)
    assert table.price("local-free") == ModelPrice(0.0, 0.0)
    assert table.price("gpt-4.1") == ModelPrice(input=2.0, output=8.0, cached_input=None)


def test_no_user_file_means_default_prices() -> None:
    assert PriceTable.load().models() == []
    assert PriceTable.load().price("gpt-4o") == PriceTable.builtin().price("gpt-4o")


@pytest.mark.parametrize(
    ("content", "field", "problem"),
    [
        ('{"prices": {}}', "models", "missing"),
        ('{"models": {"x": 3}}', "models.x", "not a table"),
        ('{"models": {"x": {"input": 1}}}', "models.x.output", "required"),
        ('{"models": {"x": {"input": "cheap", "output": 1}}}', "models.x.input", "cheap"),
        ('{"models": {"x": {"input": -1, "output": 1}}}', "models.x.input", "non-negative"),
        ('{"models": {"gpt-4o": {"outptu": 1}}}', "models.gpt-4o.outptu", "not a price field"),
        ("{not json", "", "not valid JSON"),
    ],
)
def test_bad_price_files_name_the_field(
    tmp_path: Path, content: str, field: str, problem: str
) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        PriceTable.load(path)
    assert info.value.field.startswith(str(path))
    assert info.value.field.endswith(field)
    assert problem in info.value.message


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "prices.toml"
    bad.write_text("[models\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        PriceTable.load(bad)
    with pytest.raises(ConfigError, match="not found"):
        PriceTable.load(tmp_path / "absent.toml")
    other = tmp_path / "prices.yaml"
    other.write_text("models: {}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\.toml or \.json"):
        PriceTable.load(other)


def test_audio_tokens_are_priced_at_their_own_rates() -> None:
    audio_usage = {
        "prompt_tokens": 1_000_000,
        "completion_tokens": 1_000_000,
        "prompt_tokens_details": {"cached_tokens": 100_000, "audio_tokens": 400_000},
        "completion_tokens_details": {"audio_tokens": 300_000},
    }
    prices = {"input": 2.5, "cached_input": 1.0, "output": 10.0}
    table = PriceTable().merged(
        {"talker": {**prices, "input_audio": 40.0, "output_audio": 80.0}, "plain": prices}
    )
    cost = table.cost("talker", audio_usage)
    assert cost is not None
    assert cost.input_usd == pytest.approx(0.5 * 2.5)
    assert cost.cached_input_usd == pytest.approx(0.1 * 1.0)
    assert cost.input_audio_usd == pytest.approx(0.4 * 40.0)
    assert cost.output_usd == pytest.approx(0.7 * 10.0)
    assert cost.output_audio_usd == pytest.approx(0.3 * 80.0)
    assert cost.total_usd == pytest.approx(1.25 + 0.1 + 16 + 7 + 24)
    # Without audio rates, audio tokens cost the text price.
    plain = table.cost("plain", audio_usage)
    assert plain is not None
    assert plain.input_audio_usd == pytest.approx(0.4 * 2.5)
    # The default data has audio rates for OpenAI's audio models.
    default = PriceTable().price("gpt-audio")
    assert default is not None
    assert default.input_audio is not None
    assert default.input_audio > default.input


def test_cost_breakdown_round_trips_as_json() -> None:
    cost = Cost.of(0.1, 0.2, 0.3, 0.4, 0.5, batch=True, estimated=True)
    assert cost.total_usd == pytest.approx(1.5)
    assert Cost.from_dict(json.loads(json.dumps(cost.to_dict()))) == cost
