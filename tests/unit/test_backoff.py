"""The one back-off formula (dolphind.backoff) every retry loop uses."""

from __future__ import annotations

import random

import pytest

from dolphind.backoff import Backoff, Limits, backoff_ceiling, backoff_delay, jittered


def test_the_ceiling_doubles_from_initial_and_stops_at_max() -> None:
    assert [backoff_ceiling(a, 0.5, 4.0) for a in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff_ceiling(-3, 0.5, 4.0) == 0.5  # a negative attempt is the first
    assert backoff_ceiling(10_000, 0.5, 4.0) == 4.0  # no overflow however long it failed


def test_a_delay_is_drawn_between_half_the_ceiling_and_the_ceiling() -> None:
    rng = random.Random(1)
    draws = [jittered(2.0, rng) for _ in range(2000)]
    assert all(1.0 <= d <= 2.0 for d in draws)
    assert max(draws) - min(draws) > 0.9  # spread over the range: retriers do not move in step
    for attempt in range(8):
        d = backoff_delay(attempt, 0.5, 4.0, rng)
        cap = min(4.0, 0.5 * 2 ** attempt)
        assert cap / 2 <= d <= cap


def test_the_counter_reads_its_settings_at_every_retry_and_starts_over_on_reset() -> None:
    limits = [Limits(backoff_initial_s=1.0, backoff_max_s=8.0)]
    b = Backoff(lambda: limits[0], rng=random.Random(2))
    assert 0.5 <= b.next() <= 1.0 and b.attempt == 1
    assert 1.0 <= b.next() <= 2.0
    limits[0] = Limits(backoff_initial_s=1.0, backoff_max_s=1.5)  # a reloaded config
    assert 0.75 <= b.next() <= 1.5
    b.reset()
    assert b.attempt == 0
    assert b.next() <= 1.0


def test_the_same_seed_draws_the_same_waits() -> None:
    a = Backoff(lambda: Limits(0.1, 10.0), rng=random.Random(7))
    b = Backoff(lambda: Limits(0.1, 10.0), rng=random.Random(7))
    assert [a.next() for _ in range(5)] == pytest.approx([b.next() for _ in range(5)])
