"""Safe to trade for real (issue #15), shown on the real daemon against the loopback Binance.

- a paper config with execution.venue = "binance" trades in the paper venue: the fake's order
  endpoint (indeed any of its endpoints) never hears from it;
- exits never give up: a flatten answered 429 three times is sent again (after Retry-After)
  until the position is closed;
- an hour of live market time of the strategy's own trading (round trips sent to and filled
  at the fake) leaves somebody else's position and resting order untouched, and the exposure
  rail counts the foreign notional.

Live daemons run mode "live": the live feed on the loopback market-data fake (a subprocess),
orders to the loopback REST fake (served from a thread of this process).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from dolphind.orders.portfolio import Position
from dolphind.store.sqlite import Account, Store, account_op, position_op

from tests.conftest import wait_until
from tests.fakes.binance_rest import FakeBinanceRest
from tests.integration.harness import Daemon, free_port, write_config
from tests.integration.test_binance_venue import threaded_fake  # noqa: F401 - a fixture
from tests.integration.live_venue import live_venue_toml, venue_env
from tests.integration.test_live_feed import FakeVenue, live_feed_config

pytestmark = pytest.mark.integration


def _binance_section(fake: FakeBinanceRest, lease_dir: Path, execution: str = "") -> str:
    return f"""
[execution]
venue = "binance"
{execution}

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
    d = Daemon(cfg, port, env=venue_env(fake)).start()
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
                extra: str = "", execution: str = "", start: bool = True) -> Daemon:
    """A mode "live" daemon on the loopback fakes; entries off (the test's orders only)."""
    port = free_port()
    cfg = tmp_path / "live.toml"
    cfg.write_text(live_venue_toml(port, market.url, fake, tmp_path / "leases",
                                   execution=execution, binance=extra))
    d = Daemon(cfg, port, env=venue_env(fake))
    return d.start() if start else d


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
        tmp_path: Path, threaded_fake: FakeBinanceRest) -> None:  # noqa: F811
    fake = threaded_fake
    fake.set_position("BTCUSDT", -0.05, 40_000.0)  # ours (the store opened it)
    fake.set_position("ETHUSDT", 0.5, 2_780.0)  # somebody else's, and their resting order
    fake.place("ETHUSDT", "SELL", 0.1, 3_000.0, "web_manual_1")
    seed_store(tmp_path / "var", {"BTCUSDT": (-0.05, 40_000.0)})
    # The venue answers the next three orders 429.
    fake.fault("POST /fapi/v1/order", times=3, status=429, code=-1003,
               msg="Too many requests; current limit is 1200 requests per minute.",
               retry_after=1)
    # The live feed points nowhere: no bar, no scan, so the strategy (which exits a restored
    # position at its first scan on a cold start, posture HIBERNATE) cannot race the
    # operator's flatten: the only orders are the flatten's and its retries.
    d = live_daemon(tmp_path, fake, _NoMarket)  # type: ignore[arg-type]
    try:
        wait_until(lambda: (s := venue_state(d)) and s["reconciled"], timeout=120,
                   what="the venue reconciled")
        assert [(p["symbol"], p["qty"]) for p in d.get_json("/positions")["positions"]] \
            == [("BTCUSDT", -0.05)]
        # The foreign holdings are reported (status, metrics), not taken over.
        foreign = d.get_json("/status")["execution"]["foreign"]
        assert foreign["policy"] == "ignore"
        assert foreign["positions"] == {"ETHUSDT": {"qty": 0.5, "avg_price": 2_780.0}}
        assert [o["client_id"] for o in foreign["orders"]] == ["web_manual_1"]
        assert d.metric("dolphind_foreign_positions") == 1
        assert d.metric("dolphind_foreign_orders") == 1
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
        # The flatten closed ours only; the foreign position and order were never touched.
        assert fake.positions["ETHUSDT"] == (0.5, 2_780.0)
        assert fake.orders_with_client_id("web_manual_1")[0].status == "NEW"
        assert not [r for r in fake.requests if r.path == "/fapi/v1/order"
                    and r.method in ("POST", "DELETE") and r.params.get("symbol") == "ETHUSDT"]
    finally:
        assert d.stop() == 0


