"""The champion strategy's parameters (bible §19) as one frozen dataclass, and its fingerprint.

The champion is frozen (bible §1: "Champion parameters are FROZEN"). ``params_hash`` is the
first 16 hex digits of the SHA-256 of the sorted-key JSON of every field, so any change to any
parameter, however small, changes the hash. A config that changes a parameter while still
calling itself ``profile = "champion"`` is refused (``check_profile``); a deliberate variant
must carry its own profile name.

Grouping (one field per bible row; constants the bible writes inline inside a formula stay in
the module that owns the formula, next to the citation):

- §19.1 champion table (signal, sizing, exits, DC, IRP alignment, warm-up). The fee and legacy
  OB rows (``sp_maker_*``, ``ob_edge_bps``, ``ob_confirm_rate``, ``seed``) are carried so the
  hash covers the whole table; the alpha engine never reads them: friction is the venue's job
  (SPEC §3 Friction) and the legacy Monte-Carlo OB edge is random, which dolphind never is.
- §5.4/§5.5 IRP window and filter gates, §4.1 LONG path (off), §7.2 OB exit multipliers.
- §19.2 ACB v6 (plus the "mild" tiers and log curve of §10.2, and §7.3 sub-day thresholds).
- §19.3 survival stack thresholds (plus §11.2–§11.6 sensor constants and hysteresis).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

CHAMPION_PROFILE = "champion"
# A field computed from the profile (a duration in bars of the run's interval): not hashed,
# not settable in a config.
DERIVED = {"derived": True}


@dataclass(frozen=True, slots=True)
class StrategyParams:
    """Every tunable of the strategy. Defaults are the champion (bible §19)."""

    # --- §19.1 signal (§4.1) ---------------------------------------------------------------
    vel_div_threshold: float = -0.02
    vel_div_extreme: float = -0.05
    # §13.1: regime_direction = direction or -1 (SHORT champion).
    direction: int = -1
    # §4.1 LONG path ("green posture, not champion"): off by default.
    long_enabled: bool = False
    long_threshold: float = 0.01

    # --- §19.1 sizing (§6) -----------------------------------------------------------------
    min_leverage: float = 0.5
    max_leverage: float = 5.0
    abs_max_leverage: float = 6.0
    leverage_convexity: float = 3.0
    fraction: float = 0.20
    # §6.4: eff_fraction = clamp(eff_fraction, 0.02, base_fraction); also base_frac's floor.
    min_fraction: float = 0.02
    # §11.7 / §6.5: STALKER hard cap on the leverage ceiling.
    stalker_max_leverage: float = 2.0
    # §4.2: "DC has dc_leverage_boost=1.0 (no boost in champion)".
    dc_leverage_boost: float = 1.0

    # --- §19.1 exits (§7) ------------------------------------------------------------------
    fixed_tp_pct: float = 0.0095
    stop_pct: float = 1.0
    # Not settable: max_hold_s in bars of the run's interval (derived, not hashed).
    max_hold_bars: int = field(default=120, metadata=DERIVED)

    # --- §19.1 direction confirmation (§4.2) -----------------------------------------------
    # Not settable: dc_lookback_s in bars of the run's interval (derived, not hashed).
    dc_lookback_bars: int = field(default=7, metadata=DERIVED)
    dc_min_magnitude_bps: float = 0.75
    dc_skip_contradicts: bool = True

    # --- §19.1 / §5 IRP --------------------------------------------------------------------
    use_asset_selection: bool = True
    min_irp_alignment: float = 0.45
    irp_lookback: int = 50
    irp_max_noise: float = 500.0
    irp_max_latency: float = 20.0
    irp_min_alignment_filter: float = 0.20
    # §5.5: "ob_placement.depth_quality < 0.20: continue" (OB depth gate).
    ob_min_depth_quality: float = 0.20

    # --- §19.1 fees / legacy OB (carried for the hash; never read by the alpha engine) ----
    sp_maker_entry_rate: float = 0.62
    sp_maker_exit_rate: float = 0.50
    ob_edge_bps: float = 5.0
    ob_confirm_rate: float = 0.40
    seed: int = 42

    # --- §19.1 warm-up, §25.6 volatility regime --------------------------------------------
    # Not settable: lookback_s in bars of the run's interval (derived, not hashed).
    lookback: int = field(default=100, metadata=DERIVED)
    # §25.6 "Rolling 50-bar dvol (vol_ok)" against VOL_P60_THRESHOLD. The bible never states
    # the threshold's value, so the champion default is None = no volatility gate beyond the
    # warm-up, which is exactly the bible's own fallback (§13.1 "(bid >= 100)", §14.4
    # "vol_regime_ok | bar_idx >= 100 (warmup)").
    vol_p60_threshold: float | None = None
    vol_asset: str = "BTCUSDT"
    vol_window_bars: int = 50

    # --- §7.2 OB dynamic exits -------------------------------------------------------------
    cascade_tp_mult: float = 1.40
    cascade_hold_mult: float = 0.50
    withdrawal_sl_pct: float = 0.10
    withdrawal_tp_mult: float = 0.60
    opposing_hold_mult: float = 0.40
    calm_hold_mult: float = 1.50
    asset_withdrawal_velocity: float = -0.20
    asset_withdrawal_tp_mult: float = 0.75

    # --- §19.2 ACB v6 (§10) ----------------------------------------------------------------
    beta_high: float = 0.8
    beta_low: float = 0.2
    w750_threshold_pct: float = 60.0
    funding_very_bearish: float = -0.0001
    funding_mild_bearish: float = 0.0
    dvol_extreme: float = 80.0
    dvol_elevated: float = 55.0
    fng_extreme_fear: float = 25.0
    fng_fear: float = 40.0
    taker_selling: float = 0.80
    taker_mild_selling: float = 0.90
    # §7.3 sub-day force exit: old_boost >= 1.25 and boost < 1.10 ("ARBITRARY, not backtested").
    subday_old_boost_min: float = 1.25
    subday_new_boost_max: float = 1.10

    # --- §19.3 survival stack (§11) --------------------------------------------------------
    apex_rm: float = 0.90
    stalker_rm: float = 0.75
    turtle_rm: float = 0.50
    hysteresis_down: int = 2
    hysteresis_up: int = 5

    # --- Time in seconds (issue 16) -------------------------------------------------------
    # The champion was validated on 5-second bars (bible §22.3); every duration it uses is
    # defined here in seconds (its bar counts x 5 s) and converted with the run's real bar
    # interval by ``at_interval``. Scan windows (IRP lookback, the volatility window, the
    # eigen windows) stay in bars: they are shapes of the signal, not durations.
    validation_bar_s: float = 5.0
    # Warm-up before the first entry, in seconds (100 bars x 5 s).
    lookback_s: float = 500.0
    # §19.1 max hold, in seconds (120 bars x 5 s = 10 minutes).
    max_hold_s: float = 600.0
    # §4.2 direction-confirmation lookback, in seconds (7 bars x 5 s).
    dc_lookback_s: float = 35.0

    def as_dict(self) -> dict[str, Any]:
        """Every profile field by name (the input of the fingerprint and of ``changed_keys``);
        the bar counts derived from seconds are not part of the profile."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not f.metadata.get("derived")}


