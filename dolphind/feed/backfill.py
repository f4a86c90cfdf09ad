"""Bars of the past from Binance REST aggTrades: gap fills after a restart, cold-start backfills.

A bar's close is the price of the last trade in ``[start, start + bar)``, as the live feed
builds it from the aggTrade stream; a bar with no trade keeps the previous close (the live
feed carries forward too). aggTrades is the finest public history Binance serves (klines
stop at one second and cost the same weight per request for far less detail).

Pacing: GET /fapi/v1/aggTrades costs 20 weight on USDT-M futures; the limit is shared by the
whole IP (the venue's order calls included). ``WeightBudget`` keeps this module's own use at
most ``share`` of the per-minute limit and also stops when Binance's own count
(``X-MBX-USED-WEIGHT-1M``) says the minute is nearly spent. A 429/418, an error or a symbol
that needs more than ``max_requests`` requests leaves the rest of that symbol's bars to be
carried forward, and counted as such: a start is never stalled or failed by history.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp
import numpy as np
import structlog

log = structlog.get_logger("dolphind.feed.backfill")

AGG_TRADES_PATH = "/fapi/v1/aggTrades"
AGG_TRADES_WEIGHT = 20
AGG_TRADES_LIMIT = 1000  # the most Binance returns per request
_MAX_SPAN_MS = 3_600_000 - 1  # startTime..endTime must be under one hour


def bar_closes(trade_ms: np.ndarray, trade_px: np.ndarray, start_ms: int, n_bars: int,
               bar_ms: int, prev_close: float) -> tuple[np.ndarray, int]:
    """Closes of ``n_bars`` bars from ``start_ms`` and the number of bars that had a trade.

    ``trade_ms`` is ascending. A bar without a trade takes the previous close (``prev_close``
    before the first; NaN there means absent, as the scan reads it).
    """
    closes = np.full(n_bars, np.nan)
    if trade_ms.size:
        slot = (trade_ms - start_ms) // bar_ms
        inside = (slot >= 0) & (slot < n_bars)
        slot, px = slot[inside], trade_px[inside]
        # The last trade of each bar wins: assignment in ascending time order keeps the last.
        closes[slot] = px
    traded = int(np.count_nonzero(~np.isnan(closes)))
    last = prev_close
    for i in range(n_bars):  # carry forward (n_bars is at most the window length)
        if math.isnan(closes[i]):
            closes[i] = last
        else:
            last = closes[i]
    return closes, traded


@dataclass
class WeightBudget:
    """This module's share of the REST request weight, per rolling minute."""

    limit_1m: int
    share: float
    monotonic: Callable[[], float] = time.monotonic
    spent: list[tuple[float, int]] = field(default_factory=list)
    used_header: int = 0  # Binance's X-MBX-USED-WEIGHT-1M at the last answer
    total: int = 0

    @property
    def allowance(self) -> int:
        return max(AGG_TRADES_WEIGHT, int(self.limit_1m * self.share))

    def wait_s(self, weight: int) -> float:
        """Seconds to wait before spending ``weight`` (0: now)."""
        now = self.monotonic()
        self.spent = [(t, w) for t, w in self.spent if now - t < 60.0]
        mine = sum(w for _, w in self.spent)
        if mine + weight <= self.allowance and self.used_header + weight <= 0.9 * self.limit_1m:
            return 0.0
        oldest = self.spent[0][0] if self.spent else now
        return max(0.05, 60.0 - (now - oldest))

    def spend(self, weight: int) -> None:
        self.spent.append((self.monotonic(), weight))
        self.total += weight


@dataclass
class Fill:
    """What a fill produced: closes per bar and symbol, and how each bar was obtained."""

    start_ms: int
    bar_ms: int
    symbols: tuple[str, ...]
    closes: np.ndarray  # (n_bars, n_symbols)
    fetched_bars: int = 0  # symbol-bars covered by REST data (a trade or a carry inside it)
    carried_bars: int = 0  # symbol-bars with no REST data: the last price carried forward
    requests: int = 0
    weight: int = 0
    problems: list[str] = field(default_factory=list)