def test_foreign_refuse_will_not_start_and_says_why_in_one_line(
        tmp_path: Path, threaded_fake: FakeBinanceRest, market: FakeVenue) -> None:  # noqa: F811
    fake = threaded_fake
    fake.set_position("ETHUSDT", 0.5, 2_780.0)
    d = live_daemon(tmp_path, fake, market, execution='foreign = "refuse"')
    assert d.wait_exit(60) == 2
    d._log.close()
    said = [e for e in d.events() if e.get("event") == "daemon.startup_failed"]
    assert said and "execution.foreign = 'refuse'" in said[0]["error"]
    assert "ETHUSDT" in said[0]["error"]
    lines = [x for x in d.logs().splitlines() if x.startswith("dolphind: cannot start:")]
    assert len(lines) == 1 and "ETHUSDT" in lines[0]
    assert "Traceback" not in d.logs()
    assert fake.count("POST /fapi/v1/order") == 0


class _NoMarket:
    """A live feed URL nobody listens on: these daemons fail before the feed starts."""

    url = f"ws://127.0.0.1:{free_port()}"


def _assert_refused_start(d: Daemon, *fragments: str) -> str:
    assert d.wait_exit(120) == 2
    d._log.close()
    logs = d.logs()
    assert "Traceback" not in logs, logs[-3000:]
    lines = [x for x in logs.splitlines() if x.startswith("dolphind: cannot start:")]
    assert len(lines) == 1, logs[-3000:]
    said = [e for e in d.events() if e.get("event") == "daemon.startup_failed"]
    assert len(said) == 1
    for f in fragments:
        assert f in lines[0] and f in said[0]["error"], (f, lines[0])
    return lines[0]


def test_an_unreachable_venue_retries_then_exits_2_in_one_line(tmp_path: Path) -> None:
    class Nowhere:  # a REST base URL with nothing listening
        rest_url = f"http://127.0.0.1:{free_port()}"
        ws_url = f"ws://127.0.0.1:{free_port()}"
        api_key, secret = "k-nowhere", "s-nowhere"

    d = live_daemon(tmp_path, Nowhere, _NoMarket)  # type: ignore[arg-type]
    line = _assert_refused_start(d, "unreachable after 4 attempts", Nowhere.rest_url)
    retries = [e for e in d.events() if e.get("event") == "venue.start_retry"]
    assert [e["attempt"] for e in retries] == [1, 2, 3]  # said before giving up
    assert "k-nowhere" not in d.logs() and "s-nowhere" not in d.logs()
    assert len(line) < 300


def test_a_refused_api_key_or_hedge_mode_exits_2_in_one_line(
        tmp_path: Path, threaded_fake: FakeBinanceRest) -> None:  # noqa: F811
    fake = threaded_fake
    d = live_daemon(tmp_path, fake, _NoMarket, start=False)  # type: ignore[arg-type]
    bad = Daemon(d.config, d.port, env={"DOLPHIND_BINANCE_API_KEY": "not-the-key",
                                        "DOLPHIND_BINANCE_API_SECRET": fake.secret}).start()
    _assert_refused_start(bad, "API key is refused", "-2015")
    assert "not-the-key" not in bad.logs()
    fake.dual_side = True
    hedged = Daemon(d.config, d.port, env=d.env).start()
    _assert_refused_start(hedged, "hedge mode")
    assert fake.count("POST /fapi/v1/order") == 0


@pytest.mark.parametrize("when", ["at_once", "after_drain"])
def test_a_second_sigint_exits_130_without_a_traceback(tmp_path: Path, when: str) -> None:
    port = free_port()
    d = Daemon(write_config(tmp_path / "d.toml", port), port).start()
    d.wait_ready(timeout=120)
    d.signal(signal.SIGINT)
    if when == "after_drain":
        # Near the end of shutdown: the daemon's own SIGINT handler is being removed.
        wait_until(lambda: any(e.get("event") in ("daemon.drained", "daemon.stopped")
                               for e in d.events()), timeout=30, interval=0.005)
    d.signal(signal.SIGINT)
    code = d.wait_exit(30)
    d._log.close()
    assert code in (130, 0), code  # 0: the first stop had already finished
    assert "Traceback" not in d.logs() and "KeyboardInterrupt" not in d.logs()


