"""The Binance USDT-M futures venue (SPEC §5): ccxt for signed REST, aiohttp for the user stream.

``BinanceVenue`` is a thin facade over the package's parts, one job each; what a trader who
has lost money to a flaky exchange client insists on lives there:

- rest.py: signed REST through one request path; error mapping (-1021 re-measures the clock,
  429/-1003 back off, 418 stops everything until the ban ends); only the configured host.
- rate.py: the request budget from Binance's own counts; an order that would wait longer than
  ``max_order_delay_s`` is refused, never sent late.
- orders.py: never a blind resubmit; an unknown outcome is resolved by client id, and called
  "never arrived" only once Binance itself would refuse it.
- tracking.py: fills counted once; a terminal state never overtakes its fills; others'
  orders left alone.
- user_stream.py and reconcile.py: the stream is not trusted to be complete (REST polling,
  a resync and a position check after every reconnect; new entries wait until reconciled).
- account.py: one-way mode, margin type, leverage; filters.py: exchangeInfo.
- credentials.py: keys only from the environment or a secrets file, never logged, never in
  ``status()``; listenKeys redacted too. lease.py: one account, one trader.

The venue's background loops are stages, each an object with a ``name`` and ``async def
run()`` for the supervisor. The one task it keeps is the fenced lease's lock owner (lease.py:
the cluster's lock belongs to one task), watched: its crash is counted here as the
``lease_lock`` loop's. ``upkeep_stages()`` (lease renewal, clock and filters upkeep) run from
the venue's opening, by the wiring that opens it (dolphind/app/venues.py): the lease must be
renewed while the rest of the pipeline is built.
``stages()`` (the user stream, its keep-alive, REST polling) are offered to the daemon
(``dolphind.stage.StageOwner``), which runs them with the pipeline's stages and stops them
after the drain. A loop's crash is recorded here
(``dolphind_venue_loop_crashes_total``, ``venue.loop_crashed``, /status ``last_error``) and
raised on: the supervisor counts it and restarts the loop with back-off, or ends the process
on a crash loop.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping

import numpy as np
import structlog

from dolphind.config import BinanceVenueConfig
from dolphind.events import Fill, Order
from dolphind.orders.filters import SymbolFilters
from dolphind.statebus.base import StateBus
from dolphind.telemetry.metrics import VenueMetrics
from dolphind.venues.binance.account import Account
from dolphind.venues.binance.credentials import Credentials, Redactor
from dolphind.venues.binance.filters import VenueFilters
from dolphind.venues.binance.lease import Lease
from dolphind.venues.binance.orders import OrderDesk
from dolphind.venues.binance.rate import RateBudget
from dolphind.venues.binance.reconcile import Reconciler
from dolphind.venues.binance.rest import BinanceAPIError, RestClient
from dolphind.venues.binance.start import start_calls
from dolphind.venues.binance.tracking import OrderTracker, TrackedOrder
from dolphind.venues.binance.user_stream import UserStream
from dolphind.venues.marks import Marks
from dolphind.venues.venue import Venue, VenuePosition

log = structlog.get_logger("dolphind.venues.binance")


class LoopKeeper:
    """What the venue's loops share: the venue closing (every loop then ends: a closed venue
    must not renew its lease or reconnect), the loops running now, and the crash record."""

    def __init__(self, on_crash: Callable[[str, Exception], None]) -> None:
        self.closed = asyncio.Event()
        self.running: set[asyncio.Future[None]] = set()
        self.on_crash = on_crash

    async def close(self) -> None:
        """End every loop and wait until they have (before the venue lets go of the lease)."""
        self.closed.set()
        running = list(self.running)
        for body in running:
            body.cancel()
        if running:
            await asyncio.wait(running)


class VenueLoop:
    """One background loop of the venue as a supervised stage. ``run`` runs the loop until the
    venue closes (then returns: the stage is finished); a crash is recorded by the venue and
    raised on to the supervisor, which restarts the loop or ends the process."""

    __slots__ = ("name", "loop", "body", "keeper")
    is_source = False  # a background loop: the daemon stops it after the pipeline's drain
    output = None  # no stage reads from it

    def __init__(self, loop: str, body: Callable[[], Awaitable[None]],
                 keeper: LoopKeeper) -> None:
        self.name = f"binance:{loop}"  # the stage's name (supervisor, health, metrics)
        self.loop = loop  # the loop's own name (venue metrics, /status)
        self.body = body
        self.keeper = keeper

    async def run(self) -> None:
        keeper = self.keeper
        if keeper.closed.is_set():
            return
        body = asyncio.ensure_future(self.body())
        closing = asyncio.ensure_future(keeper.closed.wait())
        keeper.running.add(body)
        try:
            await asyncio.wait((body, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            body.cancel()  # a no-op once it has ended
            await asyncio.wait((body, closing))
            keeper.running.discard(body)
        if body.cancelled():
            return  # the venue closed
        exc = body.exception()
        if isinstance(exc, Exception):
            keeper.on_crash(self.loop, exc)
        if exc is not None:
            raise exc


class BinanceVenue(Venue):
    """A ``Venue`` on Binance USDT-M futures. Use as an async context manager; have the
    supervisor run ``upkeep_stages()`` from then on, and ``stages()`` once the store's orders
    are tracked (see ``reconcile_store``)."""

    name = "binance"

    def __init__(self, config: Callable[[], BinanceVenueConfig], bus: StateBus | None,
                 metrics: VenueMetrics, credentials: Credentials,
                 symbols: Callable[[], Iterable[str]] = lambda: (),
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 lease_dir: Path | None = None,
                 owns: Callable[[str], bool] = lambda client_id: True,
                 foreign_policy: Callable[[], str] = lambda: "adopt") -> None:
        self._cfg = config
        self._m = metrics
        self._creds = credentials
        self._redact = Redactor(credentials)
        self.account = credentials.account
        self.budget = RateBudget(config)
        self.last_error = ""
        self.loop_crashes: dict[str, int] = {}  # background loop -> crashes (supervised)
        self.lease = Lease(self.account, lease_dir or Path(config().lease_dir), bus,
                           lambda: self._cfg().lease_ttl_s, wall=wall,
                           on_change=self._on_lease_change,
                           on_crash=lambda exc: self._loop_crashed("lease_lock", exc))
        self._rest = RestClient(config, metrics, credentials, self.budget, self._redact,
                                self._note_error, wall)
        self._filters = VenueFilters(self._rest, metrics)
        self._book = OrderTracker(metrics, monotonic, owns, foreign_policy)
        self._account = Account(config, self._rest, self._filters, self.lease, metrics,
                                symbols, monotonic)
        self._desk = OrderDesk(config, self._rest, self._book, self._filters, self.lease,
                               metrics, symbols, monotonic, lambda: self._reconciler.reconciled)
        self._reconciler = Reconciler(config, self._book, self._desk, self.lease, metrics,
                                      monotonic)
        self._stream = UserStream(config, self._rest, self._book, self._reconciler, self.lease,
                                  metrics, self._redact, self._note_error, monotonic)
        self._marks = Marks()
        self._loops = LoopKeeper(self._loop_crashed)
        # Orders somebody else placed on the account (the tracker's, by reference: /status).
        self.foreign_orders = self._book.foreign_orders

    def _note_error(self, text: str) -> None:
        self.last_error = text

    def _on_lease_change(self, held: bool) -> None:
        self._m.lease_held.set(1 if held else 0)
        if not held:
            self._reconciler.lost(None)
        self._stream.kick.set()

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def rest_base(self) -> str:
        return self._rest.base

    @property
    def ws_base(self) -> str:
        return self._stream.ws_base

    async def __aenter__(self) -> "BinanceVenue":
        try:
            await self._open()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _open(self) -> None:
        cfg = self._cfg()
        await self._rest.open()
        log.info("venue.opening", venue=self.name, network=cfg.network, rest=self.rest_base,
                 ws=self.ws_base, account=self.account, credentials=self._creds.source)
        await start_calls(cfg, self._rest, self._filters, self._account, self.lease,
                          self._redact)

    def upkeep_stages(self) -> list[VenueLoop]:
        """Loops to run from the venue's opening: lease renewal, clock and filters upkeep."""
        return [self.loop("lease", self._account.keep_lease),
                self.loop("maintenance", self._account.maintain)]

    def stages(self) -> list[VenueLoop]:
        """Loops to run once the store's orders are tracked: the user stream, its listenKey's
        keep-alive, REST polling (``dolphind.stage.StageOwner``: the daemon runs them)."""
        return [self.loop("user_stream", self._stream.run),
                self.loop("listen_key", self._stream.keep_alive),
                self.loop("poll", self._reconciler.poll)]

    def loop(self, name: str, body: Callable[[], Awaitable[None]]) -> VenueLoop:
        """``body`` as a stage of this venue: its crashes are recorded here."""
        return VenueLoop(name, body, self._loops)

    def _loop_crashed(self, loop: str, exc: BaseException) -> None:
        self.loop_crashes[loop] = self.loop_crashes.get(loop, 0) + 1
        self._m.loop_crashes.labels(loop).inc()
        self.last_error = self._redact(f"{loop} loop: {type(exc).__name__}: {exc}")
        log.error("venue.loop_crashed", loop=loop, error=self.last_error, exc_info=exc)

    async def aclose(self) -> None:
        """Stop the loops, then stop talking to the venue: the listenKey deleted, the lease
        released, the session closed, the event stream ended."""
        await self._loops.close()
        await self._stream.close()
        await self.lease.release()
        self._m.lease_held.set(0)
        self._m.rest_polling.set(0)
        await self._rest.close()
        self._book.events.close()

    # ---- the Venue interface ---------------------------------------------------------------

    async def sync_clock(self, cause: str) -> None:
        await self._rest.sync_clock(cause)

    async def refresh_filters(self) -> None:
        await self._filters.refresh()

    def filters_for(self, symbol: str) -> SymbolFilters | None:
        return self._filters.get(symbol)

    async def symbol_filters(self) -> Mapping[str, SymbolFilters]:
        return self._filters.all()

    def track(self, order: Order) -> None:
        """Know an order sent before this process started (its symbol, our fields)."""
        self._book.track(order)

    def adopt_at_start(self, order: Order) -> None:
        self._book.adopt_at_start(order)

    def is_foreign(self, client_id: str) -> bool:
        return self._book.is_foreign(client_id)

    async def submit(self, order: Order) -> Order:
        return await self._desk.submit(order)

    async def cancel(self, client_id: str) -> Order | None:
        return await self._desk.cancel(client_id)

    async def query(self, client_id: str) -> Order | None:
        return await self._desk.query(client_id)

    async def open_orders(self) -> list[Order]:
        return await self._desk.open_orders()

    async def positions(self) -> dict[str, VenuePosition]:
        return await self._account.positions()

    async def balances(self) -> dict[str, float]:
        return await self._account.balances()

    def events(self) -> AsyncIterator[Order | Fill]:
        return self._book.events.__aiter__()

    def mark(self, symbol: str, price: float, ts_ns: int) -> None:
        self._marks.mark(symbol, price, ts_ns)

    def mark_bar(self, index: dict[str, int], closes: np.ndarray, ts_ns: int) -> None:
        self._marks.mark_bar(index, closes, ts_ns)

    def last_mark(self, symbol: str) -> tuple[float, int] | None:
        return self._marks.last(symbol)

    # ---- reconciliation --------------------------------------------------------------------

    @property
    def reconciled(self) -> bool:
        return self._reconciler.reconciled

    async def resync(self, cause: str) -> bool:
        return await self._reconciler.resync(cause)

    def take_found_orders(self) -> list[Order]:
        return self._reconciler.take_found_orders()

    def set_position_check(self, check: Callable[[str], Awaitable[bool]]) -> None:
        self._reconciler.set_position_check(check)

    @property
    def stream_positions(self) -> dict[str, float]:
        return self._stream.positions

    @property
    def stream_balances(self) -> dict[str, float]:
        return self._stream.balances

    @property
    def connects(self) -> int:
        return self._stream.connects

    # ---- views -----------------------------------------------------------------------------

    def _now(self) -> float:
        """Venue time (local wall time plus the measured offset)."""
        return self._rest.now()

    @property
    def _ex(self) -> Any:
        return self._rest.ex  # ccxt, for tests that check its URL table

    @property
    def _orders(self) -> dict[str, TrackedOrder]:
        return self._book.orders  # for tests that look at one order's bookkeeping

    def retry_after_s(self) -> float:
        """Seconds until the venue takes requests again (a 429's Retry-After, a 418 ban)."""
        now = self._now()
        return max(0.0, self.budget.backoff_until - now, self.budget.banned_until - now)

    def readiness(self) -> str:
        if not self.lease.held:
            return f"fenced: {self.lease.reason}"
        now = self._now()
        if now < self.budget.banned_until:
            return f"venue ban (418) for another {self.budget.banned_until - now:.0f}s"
        if not self.reconciled:
            return "not reconciled with the venue yet (reduce-only orders only)"
        return "ok"

    def status(self) -> dict[str, Any]:
        now = self._now()
        cfg = self._cfg()
        b = self.budget
        return {
            "venue": self.name, "network": cfg.network, "rest_base_url": self.rest_base,
            "ws_base_url": self.ws_base, "account": self.account,
            "credentials": self._creds.source.split(":", 1)[0],
            "lease": self.lease.status(), "reconciled": self.reconciled,
            "user_stream": {"connected": self._stream.connected, "connects": self.connects,
                            "listen_key_age_s": self._stream.listen_key_age_s()},
            "rest_polling": not self._stream.connected,
            "budget": {"weight_used": b.used_weight(now), "weight_limit": b.limit,
                       "orders_10s": b.used_orders("10s", now),
                       "orders_1m": b.used_orders("1m", now),
                       "backoff_s": max(0.0, b.backoff_until - now),
                       "banned_s": max(0.0, b.banned_until - now)},
            "clock_offset_ms": round(self._rest.offset_s * 1000, 1),
            "tracked_orders": len(self._book.unsettled()),
            "loop_crashes": dict(self.loop_crashes),
            "last_error": self._redact(self.last_error),
        }


__all__ = ["BinanceAPIError", "BinanceVenue", "VenueLoop"]
