"""The pure parts of the live venue: request budget, account lease, credentials, wire parsing."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dolphind.config import BinanceVenueConfig, ConfigError, config_from_dict
from dolphind.venues.binance.credentials import Credentials, CredentialsError, load_credentials
from dolphind.venues.binance.rate import RateBudget
from dolphind.venues.binance.reports import (
    decimal_str,
    report_from_rest,
    report_from_stream,
    trade_from_rest,
    trade_from_stream,
)
from dolphind.venues.binance.lease import AccountLease, HostLease, Lease, account_id
from dolphind.statebus.memory import MemoryStateBus
from tests.fakes.binance_rest import _HTTP, _RES, _USER, EXCHANGE_INFO_2021, EXCHANGE_INFO_2022

CFG = BinanceVenueConfig(weight_slow_fraction=0.7, weight_stop_fraction=0.9)


def budget(**kw) -> RateBudget:
    cfg = BinanceVenueConfig(**kw) if kw else CFG
    return RateBudget(lambda: cfg)


# ---- budget ---------------------------------------------------------------------------------


def test_limits_come_from_exchange_info():
    b = budget()
    for path in (EXCHANGE_INFO_2021, EXCHANGE_INFO_2022):
        raw = path.read_bytes()
        if not raw.startswith(b"{"):
            raw = raw.split(b"\n", 1)[0]
            raw = raw[raw.find(b": {") + 2:]
        b.set_limits(orjson.loads(raw)["rateLimits"])
        assert b.limit in (2400, 6000) and b.order_limits["10s"] == 300
    assert budget(weight_limit_1m=1000).limit == 1000  # the config may be stricter


def test_far_from_the_limit_nothing_waits():
    b = budget()
    now = 1_700_000_050.0  # 10 s into a minute
    b.observe({"X-MBX-USED-WEIGHT-1M": "100"}, now)
    assert b.wait_time(5, 0, now) == (0.0, "")


def test_past_the_slow_mark_requests_are_paced_over_the_rest_of_the_minute():
    b = budget()
    now = 1_700_000_050.0  # 50 s left in this minute
    b.charge(0, 0, now - 0.1)  # the previous request went out 0.1 s ago
    b.observe({"x-mbx-used-weight-1m": str(int(0.8 * 2400))}, now)
    delay, reason = b.wait_time(12, 0, now)
    left = 0.9 * 2400 - 0.8 * 2400  # weight left before the stop mark
    spacing = 50 * 12 / left
    assert reason == "weight" and delay == pytest.approx(spacing - 0.1)
    # Heavier requests wait longer; once the spacing has passed, the next one goes.
    assert b.wait_time(40, 0, now)[0] > delay
    assert b.wait_time(12, 0, now - 0.1 + spacing + 1e-6) == (0.0, "")
    assert b.wait_time(12, 0, now + 50.0) == (0.0, "")  # a new minute starts from zero


def test_past_the_stop_mark_requests_wait_for_the_next_window():
    b = budget()
    now = 1_700_000_070.0
    b.observe({"X-MBX-USED-WEIGHT-1M": "2200"}, now)
    delay, reason = b.wait_time(1, 0, now)
    assert reason == "weight" and delay == pytest.approx(30.05)


def test_order_counts_pace_orders_only():
    b = budget()
    now = 1_700_000_045.0  # 5 s into a 10 s window
    b.charge(0, 0, now)
    b.observe({"X-MBX-ORDER-COUNT-10S": "250", "X-MBX-ORDER-COUNT-1M": "250"}, now)
    delay, reason = b.wait_time(0, 1, now)
    assert reason == "orders_10s" and 0 < delay <= 5.05
    assert b.wait_time(1, 0, now) == (0.0, "")  # reads are not orders


def test_backoff_and_ban():
    b = budget()
    b.back_off(3.0, 100.0)
    assert b.wait_time(1, 0, 101.0) == (2.0, "backoff")
    assert b.wait_time(1, 0, 103.5) == (0.0, "")
    b.ban(200.0)
    assert b.wait_time(0, 1, 150.0) == (math.inf, "banned")
    assert b.wait_time(0, 1, 200.1) == (0.0, "")


def test_charge_counts_requests_before_their_answers():
    b = budget()
    now = 1_700_000_041.0
    for _ in range(10):
        b.charge(200, 0, now)
    assert b.used_weight(now) == 2000
    assert b.wait_time(1, 0, now)[1] == "weight"


@given(used=st.floats(0, 3000), weight=st.floats(0.1, 50), t=st.floats(0, 59.9))
def test_delay_is_bounded_by_the_window(used, weight, t):
    b = budget()
    now = 1_700_000_040.0 + t  # a minute starts at ...040
    b.observe({"X-MBX-USED-WEIGHT-1M": str(used)}, now)
    delay, _ = b.wait_time(weight, 0, now)
    assert 0.0 <= delay <= 60.05 - t + 1e-6


# ---- lease ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_one_account_one_trader():
    bus, clock = MemoryStateBus(), Clock()
    acct = account_id("binance-usdm", "KEY")
    a = AccountLease(bus, acct, lambda: 30.0, owner="a", wall=clock)
    b = AccountLease(bus, acct, lambda: 30.0, owner="b", wall=clock)
    assert a.try_acquire() and a.held
    assert not b.try_acquire() and not b.held
    assert "held by a" in b.reason
    clock.t += 20
    assert a.try_acquire()  # renewed
    clock.t += 20
    assert not b.try_acquire()  # still within the renewed TTL
    clock.t += 31  # a stopped renewing: its own view lapses, and b may take over
    assert not a.held
    assert b.try_acquire() and b.held
    assert not a.try_acquire() and "held by b" in a.reason
    b.release()
    assert a.try_acquire()


def test_other_accounts_are_independent_and_the_key_is_not_in_the_name():
    bus, clock = MemoryStateBus(), Clock()
    k1, k2 = account_id("binance-usdm", "KEY-ONE"), account_id("binance-usdm", "KEY-TWO")
    assert k1 != k2 and "KEY" not in k1
    assert AccountLease(bus, k1, lambda: 5.0, owner="a", wall=clock).try_acquire()
    assert AccountLease(bus, k2, lambda: 5.0, owner="b", wall=clock).try_acquire()


# ---- credentials ----------------------------------------------------------------------------


def test_credentials_from_the_environment_first(tmp_path: Path):
    cfg = BinanceVenueConfig(secrets_file="keys.toml")
    (tmp_path / "keys.toml").write_text('api_key = "FILEKEY"\napi_secret = "FILESECRET"\n')
    env = {"DOLPHIND_BINANCE_API_KEY": "ENVKEY", "DOLPHIND_BINANCE_API_SECRET": "ENVSECRET"}
    c = load_credentials(cfg, lambda p: tmp_path / p, env)
    assert (c.api_key, c.source) == ("ENVKEY", "env:DOLPHIND_BINANCE_API_KEY")
    c = load_credentials(cfg, lambda p: tmp_path / p, {})
    assert (c.api_key, c.secret) == ("FILEKEY", "FILESECRET")
    assert "FILEKEY" not in repr(c) and "FILESECRET" not in repr(c) and c.account in repr(c)


def test_missing_credentials_say_where_they_were_looked_for(tmp_path: Path):
    with pytest.raises(CredentialsError, match="DOLPHIND_BINANCE_API_KEY"):
        load_credentials(BinanceVenueConfig(), lambda p: tmp_path / p, {})
    (tmp_path / "half.toml").write_text('api_key = "K"\n')
    with pytest.raises(CredentialsError, match="needs both"):
        load_credentials(BinanceVenueConfig(secrets_file="half.toml"), lambda p: tmp_path / p, {})
    (tmp_path / "bad.toml").write_text('api_key = "SECRETVALUE\n')
    with pytest.raises(CredentialsError) as exc:
        load_credentials(BinanceVenueConfig(secrets_file="bad.toml"), lambda p: tmp_path / p, {})
    assert "SECRETVALUE" not in str(exc.value)


def test_live_mode_needs_the_binance_venue_and_credentials(monkeypatch):
    monkeypatch.delenv("DOLPHIND_BINANCE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="execution.venue = 'binance'"):
        config_from_dict({"mode": "live"})
    with pytest.raises(ConfigError, match="needs credentials"):
        config_from_dict({"mode": "live", "execution": {"venue": "binance"}})
    # mode "live" also needs the live feed (one switch for real money, issue #15)
    live_feed = {"feed": {"kind": "binance"}, "binance_feed": {"symbols": ["BTCUSDT"]}}
    cfg = config_from_dict({"mode": "live", **live_feed, "execution": {
        "venue": "binance", "binance": {"secrets_file": "/etc/dolphind/binance.toml",
                                        "leverage": {"BTCUSDT": 3},
                                        "margin_type": {"BTCUSDT": "ISOLATED"}}}})
    assert cfg.execution.binance.leverage == {"BTCUSDT": 3}
    monkeypatch.setenv("DOLPHIND_BINANCE_API_KEY", "k")
    monkeypatch.setenv("DOLPHIND_BINANCE_API_SECRET", "s")
    assert config_from_dict({"mode": "live", **live_feed,
                             "execution": {"venue": "binance"}}).mode == "live"


def test_bad_venue_settings_are_named():
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"execution": {"venue": "binance", "binance": {
            "leverage": {"BTCUSDT": 500}, "margin_type": {"ETHUSDT": "cross"},
            "rest_base_url": "fapi.binance.com", "weight_slow_fraction": 0.95,
            "listen_key_keepalive_s": 4000}}})
    text = str(exc.value)
    for key in ("leverage.BTCUSDT", "margin_type.ETHUSDT", "rest_base_url",
                "weight_slow_fraction", "listen_key_keepalive_s"):
        assert key in text


# ---- wire format (the real fixtures) --------------------------------------------------------


def test_rest_and_stream_payloads_parse():
    rest = report_from_rest(orjson.loads((_HTTP / "order_response.json").read_bytes()))
    assert (rest.client_id, rest.state, rest.qty, rest.price) == ("testOrder123", "acked",
                                                                  0.001, 50000.0)
    ev = orjson.loads((_USER / "order_update_trade.json").read_bytes())
    rep, tr = report_from_stream(ev), trade_from_stream(ev)
    assert rep.state == "partially_filled" and rep.executed_qty == 0.001
    assert tr is not None and (tr.fill_id, tr.qty, tr.price, tr.maker) == (
        "BTCUSDT:12345678", 0.001, 7100.5, True)
    new = orjson.loads((_USER / "order_update_new.json").read_bytes())
    assert trade_from_stream(new) is None
    t = trade_from_rest(orjson.loads((_RES / "http_futures_account_trades.json").read_bytes())[1])
    assert (t.fill_id, t.side, t.fee, t.maker) == ("ETHUSDT:82357629", "BUY", 0.005558, False)


@pytest.mark.parametrize("x,s", [(0.001, "0.001"), (1e-05, "0.00001"), (12.0, "12"),
                                 (39000.5, "39000.5"), (0.30000000000000004, "0.30000000000000004")])
def test_decimal_strings_have_no_exponent(x, s):
    assert decimal_str(x) == s


def test_credentials_repr_hides_the_key():
    c = Credentials("AKEY", "ASECRET", "env:X")
    assert "AKEY" not in repr(c) and "ASECRET" not in repr(c) and "AKEY" not in str(c)


# ---- the host lock -------------------------------------------------------------------------


def test_host_lock_fences_another_holder_until_released(tmp_path: Path):
    acct = account_id("binance-usdm", "KEY")
    a = HostLease(tmp_path / "leases", acct, "host:1:a")
    b = HostLease(tmp_path / "leases", acct, "host:2:b")
    assert a.try_acquire() and a.held
    assert not b.try_acquire() and not b.held
    assert "held by host:1:a" in b.reason and b.holder["owner"] == "host:1:a"
    assert a.try_acquire()  # a renewal keeps it
    assert "KEY" not in a.path.name
    a.release()
    assert b.try_acquire() and b.holder["owner"] == "host:2:b"
    assert not a.try_acquire() and "held by host:2:b" in a.reason


def test_host_lock_notices_its_file_was_replaced(tmp_path: Path):
    acct = account_id("binance-usdm", "KEY")
    a = HostLease(tmp_path, acct, "a")
    assert a.try_acquire()
    a.path.unlink()  # someone cleaned the directory: another daemon could lock a new file
    b = HostLease(tmp_path, acct, "b")
    assert b.try_acquire()
    assert not a.try_acquire() and not a.held and "held by b" in a.reason


def test_host_lock_fails_closed_when_its_directory_is_unusable(tmp_path: Path):
    (tmp_path / "file").write_text("")
    a = HostLease(tmp_path / "file" / "leases", account_id("binance-usdm", "KEY"), "a")
    assert not a.try_acquire() and not a.held
    assert "cannot open the lease file" in a.reason


async def test_the_venue_lease_adds_the_bus_lease_only_for_a_shared_bus(tmp_path: Path):
    class SharedBus(MemoryStateBus):
        name = "hazelcast"

    acct = account_id("binance-usdm", "KEY")
    assert Lease(acct, tmp_path / "l1", MemoryStateBus(), lambda: 30.0).bus is None
    shared = SharedBus()
    # Another host holds the account on the shared bus: this host's lock is not enough.
    AccountLease(shared, acct, lambda: 30.0, owner="otherhost:1:x").try_acquire()
    mine = Lease(acct, tmp_path / "l2", shared, lambda: 30.0)
    assert not await mine.acquire()
    assert mine.host.held and "held by otherhost:1:x" in mine.reason
    assert mine.status()["kind"] == "host_lock+state_bus"
    await mine.release()
    assert not mine.host.held
