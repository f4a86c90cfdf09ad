"""Pre-trade risk rails (SPEC §4), checked for every order in this order:

    kill_switch -> symbol_allowlist -> min_notional / max_notional -> symbol_exposure /
    gross_exposure -> max_leverage -> order_rate -> venue_breaker -> plugin_veto

The first rule that objects names the rejection (``dolphind_risk_rejections_total{rule}`` and
the audit log). Each rule is a small function of (the order, a snapshot of the account, the
config); the two rules with memory (the token bucket and the breaker) take the time as an
argument and change state only through ``commit`` / ``record``, so they are deterministic.

Reduce-only orders (exits) pass every rule except the venue breaker. The SPEC names exposure
and rate; we also let exits through the kill switch (a halt stops entries, exits still run),
the allowlist, the notional limits, leverage and plugin vetoes, because each of those can only
trap an open position, never lower risk. The breaker still applies: a failing venue gets no
orders at all, exits included, until a probe succeeds.

Plugin vetoes fail closed for entries: a veto hook that raises, or that overruns
``plugins.veto_budget_ms``, refuses the entry (a risk check that cannot answer in time must not
wave an order through; ``PluginHost.veto`` decides the same per plugin). Exits never reach the
hook, so a broken plugin cannot trap a position. Overruns are counted
(``dolphind_risk_veto_overruns_total``).
"""

from __future__ import annotations

import collections
import enum
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import structlog

from dolphind.config import RiskConfig
from dolphind.risk.leverage import leverage_refusal

log = structlog.get_logger("dolphind.risk")

RULES = ("kill_switch", "symbol_allowlist", "min_notional", "max_notional", "symbol_exposure",
         "gross_exposure", "max_leverage", "order_rate", "venue_breaker", "plugin_veto")


@dataclass(frozen=True, slots=True)
class OrderCheck:
    """The order under review, as the rails see it."""

    symbol: str
    side: str
    notional_usdt: float  # qty * reference price, after rounding onto the venue's grid
    leverage: float  # what the alpha engine asked for
    reduce_only: bool
    client_id: str = ""


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """Exposure and money at the time of the check.

    ``symbol_exposure_usdt`` maps a symbol to |position notional| + working entry orders.
    """

    equity_usdt: float
    symbol_exposure_usdt: Mapping[str, float]
    gross_exposure_usdt: float
    halted: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    ok: bool
    rule: str = ""
    detail: str = ""


ACCEPT = Decision(True)


# ---- pure rules ----------------------------------------------------------------------------


def kill_switch(o: OrderCheck, a: AccountSnapshot, c: RiskConfig) -> str | None:
    if not c.trading_enabled:
        return "risk.trading_enabled is false"
    if a.halted:
        return "trading is halted (control plane)"
    return None


def symbol_allowlist(o: OrderCheck, a: AccountSnapshot, c: RiskConfig) -> str | None:
    if c.allowed_symbols and o.symbol not in c.allowed_symbols:
        return f"{o.symbol} is not in risk.allowed_symbols"
    return None


def min_notional(o: OrderCheck, a: AccountSnapshot, c: RiskConfig) -> str | None:
    if o.notional_usdt < c.min_order_notional_usdt:
        return f"notional {o.notional_usdt:.2f} < {c.min_order_notional_usdt:g} USDT"
    return None


def max_notional(o: OrderCheck, a: AccountSnapshot, c: RiskConfig) -> str | None:
    if o.notional_usdt > c.max_order_notional_usdt:
        return f"notional {o.notional_usdt:.2f} > {c.max_order_notional_usdt:g} USDT"
    return None


def symbol_exposure(o: OrderCheck, a: AccountSnapshot, c: RiskConfig) -> str | None:
    after = a.symbol_exposure_usdt.get(o.symbol, 0.0) + o.notional_usdt
    if after > c.max_symbol_exposure_usdt:
        return (f"{o.symbol} exposure would be {after:.2f} > "
                f"{c.max_symbol_exposure_usdt:g} USDT")
    return None


