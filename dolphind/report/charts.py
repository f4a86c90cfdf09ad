"""The report's pictures, drawn with matplotlib's Agg renderer straight to PNG files.

No pyplot: each chart is its own ``Figure`` with an Agg canvas, so there is no global figure
state, no GUI backend is ever chosen (works headless, under a daemon, in threads) and nothing
leaks between charts. PNGs are written without the ``Software`` text chunk (it names the
matplotlib version) and Agg writes no time chunk, so the same data draws the same bytes.

Long series (millions of 5-second bars) are reduced with min/max decimation before drawing:
a chart a few thousand pixels wide cannot show more, and every peak and trough stays visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from dolphind.report.metrics import ReasonPnl
from dolphind.report.model import SignalSeries

MAX_POINTS = 4000  # per series, after decimation (about 2 points per horizontal pixel)
_SIZE_IN = (10.0, 4.0)
_DPI = 100
_PNG_METADATA: dict[str, str | None] = {"Software": None}
_UP, _DOWN, _LINE = "#2e7d32", "#c62828", "#1f4e79"


def minmax_decimate(x: np.ndarray, y: np.ndarray,
                    max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of (x, y) that keep each bucket's min and max, in order.

    NaN values are ignored inside a bucket; an all-NaN bucket keeps one NaN so the line shows
    the hole instead of bridging it.
    """
    x, y = np.asarray(x), np.asarray(y, dtype=np.float64)
    n = y.size
    if n <= max_points:
        return x, y
    k = -(-n // max(max_points // 2, 1))  # bucket size: two points kept per bucket
    m = -(-n // k)
    idx = np.arange(m * k).reshape(m, k)
    idx[idx >= n] = n - 1  # pad the last bucket by repeating the final point
    vals = y[idx]
    nan = np.isnan(vals)
    lo = np.argmin(np.where(nan, np.inf, vals), axis=1)
    hi = np.argmax(np.where(nan, -np.inf, vals), axis=1)
    rows = np.arange(m)
    pick = np.sort(np.stack([idx[rows, lo], idx[rows, hi]], axis=1), axis=1).ravel()
    pick = pick[np.concatenate(([True], np.diff(pick) != 0))]  # a flat bucket keeps one point
    return x[pick], y[pick]


def _dates(ts_ns: np.ndarray) -> np.ndarray:
    return np.asarray(ts_ns, dtype=np.int64).astype("datetime64[ns]")


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=_SIZE_IN, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _time_axis(ax: Axes) -> None:
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center",
            transform=ax.transAxes, fontsize=14, color="0.4")


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    return path


def equity_chart(path: Path, ts_ns: np.ndarray, equity_usdt: np.ndarray,
                 initial_capital_usdt: float) -> Path:
    """Equity curve (USDT) with the initial capital as a dashed reference line."""
    fig, ax = _figure()
    ax.set_title("Equity (USDT, mark to market)")
    if len(ts_ns):
        x, y = minmax_decimate(_dates(ts_ns), equity_usdt)
        ax.plot(x, y, color=_LINE, linewidth=1.0, label="equity")
        ax.axhline(initial_capital_usdt, color="0.5", linestyle="--", linewidth=0.8,
                   label="initial capital")
        ax.legend(loc="upper left")
        _time_axis(ax)
    else:
        _empty(ax, "no equity series")
    return _save(fig, path)


def drawdown_chart(path: Path, ts_ns: np.ndarray, drawdown: np.ndarray) -> Path:
    """Drawdown from the running peak, in percent, filled under zero."""
    fig, ax = _figure()
    ax.set_title("Drawdown from peak (%)")
    if len(ts_ns):
        x, y = minmax_decimate(_dates(ts_ns), -100.0 * np.asarray(drawdown, dtype=np.float64))
        ax.fill_between(x, y, 0.0, color=_DOWN, alpha=0.35, linewidth=0)
        ax.plot(x, y, color=_DOWN, linewidth=0.8)
        _time_axis(ax)
    else:
        _empty(ax, "no equity series")
    return _save(fig, path)


def vel_div_chart(path: Path, signal: SignalSeries | None, entry_ts_ns: Sequence[int],
                  entry_sides: Sequence[str]) -> Path:
    """vel_div over time with threshold lines and a marker at each entry (v short, ^ long),
    placed on the scan value at or just before the entry time."""
    fig, ax = _figure()
    ax.set_title("vel_div (v50 - v750) with entries")
    ts = np.asarray(signal.ts_ns if signal else [], dtype=np.int64)
    if signal is not None and ts.size:
        vd = np.asarray(signal.vel_div, dtype=np.float64)
        x, y = minmax_decimate(_dates(ts), vd)
        ax.plot(x, y, color=_LINE, linewidth=0.6, label="vel_div")
        for level in signal.thresholds:
            ax.axhline(level, color="0.4", linestyle="--", linewidth=0.8)
        e_ts = np.asarray(entry_ts_ns, dtype=np.int64)
        at = np.searchsorted(ts, e_ts, side="right") - 1
        ok = at >= 0
        at_ok = at[ok]
        shown = np.isfinite(vd[at_ok])
        sides = np.asarray(entry_sides, dtype=object)[ok][shown]
        ex, ey = _dates(ts[at_ok][shown]), vd[at_ok][shown]
        for side, marker, colour in (("SHORT", "v", _DOWN), ("LONG", "^", _UP)):
            sel = sides == side
            if sel.any():
                ax.scatter(ex[sel], ey[sel], marker=marker, color=colour, s=28, zorder=3,
                           label=f"{side.lower()} entry ({int(sel.sum())})")
        ax.legend(loc="upper left")
        _time_axis(ax)
    else:
        _empty(ax, "no scan series")
    return _save(fig, path)


def exit_reason_chart(path: Path, by_reason: Mapping[str, ReasonPnl]) -> Path:
    """Net PnL per exit reason as horizontal bars, each labelled with its trade count."""
    fig, ax = _figure()
    ax.set_title("Net PnL by exit reason (USDT)")
    if by_reason:
        reasons = list(by_reason)
        pnl = np.array([by_reason[r].pnl_usdt for r in reasons], dtype=np.float64)
        colours = [_UP if v >= 0 else _DOWN for v in pnl]
        bars = ax.barh(reasons, pnl, color=colours)
        ax.bar_label(bars, labels=[_trades_label(by_reason[r].trades) for r in reasons],
                     padding=4, fontsize=9, color="0.2")
        ax.axvline(0.0, color="0.3", linewidth=0.8)
        ax.margins(x=0.15)  # room for the labels at the bar ends
        ax.invert_yaxis()  # first reason (sorted) on top
    else:
        _empty(ax, "no trades")
    return _save(fig, path)


def _trades_label(n: int) -> str:
    return f"{n} trade" + ("" if n == 1 else "s")
