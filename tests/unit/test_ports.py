"""The typed seams between stages: execution's event fan-out, the book port, the stage owner."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dolphind.alpha.stage import NO_BOOK
from dolphind.app import kernels as kernels_mod
from dolphind.app.feeds import book_port
from dolphind.events import Fill, Order, PositionUpdate
from dolphind.ports import ExecutionEventFanout, ExecutionEvents, NoExecutionEvents
from dolphind.stage import Stage, StageOwner, offered_stages

ORDER = Order("c1", "i1", "BTCUSDT", "SELL", 1.0, "MARKET", 0.0, False, "entry", "NEW")
FILL = Fill("f1", "c1", "BTCUSDT", "SELL", 1.0, 100.0, 0.04, "TAKER", 1)
POSITION = PositionUpdate("BTCUSDT", -1.0, 100.0, 0.0, 1)


class Recorder:
    def __init__(self, name: str, seen: list[tuple[str, str, Any]]) -> None:
        self.name, self.seen = name, seen

    def on_order(self, order: Order) -> None:
        self.seen.append((self.name, "order", order))

    def on_fill(self, fill: Fill) -> None:
        self.seen.append((self.name, "fill", fill))

    def on_position(self, update: PositionUpdate) -> None:
        self.seen.append((self.name, "position", update))

    def on_funding(self, payment: Any) -> None:
        self.seen.append((self.name, "funding", payment))


def test_every_event_reaches_every_listener_in_the_order_they_were_added() -> None:
    seen: list[tuple[str, str, Any]] = []
    fanout = ExecutionEventFanout(Recorder("ledger", seen))
    fanout.add(Recorder("trades", seen))
    fanout.on_order(ORDER)
    fanout.on_fill(FILL)
    fanout.on_position(POSITION)
    assert seen == [("ledger", "order", ORDER), ("trades", "order", ORDER),
                    ("ledger", "fill", FILL), ("trades", "fill", FILL),
                    ("ledger", "position", POSITION), ("trades", "position", POSITION)]


def test_every_listener_the_wiring_adds_has_every_execution_event() -> None:
    """The ledger, the trade log and the plugins' listener each take all four events (a
    missing one would fail at the first fill, mid-trade, not at start)."""
    from dolphind.app.pipeline import _PluginExecutionListener
    from dolphind.execution.ledger import Ledger
    from dolphind.tradelog import TradeLog

    events = [name for name in vars(ExecutionEvents) if name.startswith("on_")]
    assert events == ["on_order", "on_fill", "on_position", "on_funding"]
    for listener in (Ledger, TradeLog, _PluginExecutionListener, NoExecutionEvents,
                     ExecutionEventFanout):
        missing = [name for name in events if not callable(getattr(listener, name, None))]
        assert not missing, f"{listener.__name__} lacks {missing}"


def test_a_feed_without_depth_gives_the_explicit_no_book_port() -> None:
    port = book_port(object())  # type: ignore[arg-type] - not the live feed: a replay
    assert port is NO_BOOK and port() is None


class Loop:
    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self) -> None:
        return None


class Venue:
    def __init__(self) -> None:
        self.loops = [Loop("venue.user_stream"), Loop("venue.rest_poll")]

    def stages(self) -> list[Stage]:
        return list(self.loops)


def test_the_stages_components_offer_are_collected_and_others_ignored() -> None:
    venue = Venue()
    assert isinstance(venue, StageOwner) and not isinstance(object(), StageOwner)
    assert offered_stages(object(), venue) == venue.loops


async def test_a_failed_start_stops_the_kernel_compile_before_the_error_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    compiling = asyncio.Event()
    ended: list[str] = []

    async def slow_compile(params: Any) -> None:
        compiling.set()
        try:
            await asyncio.sleep(60)
        finally:
            ended.append("compile")

    monkeypatch.setattr(kernels_mod, "compile_kernels", slow_compile)
    with pytest.raises(KeyError):  # the body's own error, not wrapped in a group
        async with kernels_mod.kernels_warm(params=None):
            await compiling.wait()
            raise KeyError("venue refused")
    assert ended == ["compile"]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "warmup"]


async def test_a_clean_start_waits_for_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []

    async def compile_(params: Any) -> None:
        await asyncio.sleep(0.01)
        done.append("compiled")

    monkeypatch.setattr(kernels_mod, "compile_kernels", compile_)
    async with kernels_mod.kernels_warm(params=None):
        assert not done
    assert done == ["compiled"]


def test_a_posture_change_is_audited_before_the_plugins_hear_of_it() -> None:
    from dolphind.app.pipeline import _AlphaListener
    from dolphind.plugins import PostureChange

    heard: list[tuple[str, Any]] = []

    class Audit:
        def record(self, kind: str, **fields: Any) -> None:
            heard.append(("audit", (kind, fields)))

    class Plugins:
        def on_posture(self, change: PostureChange) -> None:
            heard.append(("plugins", change))

        def on_intent(self, intent: Any) -> None:
            heard.append(("plugins", intent))

    listener = _AlphaListener(Audit(), Plugins())  # type: ignore[arg-type]
    listener.on_posture("TURTLE", "APEX", 0.5, 42)
    listener.on_intent("intent")
    assert heard == [
        ("audit", ("alpha.posture_changed",
                   {"posture": "TURTLE", "previous": "APEX", "rm": 0.5, "scan_number": 42})),
        ("plugins", PostureChange("TURTLE", "APEX", 0.5, 42)),
        ("plugins", "intent")]
