"""The config of a mode "live" daemon on the loopback fakes, shared by the venue, safe-trading,
crash and Hazelcast fencing tests: the live feed on the market-data fake, orders to the REST fake,
entries off (the only orders are the test's), the venue's timings short for a test."""
from __future__ import annotations

from pathlib import Path

from tests.fakes.binance_rest import FakeBinanceRest
from tests.integration.test_live_feed import live_feed_config


def live_venue_toml(port: int, market_url: str, fake: FakeBinanceRest, lease_dir: Path | str,
                    *, execution: str = 'foreign = "adopt"', binance: str = "", tail: str = "",
                    lease_ttl_s: float = 2.0, lease_renew_s: float = 0.2) -> str:
    """``execution``: lines of ``[execution]`` (by default the account's holdings are the
    daemon's to close, issue #15's opt-in); ``binance``: more ``[execution.binance]`` lines;
    ``tail``: whole sections after it."""
    return f"""
mode = "live"
shutdown_timeout_s = 5.0

[ops]
listen = "127.0.0.1:{port}"

[data]
dir = "var"

[logging]
format = "json"
{live_feed_config(market_url, stall_timeout_s=30.0, stream_grace_s=30.0)}
[risk]
trading_enabled = false

[execution]
venue = "binance"
{execution}

[execution.binance]
network = "mainnet"
rest_base_url = "{fake.rest_url}"
ws_base_url = "{fake.ws_url}"
symbols = ["BTCUSDT"]
lease_dir = "{lease_dir}"
lease_ttl_s = {lease_ttl_s}
lease_renew_s = {lease_renew_s}
poll_interval_s = 0.1
backoff_initial_s = 0.05
backoff_max_s = 0.2
request_timeout_s = 2.0
{binance}
{tail}
"""


def venue_env(fake: FakeBinanceRest) -> dict[str, str]:
    """The fake account's credentials, as the daemon reads them."""
    return {"DOLPHIND_BINANCE_API_KEY": fake.api_key,
            "DOLPHIND_BINANCE_API_SECRET": fake.secret}
