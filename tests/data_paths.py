"""Where the tests' real fixtures live: tests/data, inside the repository (see each folder's
PROVENANCE.md; tests/data/copy_fixtures.py made them). No test reads a file outside the repo."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
# Real Binance USDT-M candles: 14 symbols of 1m (May-June 2025), 40 symbols of 5m (July 2023).
SET_1M = DATA / "binance-um-futures-1m-2025-05_typhonun-DcaTpStrategy"
SET_5M = DATA / "binance-um-futures-5m-2023-07_alpergulsen-freqtrade"
# nautilus_trader's Binance REST/user-data payloads, at their original relative paths.
NAUTILUS = DATA / "binance-fixtures_nautilus-trader"
# cryptofeed capture of GET /fapi/v1/exchangeInfo, 2021-07-21 (122 symbols, MIN_NOTIONAL 5).
CRYPTOFEED_INFO = DATA / "binance-um-ws-capture-2021-07-22_cryptofeed" / "BINANCE_FUTURES.0"