CHAMPION = StrategyParams()

# Bar counts derived from a duration in seconds: (bar-count field, seconds field).
DERIVED_FIELDS: tuple[tuple[str, str], ...] = (
    ("lookback", "lookback_s"), ("max_hold_bars", "max_hold_s"),
    ("dc_lookback_bars", "dc_lookback_s"))


def bars_for(seconds: float, bar_s: float) -> int:
    """A duration in whole bars of ``bar_s`` seconds, at least one (nearest, ties up)."""
    return max(1, math.floor(seconds / bar_s + 0.5))


def at_interval(params: StrategyParams, bar_s: float) -> StrategyParams:
    """``params`` with every duration converted to bars of this run's ``bar_s`` interval."""
    if not bar_s > 0.0:
        raise ValueError(f"bar interval must be > 0 s, got {bar_s}")
    bars: dict[str, Any] = {
        name: bars_for(getattr(params, secs), bar_s) for name, secs in DERIVED_FIELDS}
    return dataclasses.replace(params, **bars)


@dataclass(frozen=True, slots=True)
class EffectiveDuration:
    """One duration as the profile defines it and as this run applies it."""

    name: str
    seconds: float
    bars: int
    effective_s: float


def effective_durations(params: StrategyParams, bar_s: float) -> tuple[EffectiveDuration, ...]:
    """The profile's durations in this run's bars (what the report and console state)."""
    out = []
    for _, secs_name in DERIVED_FIELDS:
        secs = float(getattr(params, secs_name))
        n = bars_for(secs, bar_s)
        out.append(EffectiveDuration(secs_name, secs, n, n * bar_s))
    return tuple(out)


def params_hash(params: StrategyParams) -> str:
    """First 16 hex of SHA-256 over the sorted-key JSON of the parameters (SPEC §3).

    orjson renders floats with the shortest round-trip repr, so equal values hash equally on
    every platform; ints stay ints (``max_hold_bars=120`` and ``120.0`` are different configs).
    """
    blob = orjson.dumps(params.as_dict(), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


def changed_keys(a: StrategyParams, b: StrategyParams) -> list[str]:
    """Names of the fields whose values differ between ``a`` and ``b``, sorted."""
    da, db = a.as_dict(), b.as_dict()
    return sorted(k for k in da if da[k] != db[k] or type(da[k]) is not type(db[k]))


def check_profile(profile_name: str, params: StrategyParams) -> list[str]:
    """The champion parameters this config changes while still calling itself "champion".

    An empty list means the config may start. A non-empty list is the set of keys to print in
    the refusal: changing a champion parameter requires naming a different ``strategy.profile``.
    """
    if profile_name != CHAMPION_PROFILE:
        return []
    return changed_keys(CHAMPION, params)