def gross_exposure(o: OrderCheck, a: AccountSnapshot, c: RiskConfig) -> str | None:
    after = a.gross_exposure_usdt + o.notional_usdt
    if after > c.max_gross_exposure_usdt:
        return f"gross exposure would be {after:.2f} > {c.max_gross_exposure_usdt:g} USDT"
    return None


def max_leverage(o: OrderCheck, a: AccountSnapshot, c: RiskConfig) -> str | None:
    # The cap and its arithmetic live in risk/leverage.py, with the other leverage limits.
    return leverage_refusal(o.leverage, a.gross_exposure_usdt + o.notional_usdt, a.equity_usdt,
                            c.max_leverage)


_PURE_RULES: tuple[tuple[str, Callable[[OrderCheck, AccountSnapshot, RiskConfig], str | None]],
                   ...] = (
    ("kill_switch", kill_switch), ("symbol_allowlist", symbol_allowlist),
    ("min_notional", min_notional), ("max_notional", max_notional),
    ("symbol_exposure", symbol_exposure), ("gross_exposure", gross_exposure),
    ("max_leverage", max_leverage),
)


# ---- rules with memory ---------------------------------------------------------------------


class TokenBucket:
    """Order rate: ``max_orders_per_minute`` tokens per minute, at most ``order_burst`` saved."""

    def __init__(self) -> None:
        self.tokens: float | None = None  # full on first use
        self.at = 0.0

    def _level(self, now: float, c: RiskConfig) -> float:
        if self.tokens is None:
            return float(c.order_burst)
        refill = (now - self.at) * c.max_orders_per_minute / 60.0
        return min(float(c.order_burst), self.tokens + max(0.0, refill))

    def check(self, now: float, c: RiskConfig) -> str | None:
        if self._level(now, c) < 1.0:
            return f"more than {c.max_orders_per_minute:g} orders per minute (burst {c.order_burst})"
        return None

    def commit(self, now: float, c: RiskConfig) -> None:
        self.tokens = self._level(now, c) - 1.0
        self.at = now


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class VenueBreaker:
    """Opens when the venue's error rate over the window reaches the threshold.

    Open: every order is refused for ``breaker_open_s``. Then half-open: ``breaker_probes``
    orders go through; the first probe that succeeds closes the breaker (and forgets the
    window), one that fails opens it again.
    """

    def __init__(self) -> None:
        self.state = BreakerState.CLOSED
        self.opened_at = 0.0
        self.probes_sent = 0
        self.outcomes: collections.deque[tuple[float, bool]] = collections.deque()
        self.errors = 0  # errors among ``outcomes`` (kept, not recounted: O(1) per record)

    def _current(self, now: float, c: RiskConfig) -> BreakerState:
        if self.state is BreakerState.OPEN and now - self.opened_at >= c.breaker_open_s:
            return BreakerState.HALF_OPEN
        return self.state

    def check(self, now: float, c: RiskConfig) -> str | None:
        st = self._current(now, c)
        if st is BreakerState.OPEN:
            return f"venue breaker open for another {c.breaker_open_s - (now - self.opened_at):.1f}s"
        if st is BreakerState.HALF_OPEN and self.state is BreakerState.HALF_OPEN \
                and self.probes_sent >= c.breaker_probes:
            return "venue breaker half-open: probe in flight"
        return None

    def commit(self, now: float, c: RiskConfig) -> None:
        st = self._current(now, c)
        if st is BreakerState.HALF_OPEN:
            if self.state is not BreakerState.HALF_OPEN:
                self.state, self.probes_sent = BreakerState.HALF_OPEN, 0
            self.probes_sent += 1

    def record(self, ok: bool, now: float, c: RiskConfig) -> None:
        """The outcome of one venue request (True: answered; False: error or no answer)."""
        if self.state is BreakerState.HALF_OPEN:
            if ok:
                self.state = BreakerState.CLOSED
                self.outcomes.clear()
                self.errors = 0
            else:
                self._open(now)
            return
        self.outcomes.append((now, ok))
        self.errors += not ok
        while self.outcomes and now - self.outcomes[0][0] > c.breaker_window_s:
            self.errors -= not self.outcomes.popleft()[1]
        n = len(self.outcomes)
        if self.state is BreakerState.CLOSED and n >= c.breaker_min_requests \
                and self.errors / n >= c.breaker_error_rate:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state, self.opened_at, self.probes_sent = BreakerState.OPEN, now, 0
        self.outcomes.clear()
        self.errors = 0
        log.warning("risk.breaker_opened")

    def gauge(self, now: float, c: RiskConfig) -> int:
        return int(self._current(now, c))


