"""Safe to trade for real (issue #15), shown on the real daemon against the loopback Binance.

- a paper config with execution.venue = "binance" trades in the paper venue: the fake's order
  endpoint (indeed any of its endpoints) never hears from it;
- exits never give up: a flatten answered 429 three times is sent again (after Retry-After)
  until the position is closed.

Live daemons run mode "live": the live feed on the loopback market-data fake (a subprocess),
orders to the loopback REST fake (served from a thread of this process).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from dolphind.execution.portfolio import Position
from dolphind.store.sqlite import Account, Store, account_op, position_op

from tests.conftest import wait_until
from tests.fakes.binance_rest import FakeBinanceRest
from tests.integration.harness import Daemon, free_port, write_config
from tests.integration.test_binance_venue import threaded_fake  # noqa: F401 - a fixture
from tests.integration.test_live_feed import FakeVenue, live_feed_config

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


@pytest.fixture
def market(tmp_path: Path) -> Iterator[FakeVenue]:
    fake = FakeVenue(tmp_path / "fake-market.log")
    try:
        yield fake
    finally:
        fake.stop()


def live_daemon(tmp_path: Path, fake: FakeBinanceRest, market: FakeVenue,
                extra: str = "") -> Daemon:
    """A mode "live" daemon on the loopback fakes; entries off (the test's orders only)."""
    port = free_port()
    cfg = tmp_path / "live.toml"
    cfg.write_text(f"""
mode = "live"
shutdown_timeout_s = 5.0

[ops]
listen = "127.0.0.1:{port}"

[data]
dir = "var"

[logging]
format = "json"
{live_feed_config(market.url, stall_timeout_s=30.0, stream_grace_s=30.0)}
[risk]
trading_enabled = false
{_binance_section(fake, tmp_path / "leases")}
poll_interval_s = 0.1
backoff_initial_s = 0.05
backoff_max_s = 0.2
request_timeout_s = 2.0
lease_ttl_s = 2.0
lease_renew_s = 0.2
{extra}
""")
    return Daemon(cfg, port, env={"DOLPHIND_BINANCE_API_KEY": fake.api_key,
                                  "DOLPHIND_BINANCE_API_SECRET": fake.secret}).start()


def seed_store(data_dir: Path, positions: dict[str, tuple[float, float]]) -> None:
    """A store that opened ``positions`` (ours: the daemon knows them from its own books)."""
    async def write() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        store = await Store.open(data_dir / "dolphind.sqlite", None, None)
        async with store:
            await store.write(account_op(Account(10_000.0, 10_000.0, 0.0, 0.0, 10_000.0), 1),
                              *(position_op(Position(s, q, px, opened_ns=1))
                                for s, (q, px) in positions.items()), wait=True)
    asyncio.run(write())


def venue_state(d: Daemon) -> dict[str, Any] | None:
    assert d.proc is not None
    if d.proc.poll() is not None:
        raise RuntimeError(f"daemon exited with {d.proc.returncode}:\n{d.logs()}")
    status, body = d.get("/status")
    if status != 200:
        return None
    return (orjson.loads(body).get("execution") or {}).get("venue_state")


def test_a_flatten_answered_429_three_times_closes_the_position(
        tmp_path: Path, threaded_fake: FakeBinanceRest, market: FakeVenue) -> None:  # noqa: F811
    fake = threaded_fake
    fake.set_position("BTCUSDT", -0.05, 40_000.0)
    seed_store(tmp_path / "var", {"BTCUSDT": (-0.05, 40_000.0)})
    d = live_daemon(tmp_path, fake, market)
    try:
        wait_until(lambda: (s := venue_state(d)) and s["reconciled"], timeout=120,
                   what="the venue reconciled")
        assert d.get_json("/positions")["positions"][0]["qty"] == -0.05
        fake.fault("POST /fapi/v1/order", times=3, status=429, code=-1003,
                   msg="Too many requests; current limit is 1200 requests per minute.",
                   retry_after=1)
        assert d.post("/flatten", {"reason": "test"})[0] == 200
        wait_until(lambda: abs(fake.positions["BTCUSDT"][0]) < 1e-12, timeout=60,
                   what="the flatten got through")
        sent = [r for r in fake.requests if (r.method, r.path) == ("POST", "/fapi/v1/order")]
        assert [r.status for r in sent] == [429, 429, 429, 200]
        assert all(r.params["reduceOnly"] == "true" and r.params["side"] == "BUY"
                   for r in sent)
        assert len({r.params["newClientOrderId"] for r in sent}) == 4  # a new id each time
        wait_until(lambda: not d.get_json("/positions")["positions"], timeout=30,
                   what="the book flat")
        wait_until(lambda: d.get_json("/status")["execution"]["exits_retrying"] == {},
                   timeout=30, what="no exit left to retry")
        assert d.metric("dolphind_exit_retries_total") == 3
        # Each refused attempt waited for the venue's Retry-After (1 s) before the next.
        scheduled = [e for e in d.events() if e.get("event") == "execution.exit_retry_scheduled"]
        assert len(scheduled) == 3 and all(e["in_s"] >= 0.9 for e in scheduled)
        # The refusals were the venue's (429), not local ones: the breaker counted them, but
        # three in a row are below breaker_min_requests (5) and it stayed closed.
        assert d.get_json("/status")["execution"]["venue_breaker"] == 0
    finally:
        assert d.stop() == 0
