"""ccxt talking to the loopback Binance: orders, fills, the user stream, errors, limits, lease.

Real ccxt (binanceusdm, signing, aiohttp) and a real aiohttp server playing Binance with the
real payload shapes (tests/fakes/binance_rest.py); nothing is mocked.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from dolphind.venues.binance import BinanceVenue, Credentials
from dolphind.venues.venue import VenueRejected, VenueUnavailable
from dolphind.statebus.memory import MemoryStateBus
from tests.conftest import eventually
from tests.unit.venue.conftest import open_venue, order, venue_config, venue_loops


def sample(metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def assert_loopback_only(venue: BinanceVenue, fake) -> None:
    """Every URL ccxt knows points at the fake; the fake saw nothing it does not serve."""
    assert venue._ex is not None
    urls = venue._ex.urls["api"]
    assert urls and all(u.startswith(fake.rest_url) for u in urls.values()), urls
    assert not fake.unexpected, fake.unexpected
    assert {r.host.split(":")[0] for r in fake.requests} == {"127.0.0.1"}


# ---- orders -------------------------------------------------------------------------------


async def test_market_order_fills_through_the_user_stream(fake, metrics_factory):
    m = metrics_factory()
    async with open_venue(fake, m) as (venue, events):
        assert fake.leverage == {} and venue.status()["user_stream"]["connected"]
        ack = await venue.submit(order("dd-m1", "SELL", 0.01))
        assert ack.state == "acked" and ack.venue_order_id
        await eventually(lambda: events.fills_of("dd-m1"), what="fill")
        (fill,) = events.fills_of("dd-m1")
        assert (fill.side, fill.qty, fill.price, fill.liquidity) == ("SELL", 0.01, 40_000.0,
                                                                      "TAKER")
        assert fill.fee_usdt == pytest.approx(0.01 * 40_000 * 0.0004)
        assert fill.fill_id == f"BTCUSDT:{fake.orders_with_client_id('dd-m1')[0].trades[0]['id']}"
        # newClientOrderId is the router's id; the stream's ACCOUNT_UPDATE moved the position.
        (sent,) = fake.orders_with_client_id("dd-m1")
        assert sent.type == "MARKET" and not sent.reduce_only
        await eventually(lambda: venue.stream_positions.get("BTCUSDT") == -0.01)
        assert (await venue.positions())["BTCUSDT"].qty == -0.01
        assert sample(m, "dolphind_venue_fills_recovered_total") == 0
        assert_loopback_only(venue, fake)
        # Every REST request the venue counted reached the fake (none went anywhere else).
        sent_total = sum(s.value for metric in m.registry.collect()
                         if metric.name == "dolphind_venue_requests"
                         for s in metric.samples if s.name.endswith("_total"))
        assert sent_total == sum(1 for r in fake.requests if r.path.startswith("/fapi"))


async def test_reduce_only_and_its_refusal(fake, metrics_factory):
    async with open_venue(fake, metrics_factory()) as (venue, events):
        await venue.submit(order("dd-e1", "BUY", 0.02))
        await eventually(lambda: events.fills_of("dd-e1"))
        with pytest.raises(VenueRejected, match="reduce_only_rejected"):
            await venue.submit(order("dd-x0", "BUY", 0.01, reduce_only=True))  # would add
        await venue.submit(order("dd-x1", "SELL", 0.02, reduce_only=True))
        await eventually(lambda: events.fills_of("dd-x1"))
        assert fake.orders_with_client_id("dd-x1")[0].reduce_only
        assert fake.positions["BTCUSDT"][0] == 0.0
        assert events.fills_of("dd-x1")[0].reduce_only


async def test_limit_order_partial_fills_cancel_and_query_by_client_id(fake, metrics_factory):
    async with open_venue(fake, metrics_factory()) as (venue, events):
        ack = await venue.submit(order("dd-l1", "BUY", 0.03, order_type="LIMIT",
                                       price=39_000.0))
        assert ack.state == "acked"
        q = await venue.query("dd-l1")
        assert q is not None and (q.state, q.filled_qty, q.price) == ("acked", 0.0, 39_000.0)
        await fake.fill("dd-l1", 0.01)
        await fake.fill("dd-l1", 0.01, price=38_999.0)
        await eventually(lambda: len(events.fills_of("dd-l1")) == 2)
        assert [f.liquidity for f in events.fills_of("dd-l1")] == ["MAKER", "MAKER"]
        q = await venue.query("dd-l1")
        assert (q.state, q.filled_qty) == ("partially_filled", 0.02)
        assert len(events.fills_of("dd-l1")) == 2  # the query re-read nothing twice
        cancelled = await venue.cancel("dd-l1")
        assert cancelled is not None and cancelled.state == "cancelled"
        await eventually(lambda: "cancelled" in events.states_of("dd-l1"))
        # Cancelling again: Binance says -2011; the venue asks and reports the final state.
        again = await venue.cancel("dd-l1")
        assert again is not None and again.state == "cancelled"
        assert await venue.query("dd-never") is None  # -2013 on every symbol: unknown
        assert [o.client_id for o in await venue.open_orders()] == []


async def test_a_final_state_never_overtakes_its_fills(fake, metrics_factory):
    """Fills only through REST: the FILLED answer is held back until the trades are read."""
    fake.fill_mode = "rest"
    async with open_venue(fake, metrics_factory()) as (venue, events):
        await venue.submit(order("dd-r1", "BUY", 0.01, order_type="LIMIT", price=39_000.0))
        await fake.fill("dd-r1", 0.004)
        await fake.fill("dd-r1", 0.006)
        fake.orders_with_client_id("dd-r1")[0].status = "FILLED"
        await eventually(lambda: len(events.fills_of("dd-r1")) == 2, what="fills by REST")
        assert sum(f.qty for f in events.fills_of("dd-r1")) == pytest.approx(0.01)


# ---- error mapping ------------------------------------------------------------------------


async def test_timestamp_error_resyncs_the_clock_and_retries_once(fake, metrics_factory):
    m = metrics_factory()
    async with open_venue(fake, m) as (venue, events):
        fake.skew_ms = 30_000  # the venue's clock jumps: every signed request is now late
        ack = await venue.submit(order("dd-t1"))
        assert ack.state == "acked"
        assert len(fake.orders_with_client_id("dd-t1")) == 1
        assert sample(m, "dolphind_venue_errors_total", code="-1021") == 1
        assert sample(m, "dolphind_venue_clock_resyncs_total", cause="timestamp_error") == 1
        assert venue.status()["clock_offset_ms"] == pytest.approx(30_000, abs=500)
        # A second -1021 in a row is not retried again.
        fake.fault("POST /fapi/v1/order", status=400, code=-1021, msg="late", times=2)
        with pytest.raises(VenueRejected, match="timestamp"):
            await venue.submit(order("dd-t2"))
        assert fake.count("POST /fapi/v1/order") == 2 + 2  # each sent twice, never more


async def test_margin_insufficient_is_rejected_without_retry(fake, metrics_factory):
    m = metrics_factory()
    async with open_venue(fake, m) as (venue, _):
        fake.fault("POST /fapi/v1/order", status=400, code=-2019, msg="Margin is insufficient.")
        with pytest.raises(VenueRejected, match="margin_insufficient"):
            await venue.submit(order("dd-mg"))
        assert fake.count("POST /fapi/v1/order") == 1
        assert sample(m, "dolphind_venue_errors_total", code="-2019") == 1


@pytest.mark.parametrize("status,code", [(429, -1003), (400, -1003)])
async def test_rate_limit_answers_back_off_for_retry_after(fake, metrics_factory, status, code):
    m = metrics_factory()
    async with open_venue(fake, m, venue_config(fake, max_order_delay_s=0.1)) as (venue, _):
        fake.fault("POST /fapi/v1/order", status=status, code=code, retry_after=1,
                   msg="Too many requests; current limit is 1200 requests per minute.")
        with pytest.raises(VenueRejected, match="rate_limited"):
            await venue.submit(order("dd-rl"))
        n = len(fake.requests)
        t0 = time.monotonic()
        with pytest.raises(VenueRejected, match="rate_limited:backoff"):
            await venue.submit(order("dd-rl2"))  # refused locally: nothing sent
        assert len(fake.requests) == n
        # A read waits out the back-off instead (it is allowed to wait), then goes through.
        assert await venue.query("dd-rl") is None
        assert time.monotonic() - t0 >= 0.8
        assert sample(m, "dolphind_venue_backoff_until_seconds") > 0
        await venue.submit(order("dd-rl3"))


async def test_418_stops_every_request_until_the_ban_ends(fake, metrics_factory):
    m = metrics_factory()
    async with open_venue(fake, m) as (venue, _):
        fake.ban(1.5)
        with pytest.raises(VenueRejected, match="ip_banned"):
            await venue.submit(order("dd-b1"))
        banned_at = len(fake.requests)
        assert "ban" in venue.readiness()
        for cid in ("dd-b2", "dd-b3"):
            with pytest.raises(VenueRejected, match="ip_banned"):
                await venue.submit(order(cid))
        with pytest.raises(VenueUnavailable, match="ip_banned"):
            await venue.positions()
        await asyncio.sleep(0.5)
        assert len(fake.requests) == banned_at  # polling, stream, reads: all held back
        assert sample(m, "dolphind_venue_banned_until_seconds") == pytest.approx(
            fake.banned_until, abs=1.0)
        await eventually(lambda: time.time() > fake.banned_until + 0.05, timeout=5)
        await eventually(lambda: venue.budget.banned_until < venue._now(), timeout=5)
        assert (await venue.submit(order("dd-b4"))).state == "acked"


async def test_unknown_order_on_cancel_reports_what_became_of_it(fake, metrics_factory):
    async with open_venue(fake, metrics_factory()) as (venue, events):
        await venue.submit(order("dd-c1", "BUY", 0.01))  # market: filled at once
        await eventually(lambda: events.fills_of("dd-c1"))
        res = await venue.cancel("dd-c1")  # Binance: -2011 Unknown order sent.
        assert res is not None and res.state == "filled" and res.filled_qty == 0.01
        assert fake.count("DELETE /fapi/v1/order") == 1


@pytest.mark.parametrize("fault", [dict(status=503, code=-1007), dict(delay_s=2.0)],
                         ids=["5xx_after_execution", "timeout_after_execution"])
async def test_no_answer_after_submit_is_unknown_and_never_resubmitted(fake, metrics_factory,
                                                                       fault):
    fake.fill_mode = "rest"  # no stream evidence, no routine check: only a query can tell
    async with open_venue(fake, metrics_factory(),
                          venue_config(fake, order_check_s=30.0)) as (venue, events):
        fake.fault("POST /fapi/v1/order", process=True, **fault)
        with pytest.raises(VenueUnavailable, match="unknown"):
            await venue.submit(order("dd-u1"))
        # The only way forward is a query by client id: it finds the order and its fill.
        q = await venue.query("dd-u1")
        assert q is not None and q.state == "filled"
        await eventually(lambda: events.fills_of("dd-u1"))
        with pytest.raises(VenueRejected, match="duplicate"):
            await venue.submit(order("dd-u1"))  # a resubmit of the same id never leaves
        await asyncio.sleep(0.3)  # polling and the stream have had their chance
        assert fake.count("POST /fapi/v1/order") == 1
        assert len(fake.orders_with_client_id("dd-u1")) == 1
        assert len(events.fills_of("dd-u1")) == 1


async def test_an_unanswered_submit_seen_on_the_user_stream_is_acked(fake, metrics_factory):
    async with open_venue(fake, metrics_factory()) as (venue, events):
        fake.fault("POST /fapi/v1/order", process=True, delay_s=2.0)
        ack = await venue.submit(order("dd-w1"))  # the stream showed it before the timeout
        assert ack.state == "acked" and ack.venue_order_id
        await eventually(lambda: events.fills_of("dd-w1"))
        assert fake.count("POST /fapi/v1/order") == 1


async def test_an_unanswered_order_is_not_declared_missing_before_its_recv_window(
        fake, metrics_factory):
    async with open_venue(fake, metrics_factory()) as (venue, _):
        fake.fault("POST /fapi/v1/order", status=502, msg="Bad Gateway")  # never executed
        with pytest.raises(VenueUnavailable):
            await venue.submit(order("dd-g1"))
        with pytest.raises(VenueUnavailable, match="not at the venue yet"):
            await venue.query("dd-g1")
        # recvWindow (1 s) + grace (0.2 s) later, "does not exist" is final.
        assert await eventually(lambda: _settled(venue, "dd-g1"), timeout=5) == "gone"
        assert fake.count("POST /fapi/v1/order") == 1


async def _settled(venue: BinanceVenue, cid: str) -> str | None:
    try:
        return "gone" if await venue.query(cid) is None else "found"
    except VenueUnavailable:
        return None


# ---- user stream ---------------------------------------------------------------------------


@pytest.mark.parametrize("outage", ["listen_key_expired", "stream_dropped"])
async def test_fills_during_a_user_stream_outage_are_recovered_once(fake, metrics_factory,
                                                                    outage):
    m = metrics_factory()
    cfg = venue_config(fake, backoff_initial_s=0.4, backoff_max_s=0.4)
    async with open_venue(fake, m, cfg) as (venue, events):
        await venue.submit(order("dd-s1", "BUY", 0.03, order_type="LIMIT", price=39_500.0))
        await fake.fill("dd-s1", 0.01)
        await eventually(lambda: len(events.fills_of("dd-s1")) == 1)
        if outage == "listen_key_expired":
            await fake.expire_listen_key()
        else:
            await fake.drop_streams()
        await eventually(lambda: not venue.status()["user_stream"]["connected"])
        assert not venue.reconciled
        with pytest.raises(VenueRejected, match="not_reconciled"):
            await venue.submit(order("dd-s2"))  # no new entries while blind
        # Fills while nobody listens: the stream will never repeat them.
        await fake.fill("dd-s1", 0.01)
        await fake.fill("dd-s1", 0.01)
        await eventually(lambda: len(events.fills_of("dd-s1")) == 3, what="recovered fills")
        await eventually(lambda: venue.reconciled, what="reconnected and reconciled")
        await asyncio.sleep(0.3)
        fills = events.fills_of("dd-s1")
        assert len(fills) == len({f.fill_id for f in fills}) == 3
        assert sum(f.qty for f in fills) == pytest.approx(0.03)
        assert sample(m, "dolphind_venue_fills_recovered_total") >= 2
        assert sample(m, "dolphind_venue_user_stream_reconnects_total", reason="start") == 1
        assert venue.connects == 2
        if outage == "listen_key_expired":
            assert sample(m, "dolphind_venue_listen_key_renewals_total", outcome="expired") == 1
            assert fake.count("POST /fapi/v1/listenKey") == 2


async def test_listen_key_keepalive_and_recreation(fake, metrics_factory):
    m = metrics_factory()
    async with open_venue(fake, m, venue_config(fake, listen_key_keepalive_s=0.1)) as (venue, _):
        await eventually(lambda: fake.count("PUT /fapi/v1/listenKey") >= 2)
        fake.listen_keys.clear()  # Binance forgot it: the next PUT answers -1125
        await eventually(lambda: fake.count("POST /fapi/v1/listenKey") >= 2, what="re-created")
        await eventually(lambda: venue.reconciled)
        assert sample(m, "dolphind_venue_listen_key_renewals_total", outcome="failed") >= 1


# ---- request budget ------------------------------------------------------------------------


async def test_weight_near_the_limit_slows_requests_down(fake, metrics_factory):
    # Binance's weight window is the clock minute: start well inside one (never skip).
    if time.time() % 60 > 50:
        await asyncio.sleep(61 - time.time() % 60)
    m = metrics_factory()
    async with open_venue(fake, m, venue_config(fake, weight_limit_1m=10_000)) as (venue, _):
        await venue.positions()
        assert sample(m, "dolphind_venue_rate_delay_seconds_total") == 0
        fake.extra_weight = 7_000  # other users of this IP: past the 70% mark
        await venue.positions()  # this answer reports it
        now = venue._now()
        delay, reason = venue.budget.wait_time(5, 0, now)
        assert 60 - now % 60 >= 2.0, "the test straddles a minute boundary"
        assert reason == "weight" and delay > 0
        t0 = time.monotonic()
        await venue.positions()
        assert time.monotonic() - t0 >= delay * 0.9
        assert sample(m, "dolphind_venue_rate_delay_seconds_total") > 0
        assert sample(m, "dolphind_venue_request_weight_used") >= 7_000


# ---- one account, one trader --------------------------------------------------------------


async def test_a_second_venue_on_the_same_account_is_fenced(fake, metrics_factory):
    bus = MemoryStateBus()
    m1, m2 = metrics_factory(), metrics_factory()
    async with open_venue(fake, m1, bus=bus) as (first, _):
        async with open_venue(fake, m2, bus=bus, wait_reconciled=False) as (second, _):
            assert first.lease.held and not second.lease.held
            assert second.readiness().startswith("fenced: account binance-usdm:")
            assert first.lease.owner in second.readiness()
            with pytest.raises(VenueRejected, match="fenced"):
                await second.submit(order("dd-f1", reduce_only=True))
            assert fake.count("POST /fapi/v1/order") == 0
            assert second.status()["lease"]["holder"] == first.lease.owner
            assert sample(m2, "dolphind_venue_fenced_total") == 1
            assert sample(m2, "dolphind_venue_lease_held") == 0
            # The key itself is never shown, anywhere in the status.
            assert fake.api_key not in str(second.status()) + str(first.status())
            await first.aclose()  # a clean stop releases the account at once
            await eventually(lambda: second.lease.held, timeout=5, what="takeover")
            await eventually(lambda: second.reconciled, timeout=5)
            assert (await second.submit(order("dd-f2"))).state == "acked"


# ---- -4116: the client order id is already at the venue ----------------------------------


async def test_duplicate_client_id_is_queried_not_rejected(fake, metrics_factory):
    async with open_venue(fake, metrics_factory()) as (venue, events):
        # At the venue already (sent before a restart, its answer lost): not known here.
        placed = fake.place("BTCUSDT", "BUY", 0.02, 39_000.0, "dd-dup1")
        ack = await venue.submit(order("dd-dup1", "BUY", 0.02, order_type="LIMIT",
                                       price=39_000.0))
        assert ack.state == "acked" and ack.venue_order_id == str(placed.order_id)
        assert fake.count("POST /fapi/v1/order") == 1
        assert fake.count("GET /fapi/v1/order") >= 1  # asked by client id
        assert not venue._orders["dd-dup1"].gone
        await fake.fill("dd-dup1")
        await eventually(lambda: sum(f.qty for f in events.fills_of("dd-dup1")) == 0.02)
        assert len(fake.orders_with_client_id("dd-dup1")) == 1


async def test_duplicate_client_id_after_execution_recovers_the_fill_once(fake,
                                                                         metrics_factory):
    fake.fill_mode = "rest"  # only a query can tell what happened
    async with open_venue(fake, metrics_factory(),
                          venue_config(fake, order_check_s=30.0)) as (venue, events):
        fake.fault("POST /fapi/v1/order", process=True, status=400, code=-4116,
                   msg="ClientOrderId is duplicated.")
        ack = await venue.submit(order("dd-dup2", "SELL", 0.01))
        assert ack.state == "acked"
        await eventually(lambda: events.fills_of("dd-dup2"))
        await eventually(lambda: venue._orders["dd-dup2"].settled)
        assert len(events.fills_of("dd-dup2")) == 1
        assert fake.count("POST /fapi/v1/order") == 1


# ---- reconciled only once positions are confirmed ------------------------------------------


async def test_reconciled_only_after_the_position_check_succeeds(fake, metrics_factory):
    answers: list[bool] = []
    allow = asyncio.Event()

    async def check(cause: str) -> bool:
        answers.append(allow.is_set())
        return allow.is_set()

    cfg = venue_config(fake, backoff_initial_s=0.05, backoff_max_s=0.05)
    m = metrics_factory()
    venue = BinanceVenue(lambda: cfg, MemoryStateBus(), m.venue,
                         Credentials(fake.api_key, fake.secret, "test"))
    async with venue, venue_loops(venue, m) as loops:
        venue.set_position_check(check)
        loops.start(venue.stages())
        await eventually(lambda: len(answers) >= 3, what="position check retried")
        assert not venue.reconciled
        assert venue.readiness().startswith("not reconciled")
        with pytest.raises(VenueRejected, match="not_reconciled"):
            await venue.submit(order("dd-pc1"))
        allow.set()
        await eventually(lambda: venue.reconciled, what="reconciled once confirmed")
        # After a reconnect the positions are checked again before entries are allowed.
        allow.clear()
        n = len(answers)
        await fake.drop_streams()
        await eventually(lambda: len(answers) > n + 1 and venue.status()["user_stream"]
                         ["connected"], what="checked again after the reconnect")
        assert not venue.reconciled
        allow.set()
        await eventually(lambda: venue.reconciled)


# ---- secrets stay out of logs and /status --------------------------------------------------


async def test_no_key_secret_or_listen_key_in_logs_or_status(fake, metrics_factory):
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        async with open_venue(fake, metrics_factory()) as (venue, _):
            keys = set(fake.listen_keys)
            fake.refuse_streams = True  # the handshake fails: aiohttp's error names the URL
            await fake.drop_streams()
            await eventually(lambda: "user stream" in venue.status()["last_error"],
                             what="a handshake error")
            fake.fault("PUT /fapi/v1/listenKey", status=400, code=-1125,
                       msg="This listenKey does not exist.")
            fake.fault("GET /fapi/v2/positionRisk", status=401, code=-2015,
                       msg="Invalid API-key, IP, or permissions for action.")
            with pytest.raises(VenueUnavailable):
                await venue.positions()
            fake.refuse_streams = False
            await eventually(lambda: venue.reconciled, what="back")
            keys |= set(fake.listen_keys)
            status = str(venue.status())
    assert keys
    text = status + "\n".join(str(e) for e in logs)
    assert "WSServerHandshakeError" in text  # the error itself is still reported
    for secret in (fake.api_key, fake.secret, *keys):
        assert secret not in text


async def test_a_crashing_background_loop_is_logged_counted_and_restarted(fake,
                                                                          metrics_factory):
    """Issue #15: venue background loops are supervised, not left to die silently."""
    from tests.unit.venue.conftest import creds, venue_config

    m = metrics_factory()
    v = BinanceVenue(lambda: venue_config(fake), None, m.venue, creds(fake))
    async with v, venue_loops(v, m) as loops:
        runs = []

        async def flaky() -> None:
            runs.append(1)
            if len(runs) < 3:
                raise RuntimeError("boom")
            await asyncio.Event().wait()  # then runs for the venue's life

        loops.start([v.loop("flaky", flaky)])
        await eventually(lambda: len(runs) == 3)
        assert v.loop_crashes == {"flaky": 2}
        assert m.registry.get_sample_value("dolphind_venue_loop_crashes_total",
                                           {"loop": "flaky"}) == 2
        assert "flaky loop: RuntimeError: boom" in v.status()["last_error"]
        assert v.status()["loop_crashes"] == {"flaky": 2}
