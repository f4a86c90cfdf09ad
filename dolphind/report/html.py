"""report.html: one self-contained page (inline CSS, no scripts) that shows the summary table,
the PNG charts by relative path (so the report folder can be moved or zipped as a whole), the
PnL by exit reason and the per-day PnL.

It is rendered from the same JSON-ready summary dict that summary.json holds, so the page and
the file never disagree, and it carries no generation time, so it is deterministic too.
"""

from __future__ import annotations

from html import escape
from typing import Any, Mapping, Sequence

# (key in the summary, label, kind) in display order; kind picks the formatting.
SUMMARY_ROWS: tuple[tuple[str, str, str], ...] = (
    ("initial_capital_usdt", "Initial capital", "usdt"),
    ("final_equity_usdt", "Final equity", "usdt"),
    ("roi", "ROI", "pct"),
    ("net_pnl_usdt", "Net PnL of closed trades (after fees)", "usdt"),
    ("other_pnl_usdt", "Other equity change (open position, funding)", "usdt"),
    ("profit_factor", "Profit factor", "ratio"),
    ("sharpe", "Sharpe (daily, x sqrt 365)", "ratio"),
    ("sortino", "Sortino (daily, x sqrt 365)", "ratio"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("max_drawdown_duration_s", "Max drawdown duration", "duration"),
    ("longest_drawdown_duration_s", "Longest drawdown", "duration"),
    ("realised_max_drawdown", "Max drawdown of closed-trade equity", "pct"),
    ("trades", "Trades", "int"),
    ("win_rate", "Win rate", "pct"),
    ("wins", "Wins", "int"),
    ("losses", "Losses", "int"),
    ("avg_hold_bars", "Average hold (bars)", "ratio"),
    ("avg_hold_s", "Average hold", "duration"),
    ("fees_paid_usdt", "Fees paid", "usdt"),
    ("exposure_time", "Exposure time (bars in a position)", "pct"),
    ("bars", "Bars", "int"),
    ("days", "Days", "int"),
)

_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1040px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 3px 10px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0 1.5em; }
.neg { color: #c62828; } .pos { color: #2e7d32; }
"""


def fmt(value: Any, kind: str) -> str:
    """One summary value as text: None -> n/a, "inf" -> the infinity sign."""
    if value is None:
        return "n/a"
    if value in ("inf", "-inf"):
        return "\u221e" if value == "inf" else "-\u221e"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "pct":
        return f"{100.0 * value:.2f} %"
    if kind == "usdt":
        return f"{value:,.2f} USDT"
    if kind == "ratio":
        return f"{value:.3f}"
    if kind == "duration":
        return duration(float(value))
    return str(value)


def duration(seconds: float) -> str:
    """``1d 02:03:04`` style (whole seconds)."""
    s = int(round(seconds))
    days, s = divmod(s, 86_400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{days}d " if days else "") + f"{h:02d}:{m:02d}:{s:02d}"


def _money(value: Any) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def _signed(value: Any) -> str:
    if value is None:
        return "<td>n/a</td>"
    cls = "neg" if value < 0 else "pos" if value > 0 else ""
    return f'<td class="{cls}">{value:,.2f}</td>'


def render_html(title: str, summary: Mapping[str, Any], charts: Sequence[tuple[str, str]],
                run: Mapping[str, Any] | None = None) -> str:
    """The page. ``summary`` is the JSON-ready summary dict; ``charts`` are (caption, relative
    PNG path) pairs in display order; ``run`` is shown as a key/value table when given."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{escape(title)}</h1>"]
    if run:
        out.append("<h2>Run</h2><table>")
        out += [f"<tr><td>{escape(str(k))}</td><td>{escape(str(run[k]))}</td></tr>"
                for k in sorted(run)]
        out.append("</table>")
    out.append("<h2>Summary</h2><table>")
    out += [f"<tr><td>{escape(label)}</td><td>{escape(fmt(summary.get(key), kind))}</td></tr>"
            for key, label, kind in SUMMARY_ROWS]
    out.append("</table>")
    for caption, src in charts:
        out.append(f"<h2>{escape(caption)}</h2>"
                   f'<img src="{escape(src)}" alt="{escape(caption)}">')
    reasons: Mapping[str, Any] = summary.get("pnl_by_exit_reason") or {}
    out.append("<h2>PnL by exit reason</h2><table>"
               "<tr><th>Exit reason</th><th>Trades</th><th>Wins</th><th>Net PnL (USDT)</th>"
               "<th>Fees (USDT)</th></tr>")
    out += [f"<tr><td>{escape(r)}</td><td>{v['trades']}</td><td>{v['wins']}</td>"
            f"{_signed(v['pnl_usdt'])}{_signed(v['fees_usdt'])}</tr>"
            for r, v in sorted(reasons.items())]
    out.append("</table>")
    days: Mapping[str, Any] = summary.get("per_day") or {}
    out.append("<h2>PnL per day (UTC)</h2><table>"
               "<tr><th>Day</th><th>Equity change (USDT)</th><th>Realised (USDT)</th>"
               "<th>Trades closed</th><th>Equity at close (USDT)</th></tr>")
    out += [f"<tr><td>{escape(d)}</td>{_signed(v['equity_change_usdt'])}"
            f"{_signed(v['realised_pnl_usdt'])}<td>{v['trades']}</td>"
            f"<td>{_money(v['end_equity_usdt'])}</td></tr>"
            for d, v in sorted(days.items())]
    out.append("</table></body></html>")
    return "\n".join(out) + "\n"
