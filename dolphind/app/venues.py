"""Opening the Binance venue for a run: wiring, so it lives in the app package.

The order a start needs: the credentials (before anything is created on disk), the store and
the audit log (``books``: opened by the caller's wiring), the venue (clock, filters, lease,
leverage) with its upkeep loops, then the store's working orders made known to it and the
venue's unknown orders brought into the store. Closing runs in reverse: the upkeep loops
stopped, the venue (lease released), then ``books``.

The upkeep loops (lease renewal, clock and filters) run under ``supervise`` in this context's
own TaskGroup from the moment the venue is open: the lease must be renewed while the rest of
the pipeline is still being built (a first start compiles kernels for tens of seconds; a
shared-bus lease lives ``lease_ttl_s``). A crash is counted and the loop restarted with
back-off, and a crash loop ends the daemon like any stage's (``StageCrashLoop`` leaves through
the pipeline's exit). The venue's other loops (user stream, keep-alive, REST polling) are its
``stages()``: the daemon runs them with the pipeline (dolphind.stage.offered_stages).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncContextManager, AsyncIterator, Callable

from dolphind.config import Config
from dolphind.events import Order
from dolphind.store.audit import AuditLog
from dolphind.store.sqlite import Store, order_op
from dolphind.supervisor import supervised
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics
from dolphind.venues.binance.credentials import load_credentials
from dolphind.venues.binance.reconcile import reconcile_store
from dolphind.venues.binance.venue import BinanceVenue
from dolphind.venues.venue import VenueStartupError, VenueUnavailable


async def _no_book_yet(cause: str) -> bool:
    return False


@contextlib.asynccontextmanager
async def open_binance_books(
        config: Callable[[], Config], metrics: Metrics, bus: Any,
        books: Callable[[], AsyncContextManager[tuple[Store, AuditLog]]],
        health: Health | None = None) -> AsyncIterator[tuple[Store, AuditLog, BinanceVenue]]:
    """Store, audit log and the binance venue, its loops supervised (see the module's
    docstring). ``books`` opens the store and the audit log; ``health``: where the loops'
    supervision is reported (by default a registry of their own, on ``metrics``)."""
    cfg = config()
    creds = await asyncio.to_thread(load_credentials, cfg.execution.binance, cfg.resolve)
    health = health or Health(metrics, lambda: config().supervision.heartbeat_timeout_s)
    async with books() as (store, audit):
        venue = BinanceVenue(lambda: config().execution.binance, bus, metrics.venue, creds,
                             symbols=lambda: config().binance_feed.symbols,
                             lease_dir=cfg.resolve(cfg.execution.binance.lease_dir),
                             owns=lambda cid: cid.startswith(
                                 config().execution.client_id_prefix + "-"),
                             foreign_policy=lambda: config().execution.foreign)
        async with venue, supervised(health, metrics, lambda: config().supervision) as loops:
            loops.start(venue.upkeep_stages())

            async def write_order(order: Order) -> None:
                await store.write(order_op(order), wait=True)

            try:
                await reconcile_store(venue, store, audit, metrics.execution.reconcile_diffs,
                                      write_order, cfg.execution.foreign)
            except VenueUnavailable as exc:
                raise VenueStartupError(f"venue {venue.rest_base}: cannot read the account at "
                                        f"start: {exc}") from None
            # Not reconciled before the execution stage has its book to compare positions
            # with: the stage installs its own check when it is built.
            venue.set_position_check(_no_book_yet)
            yield store, audit, venue
