"""Capped exponential back-off with jitter: the one formula every retry loop uses."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, initial_s: float, max_s: float,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0 = the first): ``initial_s * 2**attempt``
    capped at ``max_s``, drawn uniformly in [d/2, d] so that many retriers do not move in step."""
    d = min(max_s, initial_s * 2 ** min(max(attempt, 0), 30))
    return (rng or random).uniform(d / 2, d)
