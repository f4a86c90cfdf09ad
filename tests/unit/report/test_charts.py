"""Min/max decimation keeps every extreme and the order of points."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dolphind.report.charts import minmax_decimate


def test_short_series_are_untouched() -> None:
    x, y = np.arange(5), np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    dx, dy = minmax_decimate(x, y, max_points=10)
    assert dx is x and dy is y


def test_a_million_points_keep_their_extremes() -> None:
    n = 1_000_000
    x = np.arange(n)
    y = np.sin(np.arange(n) / 5000.0)
    y[123_457] = 9.0
    y[876_543] = -7.0
    dx, dy = minmax_decimate(x, y, max_points=4000)
    assert dx.size <= 4000
    assert dy.max() == 9.0 and dy.min() == -7.0
    assert np.all(np.diff(dx) > 0)
    np.testing.assert_array_equal(dy, y[dx])


def test_all_nan_buckets_keep_a_hole() -> None:
    y = np.concatenate([np.full(5000, np.nan), np.ones(5000)])
    dx, dy = minmax_decimate(np.arange(y.size), y, max_points=100)
    assert np.isnan(dy[0]) and np.nanmax(dy) == 1.0


@settings(max_examples=60, deadline=None)
@given(y=arrays(np.float64, st.integers(1, 3000),
                elements=st.floats(-1e6, 1e6, allow_nan=False)),
       max_points=st.integers(2, 200))
def test_decimation_properties(y: np.ndarray, max_points: int) -> None:
    x = np.arange(y.size)
    dx, dy = minmax_decimate(x, y, max_points)
    assert dx.size <= max_points
    assert np.all(np.diff(dx) > 0)
    np.testing.assert_array_equal(dy, y[dx])
    assert dy.max() == y.max() and dy.min() == y.min()
