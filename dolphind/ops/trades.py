"""The documents behind ``GET /trades``, ``GET /profit`` and ``GET /daily`` (and the CLI commands
and chat commands that read them): pure functions of the ledger's closed trades.

They cover every trade closed on this data dir: the ledger is seeded at start with the earlier
runs' trades rebuilt from the store (``ops/history.py``, ids starting with ``h``); each
document says so in ``since``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from dolphind.report.metrics import (
    day_label, fees_paid, gross_loss, gross_profit, in_exit_order, net_pnl, profit_factor,
    utc_day)
from dolphind.report.model import ClosedTrade
from dolphind.report.writer import iso_utc

SINCE = "the first run on this data dir"
_ACCOUNT_KEYS = ("capital_usdt", "cash_usdt", "equity_usdt", "peak_equity_usdt", "drawdown",
                 "realised_pnl_usdt", "unrealised_pnl_usdt", "fees_usdt", "gross_exposure_usdt")


def trade_json(t: ClosedTrade) -> dict[str, Any]:
    return {"trade_id": t.trade_id, "symbol": t.symbol, "side": t.side,
            "entry_time": iso_utc(t.entry_ts_ns), "exit_time": iso_utc(t.exit_ts_ns),
            "entry_price": t.entry_price, "exit_price": t.exit_price, "qty": t.qty,
            "notional_usdt": t.notional_usdt, "pnl_usdt": t.pnl_usdt,
            "pnl_pct": _pct_of(t), "fees_usdt": t.fees_usdt, "exit_reason": t.exit_reason,
            "bars_held": t.bars_held, "held_s": (t.exit_ts_ns - t.entry_ts_ns) / 1e9}


def trades_document(closed: Sequence[ClosedTrade], limit: int) -> dict[str, Any]:
    """The newest ``limit`` closed trades, newest first."""
    ordered = in_exit_order(closed)
    newest = list(reversed(ordered[-limit:])) if limit > 0 else []
    return {"since": SINCE, "total": len(closed), "trades": [trade_json(t) for t in newest]}


def profit_document(closed: Sequence[ClosedTrade],
                    money: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """freqtrade's ``/profit`` in dolphind's terms: counts, PnL, best and worst, expectancy;
    ``money`` (the execution stage's equity figures) is added under ``account``."""
    n = len(closed)
    wins = [t for t in closed if t.pnl_usdt > 0]
    losses = [t for t in closed if t.pnl_usdt < 0]
    by_pair: dict[str, list[ClosedTrade]] = {}
    for t in closed:
        by_pair.setdefault(t.symbol, []).append(t)
    pair_pnl = sorted(((net_pnl(g), s) for s, g in by_pair.items()), key=lambda x: (x[0], x[1]))
    best = max(closed, key=lambda t: (t.pnl_usdt, t.trade_id), default=None)
    worst = min(closed, key=lambda t: (t.pnl_usdt, t.trade_id), default=None)
    pf = profit_factor(closed)
    return {
        "since": SINCE,
        "trades": n, "wins": len(wins), "draws": n - len(wins) - len(losses),
        "losses": len(losses), "win_rate": len(wins) / n if n else None,
        "net_pnl_usdt": net_pnl(closed), "gross_profit_usdt": gross_profit(closed),
        "gross_loss_usdt": gross_loss(closed), "fees_usdt": fees_paid(closed),
        "profit_factor": None if pf is None else ("inf" if math.isinf(pf) else pf),
        "expectancy_usdt": net_pnl(closed) / n if n else None,
        "avg_pnl_pct": math.fsum(_pct_of(t) or 0.0 for t in closed) / n if n else None,
        "best_pair": {"symbol": pair_pnl[-1][1], "pnl_usdt": pair_pnl[-1][0]} if pair_pnl
        else None,
        "worst_pair": {"symbol": pair_pnl[0][1], "pnl_usdt": pair_pnl[0][0]} if pair_pnl
        else None,
        "best_trade": trade_json(best) if best else None,
        "worst_trade": trade_json(worst) if worst else None,
        "first_trade_time": iso_utc(min(t.entry_ts_ns for t in closed)) if closed else None,
        "last_trade_time": iso_utc(max(t.exit_ts_ns for t in closed)) if closed else None,
        "account": {k: v for k, v in (money or {}).items() if k in _ACCOUNT_KEYS},
    }


def daily_document(closed: Sequence[ClosedTrade], days: int) -> dict[str, Any]:
    """Realised PnL per UTC exit day, the newest ``days`` days that had a closed trade."""
    groups: dict[int, list[ClosedTrade]] = {}
    for t in closed:
        groups.setdefault(utc_day(t.exit_ts_ns), []).append(t)
    rows = [{"day": day_label(d), "pnl_usdt": net_pnl(g), "trades": len(g),
             "wins": sum(1 for t in g if t.pnl_usdt > 0),
             "losses": sum(1 for t in g if t.pnl_usdt < 0), "fees_usdt": fees_paid(g)}
            for d, g in sorted(groups.items())]
    return {"since": SINCE, "days": list(reversed(rows[-days:])) if days > 0 else []}


def _pct_of(t: ClosedTrade) -> float | None:
    """Net PnL in percent of the entry notional (freqtrade's profit %, without leverage)."""
    return 100.0 * t.pnl_usdt / t.notional_usdt if t.notional_usdt else None
