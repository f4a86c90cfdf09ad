"""ACB v6, the adaptive circuit breaker (bible §10, parameters §19.2).

Scale 1 (daily): external factors -> signal count -> ``base_boost = 1 + 0.5 * log1p(signals)``.
Scale 3 (daily): w750 velocity against its 60th percentile -> beta 0.8 or 0.2.
Scale 2 (per bar): ``regime_size_mult`` from vel_div strength (``sizing.regime_size_mult``).
Sub-day updates (§7.3, §10.5): a new {boost, beta} applies at the start of the next bar; a
drop from >= 1.25 to < 1.10 forces the SUBDAY_ACB_NORMALIZATION exit.

Readings where the bible is silent or ambiguous:

* FNG "(requires confirmation)" (§10.2): we read it as "counts only when at least one other
  factor is also bearish"; a lone fear reading adds nothing.
* Scale 3's percentile is "preloaded" from all historical w750 velocities (one value per
  date). Streaming, we keep the warm w750 velocities the engine has seen (bounded) and take
  the 60th percentile once per UTC day, at the day's first warm scan, against that scan's w750
  velocity. Until ``min_samples`` (100) velocities exist there is no distribution to compare
  with, and beta is BETA_LOW (the conservative one); the day's beta is then decided once, as
  soon as there are enough.
* An absent factor contributes nothing; with none at all the boost is 1.0 and the reason says
  so (the daemon shows it in /status).
* The external factors arrive as JSON (the state bus's ``exf_latest`` or a file) with the
  bible's names ``funding_btc``, ``dvol_btc``, ``fng``, ``taker``; ``parse_external_factors``
  refuses anything else loudly rather than trading on a misread number.
* A recalibrated w750 threshold (the scheduler plugin's ``acb_w750_threshold``) replaces the
  streaming percentile; beta is re-decided at the next warm bar (a sub-day update, §10.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dolphind.alpha.params import StrategyParams

# §10.2 "base_boost = 1.0 + 0.5 * log1p(signals)" when signals >= 1.0.
BOOST_LOG_SLOPE = 0.5
BOOST_MIN_SIGNALS = 1.0


@dataclass(frozen=True, slots=True)
class ExternalFactors:
    """The §10.2 inputs (daily medians upstream); None means the factor is unavailable."""

    funding_btc: float | None = None
    dvol_btc: float | None = None
    fng: float | None = None
    taker: float | None = None


@dataclass(frozen=True, slots=True)
class AcbBoost:
    """Scale-1 outcome: the boost, the signal count and a one-line reason for /status."""

    boost: float
    signals: float
    reason: str


EXF_FIELDS = ("funding_btc", "dvol_btc", "fng", "taker")
# Plausible ranges: a value outside is a broken feed, not a market reading (fear & greed is an
# index 0-100; implied vol and the taker buy/sell ratio cannot be negative).
_EXF_RANGES: dict[str, tuple[float, float]] = {
    "funding_btc": (-1.0, 1.0), "dvol_btc": (0.0, 1000.0), "fng": (0.0, 100.0),
    "taker": (0.0, 100.0)}
# lambda_max / N lies in [0, 1], so a w750 velocity (a difference of two) lies in [-1, 1].
W750_THRESHOLD_ABS_MAX = 1.0


def parse_external_factors(payload: object) -> ExternalFactors:
    """Validate an ``exf_latest`` payload (a JSON object) into ``ExternalFactors``.

    Unknown keys (``_pushed_at``, other feeds) are ignored; a known key may be null (that
    factor is unavailable). Raises ValueError naming the first problem: not an object, none of
    the four factors present, a non-number, a non-finite or out-of-range value.
    """
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
    if not any(k in payload for k in EXF_FIELDS):
        raise ValueError(f"none of {', '.join(EXF_FIELDS)} present")
    values: dict[str, float | None] = {}
    for key in EXF_FIELDS:
        v = payload.get(key)
        if v is None:
            values[key] = None
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{key}: expected a number or null, got {v!r}")
        lo, hi = _EXF_RANGES[key]
        if not (math.isfinite(v) and lo <= v <= hi):
            raise ValueError(f"{key}: {v!r} is outside [{lo:g}, {hi:g}]")
        values[key] = float(v)
    return ExternalFactors(**values)


def parse_w750_calibration(payload: object) -> float:
    """The threshold of an ``acb_w750_threshold`` payload ({"threshold": ..., ...}); raises
    ValueError when it is missing, not a finite number, or outside [-1, 1]."""
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
    v = payload.get("threshold")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"threshold: expected a number, got {v!r}")
    if not (math.isfinite(v) and abs(v) <= W750_THRESHOLD_ABS_MAX):
        raise ValueError(f"threshold: {v!r} is outside [-1, 1]")
    return float(v)


def _present(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def factor_signals(f: ExternalFactors, p: StrategyParams) -> dict[str, float]:
    """Each factor's bearish signal weight, 1.0 / 0.5 / 0.0 (bible §10.2 table)."""
    out: dict[str, float] = {}
    if _present(f.funding_btc):
        v = float(f.funding_btc)  # type: ignore[arg-type]
        out["funding"] = 1.0 if v < p.funding_very_bearish else 0.5 if v < p.funding_mild_bearish else 0.0
    if _present(f.dvol_btc):
        v = float(f.dvol_btc)  # type: ignore[arg-type]
        out["dvol"] = 1.0 if v > p.dvol_extreme else 0.5 if v > p.dvol_elevated else 0.0
    if _present(f.taker):
        v = float(f.taker)  # type: ignore[arg-type]
        out["taker"] = 1.0 if v < p.taker_selling else 0.5 if v < p.taker_mild_selling else 0.0
    if _present(f.fng):
        v = float(f.fng)  # type: ignore[arg-type]
        w = 1.0 if v < p.fng_extreme_fear else 0.5 if v < p.fng_fear else 0.0
        # "requires confirmation": fear counts only alongside another bearish factor.
        out["fng"] = w if sum(out.values()) > 0.0 else 0.0
    return out


