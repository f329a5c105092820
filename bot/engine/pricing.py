"""What a call cost: token usage times the model's price list. Pure.

Prices are US dollars per million tokens (`settings.prices`), with cache writes and cache reads
priced separately, which is where prompt caching saves money.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.engine.types import Usage


def price_for(model: str | None, prices: Mapping[str, Mapping[str, float]]) -> Mapping[str, float] | None:
    """The price list for `model`; dated ids ("claude-haiku-4-5-20251001") use their alias's."""
    if not model:
        return None
    if model in prices:
        return prices[model]
    prefixes = [name for name in prices if model.startswith(name)]
    return prices[max(prefixes, key=len)] if prefixes else None


def cost_usd(usage: Usage, price: Mapping[str, float] | None) -> float:
    if not price:
        return 0.0
    dollars = (
        usage.input_tokens * price.get("input", 0.0)
        + usage.output_tokens * price.get("output", 0.0)
        + usage.cache_creation_input_tokens * price.get("cache_write", price.get("input", 0.0))
        + usage.cache_read_input_tokens * price.get("cache_read", 0.0)
    ) / 1_000_000
    return round(dollars, 8)


def usage_from_api(api_usage: Any, price: Mapping[str, float] | None) -> Usage:
    """The SDK's usage object (some counts may be None) -> our Usage with its cost."""
    usage = Usage(
        input_tokens=getattr(api_usage, "input_tokens", 0) or 0,
        output_tokens=getattr(api_usage, "output_tokens", 0) or 0,
        cache_creation_input_tokens=getattr(api_usage, "cache_creation_input_tokens", 0) or 0,
        cache_read_input_tokens=getattr(api_usage, "cache_read_input_tokens", 0) or 0,
    )
    return usage.model_copy(update={"cost_usd": cost_usd(usage, price)})
