"""Safe to trade for real (issue #15), shown on the real daemon against the loopback Binance.

- a paper config with execution.venue = "binance" trades in the paper venue: the fake's order
  endpoint (indeed any of its endpoints) never hears from it;
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.fakes.binance_rest import FakeBinanceRest
from tests.integration.harness import Daemon, free_port, write_config
from tests.integration.test_binance_venue import threaded_fake  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


def _binance_section(fake: FakeBinanceRest, lease_dir: Path) -> str:
    return f"""
[execution]
venue = "binance"

[execution.binance]
network = "mainnet"
rest_base_url = "{fake.rest_url}"
ws_base_url = "{fake.ws_url}"
symbols = ["BTCUSDT"]
lease_dir = "{lease_dir}"
"""


def test_a_paper_config_with_venue_binance_never_reaches_the_venue(
        tmp_path: Path, threaded_fake: FakeBinanceRest) -> None:  # noqa: F811
    fake = threaded_fake
    port = free_port()
    extra = ("[risk]\nmax_orders_per_minute = 100000.0\norder_burst = 1000\n"
             + _binance_section(fake, tmp_path / "leases"))
    cfg = write_config(tmp_path / "d.toml", port, speed=0.0, extra=extra)
    d = Daemon(cfg, port, env={"DOLPHIND_BINANCE_API_KEY": fake.api_key,
                               "DOLPHIND_BINANCE_API_SECRET": fake.secret}).start()
    try:
        d.wait_ready(timeout=120)
        status = d.get_json("/status")
        assert status["mode"] == "paper"
        assert status["trading"].startswith("trades: paper venue (simulated fills")
        assert status["execution"]["venue"] == "paper"
        # It trades: orders fill (in the paper venue).
        filled = wait_until(lambda: [o for o in d.get_json("/orders")["recent"]
                                     if o["state"] == "filled"],
                            timeout=120, what="paper fills")
        assert filled
        said = [e for e in d.events() if e.get("event") == "execution.venue"]
        assert said and said[0]["venue"] == "paper" and said[0]["configured_venue"] == "binance"
    finally:
        assert d.stop() == 0
    assert fake.count("POST /fapi/v1/order") == 0
    assert fake.requests == [], [f"{r.method} {r.path}" for r in fake.requests[:5]]
