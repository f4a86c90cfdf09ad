"""The books a run trades against: the SQLite store, the audit log and the venue named by the
config, opened in the order a start needs them and closed in reverse.

This is wiring (it picks concrete classes from the config), so it lives in the app package,
the one place that builds concrete parts; the execution stage only receives what it opens.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Callable

import structlog

from dolphind.config import Config, describe_trading, trading_target
from dolphind.orders.filters import load_exchange_info
from dolphind.risk.brackets import load_leverage_brackets
from dolphind.store.audit import AuditLog
from dolphind.store.sqlite import Store
from dolphind.telemetry.metrics import Metrics
from dolphind.venues.paper import PaperVenue
from dolphind.venues.venue import Venue

log = structlog.get_logger("dolphind.execution")


@contextlib.asynccontextmanager
async def open_books(config: Callable[[], Config], metrics: Metrics,
                     bus: Any = None) -> AsyncIterator[tuple[Store, AuditLog, Venue]]:
    """Open the store, the audit log and the venue named by the config.

    Paths resolve under ``data.dir``. Leaving closes the audit log, then the store (each writes
    out what is queued first); leave only after the execution stage has finished. ``bus`` (the
    state bus): the binance venue adds a bus lease to its host lock when it is shared
    (venues/binance/lease.py).
    """
    cfg = config()
    venue_name, network = trading_target(cfg)  # the one switch: only mode "live" is real
    log.info("execution.venue", venue=venue_name, network=network, mode=cfg.mode,
             configured_venue=cfg.execution.venue, summary=describe_trading(cfg))
    if venue_name == "binance":
        from dolphind.app.venues import open_binance_books

        async with open_binance_books(config, metrics, bus,
                                      lambda: open_store_and_audit(config, metrics)) as books:
            yield books
        return
    if venue_name != "paper":  # pragma: no cover - config validation refuses it
        raise ValueError(f"execution.venue {venue_name!r} is not in this build")
    filters = {}
    if cfg.execution.exchange_info:
        filters = await asyncio.to_thread(load_exchange_info,
                                          cfg.resolve(cfg.execution.exchange_info))
    brackets = {}
    if cfg.execution.leverage_brackets:  # maintenance margin per symbol (liquidation)
        brackets = await asyncio.to_thread(load_leverage_brackets,
                                           cfg.resolve(cfg.execution.leverage_brackets))
    venue = PaperVenue(filters, lambda: config().execution,
                       fallback=cfg.execution.paper_fallback_filters, brackets=brackets)
    async with open_store_and_audit(config, metrics) as (store, audit):
        yield store, audit, venue


@contextlib.asynccontextmanager
async def open_store_and_audit(config: Callable[[], Config],
                               metrics: Metrics) -> AsyncIterator[tuple[Store, AuditLog]]:
    """The SQLite store and the audit log under ``data.dir`` (every venue's books use both).
    Leaving closes the audit log, then the store, each writing out what is queued first."""
    cfg = config()
    store = await Store.open(cfg.data_dir / cfg.store.path, metrics.execution, metrics.channels,
                             synchronous=cfg.store.synchronous,
                             capacity=cfg.store.queue_capacity,
                             max_batch=lambda: config().store.max_batch)
    async with store:
        audit = await AuditLog.open(cfg.data_dir / cfg.store.audit_path, metrics.execution,
                                    fsync=lambda: config().store.audit_fsync,
                                    fsync_interval_s=lambda: config().store.audit_fsync_interval_s)
        async with audit:
            store.audit_tip = lambda: audit.tip  # every commit anchors the audit chain
            try:
                yield store, audit
            finally:
                store.audit_tip = None
