"""The backtest's main tables as plain text for the terminal (the page has them all): per pair,
per exit reason, long/short, and a summary of the headline figures. A pure function of the
summary.json document, so the terminal, the page and the file say the same thing."""

from __future__ import annotations

from typing import Any, Mapping

from dolphind.report.html import SUMMARY_ROWS, duration, group_total, fmt
from dolphind.report.text_table import table

# The summary rows the terminal shows (the page shows every row of SUMMARY_ROWS).
_TERMINAL_KEYS = (
    "initial_capital_usdt", "final_equity_usdt", "roi", "cagr", "net_pnl_usdt",
    "funding_paid_usdt", "market_change", "profit_factor", "expectancy_usdt", "sqn", "sharpe",
    "calmar", "max_drawdown", "drawdown_start_ts_ns", "drawdown_end_ts_ns", "trades",
    "win_rate", "max_consecutive_wins", "max_consecutive_losses", "fees_paid_usdt",
)


def _group_rows(groups: Mapping[str, Any], total: Mapping[str, Any] | None) -> list[list[str]]:
    items = list(groups.items()) + ([("TOTAL", total)] if total else [])
    return [[name, str(g["trades"]),
             "n/a" if g["avg_profit_pct"] is None else f"{g['avg_profit_pct']:+.2f}",
             f"{g['pnl_usdt']:+,.2f}", f"{g['total_pct']:+.2f}", f"{g['fees_usdt']:,.2f}",
             "n/a" if g["avg_duration_s"] is None else duration(g["avg_duration_s"]),
             f"{g['wins']} / {g['draws']} / {g['losses']}",
             "n/a" if g["win_rate"] is None else f"{100 * g['win_rate']:.1f}"]
            for name, g in items]


_HEAD = ("trades", "avg %", "total USDT", "total %", "fees", "avg duration", "W / D / L",
         "win %")


def render(doc: Mapping[str, Any]) -> str:
    total = group_total(doc)
    parts = []
    for title, key, first in (("PER PAIR", "per_pair", "pair"),
                              ("PER EXIT REASON", "per_exit_reason", "exit reason"),
                              ("LONG / SHORT", "per_side", "side")):
        groups = doc.get(key) or {}
        if groups:
            parts.append(f"{title}\n" + table((first, *_HEAD), _group_rows(groups, total)))
    labels = {k: (label, kind) for k, label, kind in SUMMARY_ROWS}
    rows = [(labels[k][0], fmt(doc.get(k), labels[k][1])) for k in _TERMINAL_KEYS]

    def named(key: str) -> str:
        v = doc.get(key)
        return "n/a" if not v else f"{v['name']} {v['pnl_usdt']:+,.2f} USDT"

    def trade(key: str) -> str:
        v = doc.get(key)
        return "n/a" if not v else f"{v['symbol']} {v['pnl_usdt']:+,.2f} USDT ({v['exit_reason']})"

    rows += [("Best / worst pair", f"{named('best_pair')} / {named('worst_pair')}"),
             ("Best / worst trade", f"{trade('best_trade')} / {trade('worst_trade')}"),
             ("Best / worst day", f"{named('best_day')} / {named('worst_day')}"),
             ("Days win / draw / lose",
              f"{doc.get('winning_days', 0)} / {doc.get('drawn_days', 0)} / "
              f"{doc.get('losing_days', 0)}"),
             ("Avg duration winners / losers",
              f"{fmt(doc.get('avg_win_duration_s'), 'duration')} / "
              f"{fmt(doc.get('avg_loss_duration_s'), 'duration')}")]
    width = max(len(k) for k, _ in rows)
    parts.append("SUMMARY\n" + "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))
    return "\n\n".join(parts)
