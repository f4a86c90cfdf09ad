"""The paper venue: market orders filled in full at the latest mark, with SPEC §3 friction.

Friction (bible §7.4, §8), read from the current ``[execution]`` config on every fill:
- slippage, always against us (BUY pays ``mark * (1 + slip)``, SELL gets ``mark * (1 - slip)``):
  exits by reason (take-profit 2 bps, stop-loss 5 bps, any other 2 bps), entries
  ``entry_slippage_bps`` (0 by default: the bible applies slippage on exits only);
- fees: maker 2 bps / taker 5 bps, a fill being maker with the maker-fill rate (0.62 entry,
  0.50 exit). ``fee_model = "draw"`` decides maker/taker per order from a hash of
  (seed, client id), so a fill does not depend on the orders before it: the same order gets the
  same fill after a restart, and two runs with the same seed give identical fills.
  ``"blended"`` charges every fill the expected fee instead.

Fill prices are the model prices, not snapped to the tick grid, so that paper PnL is exactly
the bible's friction model. Fills against the book (depth-aware) come later.

Funding (issue 16): with a replay's funding prints (``set_funding``), every open position pays
or receives ``qty x mark x rate`` at each funding time the bars cross, into the venue's
balance (``funding_payments``).

Liquidation (issue 16), like Binance's cross margin: after each bar's marks, when the wallet
balance plus unrealised PnL falls to the maintenance margin (sum of ``|qty| x mark x rate``
over the positions) or below, every position is closed at the mark: the venue reports them
(``take_liquidations``) and the execution stage sends reduce-only LIQUIDATION orders at once.
The maintenance margin comes from the symbol's leverage brackets (``execution/brackets.py``;
``execution.leverage_brackets`` names a Binance leverageBracket file); a symbol without one gets
the documented default, Binance's first bracket: 0.4 % for BTCUSDT and ETHUSDT, 0.5 % for every
other symbol. No liquidation clearance fee is charged.

The paper venue keeps its own orders, positions and balance (what a real venue would report for
reconciliation); after a restart the execution stage restores them from the store.
"""

from __future__ import annotations

import collections
import hashlib
from typing import AsyncIterator, Callable, Iterable, Mapping

import numpy as np

from dolphind.channels import Channel, Overflow
from dolphind.config import ExecutionConfig
from dolphind.events import Fill, Order
from dolphind.orders.filters import SymbolFilters, fallback_filters
from dolphind.orders.portfolio import Position, apply_fill
from dolphind.orders.router import TERMINAL, OrderState, transition
from dolphind.venues.marks import Marks
from dolphind.venues.venue import (FundingPayment, Venue, VenueEvent, VenuePosition,
                                   VenueRejected)
from dolphind.risk.brackets import (DEFAULT_MAINTENANCE_MARGIN_RATE,  # noqa: F401
                                         MAINTENANCE_MARGIN_RATES, Bracket, default_brackets,
                                         maintenance_margin)
from dolphind.feed.funding import ReplayFunding, funding_payment, prints_between

_EVENTS_CAPACITY = 1024
# Final orders the venue still answers for (query, cancel); Binance keeps a client id unique
# only among open orders, and the store keeps the whole history.
_KEPT_FINAL = 1000


def slippage_bps(cfg: ExecutionConfig, reduce_only: bool, reason: str) -> float:
    """The modelled slippage of a fill (bible §7.4), in bps, always against us."""
    if not reduce_only:
        return cfg.entry_slippage_bps
    r = reason.upper()
    if r in cfg.tp_reasons:
        return cfg.tp_slippage_bps
    if r in cfg.sl_reasons:
        return cfg.sl_slippage_bps
    return cfg.other_slippage_bps


def fill_price(mark: float, side: str, slip_bps: float) -> float:
    return mark * (1.0 + slip_bps * 1e-4) if side == "BUY" else mark * (1.0 - slip_bps * 1e-4)


