"""Comms (M22) against a real webhook receiver on loopback: delivery, payload shapes, retry
with backoff, giving up cleanly, a bounded queue, and secrets that never reach the logs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from dolphind_comms import CommsPlugin
from dolphind_comms.plugin import DRAIN_TIMEOUT_S
from dolphind.plugins import backoff_delay
from dolphind_comms.payloads import message_text, payload
from tests.conftest import eventually
from tests.unit.plugins.conftest import Rig

SECRET_PATH = "/hooks/T0/B0/s3cr3t-path-token"


@dataclass
class Receiver:
    """A loopback webhook: answers with the scripted statuses, then 200."""

    statuses: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.headers.append(dict(request.headers))
        self.received.append({"body": json.loads(body), "raw": body})
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok" if status == 200 else "nope")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post(SECRET_PATH, rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}{SECRET_PATH}"
    yield rec
    await runner.cleanup()


FAST = {"max_attempts": 3, "backoff_initial_s": 0.01, "backoff_max_s": 0.05,
        "backoff_jitter": 0.0, "timeout_s": 2.0}


async def _comms(rig: Rig, env: dict[str, str], settings: dict[str, Any]) -> CommsPlugin:
    p = CommsPlugin(environ=env)
    assert p.validate(settings) == []
    await p.start(rig.ctx("comms", settings))
    return p


def _incident(rig: Rig, severity: str = "critical", kind: str = "governor_halt") -> Any:
    return rig.control.raise_incident("governor", kind, "max_drawdown: drawdown 12% >= 10%",
                                      severity=severity)


def test_settings_need_the_env_var_and_name_the_key() -> None:
    p = CommsPlugin(environ={})
    assert p.validate({}) == ["url_env: environment variable DOLPHIND_COMMS_WEBHOOK_URL is not set"]
    p = CommsPlugin(environ={"HOOK": "ftp://x"})
    assert p.validate({"url_env": "HOOK", "format": "telegram", "max_attempts": 0}) == [
        "url_env: environment variable HOOK does not hold an http(s) URL",
        "chat_id_env: telegram needs an environment variable holding the chat id",
        "max_attempts: must be >= 1"]
    assert p.validate({"format": "teams"})[0].startswith("format: must be one of")


def test_payload_shapes_and_backoff() -> None:
    assert payload("slack", "hi") == {"text": "hi"}
    assert payload("discord", "x" * 3000) == {"content": "x" * 2000}
    assert payload("telegram", "hi", "42") == {"chat_id": "42", "text": "hi",
                                                 "disable_web_page_preview": True}
    # The sender's retry n waits backoff_delay(n - 1, ...): the daemon's one helper, which
    # draws in [d/2, d]; a generator that draws the top shows the doubling and the cap.
    top, bottom = _Draw(top=True), _Draw(top=False)
    assert [backoff_delay(a - 1, 1.0, 10.0, top) for a in (1, 2, 3, 4, 5)] == \
        [1.0, 2.0, 4.0, 8.0, 10.0]
    assert backoff_delay(0, 1.0, 10.0, bottom) == pytest.approx(0.5)
    assert backoff_delay(4, 1.0, 10.0, bottom) == pytest.approx(5.0)


class _Draw(random.Random):
    """Always the top (or the bottom) of the range asked for."""

    def __init__(self, top: bool) -> None:
        super().__init__(0)
        self.top = top

    def uniform(self, a: float, b: float) -> float:
        return b if self.top else a


async def test_delivers_incidents_in_the_chosen_shape(rig: Rig, receiver: Receiver) -> None:
    env = {"HOOK": receiver.url, "SIGN": "k3y"}
    p = await _comms(rig, env, {"url_env": "HOOK", "secret_env": "SIGN", "format": "discord",
                                "title": "dolphind-test", **FAST})
    inc = _incident(rig)
    await p.on_incident(inc)
    await p.on_incident(_incident(rig, severity="info"))  # below min_severity: not sent
    await eventually(lambda: p.sender.sent == 1, what="delivered")
    assert receiver.received[0]["body"] == {"content": message_text("dolphind-test", inc)}
    assert "governor_halt" in receiver.received[0]["body"]["content"]
    # The signature lets the receiver check the body came from us.
    want = hmac.new(b"k3y", receiver.received[0]["raw"], hashlib.sha256).hexdigest()
    assert receiver.headers[0]["X-Dolphind-Signature"] == f"sha256={want}"
    assert rig.sample("dolphind_m22_messages_total", {"outcome": "sent"}) == 1
    await p.stop()


async def test_retries_a_failing_webhook_then_delivers(rig: Rig, receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    p = await _comms(rig, {"HOOK": receiver.url}, {"url_env": "HOOK", **FAST})
    await p.on_incident(_incident(rig))
    await eventually(lambda: p.sender.sent == 1, what="delivered on the third try")
    assert len(receiver.received) == 3
    assert rig.sample("dolphind_m22_attempts_total", {"result": "http_error"}) == 2
    assert rig.sample("dolphind_m22_attempts_total", {"result": "ok"}) == 1
    assert [e for e in rig.log.events() if e.startswith("comms.")].count("comms.retry") == 2
    await p.stop()


async def test_gives_up_cleanly_after_n_tries(rig: Rig, receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    p = await _comms(rig, {"HOOK": receiver.url}, {"url_env": "HOOK", **FAST})
    await p.on_incident(_incident(rig))
    await eventually(lambda: p.sender.gave_up == 1, what="given up")
    assert len(receiver.received) == 3  # max_attempts, no more
    assert rig.sample("dolphind_m22_messages_total", {"outcome": "gave_up"}) == 1
    # The next message still goes out: giving up on one is not giving up on all.
    receiver.statuses = []
    await p.on_incident(_incident(rig))
    await eventually(lambda: p.sender.sent == 1, what="next message delivered")
    await p.stop()
    assert p.status()["gave_up"] == 1


async def test_a_client_error_is_not_retried(rig: Rig, receiver: Receiver) -> None:
    receiver.statuses = [404]
    p = await _comms(rig, {"HOOK": receiver.url}, {"url_env": "HOOK", **FAST})
    await p.on_incident(_incident(rig))
    await eventually(lambda: p.sender.rejected == 1, what="rejected")
    assert len(receiver.received) == 1
    await p.stop()


async def test_an_unreachable_webhook_never_blocks_and_secrets_stay_out_of_logs(
        rig: Rig, receiver: Receiver) -> None:
    dead = receiver.url.replace(receiver.url.split(":")[2].split("/")[0], "9")  # port 9: closed
    p = await _comms(rig, {"HOOK": dead, "SIGN": "k3y"},
                     {"url_env": "HOOK", "secret_env": "SIGN", "queue_size": 2, **FAST})
    for _ in range(5):  # more than the queue holds: the oldest are dropped, nothing waits
        await p.on_incident(_incident(rig))
    await eventually(lambda: p.sender.gave_up + p.sender.dropped == 5, what="all accounted for")
    assert p.sender.dropped >= 2
    assert rig.sample("dolphind_m22_attempts_total", {"result": "network_error"}) >= 3
    await p.stop()
    logged = rig.log.text()
    assert SECRET_PATH not in logged and "s3cr3t" not in logged and "k3y" not in logged
    assert "comms.gave_up" in logged


async def test_stop_does_not_wait_forever_on_a_failing_webhook(rig: Rig,
                                                               receiver: Receiver) -> None:
    receiver.statuses = [500] * 100
    p = await _comms(rig, {"HOOK": receiver.url},
                     {"url_env": "HOOK", **{**FAST, "max_attempts": 50, "backoff_max_s": 5.0,
                                            "backoff_initial_s": 1.0}})
    await p.on_incident(_incident(rig))
    await eventually(lambda: len(receiver.received) >= 1, what="first attempt")
    t0 = time.monotonic()
    await p.stop()  # bounded by the drain timeout, not by 50 retries
    assert time.monotonic() - t0 < DRAIN_TIMEOUT_S + 1.0
    assert p._task is not None and p._task.done()
    assert "comms.unsent_at_stop" in rig.log.events()
    assert p.sender.sent == 0 and p.sender.gave_up == 0


# --- trade notifications (issue 21) -------------------------------------------------------

T0 = 1_746_885_600_000_000_000  # 2025-05-10 14:00 UTC


def _fill(reduce_only: bool) -> Any:
    from dolphind.events import Fill
    return Fill("f1", "c1", "SUIUSDT", "BUY" if reduce_only else "SELL", 292.088, 3.9703, 0.23,
                "MAKER", T0, reduce_only=reduce_only)


def _trade(pnl: float = 10.034060146195046) -> Any:
    from dolphind.report.model import ClosedTrade
    return ClosedTrade("000001-SUIUSDT", "SUIUSDT", "SHORT", T0, T0 + 18 * 60 * 10**9, 3.9703,
                       3.93318648, 292.088, 1159.6769864, 0.99, 0.806, pnl, "FIXED_TP", 18)


async def test_entry_exit_and_daily_reach_a_generic_webhook(rig: Rig, receiver: Receiver) -> None:
    p = await _comms(rig, {"HOOK": receiver.url},
                     {"url_env": "HOOK", "format": "webhook", "title": "t", **FAST})
    await p.on_tick(rig.clock.tick())  # the first tick only notes the day
    await p.on_fill(_fill(reduce_only=False))
    await p.on_fill(_fill(reduce_only=True))  # an exit fill: the closed trade says it
    await p.on_trade(_trade())
    await p.on_trade(_trade(-3.0))
    rig.clock.advance(86_400)  # the UTC day ends
    await p.on_tick(rig.clock.tick())
    await eventually(lambda: len(receiver.received) == 4)
    entry, exit_, loss, daily = (r["body"] for r in receiver.received)
    assert entry["event"] == "entry" and entry["data"]["side"] == "SHORT"
    assert "ENTRY SHORT SUIUSDT: 292.088 @ 3.9703 (1,159.68 USDT)" in entry["text"]
    assert exit_["event"] == "exit" and exit_["data"]["pnl_usdt"] == 10.034060146195046
    assert "EXIT SHORT SUIUSDT (FIXED_TP)" in exit_["text"] and "PnL +10.03 USDT (+0.87%)" \
        in exit_["text"] and "held 0h18m" in exit_["text"]
    assert "PnL -3.00 USDT" in loss["text"]
    assert daily["event"] == "daily" and daily["data"]["day"] == "2026-01-01"
    assert daily["data"]["trades"] == 2 and daily["data"]["pnl_usdt"] == 7.034060146195046
    assert "2026-01-01: 2 trades closed, W/D/L 1/0/1, PnL +7.03 USDT" in daily["text"]
    await p.stop()


async def test_events_choose_what_is_sent(rig: Rig, receiver: Receiver) -> None:
    p = await _comms(rig, {"HOOK": receiver.url},
                     {"url_env": "HOOK", "format": "slack", "events": ["exit"], **FAST})
    await p.on_fill(_fill(reduce_only=False))
    await p.on_incident(_incident(rig))
    await p.on_trade(_trade())
    await eventually(lambda: len(receiver.received) >= 1)
    await p.stop()
    assert len(receiver.received) == 1 and "EXIT" in receiver.received[0]["body"]["text"]
    assert CommsPlugin(environ={"H": receiver.url}).validate(
        {"url_env": "H", "events": ["exit", "lunch"], "max_per_minute": 0}) == [
        "events: unknown ['lunch']; choose from ['entry', 'exit', 'daily', 'incident']",
        "max_per_minute: must be in 1..600"]


async def test_rate_limited_to_max_per_minute_and_nothing_lost(rig: Rig,
                                                               receiver: Receiver) -> None:
    now = [0.0]
    p = CommsPlugin(environ={"HOOK": receiver.url}, clock=lambda: now[0])
    settings = {"url_env": "HOOK", "max_per_minute": 2, **FAST}
    await p.start(rig.ctx("comms", settings))
    for k in range(5):
        await p.on_trade(_trade(float(k + 1)))
    await eventually(lambda: len(receiver.received) == 2)
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 2  # the third waits for the window
    assert p.sender is not None and p.sender.rate_limited >= 1 and len(p.sender) == 3
    now[0] = 60.0  # a minute later: two more
    await eventually(lambda: len(receiver.received) == 4, timeout=5)
    now[0] = 120.0
    await eventually(lambda: len(receiver.received) == 5, timeout=5)
    texts = [r["body"]["text"] for r in receiver.received]
    assert [t.split("PnL ")[1][:5] for t in texts] == ["+1.00", "+2.00", "+3.00", "+4.00",
                                                      "+5.00"]  # in order
    await p.stop()


async def test_incidents_jump_a_queue_of_trade_messages(rig: Rig, receiver: Receiver) -> None:
    now = [0.0]
    p = CommsPlugin(environ={"HOOK": receiver.url}, clock=lambda: now[0])
    await p.start(rig.ctx("comms", {"url_env": "HOOK", "max_per_minute": 1, **FAST}))
    for k in range(3):
        await p.on_trade(_trade(float(k + 1)))
    await eventually(lambda: len(receiver.received) == 1)
    await p.on_incident(_incident(rig))
    await eventually(lambda: p.sender is not None and len(p.sender) == 3)
    now[0] = 60.0
    await eventually(lambda: len(receiver.received) == 2, timeout=5)
    assert "governor_halt" in receiver.received[1]["body"]["text"]
    await p.stop()


# --- Telegram commands ----------------------------------------------------------------------

BOT = "/bot123:ABC-secret"


@dataclass
class FakeTelegram:
    """getUpdates hands out the queued updates once (after the scripted ``answers``, each a
    (status, JSON body) given once); sendMessage records what was sent."""

    updates: list[dict[str, Any]] = field(default_factory=list)
    answers: list[tuple[int, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    base: str = ""
    next_id: int = 100

    def say(self, chat: int, text: str) -> None:
        self.next_id += 1
        self.updates.append({"update_id": self.next_id,
                             "message": {"chat": {"id": chat}, "text": text}})

    async def get_updates(self, request: web.Request) -> web.Response:
        if self.answers:
            status, body = self.answers.pop(0)
            return web.json_response(body, status=status)
        offset = int(request.query.get("offset", "0"))
        fresh = [u for u in self.updates if u["update_id"] >= offset]
        if not fresh:
            await asyncio.sleep(0.05)  # a short long-poll
        return web.json_response({"ok": True, "result": fresh})

    async def send(self, request: web.Request) -> web.Response:
        self.sent.append(await request.json())
        return web.json_response({"ok": True})


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    tg = FakeTelegram()
    app = web.Application()
    app.router.add_get(BOT + "/getUpdates", tg.get_updates)
    app.router.add_post(BOT + "/sendMessage", tg.send)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    tg.base = f"http://127.0.0.1:{port}{BOT}"
    yield tg
    await runner.cleanup()


async def test_telegram_commands_answer_only_the_allowlisted_chat(rig: Rig,
                                                                  telegram: FakeTelegram) -> None:
    env = {"TG_URL": telegram.base + "/sendMessage", "TG_CHAT": "42"}
    p = await _comms(rig, env, {"url_env": "TG_URL", "format": "telegram", "chat_id_env": "TG_CHAT",
                                "commands": True, "events": ["incident"], "title": "t", **FAST})
    await p.on_trade(_trade())
    await p.on_trade(_trade(-3.0))
    telegram.say(42, "/profit")
    telegram.say(42, "/daily@dolphind_bot")
    telegram.say(7, "/halt intruder")  # another chat: ignored
    await eventually(lambda: len(telegram.sent) == 2)
    assert telegram.sent[0]["chat_id"] == "42"
    assert "2 trades since comms started: W/D/L 1/0/1, PnL +7.03 USDT" in telegram.sent[0]["text"]
    assert "2025-05-10: 2 trades closed" in telegram.sent[1]["text"]
    assert rig.control.halted is False and p.commands is not None and p.commands.refused == 1
    telegram.say(42, "/status")
    await eventually(lambda: len(telegram.sent) == 3)
    assert "[t] trading;" in telegram.sent[2]["text"]
    telegram.say(42, "/halt news at 14:00")
    await eventually(lambda: len(telegram.sent) == 4)
    assert rig.control.halted and rig.control.halt_reason == "news at 14:00"
    assert "comms:telegram" in rig.control.halt_holds
    assert "HALTED: news at 14:00" in telegram.sent[3]["text"]
    telegram.say(42, "/resume")  # not a chat command: only the operator resumes
    await eventually(lambda: len(telegram.sent) == 5)
    assert rig.control.halted and "commands:" in telegram.sent[4]["text"]
    await p.stop()
    logged = json.dumps(rig.log.records)
    assert "ABC-secret" not in logged and "intruder" not in logged
    assert CommsPlugin(environ=env).validate({"url_env": "TG_URL", "commands": True}) == [
        'commands: only with format = "telegram"']


async def test_a_crashed_command_poller_is_logged_counted_and_shown(
        rig: Rig, telegram: FakeTelegram) -> None:
    """An answer the poller does not expect ends it: /halt from the chat no longer works, so
    the crash is logged (by type: a message may carry the bot token), counted and shown."""
    env = {"TG_URL": telegram.base + "/sendMessage", "TG_CHAT": "42"}

    telegram.answers.append((200, ["not", "an", "update", "list"]))
    p = await _comms(rig, env, {"url_env": "TG_URL", "format": "telegram", "chat_id_env": "TG_CHAT",
                                "commands": True, "events": ["incident"], "title": "t", **FAST})
    await eventually(lambda: p.crashed, what="the poller's crash seen")
    assert p.crashed == {"commands": "AttributeError"} and p.status()["crashed"] == p.crashed
    assert rig.sample("dolphind_m22_task_crashes_total", {"task": "commands"}) == 1
    assert ("error", "comms.task_crashed", {"task": "commands", "error": "AttributeError"}) \
        in rig.log.records
    await p.stop()  # the crash was seen: stop ends the rest quietly
    assert rig.sample("dolphind_m22_task_crashes_total", {"task": "sender"}) == 0


async def test_failed_polls_are_retried_after_a_growing_back_off(telegram: FakeTelegram) -> None:
    from dolphind_comms.commands import CommandPoller
    from tests.unit.plugins.conftest import RecordingLog

    telegram.answers.extend([(502, {"ok": False})] * 4)
    log = RecordingLog()
    poller = CommandPoller(telegram.base + "/sendMessage", "42", lambda: "t", lambda m: None,
                           lambda: None, None, lambda: [], log, poll_timeout_s=1,
                           error_pause_s=0.01, error_pause_max_s=0.03)
    task = asyncio.create_task(poller.run())
    await eventually(lambda: not telegram.answers and poller.errors == 4,
                     what="four failed polls")
    task.cancel()
    await asyncio.wait([task])
    waits = [kw["retry_in_s"] for _, e, kw in log.records if e == "comms.commands_poll_failed"]
    # [initial/2, initial], doubling, capped at the max: jittered, never a fixed pause.
    assert 0.005 <= waits[0] <= 0.01 and 0.01 <= waits[1] <= 0.02
    assert 0.015 <= waits[2] <= 0.03 and 0.015 <= waits[3] <= 0.03
