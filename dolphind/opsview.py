"""Human text for the ops documents (``/status``, ``/positions``, ``/trades``, ``/profit``,
``/daily``): what ``dolphind status`` and friends print. Pure functions of the JSON documents,
tolerant of missing parts (a daemon still starting has no pipeline yet)."""

from __future__ import annotations

from typing import Any, Mapping

from dolphind.report.text_table import table


def money(x: Any, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{float(x):+,.2f}" if signed else f"{float(x):,.2f}"


def pct(x: Any, scale: float = 100.0) -> str:
    return "n/a" if x is None else f"{scale * float(x):.2f}%"


def num(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.8g}"


def ratio(x: Any) -> str:
    if x is None:
        return "n/a"
    if x in ("inf", float("inf")):
        return "\u221e"
    return f"{float(x):.2f}"


def uptime(seconds: Any) -> str:
    s = int(float(seconds or 0))
    d, s = divmod(s, 86_400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def status_text(doc: Mapping[str, Any]) -> str:
    """One screen: who, ready/health, feed/scan/alpha, account, positions, control, stages,
    plugins. The whole document is ``dolphind status --json``."""
    cfg = doc.get("config") or {}
    health = doc.get("health") or {}
    lines = [f"dolphind {doc.get('version', '?')}  pid {doc.get('pid', '?')}  "
             f"mode {doc.get('mode', '?')}  up {uptime(doc.get('uptime_s'))}",
             f"config     {cfg.get('path') or '(built in)'}  hash {cfg.get('hash') or '-'}"]
    not_ok = {k: v for k, v in (doc.get("readiness") or {}).items() if v != "ok"}
    ready = "yes" if doc.get("ready") else "no (" + "; ".join(
        f"{k}: {v}" for k, v in sorted(not_ok.items())) + ")"
    lines.append(f"ready      {ready}")
    lines.append(f"health     {health.get('level', '?')} (score {health.get('score', '?')})")
    feed = doc.get("feed") or {}
    if feed:
        what = feed.get("kind", "?")
        if "bars_emitted" in feed:
            what += f", {feed['bars_emitted']:,} bars"
        if feed.get("symbols"):
            what += f", {len(feed['symbols'])} symbols"
        if feed.get("loops"):
            what += f", loop {feed['loops']}"
        lines.append(f"feed       {what}")
    scan = doc.get("scan") or {}
    if scan:
        lines.append(f"scan       {'warm' if scan.get('warm') else 'warming up'}, "
                     f"{scan.get('scans', 0):,} scans")
    alpha = doc.get("alpha") or {}
    if alpha:
        lines.append(f"strategy   posture {alpha.get('posture', '?')}  Rm {ratio(alpha.get('rm'))}"
                     f"  decisions {alpha.get('decisions', 0):,}")
    ex = doc.get("execution") or {}
    if ex:
        lines.append(f"account    equity {money(ex.get('equity_usdt'))} USDT  "
                     f"(capital {money(ex.get('capital_usdt'))}, drawdown "
                     f"{pct(ex.get('drawdown'))})")
        lines.append(f"pnl        realised {money(ex.get('realised_pnl_usdt'), True)} "
                     "(before fees)  "
                     f"unrealised {money(ex.get('unrealised_pnl_usdt'), True)}  "
                     f"fees {money(ex.get('fees_usdt'))}")
        open_pos = {s: q for s, q in (ex.get("positions") or {}).items() if q}
        pos = ", ".join(f"{s} {q:+g}" for s, q in sorted(open_pos.items())) or "none"
        lines.append(f"positions  {pos}  (working orders {ex.get('working_orders', 0)}, "
                     f"venue {ex.get('venue', '?')})")
    control = doc.get("control") or {}
    if control.get("halted"):
        by = ", ".join(sorted(control.get("halted_by") or {})) or "?"
        lines.append(f"control    HALTED: {control.get('halt_reason') or '-'} (by {by})")
    else:
        lines.append(f"control    trading (risk x{ratio(control.get('risk_multiplier', 1.0))})")
    stages = doc.get("stages") or {}
    if stages:
        parts = []
        for name, st in stages.items():
            state = "ok" if st.get("running") and not st.get("stalled") else \
                "stalled" if st.get("stalled") else "done" if st.get("finished") else "down"
            extra = f" ({st['restarts']} restarts)" if st.get("restarts") else ""
            parts.append(f"{name} {state}{extra}")
        lines.append("stages     " + ", ".join(parts))
    plugins = doc.get("plugins") or []
    if plugins:
        lines.append("plugins    " + ", ".join(
            f"{p['name']} {p.get('version', '')}"
            + ("" if p.get("enabled") else " DISABLED")
            + (f" ({p['failures_total']} failures)" if p.get("failures_total") else "")
            for p in plugins))
    reload = doc.get("last_reload")
    if reload:
        lines.append(f"reload     {'ok' if reload.get('ok') else 'refused'}"
                     + (f" ({reload['cause']})" if reload.get("cause") else ""))
    return "\n".join(lines)


def positions_text(doc: Mapping[str, Any]) -> str:
    rows = [(p["symbol"], p["side"], num(abs(p["qty"])), num(p["avg_price"]), num(p.get("mark")),
             money(p.get("notional_usdt")), money(p.get("unrealised_pnl_usdt"), True))
            for p in doc.get("positions") or [] if p.get("qty")]
    head = (f"equity {money(doc.get('equity_usdt'))} USDT  cash {money(doc.get('cash_usdt'))}  "
            f"drawdown {pct(doc.get('drawdown'))}")
    if not rows:
        return head + "\nno open positions"
    return head + "\n" + table(("symbol", "side", "qty", "entry", "mark", "notional",
                                "unrealised"), rows)


def trades_text(doc: Mapping[str, Any]) -> str:
    rows = [(t["exit_time"].replace("T", " ").rstrip("Z"), t["symbol"], t["side"],
             num(t["entry_price"]), num(t["exit_price"]), money(t["pnl_usdt"], True),
             pct(t.get("pnl_pct"), 1.0), t["exit_reason"], uptime(t.get("held_s")))
            for t in doc.get("trades") or []]
    head = (f"{len(rows)} of {doc.get('total', 0)} closed trades since "
            f"{doc.get('since', '?')}, newest first")
    if not rows:
        return head
    return head + "\n" + table(("closed (UTC)", "symbol", "side", "entry", "exit", "pnl USDT",
                                "pnl %", "reason", "held"), rows)


def profit_text(doc: Mapping[str, Any]) -> str:
    acc = doc.get("account") or {}
    bp, wp = doc.get("best_pair"), doc.get("worst_pair")
    bt, wt = doc.get("best_trade"), doc.get("worst_trade")
    rows = [
        ("closed trades", f"{doc.get('trades', 0)}  (W/D/L {doc.get('wins', 0)}/"
                          f"{doc.get('draws', 0)}/{doc.get('losses', 0)}, win rate "
                          f"{pct(doc.get('win_rate'))})"),
        ("net PnL", f"{money(doc.get('net_pnl_usdt'), True)} USDT"),
        ("fees", f"{money(doc.get('fees_usdt'))} USDT"),
        ("profit factor", ratio(doc.get("profit_factor"))),
        ("expectancy", f"{money(doc.get('expectancy_usdt'), True)} USDT per trade"),
        ("avg trade", pct(doc.get("avg_pnl_pct"), 1.0)),
        ("best pair", f"{bp['symbol']} {money(bp['pnl_usdt'], True)}" if bp else "n/a"),
        ("worst pair", f"{wp['symbol']} {money(wp['pnl_usdt'], True)}" if wp else "n/a"),
        ("best trade", f"{bt['symbol']} {money(bt['pnl_usdt'], True)} ({bt['exit_reason']})"
         if bt else "n/a"),
        ("worst trade", f"{wt['symbol']} {money(wt['pnl_usdt'], True)} ({wt['exit_reason']})"
         if wt else "n/a"),
        ("first / last", f"{doc.get('first_trade_time') or '-'} / "
                         f"{doc.get('last_trade_time') or '-'}"),
    ]
    if acc:
        rows += [("equity", f"{money(acc.get('equity_usdt'))} USDT (capital "
                            f"{money(acc.get('capital_usdt'))}, drawdown "
                            f"{pct(acc.get('drawdown'))})"),
                 ("unrealised", f"{money(acc.get('unrealised_pnl_usdt'), True)} USDT")]
    width = max(len(k) for k, _ in rows)
    return f"profit since {doc.get('since', '?')}\n" + "\n".join(
        f"  {k.ljust(width)}  {v}" for k, v in rows)


def daily_text(doc: Mapping[str, Any]) -> str:
    rows = [(d["day"], money(d["pnl_usdt"], True), d["trades"], f"{d['wins']}/{d['losses']}",
             money(d["fees_usdt"])) for d in doc.get("days") or []]
    head = f"realised PnL per UTC day since {doc.get('since', '?')}, newest first"
    if not rows:
        return head + "\nno closed trades yet"
    return head + "\n" + table(("day", "pnl USDT", "trades", "W/L", "fees"), rows)