def maker_draw(seed: int, client_id: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, client id)."""
    digest = hashlib.sha256(f"{seed}:{client_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def fee_for(cfg: ExecutionConfig, notional_usdt: float, reduce_only: bool,
            client_id: str) -> tuple[float, str]:
    """(fee in USDT, liquidity) for a fill of ``notional_usdt`` (bible §8.1)."""
    rate = cfg.maker_fill_rate_exit if reduce_only else cfg.maker_fill_rate_entry
    if cfg.fee_model == "blended":
        bps = rate * cfg.maker_fee_bps + (1.0 - rate) * cfg.taker_fee_bps
        return notional_usdt * bps * 1e-4, "BLENDED"
    if maker_draw(cfg.seed, client_id) < rate:
        return notional_usdt * cfg.maker_fee_bps * 1e-4, "MAKER"
    return notional_usdt * cfg.taker_fee_bps * 1e-4, "TAKER"


LIQUIDATION = "LIQUIDATION"


def maintenance_margin_rate(symbol: str) -> float:
    """The documented default rate of a symbol without a bracket table (the first bracket)."""
    return default_brackets(symbol)[0].rate


class PaperVenue(Venue):
    """Simulated venue; deterministic for a given seed, config and sequence of marks."""

    name = "paper"
    simulated = True

    def __init__(self, filters: Mapping[str, SymbolFilters],
                 config: Callable[[], ExecutionConfig], fallback: bool = True,
                 clock_ns: Callable[[], int] | None = None,
                 brackets: Mapping[str, tuple[Bracket, ...]] | None = None) -> None:
        self._filters = dict(filters)
        # Maintenance-margin brackets per symbol (Binance leverageBracket); default otherwise.
        self._brackets = dict(brackets or {})
        self._config = config
        self._fallback = fallback
        self._clock_ns = clock_ns
        self._orders: dict[str, Order] = {}
        self._final: collections.deque[str] = collections.deque()  # final ids, oldest first
        self._positions: dict[str, Position] = {}
        self._balance = 0.0
        self._marks = Marks()
        self._events: Channel[VenueEvent] = Channel("paper_venue_events", _EVENTS_CAPACITY,
                                                    Overflow.BLOCK)
        self._fill_seq = 0
        # Funding (issue 16): the replay's prints, and what open positions paid at each.
        self._funding: ReplayFunding | None = None
        self._funding_after_ns: int | None = None
        self.funding_payments: list[FundingPayment] = []
        self._funding_taken = 0
        # (bar time, symbols, margin balance, maintenance margin) of every liquidation.
        self.liquidations: list[tuple[int, tuple[str, ...], float, float]] = []
        self._liquidation_due: list[str] = []

    # ---- state -----------------------------------------------------------------------------

    def restore(self, orders: Iterable[Order], positions: Iterable[Position],
                balance_usdt: float) -> None:
        """Rebuild the venue side after a restart (paper has no memory of its own)."""
        self._orders = {}
        self._final.clear()
        for o in orders:
            self._keep(o)
        self._positions = {p.symbol: p for p in positions if not p.flat}
        self._balance = balance_usdt

    def mark(self, symbol: str, price: float, ts_ns: int) -> None:
        """The latest price of ``symbol``; an older mark never replaces a newer one."""
        self._marks.mark(symbol, price, ts_ns)

    def mark_bar(self, index: dict[str, int], closes: np.ndarray, ts_ns: int) -> None:
        """Every symbol's close of one bar (``index`` maps venue symbols to columns); a newer
        bar books the funding it crosses and checks the margin."""
        if self._marks.mark_bar(index, closes, ts_ns):
            if self._funding is not None:
                self._book_funding(ts_ns)
            if self._positions:
                self._check_liquidation(ts_ns)

    def margin(self) -> tuple[float, float]:
        """(margin balance = wallet + unrealised, maintenance margin) at the latest marks."""
        equity, maint = self._balance, 0.0
        for sym, pos in self._positions.items():
            mark = self.last_mark(sym)
            if pos.flat or mark is None:
                continue
            equity += pos.unrealised(mark[0])
            brackets = self._brackets.get(sym) or default_brackets(sym)
            maint += maintenance_margin(abs(pos.qty) * mark[0], brackets)
        return equity, maint

    def _check_liquidation(self, ts_ns: int) -> None:
        equity, maint = self.margin()
        if maint <= 0.0 or equity > maint:
            return
        due = sorted(s for s, p in self._positions.items() if not p.flat)
        if due:
            self._liquidation_due = due
            self.liquidations.append((ts_ns, tuple(due), equity, maint))

    def take_liquidations(self) -> list[str]:
        """Symbols to liquidate after this bar's marks (the execution stage closes them at
        once, through its own order path, so a backtest books them before the next decision)."""
        due, self._liquidation_due = self._liquidation_due, []
        return due

    def set_funding(self, funding: ReplayFunding) -> None:
        """Book funding payments on open positions at each funding time the bars cross."""
        self._funding = funding

    def _book_funding(self, ts_ns: int) -> None:
        after = self._funding_after_ns
        self._funding_after_ns = ts_ns
        if after is None or self._funding is None:
            return
        for sym, pos in sorted(self._positions.items()):
            series = None if pos.flat else self._funding.series(sym)
            if series is None:
                continue
            for t, rate in prints_between(series, after, ts_ns):
                mark = self.last_mark(sym)
                if mark is None:
                    continue
                amount = funding_payment(pos.qty, mark[0], rate)
                self._balance += amount
                self.funding_payments.append(
                    FundingPayment(t, sym, pos.qty, mark[0], rate, amount))

    def take_funding(self) -> list[FundingPayment]:
        """Payments booked since the last call (the execution stage moves its cash by them)."""
        new = self.funding_payments[self._funding_taken:]
        self._funding_taken = len(self.funding_payments)
        return new

    @property
    def funding_paid_usdt(self) -> float:
        """Net funding paid by the account (positive: paid, negative: received)."""
        return -sum(p.amount_usdt for p in self.funding_payments)

    def last_mark(self, symbol: str) -> tuple[float, int] | None:
        """The newest of the symbol's own mark and its close in the latest bar."""
        return self._marks.last(symbol)

    def stale_positions(self) -> list[str]:
        """Symbols held whose price stopped updating (flagged at the end of a backtest)."""
        return sorted(s for s, p in self._positions.items() if not p.flat and self._marks.stale(s))

    def _keep(self, order: Order) -> None:
        """Remember ``order``'s latest snapshot. Working orders are all kept; final ones only
        the latest ``_KEPT_FINAL`` (the store has the history; a long paper run must not grow
        without bound)."""
        self._orders[order.client_id] = order
        if order.state in TERMINAL:
            self._final.append(order.client_id)
            while len(self._final) > _KEPT_FINAL:
                old = self._final.popleft()
                kept = self._orders.get(old)
                if kept is not None and kept.state in TERMINAL:
                    del self._orders[old]

    # ---- the Venue interface ---------------------------------------------------------------

    def filters_for(self, symbol: str) -> SymbolFilters | None:
        f = self._filters.get(symbol)
        if f is None and self._fallback:
            f = self._filters[symbol] = fallback_filters(symbol)
        return f

    async def symbol_filters(self) -> Mapping[str, SymbolFilters]:
        return dict(self._filters)

    async def submit(self, order: Order) -> Order:
        if order.client_id in self._orders:
            # Binance refuses a client id that is already in use; so does paper.
            raise VenueRejected(f"duplicate client order id {order.client_id}")
        ts = self._now(order)
        problem = self._refusal(order)
        if problem is not None:
            self._keep(transition(order, OrderState.REJECTED, ts,
                                  reject_reason=f"venue:{problem}"))
            raise VenueRejected(problem)
        acked = transition(order, OrderState.ACKED, ts, venue_order_id=f"paper-{ts}")
        self._keep(acked)
        fill = self._fill(acked, ts)
        filled = transition(acked, OrderState.FILLED, ts, filled_qty=fill.qty,
                            avg_fill_price=fill.price)
        self._keep(filled)
        pos = self._positions.get(fill.symbol) or Position(fill.symbol)
        new, realised = apply_fill(pos, fill.side, fill.qty, fill.price, fill.fee_usdt, ts)
        self._positions[fill.symbol] = new
        self._balance += realised - fill.fee_usdt
        await self._events.put(fill)
        await self._events.put(filled)
        return acked

    def _refusal(self, order: Order) -> str | None:
        if order.order_type != "MARKET":
            return f"order type {order.order_type} not supported by the paper venue"
        f = self.filters_for(order.symbol)
        if f is None:
            return f"unknown symbol {order.symbol}"
        if self._marks.stale(order.symbol):
            # The feed carries a price for feed.max_stale_bars and then marks it absent: a
            # fill at an hours-old price is not a fill (issue 16). An exit is retried by the
            # strategy and fills at the first fresh price.
            return (f"no fresh price for {order.symbol}: absent from the latest bar (not "
                    "trading yet, or no update within feed.max_stale_bars)")
        if self.last_mark(order.symbol) is None:
            return f"no market price for {order.symbol} yet"
        mark = self.last_mark(order.symbol)[0]  # type: ignore[index]
        problem = f.check(order.qty, mark, market=True, reduce_only=order.reduce_only)
        if problem is not None:
            return problem
        if order.reduce_only:
            pos = self._positions.get(order.symbol)
            q = pos.qty if pos else 0.0
            closes = (order.side == "BUY" and q < 0) or (order.side == "SELL" and q > 0)
            if not closes or order.qty > abs(q) + 1e-12:
                return "reduce_only_would_increase"  # Binance: -2022 ReduceOnly rejected
        return None

    def _fill(self, order: Order, ts: int) -> Fill:
        cfg = self._config()
        mark = self.last_mark(order.symbol)[0]  # type: ignore[index]
        slip = slippage_bps(cfg, order.reduce_only, order.reason)
        price = fill_price(mark, order.side, slip)
        fee, liquidity = fee_for(cfg, order.qty * price, order.reduce_only, order.client_id)
        ref = order.ref_price or mark
        measured = (price / ref - 1.0) * 1e4 * (1.0 if order.side == "BUY" else -1.0)
        return Fill(fill_id=f"{order.client_id}-1", client_id=order.client_id,
                    symbol=order.symbol, side=order.side, qty=order.qty, price=price,
                    fee_usdt=fee, liquidity=liquidity, ts_ns=ts, slippage_bps=measured,
                    reduce_only=order.reduce_only)

    def _now(self, order: Order) -> int:
        if self._clock_ns is not None:
            return self._clock_ns()
        m = self.last_mark(order.symbol)
        return m[1] if m else order.created_ns

    async def cancel(self, client_id: str) -> Order | None:
        o = self._orders.get(client_id)
        if o is None or o.state in TERMINAL:
            return o
        cancelled = transition(o, OrderState.CANCELLED, o.updated_ns)
        self._keep(cancelled)
        await self._events.put(cancelled)
        return cancelled

    async def query(self, client_id: str) -> Order | None:
        return self._orders.get(client_id)

    async def open_orders(self) -> list[Order]:
        return [o for o in self._orders.values()
                if o.state in (OrderState.ACKED, OrderState.PARTIALLY_FILLED)]

    async def positions(self) -> dict[str, VenuePosition]:
        return {s: VenuePosition(s, p.qty, p.avg_price) for s, p in self._positions.items()
                if not p.flat}

    async def balances(self) -> dict[str, float]:
        return {"USDT": self._balance}

    def events(self) -> AsyncIterator[VenueEvent]:
        return self._events.__aiter__()

    def close(self) -> None:
        """No more events (the stream ends once drained)."""
        self._events.close()
