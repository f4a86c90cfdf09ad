"""Message text and the JSON body each chat service expects; the retry delays. All pure."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence


@dataclass(frozen=True, slots=True)
class Message:
    """One notification: the text people read, and for the generic webhook the event kind and
    its figures."""

    text: str
    event: str = "incident"
    data: dict[str, Any] = field(default_factory=dict)

_ICON = {"info": "ℹ️", "warning": "⚠️", "critical": "🚨"}
_DISCORD_MAX = 2000  # Discord refuses longer content
_TELEGRAM_MAX = 4096


def message_text(title: str, incident: Any) -> str:
    """One line for a control-plane incident record (``ControlAction`` with action 'incident')."""
    d = incident.detail
    sev = d.get("severity", "warning")
    return (f"{_ICON.get(sev, '')} [{title}] {sev.upper()} {d.get('kind', 'incident')} "
            f"({incident.cause}): {d.get('message', '')}").strip()


def _utc(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def _held(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86_400)
    h, s = divmod(s, 3600)
    m, _ = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h}h{m:02d}m"


def entry_message(title: str, fill: Any) -> Message:
    """An entry fill (``dolphind.events.Fill`` with ``reduce_only`` false)."""
    side = "LONG" if fill.side == "BUY" else "SHORT"
    notional = fill.qty * fill.price
    text = (f"\U0001f7e2 [{title}] ENTRY {side} {fill.symbol}: {fill.qty:g} @ {fill.price:.8g} "
            f"({notional:,.2f} USDT) at {_utc(fill.ts_ns)}")
    return Message(text, "entry", {"symbol": fill.symbol, "side": side, "qty": fill.qty,
                                   "price": fill.price, "notional_usdt": notional,
                                   "fee_usdt": fill.fee_usdt, "ts_ns": fill.ts_ns})


def exit_message(title: str, trade: Any) -> Message:
    """A closed round trip (``dolphind.report.model.ClosedTrade``), with its net PnL."""
    pct = 100.0 * trade.pnl_usdt / trade.notional_usdt if trade.notional_usdt else math.nan
    icon = "\u2705" if trade.pnl_usdt > 0 else "\U0001f534" if trade.pnl_usdt < 0 else "\u26aa"
    held = (trade.exit_ts_ns - trade.entry_ts_ns) / 1e9
    text = (f"{icon} [{title}] EXIT {trade.side} {trade.symbol} ({trade.exit_reason}): "
            f"{trade.entry_price:.8g} -> {trade.exit_price:.8g}, PnL {trade.pnl_usdt:+,.2f} USDT "
            f"({pct:+.2f}%), fees {trade.fees_usdt:,.2f}, held {_held(held)}")
    return Message(text, "exit", {"symbol": trade.symbol, "side": trade.side,
                                  "entry_price": trade.entry_price,
                                  "exit_price": trade.exit_price, "pnl_usdt": trade.pnl_usdt,
                                  "pnl_pct": pct, "fees_usdt": trade.fees_usdt,
                                  "exit_reason": trade.exit_reason, "held_s": held,
                                  "ts_ns": trade.exit_ts_ns})


def daily_message(title: str, day: str, trades: Sequence[Any]) -> Message:
    """The summary of one UTC day: the trades that closed in it."""
    pnl = math.fsum(t.pnl_usdt for t in trades)
    fees = math.fsum(t.fees_usdt for t in trades)
    wins = sum(1 for t in trades if t.pnl_usdt > 0)
    losses = sum(1 for t in trades if t.pnl_usdt < 0)
    best = max(trades, key=lambda t: t.pnl_usdt, default=None)
    worst = min(trades, key=lambda t: t.pnl_usdt, default=None)
    text = (f"\U0001f4c5 [{title}] {day}: {len(trades)} trades closed, W/D/L {wins}/"
            f"{len(trades) - wins - losses}/{losses}, PnL {pnl:+,.2f} USDT, fees {fees:,.2f}")
    if best is not None and worst is not None:
        text += (f"; best {best.symbol} {best.pnl_usdt:+,.2f}, "
                 f"worst {worst.symbol} {worst.pnl_usdt:+,.2f}")
    return Message(text, "daily", {"day": day, "trades": len(trades), "wins": wins,
                                   "losses": losses, "pnl_usdt": pnl, "fees_usdt": fees})


def payload(fmt: str, text: str, chat_id: str = "", event: str = "incident",
            data: dict[str, Any] | None = None) -> dict[str, Any]:
    if fmt == "webhook":
        return {"text": text, "event": event, "data": data or {}}
    if fmt == "slack":
        return {"text": text}
    if fmt == "discord":
        return {"content": text[:_DISCORD_MAX]}
    if fmt == "telegram":
        return {"chat_id": chat_id, "text": text[:_TELEGRAM_MAX],
                "disable_web_page_preview": True}
    raise ValueError(f"unknown format {fmt!r}")


def retryable(status: int) -> bool:
    """5xx and 429 may succeed later; any other 4xx will not (bad URL, bad body, no rights)."""
    return status >= 500 or status == 429
