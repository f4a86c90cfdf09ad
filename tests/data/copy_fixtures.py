"""Copy the real fixtures the tests use from the read-only source collection into tests/data.

The tests read only files inside the repository; this script is how those files were made and
how to check them again: ``python tests/data/copy_fixtures.py /work/shared/data``. Each target
folder keeps its source folder's name and PROVENANCE.md, with a header saying what was copied.

- Exchange and user-data payloads (nautilus_trader, cryptofeed): the files used, byte for byte,
  under their original relative paths.
- Candle sets: every ``*-futures.feather`` reduced to the two columns the tests and the backtest
  read (``date``, ``close``; values unchanged), zstd-compressed (about 6 MB instead of 22 MB);
  funding-rate files byte for byte; mark-price files left out (the loader skips them).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

NAUTILUS = "binance-fixtures_nautilus-trader"
CRYPTOFEED = "binance-um-ws-capture-2021-07-22_cryptofeed"
CANDLES = {"binance-um-futures-1m-2025-05_typhonun-DcaTpStrategy": "1m",
           "binance-um-futures-5m-2023-07_alpergulsen-freqtrade": "5m"}
BYTE_COPIES = {
    NAUTILUS: (
        "crates/adapters/binance/test_data/futures/http_json/order_response.json",
        "crates/adapters/binance/test_data/futures/http_json/position_risk.json",
        "crates/adapters/binance/test_data/futures/http_json/balance.json",
        "crates/adapters/binance/test_data/futures/user_data_json/order_update_trade.json",
        "crates/adapters/binance/test_data/futures/user_data_json/order_update_new.json",
        "crates/adapters/binance/test_data/futures/user_data_json/account_update.json",
        "tests/integration_tests/adapters/binance/resources/http_responses/"
        "http_futures_market_exchange_info.json",
        "tests/integration_tests/adapters/binance/resources/http_responses/"
        "http_futures_account_trades.json",
    ),
    CRYPTOFEED: ("BINANCE_FUTURES.0",),  # GET /fapi/v1/exchangeInfo as captured, 2021-07-21
}


def _provenance(src: Path, dst: Path, what: str) -> None:
    header = (f"# Copied into the repository for the tests (tests/data/copy_fixtures.py)\n\n"
              f"{what}\n\nThe source folder's PROVENANCE.md follows unchanged; where it counts "
              f"files or bytes it speaks of the whole source folder.\n\n---\n\n")
    (dst / "PROVENANCE.md").write_text(header + (src / "PROVENANCE.md").read_text())


def copy_bytes(shared: Path, name: str, paths: tuple[str, ...]) -> None:
    src, dst = shared / name, HERE / name
    for rel in paths:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)
    _provenance(src, dst, f"Only these {len(paths)} files, byte-identical, at their original "
                          "relative paths:\n\n" + "\n".join(f"- `{p}`" for p in paths))


def copy_candles(shared: Path, name: str, tf: str) -> None:
    import pyarrow.feather as feather

    src, dst = shared / name, HERE / name
    dst.mkdir(parents=True, exist_ok=True)
    candles = sorted(src.glob(f"*-{tf}-futures.feather"))
    for f in candles:
        table = feather.read_table(f, columns=["date", "close"])
        feather.write_feather(table, dst / f.name, compression="zstd", compression_level=19)
    funding = sorted(src.glob("*-funding_rate.feather"))
    for f in funding:
        shutil.copyfile(f, dst / f.name)
    _provenance(src, dst, (
        f"- The {len(candles)} candle files (`*-{tf}-futures.feather`): every row, only the "
        "columns `date` and `close` (values unchanged), rewritten with pyarrow as Feather v2 "
        "with zstd compression, so their sha256 differ from the table below.\n"
        f"- The {len(funding)} funding-rate files (`*-8h-funding_rate.feather`): byte-identical.\n"
        "- Not copied: the `*-8h-mark.feather` files (the history loader skips mark prices)."))


def main(shared: Path) -> None:
    for name, paths in BYTE_COPIES.items():
        copy_bytes(shared, name, paths)
    for name, tf in CANDLES.items():
        copy_candles(shared, name, tf)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
