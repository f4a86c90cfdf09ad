"""The embedded state bus: JSON values by (map, key), private copies, writes that never raise."""

from __future__ import annotations

import numpy as np

from dolphind.statebus import base as names
from dolphind.statebus.memory import MemoryStateBus


def test_values_round_trip_as_json_and_readers_get_a_private_copy() -> None:
    bus = MemoryStateBus()
    scan = {"scan_number": 7, "vel_div": -0.021, "prices": np.array([1.5, 2.0])}
    bus.put(names.FEATURES, "latest_eigen_scan", scan)
    got = bus.get(names.FEATURES, "latest_eigen_scan")
    assert got == {"scan_number": 7, "vel_div": -0.021, "prices": [1.5, 2.0]}
    got["scan_number"] = 99  # a reader's edit does not reach the bus
    assert bus.get(names.FEATURES, "latest_eigen_scan")["scan_number"] == 7
    assert bus.get(names.FEATURES, "missing") is None and bus.get("NO_MAP", "x") is None
    assert bus.keys(names.FEATURES) == ["latest_eigen_scan"]
    assert bus.healthy()


def test_a_value_that_is_not_json_is_refused_counted_and_never_raises() -> None:
    outcomes: list[str] = []
    bus = MemoryStateBus(on_write=outcomes.append)
    bus.put(names.SAFETY, "latest", {"posture": "APEX", "rm": 0.97})
    bus.put(names.SAFETY, "latest", {"posture": object()})  # a writer bug
    assert outcomes == ["ok", "rejected"] and bus.rejected == 1
    assert bus.get(names.SAFETY, "latest") == {"posture": "APEX", "rm": 0.97}  # last good value
