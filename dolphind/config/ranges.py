"""Every numeric key's sane range: where a value stops being a setting and becomes a typo.

tests/unit/test_config_bad_input.py checks that no numeric key lacks an entry in ``RANGES``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from dolphind.config.coerce import is_dataclass_type, join_key
from dolphind.config.schema import Config

_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive bounds of a numeric key; ``open_lo`` excludes ``lo`` (e.g. "> 0")."""

    lo: float
    hi: float
    open_lo: bool = False

    def contains(self, value: float) -> bool:
        return (value > self.lo if self.open_lo else value >= self.lo) and value <= self.hi

    def __str__(self) -> str:
        return f"{'(' if self.open_lo else '['}{self.lo:g}, {self.hi:g}]"


def _pos(hi: float) -> Range:
    return Range(0, hi, open_lo=True)


# Upper bounds are where a value stops being a setting and becomes a typo (a timeout of a
# year, capital of 1e308, bars of 1e15 s); none is near anything a real deployment uses.
RANGES: dict[str, Range] = {
    "shutdown_timeout_s": _pos(3600),
    "feed.bar_seconds": Range(1, _DAY),
    "feed.max_stale_bars": Range(1, 100_000),
    "replay.speed": Range(0, 1e9),
    "replay.max_bars": Range(0, 1e9),
    "binance_feed.max_streams_per_conn": Range(1, 200),
    "binance_feed.rotate_after_s": _pos(_DAY - 1),
    "binance_feed.stall_timeout_s": _pos(3600),
    "binance_feed.stream_grace_s": _pos(_DAY),
    "binance_feed.backoff_initial_s": _pos(3600),
    "binance_feed.backoff_max_s": _pos(3600),
    "binance_feed.connect_timeout_s": _pos(600),
    "binance_feed.heartbeat_s": _pos(3600),
    "binance_feed.bar_close_delay_ms": Range(0, _DAY * 1000),
    "binance_feed.max_clock_skew_s": _pos(3600),
    "book.imbalance_ma_bars": Range(1, 100_000),
    "book.persistence_bars": Range(1, 100_000),
    "book.depth_median_bars": Range(1, 100_000),
    "book.withdrawal_bars": Range(1, 100_000),
    "book.cascade_drop": Range(0, 1, open_lo=True),
    "book.cascade_window_bars": Range(1, 100_000),
    "book.stress_cascades": Range(1, 100_000),
    "book.stress_velocity": _pos(1e6),
    "book.calm_depth_quality": _pos(1e6),
    "book.stale_bars": Range(1, 100_000),
    "channels.bars": Range(1, 1_000_000),
    "supervision.max_restarts": Range(0, 1_000_000),
    "supervision.restart_window_s": _pos(_DAY),
    "supervision.backoff_initial_s": _pos(3600),
    "supervision.backoff_max_s": _pos(3600),
    "supervision.heartbeat_timeout_s": _pos(_DAY),
    "plugins.max_failures": Range(1, 1_000_000),
    "plugins.veto_budget_ms": _pos(10_000),
    "risk.min_order_notional_usdt": _pos(1e9),
    "risk.max_order_notional_usdt": _pos(1e9),
    "risk.max_symbol_exposure_usdt": _pos(1e10),
    "risk.max_gross_exposure_usdt": _pos(1e10),
    "risk.max_leverage": _pos(125),
    "risk.max_orders_per_minute": _pos(1e12),  # tests and benches set 1e9+ for "no limit"
    "risk.order_burst": Range(1, 1e9),
    "risk.breaker_window_s": _pos(_DAY),
    "risk.breaker_min_requests": Range(1, 1_000_000),
    "risk.breaker_error_rate": Range(0, 1, open_lo=True),
    "risk.breaker_open_s": _pos(_DAY),
    "risk.breaker_probes": Range(1, 1000),
    "execution.binance.recv_window_ms": Range(1, 60_000),
    "execution.binance.request_timeout_s": _pos(600),
    "execution.binance.default_leverage": Range(0, 125),
    "execution.binance.clock_sync_s": _pos(_DAY),
    "execution.binance.filters_refresh_s": _pos(7 * _DAY),
    "execution.binance.listen_key_keepalive_s": _pos(3599),
    "execution.binance.poll_interval_s": _pos(3600),
    "execution.binance.order_check_s": _pos(_DAY),
    "execution.binance.backoff_initial_s": _pos(3600),
    "execution.binance.backoff_max_s": _pos(3600),
    "execution.binance.heartbeat_s": _pos(3600),
    "execution.binance.weight_limit_1m": Range(0, 1_000_000),
    "execution.binance.weight_slow_fraction": Range(0, 1, open_lo=True),
    "execution.binance.weight_stop_fraction": Range(0, 1, open_lo=True),
    "execution.binance.max_order_delay_s": Range(0, 3600),
    "execution.binance.default_retry_after_s": _pos(_DAY),
    "execution.binance.default_ban_s": _pos(7 * _DAY),
    "execution.binance.unknown_grace_s": Range(0, 3600),
    "execution.binance.lease_ttl_s": _pos(_DAY),
    "execution.binance.lease_renew_s": _pos(_DAY),
    "execution.binance.positions_check_s": Range(0, _DAY),
    "execution.capital_usdt": _pos(1e12),
    "execution.seed": Range(0, 2**63 - 1),
    "execution.maker_fee_bps": Range(0, 1000),
    "execution.taker_fee_bps": Range(0, 1000),
    "execution.maker_fill_rate_entry": Range(0, 1),
    "execution.maker_fill_rate_exit": Range(0, 1),
    "execution.entry_slippage_bps": Range(0, 1000),
    "execution.tp_slippage_bps": Range(0, 1000),
    "execution.sl_slippage_bps": Range(0, 1000),
    "execution.other_slippage_bps": Range(0, 1000),
    "execution.equity_snapshot_interval_s": Range(0, _DAY),
    "execution.drain_timeout_s": Range(0, 3600),
    "execution.exit_retry_initial_s": _pos(3600),
    "execution.exit_retry_max_s": _pos(3600),
    "execution.exit_stuck_after_s": _pos(_DAY),
    "logging.heartbeat_s": Range(0, _DAY),
    "warm_start.checkpoint_every_s": Range(0, 3600),
    "warm_start.max_gap_s": Range(0, 7 * _DAY),
    "warm_start.weight_share": Range(0, 1, open_lo=True),
    "warm_start.weight_limit_1m": Range(20, 100_000),
    "warm_start.max_requests_per_symbol": Range(1, 100_000),
    "external_factors.interval_s": Range(10, _DAY),
    "external_factors.timeout_s": Range(0.1, 60),
    "external_factors.max_age_intervals": Range(1, 1000),
    "scan.min_symbols": Range(0, 10_000),
    "statebus.invocation_timeout_s": Range(0.05, 60),
    "statebus.breaker_failures": Range(1, 1000),
    "statebus.reconnect_initial_s": _pos(3600),
    "statebus.reconnect_max_s": _pos(3600),
    "statebus.publish_interval_s": Range(0.05, 3600),
    "store.queue_capacity": Range(1, 10_000_000),
    "store.max_batch": Range(1, 1_000_000),
    "store.audit_fsync_interval_s": _pos(3600),
}
# A numeric key missing from RANGES (added without one) still gets this much sanity.
FALLBACK_RANGE = Range(-1e12, 1e12)


def numeric_keys(cls: type = Config, path: str = "") -> list[tuple[str, type]]:
    """(dotted key, int or float) of every numeric key of the config, in declaration order."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, type]] = []
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], join_key(path, f.name)
        if f.metadata.get("internal"):
            continue
        if is_dataclass_type(tp):
            out.extend(numeric_keys(tp, key))
        elif tp in (int, float):
            out.append((key, tp))
    return out


def range_problems(cfg: Config) -> list[str]:
    """One line per numeric key outside its range."""
    problems = []
    for key, _ in numeric_keys():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # a type problem, reported while building
        rng = RANGES.get(key, FALLBACK_RANGE)
        if not rng.contains(value):
            problems.append(f"{key}: must be in {rng}, got {value!r}")
    return problems