@pytest.mark.timeout(300)
def test_a_foreign_position_is_untouched_after_an_hour_of_live_market_time(
        tmp_path: Path) -> None:
    """The real daemon, mode live, entries on, on the live feed for an hour of market time
    (the market-data fake at 120x), trading (the strategy's own entries and exits, sent to and
    filled at the loopback venue) while the account holds somebody else's BTCUSDT position
    (320 USDT) and resting order: both untouched at the end (no order or cancel names them),
    still reported, and the foreign notional counted by the gross-exposure rail.

    To trade on the capture's four thin symbols the test profile ("loopback-hour") turns off
    what keeps the champion out of such a market: the minimum universe (scan.min_symbols),
    the IRP alignment / noise / latency gates, and the depth5 book (its fill probability on
    these symbols pins the survival stack's Cat3 at its floor: HIBERNATE). max_hold_s is two
    minutes so that an hour holds many round trips. After six round trips a reload cuts the
    gross cap to 380 USDT: above every entry the strategy sizes on its own, not above one plus
    the foreign 320, so the entries after it are refused by the gross-exposure rail."""
    import threading

    from tests.fakes.binance_rest import EXCHANGE_INFO_2021

    feed_symbols = {"SUSHIUSDT": 7.612, "CTKUSDT": 1.011, "AKROUSDT": 0.01731,
                    "KEEPUSDT": 0.2464}
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(10)

    fake = FakeBinanceRest(exchange_info=EXCHANGE_INFO_2021,
                           marks={"BTCUSDT": 32_000.0, **feed_symbols})
    call(fake.start())
    market = FakeVenue(tmp_path / "fake-market.log", speed=120.0)
    fake.set_position("BTCUSDT", 0.01, 32_000.0)  # somebody else's (320 USDT)
    fake.place("BTCUSDT", "SELL", 0.01, 40_000.0, "web_manual_1")
    foreign_usdt, tight_cap = 320.0, 380.0
    port = free_port()
    cfg = tmp_path / "hour.toml"
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
depth = false
{_binance_section(fake, tmp_path / "leases").replace('symbols = ["BTCUSDT"]', '')}
symbols = {list(feed_symbols)}
poll_interval_s = 0.2
request_timeout_s = 2.0

[risk]
max_orders_per_minute = 100000.0
order_burst = 1000
max_gross_exposure_usdt = 15000.0
max_symbol_exposure_usdt = 15000.0

[scan]
min_symbols = 0

[strategy]
profile = "loopback-hour"

