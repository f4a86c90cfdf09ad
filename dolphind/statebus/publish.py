"""The daemon's own §15 keys, published from what /status already shows (docs/statebus.md).

Pure functions build each payload from plain status dicts; ``Publisher.tick`` calls them at
most every ``statebus.publish_interval_s`` from the housekeeping loop (never on the bar path)
and hands the results to the bus, whose ``put`` never blocks.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Any, Callable

import structlog

from dolphind.statebus.base import FEATURES, META_HEALTH, PNL, SAFETY, STATE, StateBus

log = structlog.get_logger("dolphind.statebus")

SHARD_COUNT = 10


def shard_map(symbol: str) -> str:
    """Bible §15.2: sum-of-ord routing (stable across processes, unlike ``hash()``)."""
    return f"DOLPHIN_FEATURES_SHARD_{sum(ord(c) for c in symbol) % SHARD_COUNT:02d}"


def _num(x: Any) -> float | None:
    """JSON has no NaN: unknown numbers are null."""
    if x is None:
        return None
    f = float(x)
    return None if math.isnan(f) or math.isinf(f) else f


def utc_date(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def safety_payload(alpha: dict[str, Any], control: dict[str, Any], level: str,
                   ts: float) -> dict[str, Any]:
    """DOLPHIN_SAFETY/latest: posture and Rm (bible §11, §14.6)."""
    return {"posture": alpha.get("posture"), "Rm": _num(alpha.get("rm")),
            "sensors": {"health_level": level, "system_alive": alpha.get("system_alive"),
                        "mc_status": alpha.get("mc_status"),
                        "acb_boost": _num(alpha.get("acb_boost")),
                        "regime_size_mult": _num(alpha.get("regime_size_mult"))},
            "halted": bool(control.get("halted")), "ts": ts}


def pnl_payload(alpha: dict[str, Any], execution: dict[str, Any], day_start_equity: float,
                trades: int) -> dict[str, Any]:
    """DOLPHIN_PNL_BLUE/<YYYY-MM-DD>: the day's result so far."""
    equity = float(execution.get("equity_usdt") or 0.0)
    return {"pnl": equity - day_start_equity, "capital": equity, "trades": trades,
            "boost": _num(alpha.get("acb_boost")), "beta": _num(alpha.get("acb_beta")),
            "mc_status": alpha.get("mc_status"), "posture": alpha.get("posture"),
            "stale_state": False}


def state_payload(profile: str, alpha: dict[str, Any], execution: dict[str, Any],
                  day_start_equity: float, trades: int, ts: float) -> dict[str, Any]:
    """DOLPHIN_STATE_BLUE/latest: capital and the engine state for continuity."""
    equity = float(execution.get("equity_usdt") or 0.0)
    return {"strategy": profile, "capital": equity, "date": utc_date(ts),
            "pnl": equity - day_start_equity, "trades": trades,
            "peak_capital": _num(execution.get("peak_equity_usdt")),
            "drawdown": _num(execution.get("drawdown")),
            "engine_state": {"posture": alpha.get("posture"), "rm": _num(alpha.get("rm")),
                             "params_hash": alpha.get("params_hash"),
                             "positions": execution.get("positions", {}),
                             "working_orders": execution.get("working_orders", 0)},
            "updated_at": ts}


def meta_health_payload(score: float, level: str, sensors: dict[str, float],
                        stages: dict[str, Any], bus: dict[str, Any], ts: float) -> dict[str, Any]:
    """DOLPHIN_META_HEALTH/latest: the daemon's health (GREEN/DEGRADED/CRITICAL/DEAD)."""
    return {"rm_meta": score, "status": level, "sensors": sensors,
            "service_status": {name: ("running" if st.get("running") else
                                      "finished" if st.get("finished") else "stopped")
                               for name, st in stages.items()},
            "hz_key_status": bus, "timestamp": ts}


