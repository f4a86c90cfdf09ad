"""MC-forewarner gate (bible §12) and its no-model fallback (SPEC §3)."""

from __future__ import annotations

from typing import Mapping

import pytest

from dolphind.alpha.mc_gate import McForewarner, McReport, assess, classify, scale_for


@pytest.mark.parametrize(
    ("cp", "env", "status"),
    [(0.26, 0.5, "RED"), (0.05, -1.01, "RED"), (0.11, 0.5, "ORANGE"), (0.05, -0.1, "ORANGE"),
     (0.10, 0.0, "OK"), (0.0, 1.0, "OK"), (0.25, -1.0, "ORANGE")],
)
def test_classify(cp: float, env: float, status: str) -> None:
    assert classify(McReport(cp, env)) == status


def test_scale() -> None:
    assert scale_for("ORANGE") == 0.5
    assert scale_for("OK") == 1.0


def test_no_model_is_orange_half_scale_and_deterministic() -> None:
    a = assess(None, {"max_leverage": 5.0})
    b = assess(None, {"max_leverage": 5.0})
    assert a == b
    assert (a.status, a.scale, a.from_model) == ("ORANGE", 0.5, False)


class _Model:
    def __init__(self) -> None:
        self.seen: list[dict[str, float]] = []

    def assess_config_dict(self, config: Mapping[str, float]) -> McReport:
        self.seen.append(dict(config))
        return McReport(0.3, 0.0)


def test_model_path() -> None:
    m = _Model()
    assert isinstance(m, McForewarner)
    r = assess(m, {"max_leverage": 6.7})
    assert (r.status, r.from_model, r.catastrophic_probability) == ("RED", True, 0.3)
    assert m.seen == [{"max_leverage": 6.7}]
