"""PriceStore: one price per (provider, model), set by upsert, listed in (provider, model)
order. Budgets charge by these numbers, so each of the three rates must come back as it was
set and a second set must replace, never add, a row."""

from __future__ import annotations

from tests.contract.rows import price


def _rates(row) -> tuple[str, str, int, int, int]:
    return (row["provider"], row["model"], row["input_micros_per_million"],
            row["output_micros_per_million"], row["cached_input_micros_per_million"])


async def test_a_set_price_comes_back_with_each_rate(price_store):
    row = await price_store.set_price(price("openai", "gpt-4o", 2_500_000, 10_000_000, 1_250_000))
    assert _rates(row) == ("openai", "gpt-4o", 2_500_000, 10_000_000, 1_250_000)
    assert row["update_time"] is not None
    assert [_rates(r) for r in await price_store.list_prices()] == [_rates(row)]


async def test_setting_a_price_again_replaces_it(price_store):
    first = await price_store.set_price(price("openai", "gpt-4o", 1, 2, 1))
    second = await price_store.set_price(price("openai", "gpt-4o", 5, 7, 3))
    assert _rates(second) == ("openai", "gpt-4o", 5, 7, 3)
    assert second["update_time"] >= first["update_time"]
    assert [_rates(r) for r in await price_store.list_prices()] == [_rates(second)]


async def test_prices_are_per_provider_and_model_and_listed_in_that_order(price_store):
    """The same model sold by two providers has two prices; "" is the provider of a call that
    names none."""
    for row in (price("openai", "gpt-4o", 3, 3, 3), price("azure", "gpt-4o", 2, 2, 2),
                price("openai", "gpt-4o-mini", 4, 4, 4), price("", "gpt-4o", 1, 1, 1)):
        await price_store.set_price(row)
    assert [(r["provider"], r["model"], r["input_micros_per_million"])
            for r in await price_store.list_prices()] == [
        ("", "gpt-4o", 1), ("azure", "gpt-4o", 2), ("openai", "gpt-4o", 3),
        ("openai", "gpt-4o-mini", 4)]


async def test_a_free_model_is_priced_at_zero_not_left_unpriced(price_store, lookup_store):
    """Zero is a price (a local model); only a missing row means "no price"."""
    await price_store.set_price(price("local", "llama", 0, 0, 0))
    assert [_rates(r) for r in await price_store.list_prices()] == [("local", "llama", 0, 0, 0)]
    assert ("local", "llama") in await lookup_store.prices()
