"""Real Binance USDT-M exchangeInfo documents from tests/data (see their PROVENANCE.md)."""

from __future__ import annotations

import pytest

from dolphind.orders.filters import SymbolFilters, load_exchange_info

from tests.data_paths import CRYPTOFEED_INFO, NAUTILUS

# nautilus_trader fixture, 2022-02-19 (BTCUSDT, ETHUSDT, BTCUSDT_220325; MIN_NOTIONAL 10).
NAUTILUS_INFO = (NAUTILUS / "tests" / "integration_tests" / "adapters" / "binance" / "resources"
                 / "http_responses" / "http_futures_market_exchange_info.json")


@pytest.fixture(scope="session")
def info_2021() -> dict[str, SymbolFilters]:
    return load_exchange_info(CRYPTOFEED_INFO)


@pytest.fixture(scope="session")
def info_2022() -> dict[str, SymbolFilters]:
    return load_exchange_info(NAUTILUS_INFO)