[strategy.params]
min_irp_alignment = 0.0
irp_min_alignment_filter = 0.0
irp_max_noise = 1000000000.0
irp_max_latency = 1000000000.0
max_hold_s = 120.0
""".replace("'", '"'))
    d = Daemon(cfg, port, env=venue_env(fake)).start()
    try:
        wait_until(lambda: (s := venue_state(d)) and s["reconciled"], timeout=120,
                   what="the venue reconciled")

        def watermark_ms() -> int:
            return int(d.get_json("/status")["feed"]["watermark_ms"] or 0)

        start = wait_until(watermark_ms, timeout=60, what="market time")

        def closed() -> int:
            return len([e for e in d.events() if e.get("event") == "trade.closed"])

        # It trades: six round trips, then the gross cap is cut (a reload) to 380 USDT,
        # above any entry the strategy sizes alone (100-300 USDT here) but not above one
        # with the foreign 320 USDT on top.
        wait_until(lambda: closed() >= 6, timeout=120, interval=0.5, what="6 round trips")
        cfg.write_text(cfg.read_text().replace("_exposure_usdt = 15000.0",
                                               f"_exposure_usdt = {tight_cap}"))
        before_reload = len(d.events())
        code, body = d.post("/reload")
        assert code == 200 and body["ok"] is True, body
        # An hour of market time (the fake plays at 120x: about half a minute).
        wait_until(lambda: watermark_ms() - start >= 3_600_000, timeout=240, interval=1.0,
                   what="an hour of market time")
        assert d.get_json("/status")["feed"]["bars_emitted"] >= 3000
        st = d.get_json("/status")["execution"]
        assert st["foreign"]["positions"] == {"BTCUSDT": {"qty": 0.01, "avg_price": 32_000.0}}
        assert [o["client_id"] for o in st["foreign"]["orders"]] == ["web_manual_1"]
        assert d.metric("dolphind_foreign_positions") == 1
        assert d.metric("dolphind_foreign_orders") == 1
    finally:
        d.stop()
        market.stop()
        call(fake.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    events = d.events()
    # It traded: the strategy's entries and exits went to the venue and filled there.
    sent = [r for r in fake.requests if (r.method, r.path) == ("POST", "/fapi/v1/order")]
    entries = [r for r in sent if r.params.get("reduceOnly") != "true"]
    exits = [r for r in sent if r.params.get("reduceOnly") == "true"]
    assert len(entries) >= 6 and len(exits) >= 6, [(r.params.get("symbol"), r.status)
                                                   for r in sent]
    assert all(r.status == 200 for r in sent)
    for r in sent:
        assert r.params["symbol"] in feed_symbols
        assert [o.status for o in fake.orders_with_client_id(r.params["newClientOrderId"])] \
            == ["FILLED"]
    assert len([e for e in events if e.get("event") == "trade.closed"]) >= 6
    # The gross-exposure rail counted the foreign 320 USDT: under the cut cap it refused
    # entries that fit the cap alone but not with the foreign position on top.
    sized = {e["intent_id"]: e["notional_usdt"] for e in events
             if e.get("event") == "alpha.intent"}
    refused = [e for e in events if e.get("event") == "risk.rejected"
               and e.get("rule") == "gross_exposure"]
    assert refused, "no entry was refused by the gross cap"
    assert not [e for e in events[:before_reload] if e.get("event") == "risk.rejected"]
    for e in refused:
        own = sized[e["intent_id"]]
        assert own <= tight_cap < own + foreign_usdt, (own, e["detail"])
        would_be = float(e["detail"].split("would be ")[1].split(" ")[0])
        # Ours is flat at an entry, so the rail's figure is this order's notional (the
        # intent's, rounded to the lot and valued at the venue's mark: within a few percent)
        # plus the foreign 320; without the foreign it would be about ``own`` alone.
        assert would_be - foreign_usdt == pytest.approx(own, rel=0.1), (own, e["detail"])
    # Nothing foreign was touched: no order or cancel names the position's symbol, no
    # request at all names the foreign order.
    assert not [r for r in fake.requests if r.method != "GET"
                and r.params.get("symbol") == "BTCUSDT"]
    assert not [r for r in fake.requests if "web_manual_1" in r.params.values()]
    assert fake.positions["BTCUSDT"] == (0.01, 32_000.0)
    assert fake.orders_with_client_id("web_manual_1")[0].status == "NEW"


def test_an_operator_resume_is_not_fought_by_the_governor(tmp_path: Path) -> None:
    """The real daemon with the governor: a daily-loss breach that still holds (the day started
    at 20,000 USDT, the paper account has 10,000) halts at start; the operator's resume
    (token-protected) acknowledges it and re-arms the rule from the equity at the resume, so the
    governor does not halt again on the same breach (before #15 it did within one tick)."""
    import datetime as dt
    import json

    from tests.integration.test_mseries import audited_control_actions

    var = tmp_path / "var"
    folder = var / "plugins" / "governor"
    folder.mkdir(parents=True)
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    (folder / "governor_state.json").write_text(json.dumps({
        "version": 1, "halted": True, "reason": "max_daily_loss: daily loss 10000.00 >= 1000 USDT",
        "halted_at": 1.0, "breached_rules": ["max_daily_loss"], "day": today,
        "day_start_equity_usdt": 20_000.0}))
    port = free_port()
    extra = ('[plugins]\nenabled = ["governor"]\n\n[plugins.governor]\ntick_interval_s = 0.1\n'
             "max_daily_loss_usdt = 1000.0\n")
    d = Daemon(write_config(tmp_path / "d.toml", port, extra=extra,
                            data_dir=str(var)), port).start()
    try:
        d.wait_ready(timeout=120)
        assert d.get_json("/status")["control"]["halted_by"].keys() == {"governor"}
        code, body = d.post("/kill", {"action": "resume"})
        assert code == 200 and body["halted"] is False

        def governor() -> dict[str, Any]:
            return {p["name"]: p for p in d.get_json("/status")["plugins"]}["governor"]["detail"]

        wait_until(lambda: governor()["halted"] is False, what="the governor saw the resume")
        time.sleep(2.0)  # 20 governor ticks with the day's loss still 10,000 by the old baseline
        assert d.get_json("/status")["control"]["halted"] is False
        detail = governor()
        assert detail["day_start_equity_usdt"] == pytest.approx(10_000.0, abs=100.0)
    finally:
        assert d.stop() == 0
    lines = [json.loads(x) for x in (folder / "compliance.jsonl").read_text().splitlines()]
    resumed = [x for x in lines if x["event"] == "resumed"]
    assert resumed and resumed[0]["acknowledged"] == ["max_daily_loss"]
    assert resumed[0]["daily_loss_from_equity_usdt"] == pytest.approx(10_000.0, abs=100.0)
    acts = [(a["action"], a["cause"].split(":")[0]) for a in audited_control_actions(var)
            if a["action"] in ("halt", "resume", "incident") and a["cause"] != "shutdown"]
    # halted at start, resumed by the operator, the re-arm audited, no halt after it
    assert acts[-2:] == [("resume", "http"), ("incident", "governor")], acts
