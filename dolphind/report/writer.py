"""Write a backtest report into a folder: summary.json, trades.csv, the PNG charts and
report.html.

Determinism: summary.json and trades.csv are byte-identical for identical inputs (sorted keys,
fixed rounding, a fixed column order and row order, ``\\n`` line ends, no wall-clock time
anywhere). PNGs carry no version or time chunk, but are not promised to be byte-identical
across matplotlib or FreeType versions.

This is blocking file I/O and CPU work (drawing): from the event loop, call it through
``asyncio.to_thread``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dolphind.report import charts, jsonfmt, tables
from dolphind.report.html import render_html
from dolphind.report.metrics import (
    NS_PER_S, PERIODS_PER_YEAR, Summary, drawdown_series, in_exit_order, summarize)
from dolphind.report.model import ClosedTrade, EquityPoint, SignalSeries

SCHEMA = "dolphind-backtest-summary/1"
SUMMARY_JSON = "summary.json"
TRADES_CSV = "trades.csv"
EQUITY_PNG = "equity.png"
DRAWDOWN_PNG = "drawdown.png"
VEL_DIV_PNG = "vel_div.png"
EXIT_REASONS_PNG = "pnl_by_exit_reason.png"
REPORT_HTML = "report.html"

TRADE_COLUMNS: tuple[str, ...] = (
    "trade_id", "symbol", "side", "entry_time_utc", "exit_time_utc", "entry_ts_ns",
    "exit_ts_ns", "entry_price", "exit_price", "qty", "notional_usdt", "leverage", "fees_usdt",
    "pnl_usdt", "exit_reason", "bars_held",
    "funding_usdt",  # settled while open; not in pnl_usdt (as Binance's realised PnL)
)

# Written into summary.json so a reader knows what the numbers mean without this code.
CONVENTIONS: dict[str, Any] = {
    "pnl": "net of fees; win = pnl > 0, loss = pnl < 0",
    "trade_funding": "funding_usdt: settled while the trade was open, cash to the account; "
                     "not in a trade's pnl (as Binance's realised PnL), in the wallet/equity",
    "returns": "daily simple returns of mark-to-market equity, UTC days, first day from "
               "initial capital, days without data keep the previous equity",
    "periods_per_year": PERIODS_PER_YEAR,
    "risk_free_rate": 0.0,
    "sortino_downside": "sqrt(sum(min(r, 0)^2) / N) over all N daily returns",
    "max_drawdown": "1 - equity / running peak (peak starts at initial capital)",
    "realised_max_drawdown": "same over initial capital + cumulative net pnl, exit order",
    "undefined": "null (e.g. Sharpe with zero variance or < 2 days, win rate with no trades)",
    "infinite": "the string \"inf\" (profit factor with profits and no losses)",
    "float_decimals": jsonfmt.DECIMALS,
    **tables.CONVENTIONS,
}


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """Where everything was written, and the summary it was written from."""

    out_dir: Path
    summary_json: Path
    trades_csv: Path
    equity_png: Path
    drawdown_png: Path
    vel_div_png: Path
    exit_reasons_png: Path
    report_html: Path
    summary: Summary
    breakdown: tables.Breakdown | None = None


def format_float(x: float) -> str:
    """A float for trades.csv: Python's shortest round-trip repr, which is exact (reading it
    back gives the same float, so the independent check recomputes from the true values) and
    fixed for a given value on every platform; -0.0 is written as 0.0."""
    x = float(x)
    if x == 0.0:
        return "0.0"
    return repr(x)  # 'nan' / 'inf' / '-inf' for the non-finite


def iso_utc(ts_ns: int) -> str:
    """``2025-05-10T00:05:00Z`` (nanoseconds appended only when the time is not whole)."""
    sec, frac = divmod(int(ts_ns), NS_PER_S)
    text = datetime.fromtimestamp(sec, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{frac:09d}Z" if frac else "Z")


def trade_row(t: ClosedTrade) -> list[str]:
    return [t.trade_id, t.symbol, t.side, iso_utc(t.entry_ts_ns), iso_utc(t.exit_ts_ns),
            str(int(t.entry_ts_ns)), str(int(t.exit_ts_ns)), format_float(t.entry_price),
            format_float(t.exit_price), format_float(t.qty), format_float(t.notional_usdt),
            format_float(t.leverage), format_float(t.fees_usdt), format_float(t.pnl_usdt),
            t.exit_reason, str(int(t.bars_held)), format_float(t.funding_usdt)]


def trades_csv_text(trades: Sequence[ClosedTrade]) -> str:
    """trades.csv: a header and one row per trade in exit order (the order PnL is realised)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TRADE_COLUMNS)
    w.writerows(trade_row(t) for t in in_exit_order(trades))
    return buf.getvalue()


def summary_document(summary: Summary, run: Mapping[str, Any] | None = None,
                     breakdown: tables.Breakdown | None = None) -> dict[str, Any]:
    """The JSON-ready content of summary.json: every Summary field (and every Breakdown field)
    at the top level, plus ``schema``, ``conventions`` and ``run`` (what the caller says about
    the run: data, config hash, seed; it must hold no wall-clock time, or two runs will
    differ)."""
    doc: dict[str, Any] = jsonfmt.to_jsonable(summary)
    if breakdown is not None:
        doc.update(jsonfmt.to_jsonable(breakdown))
    doc.update(schema=SCHEMA, conventions=jsonfmt.to_jsonable(CONVENTIONS),
               run=jsonfmt.to_jsonable(dict(run or {})))
    return doc


