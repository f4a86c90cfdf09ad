"""Real Binance USDT-M exchangeInfo documents from ../shared/data (see their PROVENANCE.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dolphind.execution.filters import SymbolFilters, load_exchange_info

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"
# cryptofeed capture of GET /fapi/v1/exchangeInfo, 2021-07-21 (122 symbols, MIN_NOTIONAL 5).
CRYPTOFEED_INFO = SHARED / "binance-um-ws-capture-2021-07-22_cryptofeed" / "BINANCE_FUTURES.0"
# nautilus_trader fixture, 2022-02-19 (BTCUSDT, ETHUSDT, BTCUSDT_220325; MIN_NOTIONAL 10).
NAUTILUS_INFO = (SHARED / "binance-fixtures_nautilus-trader" / "tests" / "integration_tests"
                 / "adapters" / "binance" / "resources" / "http_responses"
                 / "http_futures_market_exchange_info.json")


@pytest.fixture(scope="session")
def info_2021() -> dict[str, SymbolFilters]:
    if not CRYPTOFEED_INFO.exists():
        pytest.skip(f"shared data missing: {CRYPTOFEED_INFO}")
    return load_exchange_info(CRYPTOFEED_INFO)


@pytest.fixture(scope="session")
def info_2022() -> dict[str, SymbolFilters]:
    if not NAUTILUS_INFO.exists():
        pytest.skip(f"shared data missing: {NAUTILUS_INFO}")
    return load_exchange_info(NAUTILUS_INFO)
