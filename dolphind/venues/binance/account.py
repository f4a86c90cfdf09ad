"""The futures account: its setup (one-way mode, margin type, leverage), its positions and
balances, and its upkeep loops (the lease renewed, the clock offset and filters refreshed)."""

from __future__ import annotations

import asyncio
from typing import Callable, Iterable

import structlog

from dolphind.config import BinanceVenueConfig
from dolphind.risk.leverage import symbol_leverage
from dolphind.telemetry.metrics import VenueMetrics
from dolphind.venues.binance.filters import VenueFilters
from dolphind.venues.binance.lease import Lease
from dolphind.venues.binance.reports import num
from dolphind.venues.binance.rest import (NOT_ANSWERED, W_ACCOUNT, BinanceAPIError,
                                          RestClient)
from dolphind.venues.binance.tracking import QTY_EPS
from dolphind.venues.venue import VenuePosition, VenueStartupError, VenueUnavailable

log = structlog.get_logger("dolphind.venues.binance")


class VenueSetupError(VenueStartupError):
    """The account cannot be traded as configured (hedge mode, ...)."""


class Account:
    def __init__(self, config: Callable[[], BinanceVenueConfig], rest: RestClient,
                 filters: VenueFilters, lease: Lease, metrics: VenueMetrics,
                 symbols: Callable[[], Iterable[str]], monotonic: Callable[[], float]) -> None:
        self._cfg = config
        self._rest = rest
        self._filters = filters
        self._lease = lease
        self._m = metrics
        self._symbols = symbols
        self._mono = monotonic
        self.ready = False  # set up (mode, margin type, leverage) since the lease was taken

    async def setup(self) -> None:
        """One-way position mode is required; leverage and margin type per symbol."""
        cfg = self._cfg()
        dual = await self._rest.request("read", "fapiPrivateGetPositionSideDual", {}, 30)
        if str(dual.get("dualSidePosition")).lower() == "true":
            raise VenueSetupError("the account is in hedge mode (dualSidePosition); dolphind "
                                  "trades one-way positions only")
        for sym in list(cfg.symbols or self._symbols()):
            mt = dict(cfg.margin_type).get(sym, cfg.default_margin_type)
            if mt:
                try:
                    await self._rest.request("read", "fapiPrivatePostMarginType",
                                             {"symbol": sym, "marginType": mt}, 1)
                except BinanceAPIError as exc:
                    if exc.code != -4046:  # "No need to change margin type."
                        log.warning("venue.margin_type_failed", symbol=sym, code=exc.code,
                                    msg=exc.msg)
            lev = symbol_leverage(cfg.leverage, cfg.default_leverage, sym)
            if lev:
                await self._rest.request("read", "fapiPrivatePostLeverage",
                                         {"symbol": sym, "leverage": int(lev)}, 1)
            if mt or lev:
                log.info("venue.symbol_setup", symbol=sym, leverage=lev or None,
                         margin_type=mt or None)
        self.ready = True

    async def positions(self) -> dict[str, VenuePosition]:
        try:
            res = await self._rest.request("read", "fapiPrivateV2GetPositionRisk", {},
                                           W_ACCOUNT)
        except (BinanceAPIError, *NOT_ANSWERED) as exc:
            raise VenueUnavailable(f"positions: {exc}") from None
        out: dict[str, VenuePosition] = {}
        for d in res:
            qty = num(d.get("positionAmt"))
            if abs(qty) > QTY_EPS:
                sym = str(d["symbol"])
                out[sym] = VenuePosition(sym, qty, num(d.get("entryPrice")))
        return out

    async def balances(self) -> dict[str, float]:
        try:
            res = await self._rest.request("read", "fapiPrivateV2GetBalance", {}, W_ACCOUNT)
        except (BinanceAPIError, *NOT_ANSWERED) as exc:
            raise VenueUnavailable(f"balances: {exc}") from None
        return {str(d["asset"]): num(d.get("balance")) for d in res}

    # ---- upkeep loops (each run as a supervised stage of the venue) ---------------------

    async def keep_lease(self) -> None:
        """Renew the lease (or try to take it, fenced); set the account up once it is ours."""
        while True:
            await asyncio.sleep(self._cfg().lease_renew_s)
            await self._lease.acquire()
            if self._lease.held and not self.ready:
                try:
                    await self.setup()
                except (VenueSetupError, BinanceAPIError, *NOT_ANSWERED) as exc:
                    # Tried again at the next renewal; until then orders are refused anyway.
                    log.warning("venue.account_setup_failed", error=str(exc))

    async def maintain(self) -> None:
        """Clock offset and exchangeInfo refreshed on their intervals."""
        cfg = self._cfg()
        next_clock = self._mono() + cfg.clock_sync_s
        next_filters = self._mono() + cfg.filters_refresh_s
        while True:
            await asyncio.sleep(min(5.0, cfg.clock_sync_s, cfg.filters_refresh_s))
            cfg, now = self._cfg(), self._mono()
            try:
                if now >= next_clock:
                    next_clock = now + cfg.clock_sync_s
                    await self._rest.sync_clock("periodic")
                if now >= next_filters:
                    next_filters = now + cfg.filters_refresh_s
                    await self._filters.refresh()
            except (BinanceAPIError, *NOT_ANSWERED) as exc:
                log.warning("venue.maintenance_failed", error=str(exc))
