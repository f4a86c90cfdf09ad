"""The alpha engine: one scan in, one decision out (bible §13.2 bar loop, §13.3 entry).

``AlphaEngine.on_scan(scan, book, portfolio)`` is pure and synchronous: no I/O, no clock (time
is the scan's own ``ts_ns``), no globals, no randomness. Per bar, in the bible's order:

1. bookkeeping: bar count, vel_div history, per-symbol price windows, a pending ACB update
   (§10.5: applied at the start of the next bar), ACB scale 3 beta, survival-stack step,
   ACB scale 2 ``regime_size_mult`` (§13.1 ``_update_regime_size_mult`` before process_bar);
2. exits for the open position (§13.2 "always first"; ``exits.evaluate_exit``);
3. at most one entry, only when flat, not halted (posture TURTLE/HIBERNATE or MC RED, §11.7,
   §12), after ``lookback`` bars, in an ok volatility regime, via §13.3: vel_div gate -> IRP
   asset -> DC -> OB Sub-2 -> sizing with the ACB / OB / STALKER leverage ceiling.

The engine never assumes its intents were filled: the portfolio view is the only truth about
the position. While an intent is unacknowledged (the view does not yet reflect it) the engine
does not repeat it for ``INTENT_ACK_BARS`` bars; after that it assumes the intent was dropped
(rejected by a rail, say) and may issue a new one.

Outcome labels (``Decision.outcome``, for ``dolphind_signals_total{outcome}``): exit,
exit_pending, in_position, entry_pending, posture_hibernate, posture_turtle, mc_red, warmup,
cold, thin_universe (fewer than ``min_symbols`` priced), no_signal, vol_regime, no_capital,
irp_no_match, not_eligible, venue_symbol / min_notional (IRP off and the venue cannot take the
fallback asset), dc_contradict, ob_contradict, entered.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from dolphind.alpha import acb as acb_mod
from dolphind.alpha.acb import AcbBoost, ExternalFactors, W750Beta
from dolphind.alpha.book_inputs import BookInputs
from dolphind.alpha.eligibility import Eligibility, VenueCheck
from dolphind.alpha.exits import BookStress, evaluate_exit
from dolphind.alpha.intents import entry_intent, exit_intent
from dolphind.alpha.irp import IrpGates, IrpScorer
from dolphind.alpha.irp_explain import Candidate, explain_candidates, format_candidates
from dolphind.alpha.mc_gate import NO_MODEL_RESULT, McForewarner, McGateResult, assess
from dolphind.alpha.params import CHAMPION, StrategyParams, at_interval, params_hash
from dolphind.alpha.posture import PostureState, SensorReadings, SurvivalStack
from dolphind.alpha.price_windows import PriceWindows
from dolphind.alpha.signal import (
    SHORT,
    book_confirmation,
    direction_confirmation,
    rolling_vol,
    short_confidence,
    short_equivalent,
    signal_direction,
    vel_div_trend,
    vol_regime_ok,
)
from dolphind.alpha.sizing import market_ob_mult, regime_size_mult, signal_bucket, size_position
from dolphind.alpha.trade_record import TradeRecord
from dolphind.alpha.views import BookView, PortfolioView, PositionView
from dolphind.events import OrderIntent, ScanRecord

# _try_entry_once: the venue turned the selected asset away; walk on to the next one.
_VENUE_RETRY = "_venue_retry"

INTENT_ACK_BARS = 2
VEL_DIV_HISTORY = 200  # §13.2 "vel_div_history.append(vel_div) # trimmed to 200"
W750_INDEX = 3  # ScanRecord.velocity is indexed like events.WINDOWS = (50, 150, 300, 750)
NS_PER_MIN = 60_000_000_000
NS_PER_HOUR = 3_600_000_000_000
NS_PER_DAY = 86_400_000_000_000


@dataclass(frozen=True, slots=True)
class Decision:
    """What one bar produced: intents (exits before entries) and the outcome label."""

    scan_number: int
    intents: tuple[OrderIntent, ...]
    outcome: str
    posture: str
    rm: float
    regime_size_mult: float
    # An entry's IRP ranking: the top assets and the gate that excluded each (issue 16).
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """A snapshot for /status: why the engine sizes the way it does right now."""

    params_hash: str
    bars: int
    posture: str
    rm: float
    acb_boost: float
    acb_beta: float
    acb_reason: str
    mc_status: str
    mc_source: str
    regime_size_mult: float
    # ACB scale 3: the w750 threshold in force (NaN: not enough samples yet) and its origin.
    w750_threshold: float = math.nan
    w750_source: str = "percentile"
    # Survival Cat1 inputs as last set (SPEC §3: the daemon's own health).
    system_alive: float = 1.0
    heartbeat_age_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _PendingAcb:
    boost: AcbBoost
    beta: float | None


class AlphaEngine:
    """The champion strategy's bar loop over scans (bible §13)."""

    def __init__(
        self, params: StrategyParams = CHAMPION, forewarner: McForewarner | None = None,
        *, min_symbols: int = 0, bar_interval_s: float | None = None,
    ) -> None:
        # The profile (durations in seconds) is what the hash names; the engine runs on its
        # conversion to this run's bar interval (the profile's own interval until told).
        self._profile = params
        self._p = at_interval(params, bar_interval_s or params.validation_bar_s)
        self._hash = params_hash(params)
        self._forewarner = forewarner
        # A scan over fewer priced symbols than this is not tradeable (scan.min_symbols).
        self._min_symbols = min_symbols
        self._gates = IrpGates(
            max_noise=params.irp_max_noise,
            max_latency=params.irp_max_latency,
            min_alignment_filter=params.irp_min_alignment_filter,
            min_irp_alignment=params.min_irp_alignment,
            min_depth_quality=params.ob_min_depth_quality,
        )
        self._windows = PriceWindows()
        self._scorer = IrpScorer()
        self._eligibility = Eligibility(self._windows)
        self._book = BookInputs(self._windows)
        self._bars = 0
        self._vd_history: deque[float] = deque(maxlen=VEL_DIV_HISTORY)
        self._last_ts: int | None = None
        self._day = -1
        # ACB
        self._boost = acb_mod.compute_boost(None, params)
        self._w750 = W750Beta(params)
        self._external_beta: float | None = None
        self._beta = params.beta_low
        self._pending_acb: _PendingAcb | None = None
        self._rsm = 1.0
        # MC gate and survival stack
        self._mc: McGateResult = NO_MODEL_RESULT
        self._mc_ts: int | None = None
        self._survival = SurvivalStack(params)
        self._posture_state: PostureState | None = None
        self._system_alive = 1.0
        self._heartbeat_age_s = 0.0
        self._dvol_spike_ts: int | None = None
        self._trades = TradeRecord()  # trade history for the alpha layers (§6.4)
        # Unacknowledged intents
        self._pending_entry_bar: int | None = None
        self._pending_exit: tuple[str, int, int] | None = None

    # ---------------------------------------------------------------- inputs between bars

    def set_bar_interval(self, bar_s: float) -> StrategyParams:
        """Convert the profile's durations to bars of ``bar_s`` (before the first scan)."""
        self._p = at_interval(self._profile, bar_s)
        return self._p

    def set_eligible(self, symbols: frozenset[str] | None) -> None:
        """The symbols IRP may pick (None: any); the others are skipped in the walk."""
        self._eligibility.set_symbols(symbols)

    def set_venue_check(self, check: VenueCheck | None) -> None:
        """The venue's word on an entry (``execution.filters.entry_gate``): IRP takes the next
        ranked asset when the venue does not list the chosen one or the order would be too
        small for it, as it does for the allowlist."""
        self._eligibility.venue_check = check

    def set_min_symbols(self, n: int) -> None:
        self._min_symbols = n

    def set_external_factors(self, factors: ExternalFactors | None) -> AcbBoost:
        """New ACB scale-1 inputs; the boost applies at the start of the next bar (§10.5)."""
        boost = acb_mod.compute_boost(factors, self._p)
        self._pending_acb = _PendingAcb(boost, None)
        return boost

    def apply_acb_update(self, boost: float, beta: float | None, reason: str = "ACB update") -> None:
        """A sub-day {boost, beta} from an ACB processor (§10.5); applied at the next bar.

        ``beta=None`` keeps the engine's own scale-3 beta.
        """
        self._pending_acb = _PendingAcb(AcbBoost(boost, math.nan, reason), beta)

    def set_mc_result(self, result: McGateResult, ts_ns: int | None = None) -> None:
        """The day's MC-forewarner verdict (computed outside, e.g. by a model service)."""
        self._mc = result
        self._mc_ts = ts_ns

    def set_health(self, system_alive: float, heartbeat_age_s: float) -> None:
        """Survival Cat1: the daemon's own health (SPEC §3), not a node count."""
        self._system_alive = system_alive
        self._heartbeat_age_s = heartbeat_age_s

    def set_w750_threshold(self, threshold: float | None) -> None:
        """A recalibrated ACB scale-3 threshold (None: back to the engine's own percentile).

        Beta is re-decided against it at the next warm bar (a sub-day update, §10.5)."""
        self._w750.set_threshold(threshold)

    def set_dvol_spike(self, ts_ns: int | None) -> None:
        """Survival Cat4: the time of the latest DVOL spike (None: none on record)."""
        self._dvol_spike_ts = ts_ns

    # ---------------------------------------------------------------- read-outs

    @property
    def params(self) -> StrategyParams:
        return self._p

    def status(self) -> EngineStatus:
        ps = self._posture_state
        return EngineStatus(
            params_hash=self._hash,
            bars=self._bars,
            posture=self._survival.posture,
            rm=ps.rm if ps else self._survival.rm,
            acb_boost=self._boost.boost,
            acb_beta=self._beta,
            acb_reason=self._boost.reason,
            mc_status=self._mc.status,
            mc_source=self._mc.source,
            regime_size_mult=self._rsm,
            w750_threshold=self._w750.threshold,
            w750_source="percentile" if self._w750.override is None else "recalibrated",
            system_alive=self._system_alive,
            heartbeat_age_s=self._heartbeat_age_s,
        )

    # ---------------------------------------------------------------- the bar loop

    def on_scan(
        self, scan: ScanRecord, book: BookView | None, portfolio: PortfolioView
    ) -> Decision:
        """Process one bar (bible §13.2): exits first, then at most one entry."""
        p = self._p
        self._bars += 1
        vd = scan.vel_div
        self._vd_history.append(vd)
        self._windows.push(scan.symbols, scan.prices)
        ts = scan.ts_ns
        dt_min = 0.0 if self._last_ts is None else max(0.0, (ts - self._last_ts) / NS_PER_MIN)
        self._last_ts = ts
        self._new_day(ts)

        # ACB: a pending update first (it may force the sub-day exit), then scale 3, scale 2.
        subday_exit = False
        if self._pending_acb is not None:
            pending, self._pending_acb = self._pending_acb, None
            subday_exit = acb_mod.subday_exit_due(self._boost.boost, pending.boost.boost, p)
            self._boost = pending.boost
            if pending.beta is not None:
                self._external_beta = pending.beta
        internal_beta = self._w750.observe(ts, scan.velocity[W750_INDEX])
        self._beta = internal_beta if self._external_beta is None else self._external_beta
        self._rsm = regime_size_mult(vd, self._boost.boost, self._beta, self._mc.scale, p)

        state = self._survival.step(self._readings(book, portfolio, ts), dt_min)
        self._posture_state = state
        self._trades.record_closed(portfolio)

        position = portfolio.position
        if position is not None:
            self._pending_entry_bar = None
            return self._manage(scan, book, position, state, subday_exit)
        self._pending_exit = None
        outcome, intents = self._try_entry(scan, book, portfolio, state)
        candidates: tuple[Candidate, ...] = ()
        if intents and self._p.use_asset_selection:
            # Why this asset: the ranking as the walk saw it (only on entries; cheap enough).
            candidates = explain_candidates(
                self._windows, self._p.irp_lookback, -1 if intents[0].side == "SELL" else 1,
                self._book.depth_by_row(book), self._gates, self._windows.row(intents[0].symbol),
                self._eligibility.mask(), venue_excluded=self._eligibility.venue_excluded)
            # The ranking travels with the intent, so the audit's order record keeps it.
            intents = (dataclasses.replace(intents[0], gates=intents[0].gates + (
                ("irp_candidates", format_candidates(candidates)),)),)
        return Decision(scan.scan_number, intents, outcome, state.posture, state.rm, self._rsm,
                        candidates)

    def prime(self, scan: ScanRecord) -> None:
        """A bar of history from before this start (a restored scan window, a filled gap, a
        backfill): the histories a decision reads (bar count for ``lookback``, vel_div, price
        windows, the w750 distribution) advance as in ``on_scan``; nothing is decided."""
        self._bars += 1
        self._vd_history.append(scan.vel_div)
        self._windows.push(scan.symbols, scan.prices)
        self._w750.observe(scan.ts_ns, scan.velocity[W750_INDEX])
        self._last_ts = scan.ts_ns

    # ---------------------------------------------------------------- per-bar helpers

    def _new_day(self, ts: int) -> None:
        """Once per UTC day: the MC gate runs against the day's configuration (§12)."""
        day = ts // NS_PER_DAY
        if day == self._day:
            return
        self._day = day
        if self._forewarner is not None:
            cfg = {"max_leverage": self._p.max_leverage * self._boost.boost}
            self._mc = assess(self._forewarner, cfg)
            self._mc_ts = ts

    def _readings(self, book: BookView | None, portfolio: PortfolioView, ts: int) -> SensorReadings:
        dq, fp = self._book.market_quality(book)
        mc_status = self._mc.status if self._mc.from_model else None
        stale_h = 0.0 if self._mc_ts is None else max(0.0, (ts - self._mc_ts) / NS_PER_HOUR)
        spike = None if self._dvol_spike_ts is None else max(0.0, (ts - self._dvol_spike_ts) / NS_PER_MIN)
        return SensorReadings(
            system_alive=self._system_alive,
            heartbeat_age_s=self._heartbeat_age_s,
            mc_status=mc_status,
            mc_staleness_hours=stale_h,
            book_present=book is not None,
            ob_stale=book.stale if book is not None else False,
            depth_quality=dq,
            fill_probability=fp,
            minutes_since_dvol_spike=spike,
            drawdown=portfolio.drawdown,
        )

    def _manage(
        self,
        scan: ScanRecord,
        book: BookView | None,
        pos: PositionView,
        state: PostureState,
        subday_exit: bool,
    ) -> Decision:
        """Exit management for the open position (§7, §13.2)."""
        p = self._p
        row = self._windows.row(pos.symbol)
        price = self._windows.last_price(row) if self._windows.priced_now(row) else math.nan
        stress: BookStress | None = None
        if book is not None:
            sb = book.get(pos.symbol)
            stress = BookStress(
                cascade_count=book.cascade_count,
                regime_signal=book.regime_signal,
                imbalance_ma5=sb.imbalance_ma5 if sb else math.nan,
                withdrawal_velocity=sb.withdrawal_velocity if sb else math.nan,
            )
        decision = evaluate_exit(
            p, pos.entry_price, price, pos.direction, pos.bars_held, stress,
            hibernate=state.posture == "HIBERNATE", subday_acb_exit=subday_exit,
        )
        if decision is None:
            return Decision(scan.scan_number, (), "in_position", state.posture, state.rm, self._rsm)
        pending = self._pending_exit
        if (
            pending is not None and pending[0] == pos.symbol and pending[1] == pos.entry_scan
            and self._bars - pending[2] < INTENT_ACK_BARS
        ):
            return Decision(scan.scan_number, (), "exit_pending", state.posture, state.rm, self._rsm)
        self._pending_exit = (pos.symbol, pos.entry_scan, self._bars)
        ref = price if math.isfinite(price) else self._windows.last_price(row)
        if not math.isfinite(ref):
            ref = pos.entry_price
        intent = exit_intent(scan, pos, decision, ref, state.posture, self._boost.boost)
        return Decision(scan.scan_number, (intent,), "exit", state.posture, state.rm, self._rsm)

    def _try_entry(
        self, scan: ScanRecord, book: BookView | None, portfolio: PortfolioView, state: PostureState
    ) -> tuple[str, tuple[OrderIntent, ...]]:
        """§13.2 entry guard and §13.3 ``_try_entry``: (outcome, intents). An asset the venue
        cannot take (``set_venue_check``) is set aside and the walk goes on to the next one."""
        self._eligibility.new_walk()
        while True:
            outcome, intents = self._try_entry_once(scan, book, portfolio, state)
            if outcome != _VENUE_RETRY:
                return outcome, intents

    def _try_entry_once(
        self, scan: ScanRecord, book: BookView | None, portfolio: PortfolioView, state: PostureState
    ) -> tuple[str, tuple[OrderIntent, ...]]:
        p = self._p
        if self._pending_entry_bar is not None:
            if self._bars - self._pending_entry_bar < INTENT_ACK_BARS:
                return "entry_pending", ()
            self._pending_entry_bar = None
        # Halt (regime_dd_halt): posture TURTLE / HIBERNATE or MC RED (§11.7, §12).
        if state.posture == "HIBERNATE":
            return "posture_hibernate", ()
        if state.posture == "TURTLE":
            return "posture_turtle", ()
        if self._mc.status == "RED":
            return "mc_red", ()
        if self._bars < p.lookback:
            return "warmup", ()
        vd = scan.vel_div
        if not math.isfinite(vd):
            return "cold", ()
        if self._min_symbols > 0 and _priced(scan.prices) < self._min_symbols:
            # Eigenvalues of a 2-symbol "market" say nothing about the market (issue 16).
            return "thin_universe", ()
        direction = signal_direction(vd, p.vel_div_threshold, p.long_enabled, p.long_threshold)
        if direction == 0:
            return "no_signal", ()
        if p.vol_p60_threshold is not None:
            vrow = self._windows.row(p.vol_asset)
            dvol = (
                rolling_vol(self._windows.window(vrow, p.vol_window_bars + 1), p.vol_window_bars)
                if vrow >= 0 else math.nan
            )
            if not vol_regime_ok(dvol, p.vol_p60_threshold):
                return "vol_regime", ()
        capital = portfolio.capital
        if not capital > 0.0:
            return "no_capital", ()

        # 1. IRP asset selection (§5, §13.3 step 1). No match: no trade, no fallback asset.
        if not p.use_asset_selection:
            # §13.3 "trade_asset = 'BTCUSDT' # fallback when IRP disabled" (not the champion).
            row = self._windows.row("BTCUSDT")
            if not self._windows.priced_now(row):
                return "irp_no_match", ()
            irp = None
        else:
            irp = self._scorer.select(
                self._windows, p.irp_lookback, direction, self._book.depth_by_row(book),
                self._gates, self._eligibility.mask(),
            )
            if irp is None:
                return "irp_no_match", ()
            row = irp.index
        symbol = self._windows.symbols[row]
        allowed = self._eligibility.symbols
        if allowed is not None and symbol not in allowed:
            return "not_eligible", ()  # IRP disabled and the fallback asset is not allowed

        # 2. Signal: DC (§4.2) and OB Sub-2 (§4.3) on the selected asset.
        dc = direction_confirmation(
            self._windows.window(row, p.dc_lookback_bars + 1),
            p.dc_lookback_bars, p.dc_min_magnitude_bps, direction,
        )
        if dc == "CONTRADICT" and p.dc_skip_contradicts:
            return "dc_contradict", ()
        sev = short_equivalent(vd, direction, p.vel_div_threshold, p.long_threshold)
        confidence = short_confidence(sev, p.vel_div_threshold, p.vel_div_extreme)
        ob_conf_mult = 1.0
        if book is not None:
            sb = book.get(symbol)
            if sb is not None:
                bc = book_confirmation(sb.imbalance_ma5, sb.imbalance_persistence, direction)
                if bc.skip:
                    return "ob_contradict", ()
                ob_conf_mult = bc.confidence_mult
        confidence *= ob_conf_mult

        # 3–6. Sizing, OB Sub-3, ACB ceiling, STALKER cap, notional (§6, §13.3).
        trend = vel_div_trend(self._vd_history)
        sev_trend = trend if direction == SHORT else -trend
        bucket = signal_bucket(sev, p.vel_div_threshold, p.vel_div_extreme)
        ob_mult = market_ob_mult(self._book.market_eff_imbalance(book, direction))
        size = size_position(
            capital=capital,
            vel_div=sev,
            vd_trend=sev_trend,
            bucket_wins=self._trades.bucket_wins[bucket],
            bucket_trades=self._trades.bucket_trades[bucket],
            recent_wins=tuple(self._trades.recent_wins),
            rsm=self._rsm,
            ob_mult=ob_mult,
            stalker=state.posture == "STALKER",
            p=p,
            bucket=bucket,
            dc_mult=p.dc_leverage_boost if dc == "CONFIRM" else 1.0,
        )
        ref = self._windows.last_price(row)
        venue_check = self._eligibility.venue_check
        if venue_check is not None:
            gate = venue_check(symbol, size.notional, ref)
            if gate:
                excluded = self._eligibility.venue_excluded
                if irp is None or row in excluded:
                    return gate, ()  # no ranking to walk on (IRP off): the venue's reason
                excluded[row] = gate
                return _VENUE_RETRY, ()
        self._pending_entry_bar = self._bars
        self._trades.entered(scan.scan_number, bucket)
        intent = entry_intent(
            scan, symbol, direction, ref, size, irp, state, confidence=confidence, bucket=bucket,
            dc=dc, ob_conf_mult=ob_conf_mult, ob_mult=ob_mult, rsm=self._rsm,
            acb_boost=self._boost.boost, acb_beta=self._beta, mc_status=self._mc.status)
        return "entered", (intent,)


def _priced(prices: np.ndarray) -> int:
    """How many symbols have a usable price on this bar."""
    return int(np.count_nonzero(np.asarray(prices) > 0.0))
