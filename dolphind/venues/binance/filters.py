"""The venue's exchange filters: our own exchangeInfo call (never ccxt's markets), parsed by
the one parser in orders/filters.py; the same answer carries the rate limits for the budget."""

from __future__ import annotations

from typing import Mapping

import structlog

from dolphind.orders.filters import SymbolFilters, parse_exchange_info
from dolphind.telemetry.metrics import VenueMetrics
from dolphind.venues.binance.rest import W_INFO, RestClient

log = structlog.get_logger("dolphind.venues.binance")


class VenueFilters:
    """Symbol filters from the venue's last exchangeInfo (refreshed on an interval)."""

    def __init__(self, rest: RestClient, metrics: VenueMetrics) -> None:
        self._rest = rest
        self._m = metrics
        self._by_symbol: dict[str, SymbolFilters] = {}

    def get(self, symbol: str) -> SymbolFilters | None:
        return self._by_symbol.get(symbol)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._by_symbol

    def all(self) -> Mapping[str, SymbolFilters]:
        return dict(self._by_symbol)

    async def refresh(self) -> None:
        doc = await self._rest.request("read", "fapiPublicGetExchangeInfo", {}, W_INFO)
        self._by_symbol = parse_exchange_info(doc)
        budget = self._rest.budget
        budget.set_limits(doc.get("rateLimits", []))
        self._m.weight_limit.set(budget.limit)
        for w, lim in budget.order_limits.items():
            self._m.order_limit.labels(w).set(lim)
        log.info("venue.filters", symbols=len(self._by_symbol), weight_limit=budget.limit)
