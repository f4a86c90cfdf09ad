"""The Command Center's hub on the real ops app with a stand-in pipeline: the page and its files
are served, the snapshot reads the daemon's views, the SSE stream says hello, pushes control
actions at once and turns new scans / decisions / closed trades into points and feed items."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from dolphind.config import Config
from dolphind.ops import command_center as cc_mod
from dolphind.ops.command_center import CommandCenter, action_item, intent_item, sse_message
from dolphind.control import Control
from dolphind.ops.http import TOKEN_HEADER, build_app
from dolphind.telemetry.metrics import Metrics
from dolphind.report.model import ClosedTrade


class FakePipeline:
    """The parts of app.Pipeline the hub reads (the real ones are exercised end to end by
    tests/integration/test_command_center.py)."""

    def __init__(self) -> None:
        self.scan_last: dict[str, Any] | None = None
        self.intents: list[dict[str, Any]] = []
        self.ledger = types.SimpleNamespace(closed=[])
        self.execution = types.SimpleNamespace(
            positions_view=lambda: {"positions": [], "equity_usdt": 10_000.0,
                                    "capital_usdt": 10_000.0, "drawdown": 0.0,
                                    "gross_exposure_usdt": 0.0},
            orders_view=lambda: {"working": [], "recent": []})
        self.status_parts = {
            "scan": lambda: {"scans": 1, "warm": True, "last": self.scan_last},
            "alpha": lambda: {"posture": "APEX", "rm": 0.97, "last_intents": list(self.intents)},
            "execution": lambda: {"venue_breaker": 0, "audit": {"backlog": 0}},
        }


def _daemon(metrics: Metrics) -> Any:
    control = Control(metrics, lambda cause: None)
    d = types.SimpleNamespace(
        control=control, metrics=metrics, config=Config(), pipeline=FakePipeline(),
        readiness=lambda: (True, {"feed": "ok"}),
        health_summary=lambda: {"level": "GREEN", "score": 1.0},
        health=types.SimpleNamespace(snapshot=lambda: {"feed": {"running": True}}),
        plugins=types.SimpleNamespace(status=lambda: []))
    return d


def _scan(n: int, vd: float | None) -> dict[str, Any]:
    return {"scan_number": n, "timestamp_ns": n * 60_000_000_000, "n_symbols": 12, "vel_div": vd}


def _entry(n: int) -> dict[str, Any]:
    return {"intent_id": f"{n}-BTCUSDT-entry", "ts_ns": n * 60_000_000_000, "symbol": "BTCUSDT",
            "side": "SELL", "notional_usdt": 1234.5, "reduce_only": False,
            "reason": "VEL_DIV_SHORT", "gates": {"vel_div": -0.031}}


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def test_poll_turns_new_state_into_points_and_items_once(metrics: Metrics) -> None:
    d = _daemon(metrics)
    hub = CommandCenter(d, wall=lambda: 1.0)
    d.pipeline.scan_last = _scan(7, -0.01)
    d.pipeline.intents.append(_entry(7))
    points, items = hub.poll()
    assert points == [(420.0, 7, -0.01)]
    assert [i["text"] for i in items] == ["ENTRY SELL BTCUSDT 1,234 USDT (VEL_DIV_SHORT)"]
    assert items[0]["scan"] == 7 and items[0]["vel_div"] == -0.031
    assert hub.poll() == ([], [])  # nothing new: nothing twice
    d.pipeline.scan_last = _scan(8, float("nan"))  # a cold scan travels as null
    d.pipeline.ledger.closed.append(ClosedTrade("t1", "BTCUSDT", "SHORT", 1, 2, 100.0, 99.0, 1.0,
                                                100.0, 1.0, 0.1, 0.9, "FIXED_TP", 3))
    points, items = hub.poll()
    assert points == [(480.0, 8, None)]
    assert items[0]["kind"] == "trade" and "PnL +0.90 USDT" in items[0]["text"]
    snap = hub.snapshot()
    assert snap["can_trade"] is True and snap["threshold"] == -0.02
    assert snap["trades"][0]["trade_id"] == "t1"


def test_control_actions_reach_the_feed_with_their_cause(metrics: Metrics) -> None:
    d = _daemon(metrics)
    hub = CommandCenter(d)
    d.control.halt("http:127.0.0.1", "lunch")
    d.control.raise_incident("guardian", "feed_stall", "no bars for 30 s", severity="critical")
    d.control.resume("http:127.0.0.1")
    texts = [(i["kind"], i["sub"], i["text"]) for i in hub.feed]
    assert texts == [("control", "halt", "halt by http:127.0.0.1: lunch"),
                     ("incident", "critical", "feed_stall: no bars for 30 s"),
                     ("control", "resume", "resume by http:127.0.0.1: lifted http:127.0.0.1")]
    assert [i["seq"] for i in hub.feed] == [1, 2, 3]


def test_items_and_messages_are_plain_json() -> None:
    assert intent_item({"intent_id": "9-ETHUSDT-exit", "side": "BUY", "symbol": "ETHUSDT",
                        "notional_usdt": 10.0, "reduce_only": True, "reason": "MAX_HOLD",
                        "ts_ns": 0})["sub"] == "exit"
    msg = sse_message("feed", [{"text": "a\nb"}])
    assert msg.startswith(b"event: feed\ndata: ") and msg.endswith(b"\n\n")
    assert msg.count(b"\n") == 3  # a newline in the data stays escaped inside the JSON
    assert orjson.loads(msg.split(b"data: ", 1)[1]) == [{"text": "a\nb"}]
    assert action_item(Control(Metrics(), lambda c: None).flatten("op", "eod"))["text"] \
        == "flatten by op: eod"


async def test_page_files_snapshot_and_stream_on_the_ops_app(metrics: Metrics,
                                                             monkeypatch: Any) -> None:
    monkeypatch.setattr(cc_mod, "TICK_S", 0.01)
    d = _daemon(metrics)
    d.pipeline.scan_last = _scan(3, -0.02)
    async with TestClient(TestServer(build_app(d, "s3cret"))) as client:
        page = await client.get("/")
        assert page.status == 200 and "Command Center" in await page.text()
        for name in ("app.js", "style.css", "uPlot.iife.min.js", "uPlot.min.css"):
            r = await client.get(f"/static/{name}")
            assert r.status == 200 and len(await r.read()) > 100, name
        assert (await client.get("/static/nope.js")).status == 404
        assert (await client.get("/static/..%2Fhttp.py")).status == 404
        snap = await (await client.get("/ui/snapshot")).json()
        assert snap["mode"] == "paper" and snap["scan"]["scan_number"] == 3

        stream = await client.get("/ui/events")
        assert stream.headers["Content-Type"] == "text/event-stream"

        async def next_event() -> tuple[str, Any]:
            block = b""
            while not block.endswith(b"\n\n"):
                block += await stream.content.readline()
            head, data = block.strip().split(b"\n", 1)
            return head.split(b": ", 1)[1].decode(), orjson.loads(data.split(b": ", 1)[1])

        name, hello = await next_event()
        assert name == "hello" and hello["points"][0][1] == 3
        r = await client.post("/kill", json={"action": "halt"}, headers={TOKEN_HEADER: "s3cret"})
        assert r.status == 200
        seen = []
        while not any(i.get("sub") == "halt" for i in seen):
            name, data = await next_event()
            seen.extend(data if name == "feed" else data["feed"])
            if name == "tick":
                assert data["snapshot"]["mode"] == "paper"
        stream.close()


async def test_a_crashed_poller_is_seen_its_streams_end_and_the_next_page_restarts_it(
        metrics: Metrics, monkeypatch: Any) -> None:
    """A tick's error is logged and the poller goes on; a crash of the poller itself (what
    its per-tick handler does not catch) is logged, counted, ends the streams it fed (the page
    reconnects) and does not keep the next page from getting a poller."""
    monkeypatch.setattr(cc_mod, "TICK_S", 0.01)

    class Escaped(BaseException):
        pass

    hub = CommandCenter(_daemon(metrics))
    q = hub.connect()
    assert hub._poller is not None
    real_poll = hub.poll

    def poll() -> Any:
        raise Escaped("the poller broke")

    monkeypatch.setattr(hub, "poll", poll)
    while await asyncio.wait_for(q.get(), 5) is not None:
        pass  # the stream ends: None is the end of an SSE stream
    assert hub._poller is None
    get = metrics.registry.get_sample_value
    assert get("dolphind_task_crashes_total", {"task": "command-center"}) == 1
    monkeypatch.setattr(hub, "poll", real_poll)
    q = hub.connect()  # the next page: a new poller, ticking
    assert hub._poller is not None
    assert (await asyncio.wait_for(q.get(), 5)).startswith(b"event: tick")
    await hub.close()
