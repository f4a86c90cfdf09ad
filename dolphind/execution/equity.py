"""Marks and money: each bar marks the venue and the book, books the funding the venue settled,
refreshes the money gauges and takes the equity snapshots the store keeps.

Live and paper runs write each snapshot at once. A backtest at full speed would otherwise make
one store transaction per bar: it queues its snapshots (and new peaks) and commits them in
batches of ``EQUITY_BATCH`` bars, before a fill is booked and at the end of the run, the same
rows in the same order.
"""

from __future__ import annotations

from typing import Any

from dolphind.events import Bar
from dolphind.execution.state import ExecutionServices, WorkingBook
from dolphind.orders.portfolio import CapitalView
from dolphind.orders.router import venue_symbol
from dolphind.risk.rails import AccountSnapshot
from dolphind.store.sqlite import Account, account_op, equity_op

EQUITY_BATCH = 256


class EquityBooks:
    """The money side of the book: marks, funding, gauges, account row and equity snapshots."""

    def __init__(self, services: ExecutionServices, book: WorkingBook) -> None:
        self._s = services
        self._book = book
        self._m = services.m
        self.bar_ns = 0  # the latest bar's time (the stage's ``market_time_s``)
        self.last_equity_ns = 0
        self.saved_peak = 0.0  # peak equity in the store's account row (see ``on_bar``)
        # Backtest only: equity snapshots (and new peaks) not yet handed to the store.
        self.batch: list[tuple[str, Any]] = []
        self.account_behind = False
        # The latest bar's symbols (by identity: the feed reuses the tuple) -> venue columns.
        self._symbol_map: tuple[tuple[str, ...], dict[str, int]] | None = None
        self._published_symbols: set[str] = set()

    @property
    def behind(self) -> bool:
        """Snapshots or an account row are queued and not yet handed to the store."""
        return bool(self.batch) or self.account_behind

    async def on_bar(self, bar: Bar) -> None:
        self.bar_ns = bar.ts_ns
        if self._symbol_map is None or self._symbol_map[0] is not bar.symbols:
            names = [venue_symbol(s) for s in bar.symbols]
            self._symbol_map = (bar.symbols, {n: i for i, n in enumerate(names)})
        index = self._symbol_map[1]
        closes = bar.closes
        venue, portfolio = self._s.venue, self._book.portfolio
        venue.mark_bar(index, closes, bar.ts_ns)
        # Funding the paper venue settled at a funding time this bar crossed: the wallet
        # (cash, equity) moves by it, as on Binance; trades' PnL does not (issue 16).
        for pay in venue.take_funding():
            portfolio.cash_usdt += pay.amount_usdt
            self.account_behind = True
            self._s.audit.record("funding", symbol=pay.symbol, funding_ts_ns=pay.ts_ns,
                                 qty=pay.qty, mark=pay.mark, rate=pay.rate,
                                 amount_usdt=pay.amount_usdt)
            self._s.events.on_funding(pay)  # the ledger books it to the open trade
        if portfolio.positions:
            for sym in portfolio.positions:
                j = index.get(sym)
                if j is not None and closes[j] == closes[j]:
                    portfolio.mark(sym, float(closes[j]))
            portfolio.update_peak()
        # One view of the money for this bar's gauges and snapshot (nothing moves in between).
        view = portfolio.view() if portfolio.positions else None
        self.publish(force=False, view=view)
        interval_ns = int(self._s.config().execution.equity_snapshot_interval_s * 1e9)
        if bar.ts_ns - self.last_equity_ns >= interval_ns:
            await self.snapshot(bar.ts_ns, view=view)
        elif portfolio.peak_equity_usdt > self.saved_peak:
            # A new peak from the marks is shown on /status at once: commit it now (not at the
            # next snapshot), or a restart would forget it and understate the drawdown.
            if self._s.backtest:
                self.account_behind = True  # a backtest commits it with the next batch
            else:
                await self._s.store.write(self.account_op(bar.ts_ns))

    def price(self, symbol: str, fallback: float) -> float:
        """The price an order is sized and checked at: the venue's newest mark, else ours."""
        m = self._s.venue.last_mark(symbol)
        if m is not None:
            return float(m[0])
        return self._book.portfolio.marks.get(symbol) or fallback

    def account(self) -> Account:
        p = self._book.portfolio
        return Account(p.initial_capital_usdt, p.cash_usdt, p.realised_pnl_usdt, p.fees_usdt,
                       p.peak_equity_usdt)

    def account_op(self, ts_ns: int) -> tuple[str, Any]:
        self.saved_peak = self._book.portfolio.peak_equity_usdt
        return account_op(self.account(), ts_ns)

    def equity_op(self, ts_ns: int, view: CapitalView | None = None) -> tuple[str, Any]:
        v = view or self._book.portfolio.view()
        return equity_op(ts_ns, v.equity_usdt, v.cash_usdt, v.unrealised_pnl_usdt,
                         v.peak_equity_usdt, v.drawdown, v.gross_exposure_usdt)

    async def snapshot(self, ts_ns: int, wait: bool = False,
                       view: CapitalView | None = None) -> None:
        self.last_equity_ns = ts_ns
        self.batch.append(self.equity_op(ts_ns, view))
        if self._s.backtest and not wait and len(self.batch) < EQUITY_BATCH:
            return  # committed with the batch (see the module docstring)
        await self.flush(wait)

    async def flush(self, wait: bool = False) -> None:
        """Hand the snapshots taken so far to the store, with the account row as it is now."""
        batch, self.batch = self.batch, []
        self.account_behind = False
        await self._s.store.write(*batch, self.account_op(self.last_equity_ns), wait=wait)

    def account_snapshot(self) -> AccountSnapshot:
        """The account as the risk rails see it: equity and exposure per symbol, counting
        positions that are not ours and the unfilled part of working entries."""
        book = self._book
        p = book.portfolio
        exposure = {s: abs(p.position_notional(s)) for s in p.positions}
        for s, (q, px) in book.foreign_positions.items():
            # Not ours to trade, but the account's risk all the same.
            exposure[s] = exposure.get(s, 0.0) + abs(q) * (p.marks.get(s) or px)
        for o in book.orders.values():
            if not o.reduce_only:
                px = p.marks.get(o.symbol) or o.ref_price
                exposure[o.symbol] = exposure.get(o.symbol, 0.0) + (o.qty - o.filled_qty) * px
        return AccountSnapshot(p.equity(), exposure, sum(exposure.values()),
                               self._s.control.halted)

    def publish(self, force: bool = True, view: CapitalView | None = None) -> None:
        """Refresh the money gauges. Per bar (force=False) nothing moves while flat (equity is
        cash), so they are only refreshed when a position is marked; fills always refresh."""
        p = self._book.portfolio
        if not force and not p.positions:
            return
        m = self._m
        v = view or p.view()
        m.cash.set(v.cash_usdt)
        m.equity.set(v.equity_usdt)
        m.peak_equity.set(v.peak_equity_usdt)
        m.drawdown.set(v.drawdown)
        m.realised_pnl.set(v.realised_pnl_usdt)
        m.unrealised_pnl.set(v.unrealised_pnl_usdt)
        m.gross_exposure.set(v.gross_exposure_usdt)
        for sym in p.positions:
            m.position_notional.labels(sym).set(p.position_notional(sym))
        for sym in [s for s in self._published_symbols if s not in p.positions]:
            m.position_notional.labels(sym).set(0.0)
        self._published_symbols = set(p.positions)
