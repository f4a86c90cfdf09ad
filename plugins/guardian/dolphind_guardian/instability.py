"""How unstable the signal is: its state flipping from scan to scan, its confidence wobbling.

The state of a scan is SHORT / NONE / LONG by the signal's own gates. A healthy signal holds a
state for many scans; a noisy one (vel_div jittering around a gate) flips often, and trading
on it churns. ``flip_rate`` is the fraction of consecutive scans whose state differs, 0 (never
changes) to 1 (changes every scan).
"""

from __future__ import annotations

import math
from typing import Sequence


def signal_state(vel_div: float, short_threshold: float, long_threshold: float) -> int:
    if vel_div < short_threshold:
        return -1
    if vel_div > long_threshold:
        return 1
    return 0


def flip_rate(states: Sequence[int]) -> float | None:
    if len(states) < 2:
        return None
    flips = sum(1 for a, b in zip(states, states[1:]) if a != b)
    return flips / (len(states) - 1)


def stdev(values: Sequence[float]) -> float | None:
    """Population standard deviation (two-pass: no cancellation on near-equal values)."""
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n)