def base_boost(signals: float) -> float:
    """1 + 0.5 * log1p(signals) for signals >= 1, else 1.0 (bible §10.2): 1.347/1.549/1.693."""
    if signals >= BOOST_MIN_SIGNALS:
        return 1.0 + BOOST_LOG_SLOPE * math.log1p(signals)
    return 1.0


def compute_boost(factors: ExternalFactors | None, p: StrategyParams) -> AcbBoost:
    """Scale 1 end to end, with the reason string the daemon shows in /status."""
    if factors is None:
        return AcbBoost(1.0, 0.0, "no external factors: ACB boost 1.0")
    weights = factor_signals(factors, p)
    if not weights:
        return AcbBoost(1.0, 0.0, "no external factors: ACB boost 1.0")
    signals = sum(weights.values())
    boost = base_boost(signals)
    parts = ", ".join(f"{k}={v:g}" for k, v in sorted(weights.items()))
    missing = sorted({"funding", "dvol", "fng", "taker"} - set(weights))
    tail = f"; missing {', '.join(missing)}" if missing else ""
    return AcbBoost(boost, signals, f"signals={signals:g} ({parts}){tail}: boost {boost:.3f}")


def dynamic_beta(w750_vel: float, threshold: float, p: StrategyParams) -> float:
    """BETA_HIGH when w750_vel >= its p60 threshold, else BETA_LOW (bible §10.3)."""
    return p.beta_high if w750_vel >= threshold else p.beta_low


def subday_exit_due(old_boost: float, new_boost: float, p: StrategyParams) -> bool:
    """old >= 1.25 and new < 1.10 -> SUBDAY_ACB_NORMALIZATION (bible §7.3)."""
    return old_boost >= p.subday_old_boost_min and new_boost < p.subday_new_boost_max


class W750Beta:
    """Scale 3, streaming: beta recomputed once per UTC day from the w750 velocity percentile.

    Keeps the last ``max_samples`` warm w750 velocities in a ring. At the first warm scan of a
    new UTC day, ``threshold = percentile(samples, 60)`` and ``beta = dynamic_beta(vel,
    threshold)``; the beta then holds for the rest of the day. A day that starts with fewer
    than ``min_samples`` velocities runs on BETA_LOW until there are enough, then decides once.
    """

    DAY_NS = 86_400 * 1_000_000_000

    def __init__(self, p: StrategyParams, max_samples: int = 100_000, min_samples: int = 100) -> None:
        self._p = p
        self._ring = np.empty(max_samples)
        self._n = 0
        self._pos = 0
        self._min = min_samples
        self._day = -1
        self._decided = False
        self.beta = p.beta_low
        self.threshold = math.nan
        # A recalibrated threshold from outside (None: the streaming percentile decides).
        self.override: float | None = None

    def set_threshold(self, threshold: float | None) -> None:
        """Use ``threshold`` instead of the streaming percentile (None: back to it); the day's
        beta is re-decided at the next warm bar."""
        self.override = threshold
        self._decided = False

    def observe(self, ts_ns: int, w750_vel: float) -> float:
        """Record one bar's w750 velocity (NaN when cold); returns the beta in force."""
        if not math.isfinite(w750_vel):
            return self.beta
        self._ring[self._pos] = w750_vel
        self._pos = (self._pos + 1) % self._ring.shape[0]
        self._n = min(self._n + 1, self._ring.shape[0])
        day = ts_ns // self.DAY_NS
        if day != self._day:
            self._day = day
            self._decided = self._decide(w750_vel)
        elif not self._decided:
            # The day began before there was a distribution; decide once there is one.
            self._decided = self._decide(w750_vel)
        return self.beta

    def _decide(self, w750_vel: float) -> bool:
        if self.override is not None:
            self.threshold = self.override
            self.beta = dynamic_beta(w750_vel, self.threshold, self._p)
            return True
        if self._n < self._min:
            self.threshold = math.nan
            self.beta = self._p.beta_low
            return False
        self.threshold = float(np.percentile(self._ring[: self._n], self._p.w750_threshold_pct))
        self.beta = dynamic_beta(w750_vel, self.threshold, self._p)
        return True
