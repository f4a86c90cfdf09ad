"""`dolphind top` without a daemon: the SSE parser, and the panels drawn from a scripted stream
(the real stream is tested end to end in tests/integration/test_top.py)."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from dolphind.tui.app import TopApp
from dolphind.tui.source import Event, parse_sse


def test_parse_sse() -> None:
    assert parse_sse(b'event: tick\ndata: {"a": 1}') == Event("tick", {"a": 1})
    assert parse_sse(b": keep-alive") is None
    assert parse_sse(b'data: [1, 2]') == Event("message", [1, 2])


SNAPSHOT: dict[str, Any] = {
    "mode": "paper", "venue": "binance", "network": "testnet", "feed_kind": "binance",
    "ready": False, "can_trade": False, "halted": True, "halted_by": {"governor": "dd"},
    "posture": "STALKER", "rm": 0.5, "equity": 9_000.0, "drawdown": 0.12, "exposure": 150.0,
    "positions": [{"symbol": "ETHUSDT", "side": "SHORT", "qty": -0.1, "avg_price": 1500.0,
                   "mark": 1490.0, "notional_usdt": -149.0, "unrealised_pnl_usdt": 1.0}],
    "orders": [{"symbol": "ETHUSDT", "side": "SELL", "qty": 0.1, "state": "rejected",
                "avg_fill_price": None, "reduce_only": False, "reason": "VEL_DIV_SHORT",
                "reject_reason": "risk:order_rate"}],
    "trades": [], "threshold": -0.02,
    "scan": {"scan_number": 41, "n_symbols": 4, "warm": True, "vel_div": -0.03, "fallbacks": 0},
    "stages": {"feed": {"running": False, "finished": False, "restarts": 2, "stalled": False,
                        "backlog": 0, "last_beat_age_s": 12.5}},
    "plugins": [{"name": "governor", "enabled": True, "healthy": True, "failures_total": 0}],
}


async def scripted(base_url: str) -> AsyncIterator[Event]:
    yield Event("hello", {"snapshot": SNAPSHOT, "points": [[1.0, 40, -0.01], [2.0, 41, -0.03]],
                          "feed": [{"kind": "incident", "sub": "critical", "ts": 60.0,
                                    "text": "drawdown: 12% past the limit"}]})
    yield Event("error", "ClientConnectorError: refused")
    await asyncio.Event().wait()


async def test_panels_draw_a_scripted_stream() -> None:
    app = TopApp("http://127.0.0.1:1", source=scripted)
    async with app.run_test(size=(160, 48)) as pilot:
        for _ in range(50):
            if not app.connected and app.events_seen == 2:
                break
            await pilot.pause(0.05)
        assert app.snapshot is not None and list(app.points) == [-0.01, -0.03]
        assert app.feed_lines == ["00:01:00 INCIDENT drawdown: 12% past the limit"]
        assert app.query_one("#positions").row_count == 1
        assert app.query_one("#stages").row_count == 2  # the stage and the plugin
        # The connection dropped after the hello: the strip says so instead of stale numbers.
        assert "not connected to http://127.0.0.1:1" in str(app.query_one("#strip").render())
        app.apply(Event("tick", {"snapshot": SNAPSHOT, "points": [], "feed": []}))
        strip = str(app.query_one("#strip").render())
        assert "binance testnet" in strip and "NOT READY" in strip
        assert "HALTED by governor" in strip and "12.00%" in strip


async def test_the_bus_line_from_scripted_listeners() -> None:
    from dolphind.config import StateBusConfig

    async def bus_events(cfg: StateBusConfig) -> AsyncIterator[Event]:
        yield Event("bus", {"map": "DOLPHIN_SAFETY",
                            "value": {"posture": "TURTLE", "Rm": 0.25, "halted": True}})
        yield Event("bus", {"map": "DOLPHIN_STATE_BLUE",
                            "value": {"capital": 9_500.0, "drawdown": 0.05, "trades": 7}})
        raise ConnectionError("member gone")

    cfg = StateBusConfig(kind="hazelcast", namespace="acct-1")
    app = TopApp("http://127.0.0.1:1", source=scripted, bus=cfg, bus_source=bus_events)
    async with app.run_test(size=(160, 48)) as pilot:
        for _ in range(50):
            if app.bus_error:
                break
            await pilot.pause(0.05)
        assert app.bus_values["DOLPHIN_SAFETY"]["posture"] == "TURTLE"
        line = str(app.query_one("#bus").render())
        assert "state bus dolphin/acct-1" in line
        assert "not connected: ConnectionError: member gone" in line, line
        app.apply_bus(Event("bus", {"map": "DOLPHIN_META_HEALTH", "value": {"status": "GREEN"}}))
        line = str(app.query_one("#bus").render())
        assert "posture TURTLE Rm 0.250  HALTED  capital 9,500.00  drawdown 5.00%" in line, line
        assert "trades 7  health GREEN" in line