def _write_text(path: Path, text: str) -> Path:
    # Write then rename: a reader (or a crash) never sees half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    tmp.replace(path)
    return path


def write_report(out_dir: str | Path, trades: Sequence[ClosedTrade],
                 equity: Sequence[EquityPoint], *, initial_capital_usdt: float,
                 signal: SignalSeries | None = None, run: Mapping[str, Any] | None = None,
                 title: str = "dolphind backtest",
                 first_last_close: Mapping[str, tuple[float, float]] | None = None,
                 funding_paid_usdt: float | None = None,
                 extra_html: str = "") -> ReportFiles:
    """Compute the summary and write every report file into ``out_dir`` (created if needed).

    ``signal`` is the vel_div series for its chart (entries are taken from ``trades``);
    without it the chart says "no scan series". ``run`` goes into summary.json and the page.
    ``first_last_close`` (symbol -> first and last close of the range) gives the market change;
    ``funding_paid_usdt`` is None while the backtest does not model funding.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(trades, equity, initial_capital_usdt)
    extra = tables.breakdown(trades, equity, summary, first_last_close, funding_paid_usdt)
    doc = summary_document(summary, run, extra)

    points = sorted(equity, key=lambda p: p.ts_ns)
    ts = np.array([p.ts_ns for p in points], dtype=np.int64)
    eq = np.array([p.equity_usdt for p in points], dtype=np.float64)
    entries = sorted(trades, key=lambda t: (t.entry_ts_ns, t.trade_id))
    png = {
        EQUITY_PNG: charts.equity_chart(out / EQUITY_PNG, ts, eq, initial_capital_usdt),
        DRAWDOWN_PNG: charts.drawdown_chart(out / DRAWDOWN_PNG, ts,
                                            drawdown_series(eq, initial_capital_usdt)),
        VEL_DIV_PNG: charts.vel_div_chart(out / VEL_DIV_PNG, signal,
                                          [t.entry_ts_ns for t in entries],
                                          [t.side for t in entries]),
        EXIT_REASONS_PNG: charts.exit_reason_chart(out / EXIT_REASONS_PNG,
                                                   summary.pnl_by_exit_reason),
    }
    captions = (("Equity curve", EQUITY_PNG), ("Drawdown", DRAWDOWN_PNG),
                ("vel_div and entries", VEL_DIV_PNG), ("PnL by exit reason", EXIT_REASONS_PNG))
    page = render_html(title, doc, captions, doc["run"], trades=trades_rows(trades),
                       series=chart_series(ts, eq, initial_capital_usdt))
    if extra_html:  # sections other modules add (report/explain.py), before the page ends
        page = page.replace("</body>", extra_html + "</body>", 1)
    return ReportFiles(
        out_dir=out,
        summary_json=_write_text(out / SUMMARY_JSON, jsonfmt.dumps(doc)),
        trades_csv=_write_text(out / TRADES_CSV, trades_csv_text(trades)),
        equity_png=png[EQUITY_PNG],
        drawdown_png=png[DRAWDOWN_PNG],
        vel_div_png=png[VEL_DIV_PNG],
        exit_reasons_png=png[EXIT_REASONS_PNG],
        report_html=_write_text(out / REPORT_HTML, page),
        summary=summary,
        breakdown=extra,
    )


def trades_rows(trades: Sequence[ClosedTrade]) -> list[dict[str, Any]]:
    """The trade list of the page, in exit order."""
    return [{"id": t.trade_id, "symbol": t.symbol, "side": t.side,
             "entry": iso_utc(t.entry_ts_ns), "exit": iso_utc(t.exit_ts_ns),
             "entry_price": t.entry_price, "exit_price": t.exit_price,
             "pnl_usdt": t.pnl_usdt, "profit_pct": tables.profit_pct(t), "fees_usdt": t.fees_usdt,
             "funding_usdt": t.funding_usdt, "reason": t.exit_reason, "held_s": (t.exit_ts_ns - t.entry_ts_ns) / NS_PER_S}
            for t in in_exit_order(trades)]


def chart_series(ts: np.ndarray, eq: np.ndarray, initial_capital_usdt: float,
                 max_points: int = charts.MAX_POINTS) -> dict[str, list[float]]:
    """Equity and drawdown (%) for the interactive charts: seconds since the epoch, decimated
    like the PNGs (every peak and trough kept), rounded so the page stays small."""
    if not len(ts):
        return {"t": [], "equity": [], "drawdown_pct": []}
    x, y = charts.minmax_decimate(ts, eq, max_points)
    dd = -100.0 * drawdown_series(np.asarray(y, dtype=np.float64), initial_capital_usdt)
    return {"t": [int(v) // NS_PER_S for v in x], "equity": [round(float(v), 4) for v in y],
            "drawdown_pct": [round(float(v), 4) for v in dd]}


__all__ = ["ReportFiles", "TRADE_COLUMNS", "format_float", "iso_utc", "summary_document",
           "trades_csv_text", "write_report"]
