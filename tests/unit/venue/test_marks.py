"""The marks a venue holds: a symbol's own mark and the latest bar's close, the newer winning;
an older mark or bar never replaces a newer one; an absent close makes a held price stale."""

from __future__ import annotations

import numpy as np

from dolphind.venues.marks import Marks

INDEX = {"BTCUSDT": 0, "ETHUSDT": 1}


def test_the_newer_of_own_mark_and_bar_close_wins() -> None:
    m = Marks()
    assert m.last("BTCUSDT") is None
    m.mark("BTCUSDT", 40_000.0, 10)
    assert m.mark_bar(INDEX, np.array([41_000.0, 2_000.0]), 20)
    assert m.last("BTCUSDT") == (41_000.0, 20)
    m.mark("BTCUSDT", 42_000.0, 30)
    assert m.last("BTCUSDT") == (42_000.0, 30)
    assert m.last("ETHUSDT") == (2_000.0, 20)
    assert m.last("SOLUSDT") is None


def test_an_older_mark_or_bar_never_replaces_a_newer_one() -> None:
    m = Marks()
    m.mark("BTCUSDT", 40_000.0, 10)
    m.mark("BTCUSDT", 39_000.0, 5)
    m.mark("BTCUSDT", 0.0, 20)  # not a price
    m.mark("BTCUSDT", float("nan"), 20)
    assert m.last("BTCUSDT") == (40_000.0, 10)
    assert m.mark_bar(INDEX, np.array([41_000.0, 2_000.0]), 20)
    assert not m.mark_bar(INDEX, np.array([1.0, 1.0]), 15)
    assert m.last("ETHUSDT") == (2_000.0, 20)
    assert m.mark_bar(INDEX, np.array([43_000.0, 2_100.0]), 20)  # the same bar time: taken


def test_an_absent_close_makes_the_price_stale_until_a_newer_mark() -> None:
    m = Marks()
    assert not m.stale("BTCUSDT")
    m.mark("BTCUSDT", 40_000.0, 10)
    m.mark_bar(INDEX, np.array([np.nan, 2_000.0]), 20)
    assert m.stale("BTCUSDT") and not m.stale("ETHUSDT") and not m.stale("SOLUSDT")
    assert m.last("BTCUSDT") == (40_000.0, 10)  # the last known price, however old
    m.mark("BTCUSDT", 40_500.0, 25)
    assert not m.stale("BTCUSDT")
