"""Bars from live prices, on ``bar_seconds`` boundaries of the venue's event time (SPEC §1).

A price (an aggTrade or a markPrice, whichever the feed was told to build bars from) belongs to
the bar ``[start, start + bar_ms)`` that holds its event time ``E``. The close of a bar is the
last price seen in it; a symbol with no price in a bar carries its previous close forward, for
at most ``max_stale_bars`` bars, after which it is absent (NaN) until it trades again.

When does a bar close? Frames from several connections arrive slightly out of order, so bar
``b`` closes once the venue time has passed ``b_end + close_delay_ms``. Venue time is the
latest event time seen (the *watermark*) advanced by the local time elapsed since that frame
arrived: bars close on time even when no frame comes (a quiet market), and they close on the
data when the data runs faster than the wall clock (a replayed capture).

A frame for a bar that is already closed is *late*: counted with its lateness, never merged
into a bar that consumers have already seen.

A bar window that ends while the feed has a gap (disconnected or stalled) and holds no price at
all is not invented from carried-forward prices: it is skipped and the sequence number jumps, so
``MarketStage`` counts it as lost. A window that the feed was healthy for is always emitted.

Time never runs backwards and never leaps through invented bars:

- a frame more than ``max_jump_ms`` ahead of the venue time (the watermark plus the local time
  since) means the time seen so far was stale, e.g. an old first frame: the span between was
  not observed, so it is a gap (skipped in one step), not thousands of carried-forward bars.
  The feed's future guard bounds frames against the local clock; this is its mirror image,
  bounding the bar clock against the frames;
- ``resume_after(ms)``: no bar starts before ``ms`` (the market time a previous run reached):
  prices before it are late, whatever the venue sends after a restart.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import structlog

from dolphind.events import Bar, frozen_array

log = structlog.get_logger("dolphind.feed.bars")

_NAN = math.nan


class BarBuilder:
    """Per-symbol last prices -> one ``Bar`` per closed window, handed to ``emit``.

    ``emit`` must not block (the feed puts bars on a channel with ``offer`` or a small buffer);
    ``on_late(lateness_s)`` reports a late price.
    """

    def __init__(self, symbols: tuple[str, ...], bar_seconds: float, close_delay_ms: int,
                 max_stale_bars: Callable[[], int], emit: Callable[[Bar], None],
                 on_late: Callable[[float], None] = lambda s: None,
                 on_skipped: Callable[[int], None] = lambda n: None,
                 monotonic: Callable[[], float] = time.monotonic,
                 max_jump_ms: int = 5000) -> None:
        self.symbols = symbols
        self.index = {s: i for i, s in enumerate(symbols)}
        self.bar_ms = int(round(bar_seconds * 1000))
        self.close_delay_ms = close_delay_ms
        self._max_stale = max_stale_bars
        self._emit = emit
        self._on_late = on_late
        self._on_skipped = on_skipped
        self._mono = monotonic
        n = len(symbols)
        # Close of each symbol as of the last emitted bar, and the bar count when it was set.
        self._carry: list[float] = [_NAN] * n
        self._carry_at: list[int] = [-(10**9)] * n
        # Open windows: bar start -> {symbol index: last price in the window}.
        self._open: dict[int, dict[int, float]] = {}
        # Traded quantity per symbol in the open windows (for the book's fill probability).
        self._volume: dict[int, dict[int, float]] = {}
        self.last_volume: list[float] = [0.0] * n
        # Everything before this start is closed; None until the first price.
        self.next_start: int | None = None
        self.watermark_ms = 0
        self._watermark_mono = 0.0
        self.seq = 0
        self.emitted = 0
        self.skipped = 0
        self.late = 0
        self._gap = False
        self._resume_start = -1
        # The newest open window, for the prices that fall in it (nearly all): [start, end),
        # its prices and volumes. Empty (end == start) while a price must take the long way:
        # before the first price, after a gap, once the window was closed.
        self._cur_start = self._cur_end = 0
        self._cur_prices: dict[int, float] = {}
        self._cur_volume: dict[int, float] = {}
        # See the module doc; the feed refreshes it from binance_feed.max_clock_skew_s.
        self.max_jump_ms = max_jump_ms
        self.jumps = 0
        self._floor_ms = 0  # no bar starts before this (resume_after)

    def resume_after(self, ms: int) -> None:
        """No bar will start before ``ms``: the market time an earlier run already reached."""
        self._floor_ms = max(self._floor_ms, ms - ms % self.bar_ms)
        if self.next_start is not None and self.next_start < self._floor_ms:
            self.next_start = self._floor_ms
            self._open = {k: v for k, v in self._open.items() if k >= self._floor_ms}
            self._volume = {k: v for k, v in self._volume.items() if k >= self._floor_ms}
            self._cur_end = self._cur_start

    def _leap(self, event_ms: int) -> None:
        """``event_ms`` is far past the watermark: was the time so far stale (see module doc)?"""
        ahead = event_ms - self.venue_now_ms()
        if ahead > self.max_jump_ms:
            self.jumps += 1
            log.warning("bars.time_leap", from_ms=self.watermark_ms, to_ms=event_ms,
                        ahead_s=round(ahead / 1000, 3))
            self.mark_gap()

    # ---- input (called by the reader for every frame; keep it cheap) -------------------

    def observe(self, event_ms: int) -> None:
        """Any frame's event time: advances the watermark (depth frames count too)."""
        if event_ms > self.watermark_ms:
            if event_ms - self.watermark_ms > self.max_jump_ms and self.watermark_ms:
                self._leap(event_ms)
            self.watermark_ms = event_ms
            self._watermark_mono = self._mono()

    def on_price(self, i: int, event_ms: int, price: float, qty: float = 0.0) -> bool:
        """Record a price for symbol index ``i``; False when it was late and not used."""
        if self._cur_start <= event_ms < self._cur_end:
            self._cur_prices[i] = price
            if qty:
                vol = self._cur_volume
                vol[i] = vol.get(i, 0.0) + qty
            if event_ms > self.watermark_ms:
                self.watermark_ms = event_ms
                self._watermark_mono = self._mono()
            return True
        return self._on_other_price(i, event_ms, price, qty)

    def _on_other_price(self, i: int, event_ms: int, price: float, qty: float) -> bool:
        """``on_price`` for a price outside the newest open window (or when there is none)."""
        if event_ms - self.watermark_ms > self.max_jump_ms and self.watermark_ms:
            self._leap(event_ms)
        start = event_ms - event_ms % self.bar_ms
        nxt = self.next_start
        if nxt is None and start >= self._floor_ms:
            self.next_start = nxt = start
        elif nxt is None or start < nxt:
            nxt = self._floor_ms if nxt is None else nxt
            self.late += 1
            self._on_late((nxt - event_ms) / 1000.0)
            return False
        if self._gap:
            # First price after a gap: empty windows before this one were not observed.
            self._gap = False
            self._resume_start = start
        window = self._open.get(start)
        if window is None:
            window = self._open[start] = {}
            self._volume[start] = {}
        if start >= self._cur_start:
            self._cur_start, self._cur_end = start, start + self.bar_ms
            self._cur_prices, self._cur_volume = window, self._volume[start]
        window[i] = price
        if qty:
            vol = self._volume[start]
            vol[i] = vol.get(i, 0.0) + qty
        if event_ms > self.watermark_ms:
            self.watermark_ms = event_ms
            self._watermark_mono = self._mono()
        return True

    def mark_gap(self) -> None:
        """The feed lost data (disconnect, stall): empty windows until the next price are lost."""
        self._gap = True
        self._cur_end = self._cur_start  # the next price takes the long way, which sees the gap

    # ---- closing -----------------------------------------------------------------------

    def venue_now_ms(self) -> int:
        """Estimated venue time: the watermark plus the local time since it was seen."""
        if not self.watermark_ms:
            return 0
        return self.watermark_ms + int((self._mono() - self._watermark_mono) * 1000)

    def close_due(self, healthy: bool = True, now_ms: int | None = None) -> list[Bar]:
        """Close every window whose end + delay has passed; emit and return the bars.

        ``healthy`` says whether the feed had no gap: an empty window closed while unhealthy
        (or before the first price after a gap) is skipped instead of carried forward.
        """
        nxt = self.next_start
        if nxt is None:
            return []
        now = self.venue_now_ms() if now_ms is None else now_ms
        limit = now - self.close_delay_ms  # windows ending at or before this are closed
        if nxt + self.bar_ms > limit:
            return []
        out: list[Bar] = []
        bar_ms = self.bar_ms
        while nxt + bar_ms <= limit:
            window = self._open.pop(nxt, None)
            volume = self._volume.pop(nxt, None)
            if window is None and (self._gap or not healthy or nxt < self._resume_start):
                # A run of empty windows the feed did not observe: skip it in one step (an
                # outage of a day must not loop over every bar of it). The run ends at the
                # next window with data, the first price after the gap, or what can close now.
                ends = [s for s in self._open if s > nxt]
                if self._resume_start > nxt:
                    ends.append(self._resume_start)
                ends.append(limit - (limit - nxt) % bar_ms)
                n = max(1, (min(ends) - nxt) // bar_ms)
                self.seq += n
                self.skipped += n
                self._on_skipped(n)
                nxt += n * bar_ms
                continue
            out.append(self._close(nxt, window or {}, volume or {}))
            nxt += bar_ms
        self.next_start = nxt
        if self._cur_start < nxt:
            self._cur_end = self._cur_start  # closed: a price for it now is late
        return out

    def _close(self, start: int, window: dict[int, float], volume: dict[int, float]) -> Bar:
        carry, carry_at = self._carry, self._carry_at
        count = self.emitted
        for i, px in window.items():
            carry[i] = px
            carry_at[i] = count
        max_stale = self._max_stale()
        closes = np.array(carry, dtype=np.float64)
        if max_stale > 0:
            stale = (count - np.array(carry_at)) > max_stale
            closes[stale] = _NAN
        vol = [0.0] * len(carry)
        for i, q in volume.items():
            vol[i] = q
        self.last_volume = vol
        bar = Bar(start * 1_000_000, self.symbols, frozen_array(closes), self.bar_ms / 1000.0,
                  self.seq)
        self.seq += 1
        self.emitted += 1
        self._emit(bar)
        return bar
