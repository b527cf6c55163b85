"""tasks.pricing: what a call costs, from the shipped table and an operator's overrides."""

from __future__ import annotations

import json

import pytest

from tasks.pricing import price_table
from worker.prices import load_prices


def test_the_shipped_table_prices_the_models_gvw_runs() -> None:
    prices = load_prices()
    assert prices.taken_on and prices.source.startswith("https://")
    # 1M prompt tokens and 1M output tokens on 2.5 Flash: $0.30 + $2.50
    assert prices.cost_usd("gemini-2.5-flash", 1_000_000, 1_000_000) == pytest.approx(2.80)
    assert prices.cost_usd("gemini-2.5-flash", 1_000_000, 0, batch=True) == pytest.approx(0.15)


@pytest.mark.parametrize(
    ("model", "row"),
    [
        pytest.param("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash", id="dated-preview"),
        pytest.param("gemini-2.5-flash-lite", "gemini-2.5-flash-lite", id="longest-prefix"),
        pytest.param("models/gemini-2.5-pro", "gemini-2.5-pro", id="models-prefix"),
    ],
)
def test_a_model_is_priced_by_its_longest_row(model: str, row: str) -> None:
    prices = load_prices()
    assert prices.price_of(model) == prices.models[row]


def test_an_unknown_model_has_no_price_rather_than_a_guess() -> None:
    assert load_prices().cost_usd("claude-3", 1000, 1000) is None


def test_long_prompts_cost_the_long_context_rate() -> None:
    prices = load_prices()
    short = prices.cost_usd("gemini-2.5-pro", 200_000, 0)
    long = prices.cost_usd("gemini-2.5-pro", 200_001, 0)
    assert short == pytest.approx(0.25) and long == pytest.approx(200_001 * 2.5 / 1e6)


def test_an_operators_prices_win(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "models": {
                    "gemini-2.5-flash": {"input": 1, "output": 1},
                    "my-tuned": {"input": 2, "output": 2},
                }
            }
        )
    )
    prices = load_prices(str(path))
    assert prices.cost_usd("gemini-2.5-flash", 1_000_000, 0) == pytest.approx(1.0)
    assert prices.cost_usd("my-tuned-v3", 0, 1_000_000) == pytest.approx(2.0)
    assert prices.cost_usd("gemini-2.5-pro", 100_000, 0) == pytest.approx(0.125)  # kept


def test_a_row_without_numbers_is_refused() -> None:
    with pytest.raises(ValueError, match="numeric"):
        price_table({"models": {"x": {"input": "cheap"}}})
