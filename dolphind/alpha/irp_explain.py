"""Why an entry took the asset it took: the top-ranked candidates and the gate that excluded
each (for the audit record and the backtest report). Scored with the same kernel as the entry
itself, unpruned, and only when an entry is made, so its cost does not matter per bar."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from dolphind.alpha.irp import (
    COL_ACTION,
    COL_ALIGN,
    COL_ARS,
    COL_LATENCY,
    COL_NOISE,
    OUT_COLS,
    IrpGates,
    score_assets_nb,
)
from dolphind.alpha.price_windows import PriceWindows


@dataclass(frozen=True, slots=True)
class Candidate:
    """One asset of an entry's ranking, and why it was not taken ("" = the chosen one)."""

    symbol: str
    ars: float
    alignment: float
    action: int
    excluded_by: str


# The gates of §5.4/§5.5 and eligibility, in the order the explanation names the first that
# excludes an asset.
# venue_symbol / min_notional: the venue does not list the asset (or it is not TRADING), or the
# sized order would fall below its MIN_NOTIONAL or min quantity (found when it was selected;
# the walk then went on to the next asset).
EXCLUSION_GATES = ("no_history", "irp_noise", "irp_latency", "irp_alignment_filter",
                   "not_eligible", "venue_symbol", "min_notional", "irp_alignment",
                   "irp_direction", "ob_depth", "ranked_below")


def explain_candidates(
    windows: PriceWindows,
    length: int,
    direction: int,
    depth_quality: np.ndarray,
    gates: IrpGates,
    chosen: int,
    eligible: np.ndarray | None = None,
    top: int = 5,
    venue_excluded: Mapping[int, str] | None = None,
) -> tuple[Candidate, ...]:
    """The ``top`` assets by ARS (unpruned scoring, the same kernel) with the gate that
    excluded each. Called only when an entry is made, so its cost does not matter per bar."""
    n = windows.n_rows
    if n == 0:
        return ()
    w = windows.width
    starts = (windows.head[:n] + w - length).astype(np.int64)
    valid = (windows.count[:n] >= length) & (windows.seen[:n] == windows.bar)
    out = np.zeros((n, OUT_COLS))
    dq = np.asarray(depth_quality[:n], dtype=np.float64)
    score_assets_nb(windows.buf[:n], starts, valid, length, float(direction), dq,
                    gates.max_noise, gates.max_latency, gates.min_alignment_filter, out)
    ars = np.where(valid & np.isfinite(out[:, COL_ARS]), out[:, COL_ARS], -np.inf)
    order = np.argsort(-ars, kind="stable")
    picked = [int(r) for r in order[:top]]
    if 0 <= chosen < n and chosen not in picked:
        picked.append(chosen)
    for r in sorted(venue_excluded or ()):  # the assets the venue turned away are named too
        if r not in picked:
            picked.append(r)
    result = []
    for r in picked:
        m = out[r]
        if r == chosen:
            why = ""
        elif not valid[r] or not math.isfinite(m[COL_ARS]):
            why = "no_history"
        elif m[COL_NOISE] > gates.max_noise:
            why = "irp_noise"
        elif m[COL_LATENCY] > gates.max_latency:
            why = "irp_latency"
        elif m[COL_ALIGN] < gates.min_alignment_filter:
            why = "irp_alignment_filter"
        elif venue_excluded and r in venue_excluded:
            why = venue_excluded[r]
        elif eligible is not None and not eligible[r]:
            why = "not_eligible"
        elif gates.min_irp_alignment > 0.0 and m[COL_ALIGN] < gates.min_irp_alignment:
            why = "irp_alignment"
        elif m[COL_ACTION] != float(direction):
            why = "irp_direction"
        elif dq[r] == dq[r] and dq[r] < gates.min_depth_quality:
            why = "ob_depth"
        else:
            why = "ranked_below"
        result.append(Candidate(windows.symbols[r], float(m[COL_ARS]), float(m[COL_ALIGN]),
                                int(m[COL_ACTION]), why))
    return tuple(result)


def format_candidates(candidates: tuple[Candidate, ...]) -> str:
    """``SYMBOL:ARS:gate`` per candidate, best first, ``|``-separated (gate "" = chosen)."""
    return "|".join(f"{c.symbol}:{c.ars:.6g}:{c.excluded_by}" for c in candidates)
