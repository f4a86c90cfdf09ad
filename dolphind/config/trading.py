"""Where a config sends its orders: the one switch for real money, stated in one line."""

from __future__ import annotations

from dolphind.config.schema import Config

# Binance mainnet's hosts: a URL naming one trades real money, whatever the config calls it.
MAINNET_HOSTS = ("fapi.binance.com", "fstream.binance.com")


def trading_target(cfg: Config) -> tuple[str, str | None]:
    """(venue, network) this config sends its orders to: the one switch for real money.

    Only ``mode = "live"`` reaches a real venue (``execution.venue``, on its ``network``);
    ``paper`` and ``backtest`` always fill in the paper venue, whatever ``execution.venue``
    says (with the live feed, paper trades real market data)."""
    if cfg.mode == "live":
        return cfg.execution.venue, cfg.execution.binance.network
    return "paper", None


def describe_trading(cfg: Config) -> str:
    """One line: which venue and network this config trades, on which market data."""
    venue, network = trading_target(cfg)
    data = ("live Binance market data" if cfg.feed.kind == "binance"
            else "replayed history")
    if venue == "paper":
        ignored = (" (execution.venue 'binance' is used only in mode 'live')"
                   if cfg.execution.venue == "binance" else "")
        return f"trades: paper venue (simulated fills, no real orders) on {data}{ignored}"
    money = "REAL MONEY" if network == "mainnet" else "test money"
    return f"trades: {venue} {network} ({money}, real orders) on {data}"
