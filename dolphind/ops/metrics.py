"""Every metric the daemon exports, on one registry that the app creates and passes down.

Nothing here uses prometheus_client's global default registry, so a test (or a second daemon
in the same process) gets a clean set. Names follow Prometheus conventions: `dolphind_` prefix,
base units in the name, counters end in `_total`; labels have few values (stage, channel,
symbol of the scan universe, rule), never order ids.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

import dolphind

# Queue waits are sub-millisecond when healthy; the tail buckets catch a stalled consumer.
_WAIT_BUCKETS = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


@dataclass(frozen=True, slots=True)
class _BoundChannelMetrics:
    depth: Gauge
    dropped: Counter
    wait: Histogram


class ChannelMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.depth = Gauge("dolphind_channel_depth", "Items waiting in a channel.",
                           ["channel"], registry=registry)
        self.capacity = Gauge("dolphind_channel_capacity", "Capacity of a channel.",
                              ["channel"], registry=registry)
        self.dropped = Counter("dolphind_channel_dropped_total",
                               "Items replaced by a newer one in a drop-oldest channel.",
                               ["channel"], registry=registry)
        self.wait = Histogram("dolphind_channel_wait_seconds",
                              "Time an item waited in a channel before it was taken.",
                              ["channel"], buckets=_WAIT_BUCKETS, registry=registry)

    def labels(self, channel: str) -> _BoundChannelMetrics:
        return _BoundChannelMetrics(self.depth.labels(channel), self.dropped.labels(channel),
                                    self.wait.labels(channel))


class Metrics:
    """The daemon's metrics. Create one per daemon; pass it (or a part of it) down."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

        self.build_info = Gauge("dolphind_build_info", "Build information; always 1.",
                                ["version", "python"], registry=r)
        self.build_info.labels(dolphind.__version__, platform.python_version()).set(1)
        self.start_time = Gauge("dolphind_start_time_seconds",
                                "Unix time the daemon started.", registry=r)
        self.config_info = Gauge("dolphind_config_info",
                                 "The running config (hash of the file); always 1.",
                                 ["config_hash", "mode"], registry=r)
        self.config_reloads = Counter("dolphind_config_reloads_total",
                                      "Config reloads applied (SIGHUP or POST /reload).",
                                      registry=r)
        self.config_reload_failures = Counter(
            "dolphind_config_reload_failures_total",
            "Config reloads refused because the new file was invalid.", registry=r)
        self.trading_halted = Gauge("dolphind_trading_halted",
                                    "1 while the kill switch is on (no new entries).", registry=r)
        self.health_score = Gauge("dolphind_health_score",
                                  "Weighted health score in [0, 1] (GREEN >= 0.8).", registry=r)

        # Stages and supervision
        self.stage_heartbeat = Gauge("dolphind_stage_heartbeat_timestamp_seconds",
                                     "Unix time of a stage's last heartbeat.", ["stage"],
                                     registry=r)
        self.stage_up = Gauge("dolphind_stage_up", "1 while a stage's task is running.",
                              ["stage"], registry=r)
        self.stage_restarts = Counter("dolphind_stage_restarts_total",
                                      "Times a crashed stage was restarted.", ["stage"],
                                      registry=r)
        self.stage_errors = Counter("dolphind_stage_errors_total",
                                    "Exceptions that ended a stage's run.", ["stage"],
                                    registry=r)
        self.channels = ChannelMetrics(r)

        # Bars (the replay or live feed's output)
        self.bars = Counter("dolphind_bars_total", "Bars published by the feed.", registry=r)
        self.bar_timestamp = Gauge("dolphind_bar_timestamp_seconds",
                                   "Market time (bar open) of the latest bar.", registry=r)
        self.bar_symbols = Gauge("dolphind_bar_symbols",
                                 "Symbols with a price in the latest bar.", registry=r)
        self.bar_close = Gauge("dolphind_bar_close_price",
                               "Close of the latest bar per symbol (quote currency).",
                               ["symbol"], registry=r)
        self.bar_seq_gaps = Counter("dolphind_bar_sequence_gaps_total",
                                    "Bars missing between two consecutive bar events.",
                                    registry=r)
        self.replay_loops = Counter("dolphind_replay_loops_total",
                                    "Times the replay feed started over from the beginning.",
                                    registry=r)
        self.replay_done = Gauge("dolphind_replay_done",
                                 "1 when the replay feed has emitted all its bars.", registry=r)
        self.funding_rate = Gauge("dolphind_funding_rate",
                                  "Latest funding rate seen per symbol (fraction per 8 h).",
                                  ["symbol"], registry=r)

        # Plugins
        self.plugin_failures = Counter("dolphind_plugin_failures_total",
                                       "Exceptions raised by plugin hooks.", ["plugin"],
                                       registry=r)
        self.plugin_enabled = Gauge("dolphind_plugin_enabled",
                                    "1 while a plugin is loaded and not disabled.", ["plugin"],
                                    registry=r)

        # State bus
        self.statebus_writes = Counter("dolphind_statebus_writes_total",
                                       "Writes to the state bus by outcome.", ["outcome"],
                                       registry=r)

        # HTTP
        self.http_requests = Counter("dolphind_http_requests_total",
                                     "Ops HTTP requests by route and status.",
                                     ["route", "status"], registry=r)
