"""dolphind: a trading daemon for Binance USDT-M perpetual futures."""

__version__ = "0.1.0"
