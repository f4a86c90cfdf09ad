"""Telegram commands: ``/status``, ``/profit``, ``/daily``, ``/halt [reason]`` from ONE chat.

The allowlist is the chat the notifications go to (``chat_id_env``): a message from any other
chat is ignored (counted and logged without its text). The bot is polled with ``getUpdates``
(long polling, no inbound port): the URL is the sendMessage URL with its last path segment
swapped. Answers go through the same sender queue as every message (rate limit, retries).

The plugin reaches the daemon only through the plugin API: the figures contract
(``ctx.figures()``), the halt through the control plane (cause ``comms:telegram``), and the
trades it saw through ``on_trade``. There is deliberately no ``/resume``: a chat can stop
entries, only an operator with the ops token lets them start again.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import aiohttp

from dolphind.plugins import backoff_delay
from dolphind_comms.payloads import Message, daily_message

COMMANDS = ("/status", "/profit", "/daily", "/halt", "/help")
CAUSE = "comms:telegram"


def updates_url(send_url: str) -> str:
    """``.../bot<token>/sendMessage`` -> ``.../bot<token>/getUpdates``."""
    return send_url.rsplit("/", 1)[0] + "/getUpdates"


def status_text(title: str, figures: Any, control: dict[str, Any]) -> str:
    eq = "n/a" if figures.equity_usdt is None else f"{figures.equity_usdt:,.2f} USDT"
    dd = "n/a" if figures.drawdown is None else f"{100 * figures.drawdown:.2f}%"
    pos = {s: n for s, n in (figures.position_notional_usdt or {}).items() if n}
    open_text = ", ".join(f"{s} {n:+,.0f}" for s, n in sorted(pos.items())) or "none"
    halted = f"HALTED ({control.get('halt_reason') or '-'})" if control.get("halted") \
        else "trading"
    return (f"[{title}] {halted}; equity {eq}, drawdown {dd}; open positions: {open_text}; "
            f"risk x{control.get('risk_multiplier', 1.0):g}")


def profit_text(title: str, trades: Sequence[Any]) -> str:
    if not trades:
        return f"[{title}] no closed trades since comms started"
    pnl = math.fsum(t.pnl_usdt for t in trades)
    fees = math.fsum(t.fees_usdt for t in trades)
    wins = sum(1 for t in trades if t.pnl_usdt > 0)
    losses = sum(1 for t in trades if t.pnl_usdt < 0)
    best = max(trades, key=lambda t: t.pnl_usdt)
    worst = min(trades, key=lambda t: t.pnl_usdt)
    return (f"[{title}] {len(trades)} trades since comms started: W/D/L {wins}/"
            f"{len(trades) - wins - losses}/{losses}, PnL {pnl:+,.2f} USDT, fees {fees:,.2f}, "
            f"expectancy {pnl / len(trades):+,.2f}; best {best.symbol} {best.pnl_usdt:+,.2f}, "
            f"worst {worst.symbol} {worst.pnl_usdt:+,.2f}")


def daily_texts(title: str, trades: Sequence[Any], days: int = 7) -> list[str]:
    """One line per UTC exit day, newest first (the days that had a closed trade)."""
    by_day: dict[str, list[Any]] = {}
    for t in trades:
        day = datetime.fromtimestamp(t.exit_ts_ns // 10**9, tz=timezone.utc).strftime("%Y-%m-%d")
        by_day.setdefault(day, []).append(t)
    if not by_day:
        return [f"[{title}] no closed trades since comms started"]
    return [daily_message(title, d, by_day[d]).text for d in sorted(by_day, reverse=True)[:days]]


class CommandPoller:
    """Long-polls getUpdates and answers the allowlisted chat."""

    def __init__(self, url: str, chat_id: str, title: Callable[[], str],
                 reply: Callable[[Message], None], figures: Callable[[], Any], control: Any,
                 trades: Callable[[], Sequence[Any]], log: Any, poll_timeout_s: int = 25,
                 error_pause_s: float = 5.0, error_pause_max_s: float = 120.0) -> None:
        """A failed poll is retried after ``backoff_delay`` (from ``error_pause_s``, doubling
        up to ``error_pause_max_s`` while the polls keep failing)."""
        self._url = updates_url(url)
        self._chat_id = str(chat_id)
        self._title = title
        self._reply = reply
        self._figures = figures
        self._control = control
        self._trades = trades
        self._log = log
        self._timeout = poll_timeout_s
        self._pause = error_pause_s
        self._pause_max = error_pause_max_s
        self._failing = 0  # polls failed in a row: the back-off's attempt
        self._offset = 0
        self.answered = self.refused = self.errors = 0

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await self.poll_once(session)
                except asyncio.CancelledError:
                    raise
                except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                    self.errors += 1
                    delay = backoff_delay(self._failing, self._pause, self._pause_max)
                    self._failing += 1
                    # By type only: aiohttp's message may carry the URL (the bot token).
                    self._log.warning("comms.commands_poll_failed", error=type(exc).__name__,
                                      retry_in_s=round(delay, 2))
                    await asyncio.sleep(delay)
                else:
                    self._failing = 0  # the long poll itself paces the loop: no pause

    async def poll_once(self, session: aiohttp.ClientSession) -> None:
        params = {"offset": str(self._offset), "timeout": str(self._timeout),
                  "allowed_updates": '["message"]'}
        timeout = aiohttp.ClientTimeout(total=self._timeout + 10)
        async with session.get(self._url, params=params, timeout=timeout) as resp:
            if resp.status != 200:
                raise ValueError(f"getUpdates answered {resp.status}")
            doc = await resp.json(content_type=None)
        for update in doc.get("result") or []:
            self._offset = max(self._offset, int(update.get("update_id", 0)) + 1)
            self.handle(update.get("message") or {})

    def handle(self, message: dict[str, Any]) -> None:
        chat = str((message.get("chat") or {}).get("id", ""))
        text = str(message.get("text") or "").strip()
        if not text.startswith("/"):
            return
        if chat != self._chat_id:
            self.refused += 1
            self._log.warning("comms.command_refused", reason="chat not allowlisted")
            return
        word, _, rest = text.partition(" ")
        command = word.split("@", 1)[0].lower()  # "/status@my_bot" in groups
        title = self._title()
        if command == "/status":
            answers = [status_text(title, self._figures(), self._control.status())]
        elif command == "/profit":
            answers = [profit_text(title, self._trades())]
        elif command == "/daily":
            answers = daily_texts(title, self._trades())
        elif command == "/halt":
            reason = rest.strip()[:200] or "halt from Telegram"
            self._control.halt(CAUSE, reason)
            answers = [f"[{title}] HALTED: {reason}. Entries stop, exits still run; only an "
                       "operator with the ops token can resume (dolphind resume)."]
        else:
            answers = [f"[{title}] commands: {' '.join(COMMANDS)}"]
        self.answered += 1
        self._log.info("comms.command", command=command)
        for a in answers:
            self._reply(Message(a, "reply", {"command": command}))