class AggTradesClient:
    """Pages through /fapi/v1/aggTrades within a ``WeightBudget``."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, budget: WeightBudget,
                 on_weight: Callable[[int], None] = lambda w: None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self.budget = budget
        self._on_weight = on_weight
        self._sleep = sleep
        self.requests = 0

    async def _get(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        while (wait := self.budget.wait_s(AGG_TRADES_WEIGHT)) > 0:
            log.info("history.rest_paced", wait_s=round(wait, 2),
                     used_weight_1m=self.budget.used_header)
            await self._sleep(wait)
        self.budget.spend(AGG_TRADES_WEIGHT)
        self._on_weight(AGG_TRADES_WEIGHT)
        self.requests += 1
        async with self._session.get(self._base + AGG_TRADES_PATH, params=params) as resp:
            used = resp.headers.get("X-MBX-USED-WEIGHT-1M")
            if used is not None and used.isdigit():
                self.budget.used_header = int(used)
            if resp.status != 200:
                body = (await resp.text())[:200]
                raise HistoryFetchError(f"HTTP {resp.status} from {AGG_TRADES_PATH}: {body}")
            data = await resp.json(content_type=None)
        if not isinstance(data, list):
            raise HistoryFetchError(f"{AGG_TRADES_PATH}: expected a list, got {type(data).__name__}")
        return data

    async def trades(self, symbol: str, start_ms: int, end_ms: int, max_requests: int,
                     progress: Callable[[int], None] = lambda t: None,
                     ) -> tuple[np.ndarray, np.ndarray, int]:
        """(times ms, prices, covered-until ms) of ``symbol``'s trades in [start_ms, end_ms).

        ``covered-until``: the data is complete up to there (``end_ms`` when all was fetched).
        """
        times: list[int] = []
        prices: list[float] = []
        covered = start_ms
        from_id: int | None = None
        for _ in range(max_requests):
            if from_id is None:
                params: dict[str, Any] = {"symbol": symbol, "startTime": covered,
                                          "endTime": min(covered + _MAX_SPAN_MS, end_ms - 1),
                                          "limit": AGG_TRADES_LIMIT}
            else:
                params = {"symbol": symbol, "fromId": from_id, "limit": AGG_TRADES_LIMIT}
            rows = await self._get(params)
            for row in rows:
                t, p = int(row["T"]), float(row["p"])
                if t >= end_ms:
                    return _arrays(times, prices, end_ms)
                if t >= start_ms:
                    times.append(t)
                    prices.append(p)
            if from_id is None and len(rows) < AGG_TRADES_LIMIT:
                # The whole time span of this request was returned; go on after it.
                covered = int(params["endTime"]) + 1
                if covered >= end_ms:
                    return _arrays(times, prices, end_ms)
                progress(covered)
                continue
            if not rows:
                return _arrays(times, prices, end_ms)  # nothing newer exists yet
            covered = int(rows[-1]["T"])
            from_id = int(rows[-1]["a"]) + 1
            progress(covered)
        return _arrays(times, prices, covered)


def _arrays(times: list[int], prices: list[float], covered: int
            ) -> tuple[np.ndarray, np.ndarray, int]:
    return np.asarray(times, np.int64), np.asarray(prices, np.float64), covered


class HistoryFetchError(Exception):
    """A history request that did not give data (the message says why)."""


@dataclass
class Progress:
    """Progress of a fill for /status and the console: fraction done and an ETA."""

    symbols: int
    started_mono: float = field(default_factory=time.monotonic)
    done: float = 0.0  # symbols finished plus the fraction of the current one
    state: str = "running"

    def as_dict(self) -> dict[str, Any]:
        frac = self.done / self.symbols if self.symbols else 1.0
        elapsed = time.monotonic() - self.started_mono
        eta = None if frac <= 0 or self.state != "running" else elapsed * (1 - frac) / frac
        return {"state": self.state, "fraction": round(frac, 4), "elapsed_s": round(elapsed, 1),
                "eta_s": None if eta is None else round(eta, 1)}


async def fetch_bars(client: AggTradesClient | None, symbols: tuple[str, ...], start_ms: int,
                     n_bars: int, bar_ms: int, prev_closes: np.ndarray, max_requests: int,
                     progress: Progress | None = None) -> Fill:
    """The closes of ``n_bars`` bars from ``start_ms`` for every symbol.

    Without a client (REST off, replay) every bar is the previous close carried forward.
    """
    end_ms = start_ms + n_bars * bar_ms
    out = np.full((n_bars, len(symbols)), np.nan)
    fill = Fill(start_ms, bar_ms, symbols, out)
    last_log = time.monotonic()
    for i, sym in enumerate(symbols):
        prev = float(prev_closes[i]) if i < prev_closes.size else math.nan
        covered = start_ms
        t_ms, px = np.zeros(0, np.int64), np.zeros(0)
        if client is not None and n_bars > 0:
            def seen(t: int, i: int = i) -> None:
                nonlocal last_log
                if progress is not None:
                    progress.done = i + (t - start_ms) / max(1, end_ms - start_ms)
                    if time.monotonic() - last_log > 2.0:
                        last_log = time.monotonic()
                        log.info("history.progress", **progress.as_dict())
            try:
                t_ms, px, covered = await client.trades(sym, start_ms, end_ms, max_requests, seen)
            except (HistoryFetchError, aiohttp.ClientError, asyncio.TimeoutError, KeyError,
                    ValueError, TypeError) as exc:
                fill.problems.append(f"{sym}: {exc}")
                log.warning("history.fetch_failed", symbol=sym, error=str(exc)[:200])
                covered = start_ms if not t_ms.size else covered
        closes, _ = bar_closes(t_ms, px, start_ms, n_bars, bar_ms, prev)
        # Bars wholly after what was fetched are carried forward (counted as such); a bar
        # inside the fetched span with no trade is a real quiet bar (counted as fetched).
        complete = int(min(n_bars, max(0, (covered - start_ms) // bar_ms)))
        if covered >= end_ms:
            complete = n_bars
        if complete < n_bars:
            last = closes[complete - 1] if complete > 0 else prev
            closes[complete:] = last
        out[:, i] = closes
        fill.fetched_bars += complete
        fill.carried_bars += n_bars - complete
        if progress is not None:
            progress.done = i + 1
    if client is not None:
        fill.requests = client.requests
        fill.weight = client.requests * AGG_TRADES_WEIGHT
    if progress is not None:
        progress.state = "done"
    return fill


def rest_filler(cfg: Any, metrics: Any, owner: Callable[[], Any]) -> Callable[..., Any]:
    """A ``WarmStart`` gap filler that fetches from REST aggTrades (``cfg``: WarmStartConfig).

    ``owner()`` is the WarmStart, whose ``progress`` is pointed at this fill's progress."""
    budget = WeightBudget(cfg.weight_limit_1m, cfg.weight_share)

    async def fill(symbols: tuple[str, ...], start_ns: int, n: int, interval_ns: int,
                   prev: np.ndarray) -> tuple[np.ndarray, int, int, list[str]]:
        progress = Progress(len(symbols))
        ws = owner()
        if ws is not None:
            ws.progress = progress.as_dict
        timeout = aiohttp.ClientTimeout(total=10.0)  # a stuck request must not hold the start
        async with aiohttp.ClientSession(timeout=timeout) as session:
            client = AggTradesClient(session, cfg.rest_base_url, budget,
                                     on_weight=metrics.history_rest_weight.inc)
            log.info("history.fetch", symbols=len(symbols), bars=n,
                     bar_s=interval_ns / 1e9, weight_budget_1m=budget.allowance)
            res = await fetch_bars(client, symbols, start_ns // 1_000_000, n,
                                   interval_ns // 1_000_000, prev, cfg.max_requests_per_symbol,
                                   progress)
        log.info("history.fetched", requests=res.requests, weight=res.weight,
                 symbol_bars_fetched=res.fetched_bars, symbol_bars_carried=res.carried_bars,
                 seconds=round(time.monotonic() - progress.started_mono, 2))
        return res.closes, res.fetched_bars, res.carried_bars, res.problems

    return fill
