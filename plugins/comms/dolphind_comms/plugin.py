"""The comms plugin: events -> messages -> the sender task.

- ``on_fill`` of an entry (not reduce-only) -> an entry message;
- ``on_trade`` (a closed round trip) -> an exit message with its net PnL;
- ``on_tick``: when the UTC day (wall clock) changes, the summary of the trades closed during
  the day that ended;
- ``on_incident`` -> an incident message; governor halts arrive as incidents too (kind
  ``governor_halt``, severity critical).

``events`` chooses which are sent. The sender task (and the Telegram command poller's) is owned
here: started in ``start``, drained (briefly) and awaited in ``stop``; it keeps to
``max_per_minute``. A crash of either is never silent: logged (``comms.task_crashed``, by type
only: a message may carry the URL, a secret), counted (``dolphind_m22_task_crashes_total``) and
shown in ``status()`` (``crashed``); a crashed command poller means ``/halt`` from the chat no
longer works, which the operator must hear of.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Any, Callable, Coroutine, Mapping

from prometheus_client import Counter, Gauge

from dolphind.plugins import (
    API_VERSION,
    ClosedTradeView,
    ControlAction,
    Fill,
    PluginContext,
    Tick,
)
from dolphind_comms.commands import CommandPoller
from dolphind_comms.payloads import (
    Message, daily_message, entry_message, exit_message, message_text)
from dolphind_comms.sender import Secrets, WebhookSender
from dolphind_comms.settings import SEVERITIES, CommsSettings, load_settings

# The one place the version is written (pyproject reads it from here).
VERSION = "1.0.0"

# How long stop() lets queued messages go out before abandoning them.
DRAIN_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class _Metrics:
    messages: Counter
    attempts: Counter
    queue_depth: Gauge
    task_crashes: Counter


class CommsPlugin:
    API_VERSION = API_VERSION
    name = "comms"
    version = VERSION

    def __init__(self, environ: Mapping[str, str] = os.environ,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._environ = environ
        self._clock = clock  # the rate limit's clock
        self.settings = CommsSettings()
        self._ctx: Any = None
        self.sender: WebhookSender | None = None
        self._task: asyncio.Task[None] | None = None
        self.commands: CommandPoller | None = None
        self._commands_task: asyncio.Task[None] | None = None
        # Closed trades seen since start, for /profit and /daily (bounded).
        self._trades: collections.deque[Any] = collections.deque(maxlen=10_000)
        self._day: str | None = None  # the UTC day (wall clock) of the last tick
        self._closed_today: list[Any] = []
        self.crashed: dict[str, str] = {}  # task -> the type of the exception that ended it

    def validate(self, settings: Mapping[str, Any]) -> list[str]:
        return load_settings(settings, self._environ)[1]

    async def start(self, ctx: PluginContext) -> None:
        settings, problems = load_settings(ctx.settings, self._environ)
        if problems:
            raise ValueError("; ".join(problems))
        self.settings, self._ctx = settings, ctx
        reg = ctx.metrics_registry
        m = _Metrics(
            Counter("dolphind_m22_messages_total",
                    "Webhook messages by outcome (sent, gave_up, rejected, dropped).",
                    ["outcome"], registry=reg),
            Counter("dolphind_m22_attempts_total", "Webhook POST attempts by result.",
                    ["result"], registry=reg),
            Gauge("dolphind_m22_queue_depth", "Messages waiting to be sent.", registry=reg),
            Counter("dolphind_m22_task_crashes_total",
                    "The plugin's tasks (sender, commands) ended by an exception.", ["task"],
                    registry=reg))
        for outcome in ("sent", "gave_up", "rejected", "dropped"):
            m.messages.labels(outcome)
        for task in ("sender", "commands"):
            m.task_crashes.labels(task)
        self._metrics = m
        e = self._environ
        secrets = Secrets(url=e[settings.url_env],
                          chat_id=e.get(settings.chat_id_env, "") if settings.chat_id_env else "",
                          signing_key=e.get(settings.secret_env, "") if settings.secret_env
                          else "")
        self.sender = WebhookSender(lambda: self.settings, secrets, m, ctx.log,
                                    clock=self._clock)
        self._task = self._watched(self.sender.run(), "sender")
        if settings.commands:
            self.commands = CommandPoller(
                secrets.url, secrets.chat_id, lambda: self.settings.title, self.sender.offer,
                ctx.figures, ctx.control,
                lambda: list(self._trades), ctx.log)
            self._commands_task = self._watched(self.commands.run(), "commands")
        # The URL is a secret: say where it comes from, never what it is.
        ctx.log.info("comms.started", format=settings.format, url_env=settings.url_env,
                     min_severity=settings.min_severity)

    async def reload(self, settings: Mapping[str, Any]) -> None:
        new, problems = load_settings(settings, self._environ)
        if problems:
            raise ValueError("; ".join(problems))
        if new.url_env != self.settings.url_env or new.format != self.settings.format \
                or new.commands != self.settings.commands:
            # The destination is fixed at start (its secrets were read then).
            self._ctx.log.warning("comms.reload_needs_restart",
                                  keys=["url_env", "format", "commands"])
            new = self.settings
        self.settings = new

    def _watched(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        """``coro`` as a task of this plugin whose crash is seen when it comes."""
        def seen(task: asyncio.Task[None]) -> None:
            if task.cancelled() or task.exception() is None:
                return
            exc = task.exception()
            self.crashed[what] = type(exc).__name__
            self._metrics.task_crashes.labels(what).inc()
            self._ctx.log.error("comms.task_crashed", task=what, error=type(exc).__name__)

        task = asyncio.create_task(coro, name=f"plugin:comms:{what}")
        task.add_done_callback(seen)
        return task

    async def stop(self) -> None:
        # A task that crashed was seen when it did (_watched): stop only ends and awaits.
        if self._commands_task is not None:
            self._commands_task.cancel()
            await asyncio.wait([self._commands_task])
        if self.sender is None or self._task is None:
            return
        self.sender.close()
        done, _ = await asyncio.wait([self._task], timeout=DRAIN_TIMEOUT_S)
        if not done:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._ctx.log.warning("comms.unsent_at_stop", messages=len(self.sender))

    def _send(self, event: str, message: Message) -> None:
        if event in self.settings.events and self.sender is not None:
            self.sender.offer(message)

    async def on_incident(self, incident: ControlAction) -> None:
        severity = incident.detail.get("severity", "warning")
        if SEVERITIES.index(severity) < SEVERITIES.index(self.settings.min_severity):
            return
        self._send("incident", Message(message_text(self.settings.title, incident), "incident",
                                       {k: v for k, v in incident.detail.items()
                                        if isinstance(v, (str, int, float, bool))}))

    async def on_fill(self, fill: Fill) -> None:
        if not getattr(fill, "reduce_only", False):
            self._send("entry", entry_message(self.settings.title, fill))

    async def on_trade(self, trade: ClosedTradeView) -> None:
        self._closed_today.append(trade)
        self._trades.append(trade)
        self._send("exit", exit_message(self.settings.title, trade))

    async def on_tick(self, tick: Tick) -> None:
        day = datetime.fromtimestamp(tick.wall, tz=timezone.utc).strftime("%Y-%m-%d")
        if self._day is None:
            self._day = day
            return
        if day != self._day:
            ended, trades = self._day, self._closed_today
            self._day, self._closed_today = day, []
            self._send("daily", daily_message(self.settings.title, ended, trades))

    def status(self) -> dict[str, Any]:
        s = self.sender
        if s is None:
            return {"format": self.settings.format, "started": False}
        return {"format": self.settings.format, "crashed": dict(self.crashed),
                "queued": len(s), "sent": s.sent,
                "gave_up": s.gave_up, "rejected": s.rejected, "dropped": s.dropped,
                "rate_limited": s.rate_limited, "events": list(self.settings.events),
                **({"commands_answered": self.commands.answered,
                    "commands_refused": self.commands.refused}
                   if self.commands is not None else {})}