# ---- the chain -----------------------------------------------------------------------------

Veto = Callable[[Any], "tuple[str, str] | None"]


class RiskRails:
    """The rails in SPEC order. ``veto`` is the plugin hook (``PluginHost.veto``): a fast
    synchronous call returning (plugin, reason) to refuse; it gets ``veto_budget_ms`` for the
    whole hook (the host also enforces it per plugin). ``on_veto_overrun`` is called once per
    overrun (the execution stage counts it in a metric); ``perf_counter`` times the hook."""

    def __init__(self, config: Callable[[], RiskConfig], veto: Veto | None = None,
                 veto_budget_ms: Callable[[], float] = lambda: 5.0,
                 monotonic: Callable[[], float] = time.monotonic,
                 on_veto_overrun: Callable[[], None] = lambda: None,
                 perf_counter: Callable[[], float] = time.perf_counter) -> None:
        self._config = config
        self._veto = veto
        self._veto_budget_ms = veto_budget_ms
        self._mono = monotonic
        self._on_overrun = on_veto_overrun
        self._perf = perf_counter
        self.bucket = TokenBucket()
        self.breaker = VenueBreaker()
        self.veto_overruns = 0

    def check(self, order: OrderCheck, account: AccountSnapshot,
              now: float | None = None) -> Decision:
        """Run the chain; on acceptance the token and (half-open) probe are taken."""
        c = self._config()
        t = self._mono() if now is None else now
        if not order.reduce_only:
            for name, rule in _PURE_RULES:
                why = rule(order, account, c)
                if why is not None:
                    return Decision(False, name, why)
            why = self.bucket.check(t, c)
            if why is not None:
                return Decision(False, "order_rate", why)
        why = self.breaker.check(t, c)
        if why is not None:
            return Decision(False, "venue_breaker", why)
        if not order.reduce_only and self._veto is not None:
            why = self._call_veto(order)
            if why is not None:
                return Decision(False, "plugin_veto", why)
        if not order.reduce_only:
            self.bucket.commit(t, c)
        self.breaker.commit(t, c)
        return ACCEPT

    def _call_veto(self, order: OrderCheck) -> str | None:
        """Why the veto hook refuses ``order`` (it vetoed, raised or overran), else None."""
        assert self._veto is not None
        budget_ms = self._veto_budget_ms()
        t0 = self._perf()
        try:
            result = self._veto(order)
        except Exception as exc:  # fail closed: an entry nobody could check is not sent
            log.warning("risk.veto_hook_failed", error=repr(exc))
            return f"veto hook failed: {type(exc).__name__}: {exc}"
        elapsed_ms = (self._perf() - t0) * 1e3
        over = elapsed_ms > budget_ms
        if over:
            self.veto_overruns += 1
            self._on_overrun()
            log.warning("risk.veto_over_budget", elapsed_ms=round(elapsed_ms, 3),
                        budget_ms=budget_ms)
        if result is not None:
            return f"{result[0]}: {result[1]}"
        if over:
            # Fail closed too: an answer that came too late is not an answer (the next call
            # may hang longer), and the order's price has aged by that much.
            return f"veto hook took {elapsed_ms:.3f} ms > budget {budget_ms:g} ms"
        return None

    def record_venue(self, ok: bool, now: float | None = None) -> None:
        self.breaker.record(ok, self._mono() if now is None else now, self._config())

    def breaker_gauge(self, now: float | None = None) -> int:
        return self.breaker.gauge(self._mono() if now is None else now, self._config())
