"""An independent re-check of summary.json against trades.csv.

Independent on purpose: it reads trades.csv back with the ``csv`` module (not the objects the
report was written from), shares no code with ``metrics.py``, and computes in exact rational
arithmetic (``fractions.Fraction``) instead of floats, so a bug in the metrics, the CSV
writer or the float handling shows up as a disagreement instead of being repeated here.

What trades.csv alone determines, and so what is checked: trade count, wins, losses, win
rate, net PnL, gross profit and loss, profit factor, fees, the max drawdown of the closed-trade
equity (initial capital + cumulative net PnL in exit order), and PnL/trades/wins per exit
reason and realised PnL/trades per UTC exit day; and the breakdown tables: per pair, per exit
reason and per side (trades, W/D/L, net PnL, fees, average profit %, average duration), best and
worst pair, trade and day, winning/drawn/losing days, streaks, average win and loss,
expectancy and its ratio, SQN. The mark-to-market figures (Sharpe, equity drawdown, CAGR,
Calmar) need the equity series, which trades.csv does not hold.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

_NEEDED = ("trade_id", "entry_ts_ns", "exit_ts_ns", "fees_usdt", "pnl_usdt", "exit_reason",
           "symbol", "side", "notional_usdt")
_FLOAT_MAX = Fraction(sys.float_info.max)  # the largest ratio a float can hold


class VerifyError(Exception):
    """trades.csv or summary.json cannot be read as a report."""


@dataclass(frozen=True, slots=True)
class Recomputed:
    """Figures recomputed from trades.csv (floats rounded once, from exact values)."""

    trades: int
    wins: int
    losses: int
    win_rate: float | None
    net_pnl_usdt: float
    gross_profit_usdt: float
    gross_loss_usdt: float
    profit_factor: float | None
    fees_paid_usdt: float
    realised_max_drawdown: float
    # reason -> (trades, wins, net pnl); UTC day -> (realised pnl, trades closed)
    by_exit_reason: dict[str, tuple[int, int, float]]
    per_day_realised: dict[str, tuple[float, int]]
    # table name -> group -> {field: value} (the GroupStats fields except the win rate)
    groups: dict[str, dict[str, dict[str, float | int | None]]] = dataclasses.field(
        default_factory=dict)
    # breakdown figure -> value (best/worst as "name" or trade id + pnl)
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)


def recompute_from_csv(path: str | Path, initial_capital_usdt: float) -> Recomputed:
    """Read trades.csv and recompute the figures above."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _NEEDED if c not in (reader.fieldnames or ())]
        if missing:
            raise VerifyError(f"{path}: missing columns {', '.join(missing)}")
        rows = list(reader)
    try:
        # Through float(): the text is the float's shortest repr, and Fraction("0.1") would
        # be exactly 1/10, not the binary value the run added up.
        pnl = [Fraction(float(r["pnl_usdt"])) for r in rows]
        fees = [Fraction(float(r["fees_usdt"])) for r in rows]
        # funding_usdt: a column since issue 16 (older trades.csv files have none).
        has_funding = "funding_usdt" in (reader.fieldnames or ())
        funding = [Fraction(float(r["funding_usdt"])) if has_funding else None for r in rows]
        for r in rows:
            int(r["entry_ts_ns"]), int(r["exit_ts_ns"])
            Fraction(float(r["notional_usdt"]))
    except (ValueError, OverflowError) as exc:  # NaN, inf or text where a number belongs
        raise VerifyError(f"{path}: not a finite number ({exc})") from None
    profit = sum((p for p in pnl if p > 0), Fraction(0))
    loss = -sum((p for p in pnl if p < 0), Fraction(0))
    wins, losses = sum(1 for p in pnl if p > 0), sum(1 for p in pnl if p < 0)

    # Closed-trade equity in exit order (ties: entry time, then id), exactly.
    order = sorted(range(len(rows)), key=lambda k: (int(rows[k]["exit_ts_ns"]),
                                                    int(rows[k]["entry_ts_ns"]),
                                                    rows[k]["trade_id"]))
    equity = peak = Fraction(initial_capital_usdt)
    worst = Fraction(0)
    for k in order:
        equity += pnl[k]
        peak = max(peak, equity)
        worst = max(worst, 1 - equity / peak)

    reasons: dict[str, list[Fraction]] = {}
    days: dict[str, list[Fraction]] = {}
    for r, p in zip(rows, pnl):
        reasons.setdefault(r["exit_reason"], []).append(p)
        day = datetime.fromtimestamp(int(r["exit_ts_ns"]) // 10**9, tz=timezone.utc)
        days.setdefault(day.strftime("%Y-%m-%d"), []).append(p)

    if loss > 0:
        # A ratio past the float range is what the report's float division gives: inf.
        ratio = profit / loss
        pf: float | None = float(ratio) if ratio <= _FLOAT_MAX else math.inf
    else:
        pf = math.inf if profit > 0 else None
    groups, figures = _breakdown(rows, pnl, fees, order, initial_capital_usdt, funding)
    return Recomputed(
        groups=groups, figures=figures,
        trades=len(rows), wins=wins, losses=losses,
        win_rate=wins / len(rows) if rows else None,
        net_pnl_usdt=float(sum(pnl, Fraction(0))),
        gross_profit_usdt=float(profit), gross_loss_usdt=float(loss), profit_factor=pf,
        fees_paid_usdt=float(sum(fees, Fraction(0))),
        realised_max_drawdown=float(worst),
        by_exit_reason={k: (len(v), sum(1 for p in v if p > 0), float(sum(v, Fraction(0))))
                        for k, v in reasons.items()},
        per_day_realised={k: (float(sum(v, Fraction(0))), len(v)) for k, v in days.items()},
    )


def _breakdown(rows: list[dict[str, str]], pnl: list[Fraction], fees: list[Fraction],
               order: list[int], capital: float,
               funding: list[Fraction | None] | None = None,
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The breakdown tables and figures, from the CSV rows, in exact arithmetic."""
    def stats(idx: list[int]) -> dict[str, float | int | None]:
        out = _stats(idx)
        paid = [f for k in idx if (f := funding[k]) is not None] if funding else []
        if funding and len(paid) == len(idx):
            out["funding_usdt"] = float(sum(paid, Fraction(0)))
        return out

    def _stats(idx: list[int]) -> dict[str, float | int | None]:
        n = len(idx)
        pct = [Fraction(100) * pnl[k] / Fraction(float(rows[k]["notional_usdt"])) for k in idx
               if float(rows[k]["notional_usdt"]) != 0]
        held = [Fraction(int(rows[k]["exit_ts_ns"]) - int(rows[k]["entry_ts_ns"]), 10**9)
                for k in idx]
        total = sum((pnl[k] for k in idx), Fraction(0))
        return {"trades": n, "wins": sum(1 for k in idx if pnl[k] > 0),
                "draws": sum(1 for k in idx if pnl[k] == 0),
                "losses": sum(1 for k in idx if pnl[k] < 0),
                "pnl_usdt": float(total), "total_pct": float(100 * total / Fraction(capital)),
                "fees_usdt": float(sum((fees[k] for k in idx), Fraction(0))),
                "avg_profit_pct": float(sum(pct, Fraction(0)) / len(pct)) if pct else None,
                "avg_duration_s": float(sum(held, Fraction(0)) / n) if n else None}

    groups: dict[str, Any] = {}
    for table, column in (("per_pair", "symbol"), ("per_exit_reason", "exit_reason"),
                          ("per_side", "side")):
        members: dict[str, list[int]] = {}
        for k, r in enumerate(rows):
            members.setdefault(r[column], []).append(k)
        groups[table] = {name: stats(idx) for name, idx in members.items()}

    figures: dict[str, Any] = {}
    pair_pnl = {name: Fraction(g["pnl_usdt"]) for name, g in groups["per_pair"].items()}
    # Ties: the smaller name is the worse one (the metrics sort (pnl, name) ascending).
    if pair_pnl:
        ranked = sorted(pair_pnl.items(), key=lambda x: (x[1], x[0]))
        figures["best_pair"], figures["worst_pair"] = ranked[-1][0], ranked[0][0]
    if rows:
        ranked_t = sorted(range(len(rows)), key=lambda k: (pnl[k], rows[k]["trade_id"]))
        figures["best_trade"] = rows[ranked_t[-1]]["trade_id"]
        figures["worst_trade"] = rows[ranked_t[0]]["trade_id"]
    day_pnl: dict[str, Fraction] = {}
    for r, p in zip(rows, pnl):
        day = datetime.fromtimestamp(int(r["exit_ts_ns"]) // 10**9, tz=timezone.utc)
        key = day.strftime("%Y-%m-%d")
        day_pnl[key] = day_pnl.get(key, Fraction(0)) + p
    if day_pnl:
        # Ranked on the correctly rounded sums (what the report ranks), ties by date.
        ranked_d = sorted(day_pnl.items(), key=lambda x: (float(x[1]), x[0]))
        figures["best_day"], figures["worst_day"] = ranked_d[-1][0], ranked_d[0][0]
    figures["winning_days"] = sum(1 for v in day_pnl.values() if v > 0)
    figures["losing_days"] = sum(1 for v in day_pnl.values() if v < 0)
    figures["trade_days"] = day_pnl  # drawn days also need the run's days (compare())
    run_w = run_l = best_w = best_l = 0
    for k in order:
        run_w, run_l = (run_w + 1, 0) if pnl[k] > 0 else (0, run_l + 1) if pnl[k] < 0 else (0, 0)
        best_w, best_l = max(best_w, run_w), max(best_l, run_l)
    figures["max_consecutive_wins"], figures["max_consecutive_losses"] = best_w, best_l
    for key, sign in (("avg_win_duration_s", 1), ("avg_loss_duration_s", -1)):
        held = [Fraction(int(r["exit_ts_ns"]) - int(r["entry_ts_ns"]), 10**9)
                for r, p in zip(rows, pnl) if p * sign > 0]
        figures[key] = float(sum(held, Fraction(0)) / len(held)) if held else None
    n = len(pnl)
    wins = [p for p in pnl if p > 0]
    losses = [-p for p in pnl if p < 0]
    avg_w = sum(wins, Fraction(0)) / len(wins) if wins else None
    avg_l = sum(losses, Fraction(0)) / len(losses) if losses else None
    figures["avg_win_usdt"] = None if avg_w is None else float(avg_w)
    figures["avg_loss_usdt"] = None if avg_l is None else float(avg_l)
    mean = sum(pnl, Fraction(0)) / n if n else None
    figures["expectancy_usdt"] = None if mean is None else float(mean)
    figures["expectancy_ratio"] = (float((1 + avg_w / avg_l) * Fraction(len(wins), n) - 1)
                                   if n and avg_w is not None and avg_l is not None else None)
    if n >= 2 and mean is not None:
        var = sum(((p - mean) ** 2 for p in pnl), Fraction(0)) / (n - 1)
        # sqrt(n) * mean / std as sign * sqrt(n * mean^2 / var): the ratio is exact, so tiny
        # PnLs (whose variance underflows a float) still give the right figure.
        figures["sqn"] = (math.copysign(math.sqrt(n * float(mean * mean / var)), mean)
                          if var else None)
    else:
        figures["sqn"] = None
    return groups, figures


def _same(a: Any, b: Any, rel_tol: float, abs_tol: float) -> bool:
    """Equal as numbers (summary.json writes inf as "inf", undefined as null)."""
    if a is None or b is None:
        return a is None and b is None
    fa = float(a)  # accepts "inf"
    fb = float(b)
    if math.isinf(fa) or math.isinf(fb):
        return fa == fb
    return math.isclose(fa, fb, rel_tol=rel_tol, abs_tol=abs_tol)


def compare(summary: Mapping[str, Any], rec: Recomputed, rel_tol: float = 1e-9,
            abs_tol: float = 1e-8) -> list[str]:
    """Every disagreement between summary.json's content and the recomputation, as text.

    The tolerances allow for summary.json's fixed rounding (10 decimals), nothing more.
    """
    problems: list[str] = []

    def check(name: str, summary_value: Any, value: Any) -> None:
        if not _same(summary_value, value, rel_tol, abs_tol):
            problems.append(f"{name}: summary.json says {summary_value!r}, "
                            f"trades.csv gives {value!r}")

    for key in ("trades", "wins", "losses", "win_rate", "net_pnl_usdt", "gross_profit_usdt",
                "gross_loss_usdt", "profit_factor", "fees_paid_usdt", "realised_max_drawdown"):
        check(key, summary.get(key), getattr(rec, key))

    reasons = summary.get("pnl_by_exit_reason") or {}
    for reason in sorted(set(reasons) | set(rec.by_exit_reason)):
        got = reasons.get(reason) or {}
        n, w, p = rec.by_exit_reason.get(reason, (0, 0, 0.0))
        check(f"pnl_by_exit_reason[{reason}].trades", got.get("trades", 0), n)
        check(f"pnl_by_exit_reason[{reason}].wins", got.get("wins", 0), w)
        check(f"pnl_by_exit_reason[{reason}].pnl_usdt", got.get("pnl_usdt", 0.0), p)

    days = summary.get("per_day") or {}
    for day in sorted(set(days) | set(rec.per_day_realised)):
        got = days.get(day) or {}
        p, n = rec.per_day_realised.get(day, (0.0, 0))
        check(f"per_day[{day}].realised_pnl_usdt", got.get("realised_pnl_usdt", 0.0), p)
        check(f"per_day[{day}].trades", got.get("trades", 0), n)

    if "per_pair" not in summary:  # a summary written before the breakdown existed
        return problems
    for table, groups in rec.groups.items():
        written = summary.get(table) or {}
        if sorted(written) != sorted(groups):
            problems.append(f"{table}: summary.json has {sorted(written)}, trades.csv gives "
                            f"{sorted(groups)}")
        for name in sorted(set(written) & set(groups)):
            for field, value in groups[name].items():
                check(f"{table}[{name}].{field}", written[name].get(field), value)
    f = rec.figures
    for key in ("best_pair", "worst_pair", "best_day", "worst_day"):
        got = (summary.get(key) or {}).get("name")
        if got != f.get(key):
            problems.append(f"{key}: summary.json says {got!r}, trades.csv gives {f.get(key)!r}")
    for key in ("best_trade", "worst_trade"):
        got = (summary.get(key) or {}).get("trade_id")
        if got != f.get(key):
            problems.append(f"{key}: summary.json says {got!r}, trades.csv gives {f.get(key)!r}")
    # Drawn days: the run's days (per_day, which the equity series spans) plus the trades'
    # exit days, less the days whose realised PnL is not zero.
    days_run = set(summary.get("per_day") or {}) | set(f["trade_days"])
    f["drawn_days"] = len(days_run) - sum(1 for v in f["trade_days"].values() if v != 0)
    for key in ("winning_days", "drawn_days", "losing_days", "max_consecutive_wins",
                "max_consecutive_losses", "avg_win_usdt", "avg_loss_usdt", "expectancy_usdt",
                "expectancy_ratio", "avg_win_duration_s", "avg_loss_duration_s"):
        check(key, summary.get(key), f[key])
    # SQN goes through one float square root on each side: a little more slack.
    if not _same(summary.get("sqn"), f["sqn"], 1e-7, 1e-7):
        problems.append(f"sqn: summary.json says {summary.get('sqn')!r}, trades.csv gives "
                        f"{f['sqn']!r}")
    return problems


def verify_report(out_dir: str | Path) -> list[str]:
    """Recompute from ``out_dir``/trades.csv and compare with ``out_dir``/summary.json;
    an empty list means they agree."""
    out = Path(out_dir)
    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VerifyError(f"{out / 'summary.json'}: cannot read ({exc})") from None
    capital = summary.get("initial_capital_usdt")
    if not isinstance(capital, (int, float)) or capital <= 0:
        raise VerifyError(f"{out / 'summary.json'}: no positive initial_capital_usdt")
    return compare(summary, recompute_from_csv(out / "trades.csv", float(capital)))
