"""The request budget: Binance's own counts (response headers) against its limits.

``X-MBX-USED-WEIGHT-1M`` and ``X-MBX-ORDER-COUNT-10S/1M`` feed a budget that paces requests
past ``weight_slow_fraction`` of the limit and holds them past ``weight_stop_fraction`` until
the window rolls; a 429 / -1003 holds everything for ``Retry-After``; a 418 holds everything
until the ban ends.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

from dolphind.config import BinanceVenueConfig


class RateBudget:
    """Binance's own counts (response headers) against its limits (exchangeInfo).

    Pure bookkeeping, clock injected: ``wait_time`` says how long a request of ``weight`` (and
    ``orders``) should wait now, and why. Windows are Binance's fixed windows (the minute, the
    10 seconds) in venue time.
    """

    _ORDER_WINDOWS = {"10s": 10.0, "1m": 60.0}

    def __init__(self, cfg: Callable[[], BinanceVenueConfig]) -> None:
        self._cfg = cfg
        self.weight_limit = 2400
        self.order_limits = {"10s": 300, "1m": 1200}
        self._weight = (0.0, -1)  # (used, minute index)
        self._orders = {k: (0.0, -1) for k in self._ORDER_WINDOWS}
        self.backoff_until = 0.0
        self.banned_until = 0.0
        self._last_sent = -math.inf

    @property
    def limit(self) -> float:
        return float(self._cfg().weight_limit_1m or self.weight_limit)

    def set_limits(self, rate_limits: Iterable[Mapping[str, Any]]) -> None:
        for rl in rate_limits:
            kind, interval = rl.get("rateLimitType"), rl.get("interval")
            n, limit = int(rl.get("intervalNum", 1)), int(rl.get("limit", 0))
            if limit <= 0:
                continue
            if kind == "REQUEST_WEIGHT" and interval == "MINUTE" and n == 1:
                self.weight_limit = limit
            elif kind == "ORDERS" and interval == "SECOND" and n == 10:
                self.order_limits["10s"] = limit
            elif kind == "ORDERS" and interval == "MINUTE" and n == 1:
                self.order_limits["1m"] = limit

    def used_weight(self, now: float) -> float:
        used, idx = self._weight
        return used if idx == int(now // 60) else 0.0

    def used_orders(self, window: str, now: float) -> float:
        used, idx = self._orders[window]
        return used if idx == int(now // self._ORDER_WINDOWS[window]) else 0.0

    def observe(self, headers: Mapping[str, str], now: float) -> None:
        for k, v in headers.items():
            lk = k.lower()
            try:
                value = float(v)
            except (TypeError, ValueError):
                continue
            if lk == "x-mbx-used-weight-1m":
                self._weight = (value, int(now // 60))
            elif lk.startswith("x-mbx-order-count-"):
                window = lk.rsplit("-", 1)[1]
                if window in self._ORDER_WINDOWS:
                    self._orders[window] = (value, int(now // self._ORDER_WINDOWS[window]))

    def charge(self, weight: float, orders: int, now: float) -> None:
        """Count a request about to be sent (the next answer's headers correct it)."""
        self._last_sent = now
        if weight:
            self._weight = (self.used_weight(now) + weight, int(now // 60))
        if orders:
            for w, secs in self._ORDER_WINDOWS.items():
                self._orders[w] = (self.used_orders(w, now) + orders, int(now // secs))

    def back_off(self, seconds: float, now: float) -> None:
        self.backoff_until = max(self.backoff_until, now + seconds)

    def ban(self, until: float) -> None:
        self.banned_until = max(self.banned_until, until)

    def wait_time(self, weight: float, orders: int, now: float) -> tuple[float, str]:
        """(seconds to wait, reason); ``inf`` while banned."""
        if now < self.banned_until:
            return math.inf, "banned"
        if now < self.backoff_until:
            return self.backoff_until - now, "backoff"
        cfg = self._cfg()
        delay, reason = 0.0, ""
        checks = []
        if weight > 0:
            checks.append((self.used_weight(now), weight, self.limit, 60.0, "weight"))
        if orders > 0:
            for w, secs in self._ORDER_WINDOWS.items():
                checks.append((self.used_orders(w, now), float(orders),
                               float(self.order_limits[w]), secs, f"orders_{w}"))
        for used, cost, limit, secs, name in checks:
            to_end = secs - (now % secs)
            after = used + cost
            if after > cfg.weight_stop_fraction * limit:
                d = to_end + 0.05
            elif after > cfg.weight_slow_fraction * limit:
                # Spread what is left of the budget evenly over what is left of the window:
                # requests are spaced at least this far apart.
                left = max(cfg.weight_stop_fraction * limit - used, cost)
                d = max(0.0, to_end * cost / left - (now - self._last_sent))
            else:
                continue
            if d > delay:
                delay, reason = d, name
        return delay, reason
