"""A BinanceVenue (real ccxt, real aiohttp) against the loopback Binance of tests/fakes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any, AsyncIterator

import pytest

from dolphind.supervisor import StageRunner, supervised
from dolphind.config import BinanceVenueConfig, SupervisionConfig
from dolphind.events import Fill, Order
from dolphind.venues.binance import BinanceVenue, Credentials
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics
from dolphind.statebus.memory import MemoryStateBus
from tests.conftest import eventually
from tests.fakes.binance_rest import FakeBinanceRest


@pytest.fixture
def metrics_factory():
    # Built outside the event loop: Metrics' process collector reads /proc.
    ready = [Metrics() for _ in range(3)]
    return ready.pop


@pytest.fixture
async def fake(tmp_path) -> AsyncIterator[FakeBinanceRest]:
    async with FakeBinanceRest() as f:
        # The account lease's lock directory: per test (never the host's, which other test
        # runs on this machine may be using with the same fake key).
        f.lease_dir = str(tmp_path / "leases")
        yield f


def venue_config(fake: FakeBinanceRest, **kw: Any) -> BinanceVenueConfig:
    base = dict(network="mainnet", rest_base_url=fake.rest_url, ws_base_url=fake.ws_url,
                symbols=("BTCUSDT", "ETHUSDT"), request_timeout_s=1.0, poll_interval_s=0.05,
                order_check_s=0.5, backoff_initial_s=0.05, backoff_max_s=0.2,
                lease_ttl_s=2.0, lease_renew_s=0.2, recv_window_ms=1000, unknown_grace_s=0.2,
                default_retry_after_s=1.0, default_ban_s=1.0, lease_dir=fake.lease_dir)
    base.update(kw)
    return BinanceVenueConfig(**base)


def creds(fake: FakeBinanceRest) -> Credentials:
    return Credentials(fake.api_key, fake.secret, "test")


class Events:
    """Collects what the venue emits (the execution stage's view)."""

    def __init__(self, venue: BinanceVenue) -> None:
        self.items: list[Order | Fill] = []
        self._task = asyncio.create_task(self._run(venue))

    async def _run(self, venue: BinanceVenue) -> None:
        async for ev in venue.events():
            self.items.append(ev)

    @property
    def fills(self) -> list[Fill]:
        return [e for e in self.items if isinstance(e, Fill)]

    def fills_of(self, cid: str) -> list[Fill]:
        return [f for f in self.fills if f.client_id == cid]

    def states_of(self, cid: str) -> list[str]:
        return [e.state for e in self.items if isinstance(e, Order) and e.client_id == cid]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


# Fast restarts: a test sees a crashed loop come back within its patience.
SUPERVISION = SupervisionConfig(backoff_initial_s=0.01, backoff_max_s=0.05)


@contextlib.asynccontextmanager
async def venue_loops(venue: BinanceVenue, metrics: Metrics,
                      settings: SupervisionConfig = SUPERVISION,
                      health: Health | None = None) -> AsyncIterator[StageRunner]:
    """The venue's upkeep loops running under the real supervisor (as app/venues.py runs
    them); start the stream's with ``loops.start(venue.stages())`` (the daemon's part)."""
    health = health or Health(metrics, lambda: 30.0)
    async with supervised(health, metrics, lambda: settings) as loops:
        loops.start(venue.upkeep_stages())
        yield loops


@contextlib.asynccontextmanager
async def open_venue(fake: FakeBinanceRest, metrics: Metrics, cfg: BinanceVenueConfig | None = None,
                     bus: MemoryStateBus | None = None, streams: bool = True,
                     wait_reconciled: bool = True) -> AsyncIterator[tuple[BinanceVenue, Events]]:
    cfg = cfg or venue_config(fake)
    venue = BinanceVenue(lambda: cfg, bus or MemoryStateBus(), metrics.venue, creds(fake))
    async with venue, venue_loops(venue, metrics) as loops:
        events = Events(venue)
        if streams:
            loops.start(venue.stages())
            if wait_reconciled:
                await eventually(lambda: venue.reconciled, what="venue reconciled")
        try:
            yield venue, events
        finally:
            await events.close()


def order(cid: str, side: str = "SELL", qty: float = 0.01, *, symbol: str = "BTCUSDT",
          reduce_only: bool = False, order_type: str = "MARKET", price: float = 0.0,
          ref: float = 40_000.0) -> Order:
    return Order(cid, f"intent:{cid}", symbol, side, qty, order_type, price, reduce_only,
                 "EXIT" if reduce_only else "ENTRY", "new", created_ns=0, updated_ns=0,
                 ref_price=ref)


def replace(o: Order, **kw: Any) -> Order:
    return dataclasses.replace(o, **kw)
