"""Helpers for the feed tests: a BinanceFeed built from a config, without the daemon."""

from __future__ import annotations

from typing import Any

import pytest

from dolphind.channels import Channel, Overflow
from dolphind.config import Config, config_from_dict
from dolphind.events import Bar
from dolphind.feed.binance_ws import BinanceFeed
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics

SYMBOLS = ["SUSHIUSDT", "CTKUSDT", "AKROUSDT", "KEEPUSDT"]


def feed_config(url: str = "ws://127.0.0.1:9", bar_seconds: int = 1, **binance: Any) -> Config:
    settings = {"ws_base_url": url, "symbols": SYMBOLS, "stall_timeout_s": 0.6,
                "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "connect_timeout_s": 2.0,
                "heartbeat_s": 5.0, "stream_grace_s": 1.0, "bar_close_delay_ms": 100}
    settings.update(binance)
    return config_from_dict({"feed": {"kind": "binance", "bar_seconds": bar_seconds},
                             "binance_feed": settings})


@pytest.fixture
def metrics() -> Metrics:
    """Made outside the event loop: registering the process collector reads /proc."""
    return Metrics()


def make_feed(cfg: Config, capacity: int = 1024, metrics: Metrics | None = None,
              **kwargs: Any) -> tuple[BinanceFeed, Channel[Bar], Metrics]:
    """``kwargs`` go to BinanceFeed (``clock``, ``reconnect_requests``)."""
    metrics = metrics or Metrics()
    health = Health(metrics, lambda: 30.0)
    health.register("feed")
    out: Channel[Bar] = Channel("bars", capacity, Overflow.BLOCK, metrics.channels)
    return BinanceFeed(out, lambda: cfg, health, metrics, **kwargs), out, metrics


async def drain(out: Channel[Bar]) -> list[Bar]:
    """Every bar waiting in ``out`` (without waiting for more)."""
    bars = []
    while len(out):
        bars.append(await out.get())
    return bars
