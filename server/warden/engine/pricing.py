"""Cost of a call in integer micro-units; prices are micro-units per million tokens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    input_micros_per_million: int
    output_micros_per_million: int
    cached_input_micros_per_million: int


def cost_micros(price: Price, input_tokens: int, output_tokens: int,
                cached_input_tokens: int) -> int:
    """Rounded up, so a call is never cheaper than its price. input_tokens includes the cached."""
    scaled = ((input_tokens - cached_input_tokens) * price.input_micros_per_million
              + cached_input_tokens * price.cached_input_micros_per_million
              + output_tokens * price.output_micros_per_million)
    return -(-scaled // 1_000_000)


def find_price(prices: Mapping[tuple[str, str], Price], provider: str,
               model: str) -> Price | None:
    """The price of (provider, model), else the model's provider-independent price (provider
    "" in the table)."""
    return prices.get((provider, model)) or prices.get(("", model))
