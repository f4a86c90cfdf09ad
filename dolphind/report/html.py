"""report.html: one self-contained page. The headline figures, the freqtrade-style tables (per
pair, per exit reason, long/short, per day, the trade list), interactive equity and drawdown
charts (uPlot, vendored and inlined: drag to zoom, double-click to reset, hover for values;
works offline), and the PNG charts by relative path (so the report folder can be moved or
zipped as a whole).

It is rendered from the same JSON-ready summary dict that summary.json holds, so the page and
the file never disagree, and it carries no generation time, so it is deterministic too.
Fees are costs: they are never coloured as gains.
"""

from __future__ import annotations

import json
from functools import lru_cache
from html import escape
from importlib import resources
from typing import Any, Mapping, Sequence

UPLOT_VERSION = "1.6.31"

# (key in the summary, label, kind) in display order; kind picks the formatting.
SUMMARY_ROWS: tuple[tuple[str, str, str], ...] = (
    ("initial_capital_usdt", "Initial capital", "usdt"),
    ("final_equity_usdt", "Final equity", "usdt"),
    ("roi", "ROI", "pct"),
    ("cagr", "CAGR", "pct"),
    ("net_pnl_usdt", "Net PnL of closed trades (after fees)", "usdt"),
    ("other_pnl_usdt", "Other equity change (open position)", "usdt"),
    ("funding_paid_usdt", "Funding paid", "funding"),
    ("market_change", "Market change (mean over symbols)", "pct"),
    ("profit_factor", "Profit factor", "ratio"),
    ("expectancy_usdt", "Expectancy (per trade)", "usdt"),
    ("expectancy_ratio", "Expectancy ratio", "ratio"),
    ("sqn", "SQN", "ratio"),
    ("sharpe", "Sharpe (daily, x sqrt 365)", "ratio"),
    ("sortino", "Sortino (daily, x sqrt 365)", "ratio"),
    ("calmar", "Calmar (CAGR / max drawdown)", "ratio"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("drawdown_start_ts_ns", "Drawdown start (peak)", "time"),
    ("drawdown_end_ts_ns", "Drawdown end (trough)", "time"),
    ("max_drawdown_duration_s", "Max drawdown duration", "duration"),
    ("longest_drawdown_duration_s", "Longest drawdown", "duration"),
    ("realised_max_drawdown", "Max drawdown of closed-trade equity", "pct"),
    ("trades", "Trades", "int"),
    ("trades_per_day", "Trades per day", "ratio"),
    ("win_rate", "Win rate", "pct"),
    ("wins", "Wins", "int"),
    ("losses", "Losses", "int"),
    ("max_consecutive_wins", "Max consecutive wins", "int"),
    ("max_consecutive_losses", "Max consecutive losses", "int"),
    ("avg_win_usdt", "Average win", "usdt"),
    ("avg_loss_usdt", "Average loss", "usdt"),
    ("avg_win_duration_s", "Average duration of winners", "duration"),
    ("avg_loss_duration_s", "Average duration of losers", "duration"),
    ("avg_hold_bars", "Average hold (bars)", "ratio"),
    ("avg_hold_s", "Average hold", "duration"),
    ("fees_paid_usdt", "Fees paid", "usdt"),
    ("exposure_time", "Exposure time (bars in a position)", "pct"),
    ("bars", "Bars", "int"),
    ("days", "Days", "int"),
)

_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
td, th { border: 1px solid #ccc; padding: 3px 10px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
th { background: #f3f5f8; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0 1.5em; }
.neg { color: #c62828; } .pos { color: #2e7d32; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 0 2em; }
.chart { margin: 0.5em 0 1.5em; } .hint { color: #666; font-size: 13px; }
details summary { cursor: pointer; font-weight: bold; margin: 1em 0; }
"""


def fmt(value: Any, kind: str) -> str:
    """One summary value as text: None -> n/a, "inf" -> the infinity sign."""
    if value is None:
        return "not modelled in this run" if kind == "funding" else "n/a"
    if value in ("inf", "-inf"):
        return "\u221e" if value == "inf" else "-\u221e"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "pct":
        return f"{100.0 * value:.2f} %"
    if kind in ("usdt", "funding"):
        return f"{value:,.2f} USDT"
    if kind == "ratio":
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if kind == "duration":
        return duration(float(value))
    if kind == "time":
        return utc_text(int(value))
    return str(value)


def utc_text(ts_ns: int) -> str:
    """``2025-05-10 14:00:00`` (UTC)."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S")


def duration(seconds: float) -> str:
    """``1d 02:03:04`` style (whole seconds)."""
    s = int(round(seconds))
    days, s = divmod(s, 86_400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{days}d " if days else "") + f"{h:02d}:{m:02d}:{s:02d}"


def run_value(value: Any) -> str:
    """A Run-block value as a person writes it: lists joined, mappings as ``k: v``, no reprs."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(run_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {run_value(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _money(value: Any) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def _signed(value: Any, digits: int = 2) -> str:
    if value is None:
        return "<td>n/a</td>"
    cls = "neg" if value < 0 else "pos" if value > 0 else ""
    return f'<td class="{cls}">{value:,.{digits}f}</td>'


def _plain(value: Any, digits: int = 2) -> str:
    return "<td>n/a</td>" if value is None else f"<td>{value:,.{digits}f}</td>"


def _group_table(title: str, first: str, groups: Mapping[str, Any], total: Any = None) -> str:
    """A freqtrade-style table: trades, avg profit %, total USDT and %, avg duration, W/D/L."""
    rows = [f"<h2>{escape(title)}</h2><table><tr><th>{escape(first)}</th><th>Trades</th>"
            "<th>Avg profit %</th><th>Total PnL (USDT)</th><th>Total %</th><th>Fees (USDT)</th>"
            "<th>Funding (USDT)</th><th>Avg duration</th><th>Win / Draw / Loss</th><th>Win %</th></tr>"]
    items = list(groups.items()) + ([("TOTAL", total)] if total is not None else [])
    for name, g in items:
        wr = "n/a" if g["win_rate"] is None else f"{100 * g['win_rate']:.1f}"
        dur = "n/a" if g["avg_duration_s"] is None else duration(g["avg_duration_s"])
        rows.append(f"<tr><td>{escape(name)}</td><td>{g['trades']}</td>"
                    f"{_signed(g['avg_profit_pct'])}{_signed(g['pnl_usdt'])}"
                    f"{_signed(g['total_pct'])}{_plain(g['fees_usdt'])}"
                    f"{_signed(g.get('funding_usdt'))}<td>{dur}</td>"
                    f"<td>{g['wins']} / {g['draws']} / {g['losses']}</td><td>{wr}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def group_total(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The TOTAL row of the group tables, from the per-side groups (every trade has a side)."""
    sides = summary.get("per_side") or {}
    if not sides:
        return None
    n = sum(g["trades"] for g in sides.values())
    tot: dict[str, Any] = {k: sum(g[k] for g in sides.values())
                           for k in ("trades", "wins", "draws", "losses", "pnl_usdt",
                                     "total_pct", "fees_usdt")}
    tot["funding_usdt"] = sum(g.get("funding_usdt") or 0.0 for g in sides.values())
    tot["win_rate"] = tot["wins"] / n if n else None
    weighted = [(g["avg_profit_pct"], g["trades"]) for g in sides.values()
                if g["avg_profit_pct"] is not None]
    tot["avg_profit_pct"] = sum(a * k for a, k in weighted) / n if weighted and n else None
    tot["avg_duration_s"] = sum(g["avg_duration_s"] * g["trades"] for g in sides.values()
                                if g["avg_duration_s"] is not None) / n if n else None
    return tot


def _highlights(summary: Mapping[str, Any]) -> str:
    def named(key: str) -> str:
        v = summary.get(key)
        return "n/a" if not v else f"{escape(v['name'])} ({v['pnl_usdt']:+,.2f} USDT)"

    def trade(key: str) -> str:
        v = summary.get(key)
        if not v:
            return "n/a"
        pct = "" if v["profit_pct"] is None else f", {v['profit_pct']:+.2f} %"
        return (f"{escape(v['symbol'])} {v['pnl_usdt']:+,.2f} USDT{pct} "
                f"({escape(v['exit_reason'])}, {escape(v['trade_id'])})")

    rows = [("Best pair", named("best_pair")), ("Worst pair", named("worst_pair")),
            ("Best trade", trade("best_trade")), ("Worst trade", trade("worst_trade")),
            ("Best day", named("best_day")), ("Worst day", named("worst_day")),
            ("Days win / draw / lose",
             f"{summary.get('winning_days', 0)} / {summary.get('drawn_days', 0)} / "
             f"{summary.get('losing_days', 0)}")]
    return "<h2>Best and worst</h2><table>" + "".join(
        f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows) + "</table>"


@lru_cache(maxsize=1)
def _uplot() -> tuple[str, str]:
    base = resources.files("dolphind.report") / "vendor" / "uplot"
    return ((base / "uPlot.iife.min.js").read_text(encoding="utf-8"),
            (base / "uPlot.min.css").read_text(encoding="utf-8"))


_CHART_JS = """
(function () {
  var s = JSON.parse(document.getElementById("series").textContent);
  if (!s.t.length) { return; }
  var width = Math.min(1100, document.body.clientWidth);
  function fmtUsd(u, v) { return v == null ? "-" : v.toLocaleString(undefined,
      {minimumFractionDigits: 2, maximumFractionDigits: 2}); }
  function fmtPct(u, v) { return v == null ? "-" : v.toFixed(2) + " %"; }
  // UTC, 24 h: "05-10 14:00" (uPlot's default labels follow the browser's locale).
  function utcLabels(u, vals) { return vals.map(function (v) {
      return new Date(v * 1e3).toISOString().slice(5, 16).replace("T", " "); }); }
  var sync = uPlot.sync("bt");
  var cursor = {sync: {key: sync.key}, drag: {x: true, y: false}};
  new uPlot({title: "Equity (USDT, mark to market)", width: width, height: 300,
             tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
             cursor: cursor,
             series: [{}, {label: "equity", stroke: "#1f4e79", width: 1, value: fmtUsd},
                      {label: "initial capital", stroke: "#999", dash: [6, 4], width: 1,
                       value: fmtUsd}],
             axes: [{values: utcLabels, space: 90}, {size: 80}]},
            [s.t, s.equity, s.t.map(function () { return s.initial; })],
            document.getElementById("equity-chart"));
  new uPlot({title: "Drawdown from peak (%)", width: width, height: 220,
             tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
             cursor: cursor,
             series: [{}, {label: "drawdown", stroke: "#c62828", fill: "rgba(198,40,40,0.2)",
                           width: 1, value: fmtPct}],
             axes: [{values: utcLabels, space: 90}, {size: 80}]},
            [s.t, s.drawdown_pct], document.getElementById("drawdown-chart"));
})();
"""


def _interactive(series: Mapping[str, Any] | None, initial: Any) -> str:
    if not series or not series.get("t"):
        return ""
    js, css = _uplot()
    data = json.dumps({**series, "initial": initial}, separators=(",", ":"))
    # "</" cannot end the script element from inside the JSON.
    data = data.replace("</", "<\\/")
    return (f"<style>{css}</style><h2>Equity and drawdown</h2>"
            '<p class="hint">Drag across a chart to zoom (both follow), double-click to '
            "reset; hover for the values. Times are UTC.</p>"
            '<div id="equity-chart" class="chart"></div>'
            '<div id="drawdown-chart" class="chart"></div>'
            f'<script type="application/json" id="series">{data}</script>'
            f"<script>/* uPlot {UPLOT_VERSION}, MIT licence, (c) Leon Sorokin */\n{js}</script>"
            f"<script>{_CHART_JS}</script>")


def _trade_list(trades: Sequence[Mapping[str, Any]]) -> str:
    head = ("<details><summary>Trade list ({n} trades)</summary><table><tr><th>Trade</th>"
            "<th>Symbol</th><th>Side</th><th>Entry (UTC)</th><th>Exit (UTC)</th>"
            "<th>Entry price</th><th>Exit price</th><th>PnL (USDT, excl. funding)</th><th>Profit %</th>"
            "<th>Fees (USDT)</th><th>Funding (USDT)</th><th>Exit reason</th><th>Held</th></tr>"
            ).format(n=len(trades))
    rows = [f"<tr><td>{escape(t['id'])}</td><td>{escape(t['symbol'])}</td>"
            f"<td>{escape(t['side'])}</td><td>{escape(t['entry'])}</td>"
            f"<td>{escape(t['exit'])}</td><td>{t['entry_price']:.8g}</td>"
            f"<td>{t['exit_price']:.8g}</td>{_signed(t['pnl_usdt'])}"
            f"{_signed(t['profit_pct'])}{_plain(t['fees_usdt'], 4)}"
            f"{_signed(t.get('funding_usdt'), 4)}<td>{escape(t['reason'])}</td><td>{duration(t['held_s'])}</td></tr>"
            for t in trades]
    return head + "\n".join(rows) + "</table></details>"


def render_html(title: str, summary: Mapping[str, Any], charts: Sequence[tuple[str, str]],
                run: Mapping[str, Any] | None = None,
                trades: Sequence[Mapping[str, Any]] = (),
                series: Mapping[str, Any] | None = None) -> str:
    """The page. ``summary`` is the JSON-ready summary dict; ``charts`` are (caption, relative
    PNG path) pairs in display order; ``run`` is shown as a key/value table when given;
    ``trades`` are the trade list's rows; ``series`` the interactive charts' data."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{escape(title)}</h1>"]
    if run:
        out.append("<h2>Run</h2><table>")
        out += [f"<tr><td>{escape(str(k))}</td><td>{escape(run_value(run[k]))}</td></tr>"
                for k in sorted(run)]
        out.append("</table>")
    out.append('<div class="grid"><div><h2>Summary</h2><table>')
    out += [f"<tr><td>{escape(label)}</td><td>{escape(fmt(summary.get(key), kind))}</td></tr>"
            for key, label, kind in SUMMARY_ROWS]
    out.append(f"</table></div><div>{_highlights(summary)}</div></div>")
    out.append(_interactive(series, summary.get("initial_capital_usdt")))
    total = group_total(summary)
    out.append(_group_table("Per pair", "Pair", summary.get("per_pair") or {}, total))
    out.append(_group_table("Per exit reason", "Exit reason",
                            summary.get("per_exit_reason") or {}, total))
    out.append(_group_table("Long / short", "Side", summary.get("per_side") or {}, total))
    days: Mapping[str, Any] = summary.get("per_day") or {}
    out.append("<h2>PnL per day (UTC)</h2><table>"
               "<tr><th>Day</th><th>Equity change (USDT)</th><th>Realised (USDT)</th>"
               "<th>Trades closed</th><th>Equity at close (USDT)</th></tr>")
    out += [f"<tr><td>{escape(d)}</td>{_signed(v['equity_change_usdt'])}"
            f"{_signed(v['realised_pnl_usdt'])}<td>{v['trades']}</td>"
            f"<td>{_money(v['end_equity_usdt'])}</td></tr>"
            for d, v in sorted(days.items())]
    out.append("</table>")
    reasons: Mapping[str, Any] = summary.get("pnl_by_exit_reason") or {}
    out.append("<h2>PnL by exit reason</h2><table>"
               "<tr><th>Exit reason</th><th>Trades</th><th>Wins</th><th>Net PnL (USDT)</th>"
               "<th>Fees (USDT)</th></tr>")
    out += [f"<tr><td>{escape(r)}</td><td>{v['trades']}</td><td>{v['wins']}</td>"
            f"{_signed(v['pnl_usdt'])}{_plain(v['fees_usdt'])}</tr>"
            for r, v in sorted(reasons.items())]
    out.append("</table>")
    for caption, src in charts:
        out.append(f"<h2>{escape(caption)}</h2>"
                   f'<img src="{escape(src)}" alt="{escape(caption)}">')
    if trades:
        out.append(_trade_list(trades))
    out.append("</body></html>")
    return "\n".join(out) + "\n"