def book_payloads(snapshot: Any) -> tuple[dict[str, Any], dict[str, tuple[str, dict[str, Any]]]]:
    """``obf_universe_latest`` and each symbol's features (shard map, payload) from a
    BookSnapshot; symbols without a usable book are left out."""
    f = snapshot.features
    cols = {k: f[k].tolist() for k in f}
    assets: dict[str, Any] = {}
    per_symbol: dict[str, tuple[str, dict[str, Any]]] = {}
    for i, sym in enumerate(snapshot.symbols):
        if math.isnan(cols["imbalance"][i]):
            continue
        row = {k: _num(v[i]) for k, v in cols.items()}
        assets[sym] = {k: row.get(k) for k in ("spread_bps", "depth_1pct_usd", "depth_quality",
                                               "fill_probability", "imbalance", "best_bid",
                                               "best_ask")}
        per_symbol[sym] = (shard_map(sym), {**row, "regime_signal":
                                            snapshot.macro.regime_signal,
                                            "ts_ns": snapshot.ts_ns})
    universe = {"_snapshot_utc": snapshot.ts_ns / 1e9, "_n_assets": len(assets),
                "assets": assets}
    return universe, per_symbol


class Publisher:
    """Publishes the daemon's keys every ``interval()`` seconds (see the module docstring)."""

    def __init__(self, bus: StateBus, interval: Callable[[], float],
                 wall: Callable[[], float] = time.time) -> None:
        self.bus = bus
        self._interval = interval
        self._wall = wall
        self._next = 0.0
        self._day = ""
        self._day_start_equity = 0.0
        self._book_ts = -1
        self.published = 0
        self.failures = 0
        self.last_problem = ""

    def tick(self, now_mono: float, daemon: Any) -> bool:
        """Publish if the interval has passed. Never raises: a publishing bug is logged
        (once per distinct error) and counted, and must not stop the daemon."""
        if now_mono < self._next:
            return False
        self._next = now_mono + self._interval()
        try:
            return self._publish(daemon)
        except Exception as exc:  # noqa: BLE001
            self.failures += 1
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self.last_problem:
                log.error("statebus.publish_failed", error=problem)
            self.last_problem = problem
            return False

    def _publish(self, daemon: Any) -> bool:
        pipeline = daemon.pipeline
        if pipeline is None:
            return False
        ts = self._wall()
        parts = pipeline.status_parts
        alpha = parts["alpha"]() if "alpha" in parts else {}
        execution = parts["execution"]() if "execution" in parts else {}
        score, level = daemon.health.score()
        equity = float(execution.get("equity_usdt") or 0.0)
        day = utc_date(ts)
        if day != self._day:
            self._day, self._day_start_equity = day, equity
        ledger = getattr(pipeline, "ledger", None)
        trades = len(getattr(ledger, "closed", ()))  # closed since this process started
        put = self.bus.put
        put(SAFETY, "latest", safety_payload(alpha, daemon.control.status(), level.value, ts))
        put(PNL, day, pnl_payload(alpha, execution, self._day_start_equity, trades))
        put(STATE, "latest", state_payload(daemon.config.strategy.profile, alpha, execution,
                                           self._day_start_equity, trades, ts))
        bus_status = getattr(self.bus, "status", None)
        put(META_HEALTH, "latest", meta_health_payload(
            score, level.value, dict(daemon.health.sensors), daemon.health.snapshot(),
            bus_status() if bus_status is not None else {"kind": self.bus.name}, ts))
        view = getattr(pipeline.feed, "book_view", None)  # a property of the live feed
        snap = view.snapshot() if view is not None else None
        if snap is not None and snap.ts_ns != self._book_ts:
            self._book_ts = snap.ts_ns
            universe, per_symbol = book_payloads(snap)
            put(FEATURES, "obf_universe_latest", universe)
            for sym, (shard, payload) in per_symbol.items():
                put(shard, sym, payload)
        self.published += 1
        return True
