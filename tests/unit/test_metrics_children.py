"""telemetry.metrics.Children: bound label children count into the same series as labels()."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from dolphind.telemetry.metrics import Children


def test_children_are_the_labelled_series_bound_once() -> None:
    r = CollectorRegistry()
    c = Counter("x_total", "x", ["side", "liquidity"], registry=r)
    kids = Children(c)
    kids["BUY", "TAKER"].inc()
    kids["BUY", "TAKER"].inc(2)
    c.labels("BUY", "TAKER").inc()  # the same child as labels() gives
    assert r.get_sample_value("x_total", {"side": "BUY", "liquidity": "TAKER"}) == 4
    assert kids["BUY", "TAKER"] is c.labels("BUY", "TAKER") and len(kids) == 1


def test_a_single_label_takes_a_plain_key() -> None:
    r = CollectorRegistry()
    c = Counter("y_total", "y", ["outcome"], registry=r)
    Children(c)["submitted"].inc()
    assert r.get_sample_value("y_total", {"outcome": "submitted"}) == 1
