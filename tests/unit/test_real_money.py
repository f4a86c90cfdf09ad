"""One switch for real money: only mode "live" sends orders to a real venue, and it needs the
live feed; paper and backtest always fill in the paper venue; mainnet is written out.

Every combination of mode x feed x execution.venue x network is checked against the one rule,
in code (``trading_target``) and through ``dolphind check-config`` (its one summary line).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from dolphind.config import ConfigError, config_from_dict, describe_trading, trading_target

MODES = ("paper", "backtest", "live")
FEEDS = ("replay", "binance")
VENUES = ("paper", "binance")
NETWORKS = ("testnet", "mainnet")


def _raw(mode: str, feed: str, venue: str, network: str) -> dict:
    raw: dict = {"mode": mode, "feed": {"kind": feed},
                 "execution": {"venue": venue, "binance": {"network": network,
                                                           "secrets_file": "keys.toml"}}}
    if feed == "binance":
        raw["binance_feed"] = {"symbols": ["BTCUSDT"]}
    return raw


@pytest.mark.parametrize("mode,feed,venue,network",
                         list(itertools.product(MODES, FEEDS, VENUES, NETWORKS)))
def test_every_combination_trades_where_the_rule_says(mode, feed, venue, network):
    raw = _raw(mode, feed, venue, network)
    allowed = mode != "live" or (feed == "binance" and venue == "binance")
    if not allowed:
        with pytest.raises(ConfigError) as exc:
            config_from_dict(raw)
        text = str(exc.value)
        if venue != "binance":
            assert "execution.venue = 'binance'" in text
        if feed != "binance":
            assert "mode: 'live' needs feed.kind = 'binance'" in text
        return
    cfg = config_from_dict(raw)
    target = trading_target(cfg)
    line = describe_trading(cfg)
    assert "\n" not in line and line.startswith("trades: ")
    if mode == "live":
        assert target == ("binance", network)
        assert f"binance {network}" in line and "real orders" in line
        assert ("REAL MONEY" in line) == (network == "mainnet")
    else:
        # paper and backtest never reach a real venue, whatever execution.venue says
        assert target == ("paper", None)
        assert "paper venue" in line and "REAL MONEY" not in line
        assert ("live Binance market data" in line) == (feed == "binance")
        assert ("used only in mode 'live'" in line) == (venue == "binance")


@pytest.mark.parametrize("key,url", [("rest_base_url", "https://fapi.binance.com"),
                                     ("ws_base_url", "wss://fstream.binance.com")])
def test_a_mainnet_url_needs_network_mainnet_written_out(key, url):
    raw = _raw("live", "binance", "binance", "testnet")
    raw["execution"]["binance"][key] = url
    with pytest.raises(ConfigError, match=f"execution.binance.{key}: .*network = \"mainnet\""):
        config_from_dict(raw)
    raw["execution"]["binance"]["network"] = "mainnet"
    assert trading_target(config_from_dict(raw)) == ("binance", "mainnet")


def test_the_default_network_is_testnet():
    raw = _raw("live", "binance", "binance", "testnet")
    del raw["execution"]["binance"]["network"]
    assert trading_target(config_from_dict(raw)) == ("binance", "testnet")


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dolphind.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_check_config_prints_the_venue_and_network_in_one_line(tmp_path: Path) -> None:
    paper = tmp_path / "paper.toml"
    # check-config also checks what `run` would meet (issue 17): the replay data and the
    # secrets file must exist.
    sample = Path(__file__).resolve().parents[2] / "data" / "sample"
    paper.write_text(f'mode = "paper"\n[replay]\npaths = ["{sample}"]\n[execution]\n'
                     'venue = "binance"\n')
    (tmp_path / "k.toml").write_text('api_key = "k"\napi_secret = "s"\n')
    res = _check(paper)
    assert res.returncode == 0, res.stderr
    (line,) = [x for x in res.stdout.splitlines() if x.startswith("trades: ")]
    assert line == ("trades: paper venue (simulated fills, no real orders) on replayed "
                    "history (execution.venue 'binance' is used only in mode 'live')")
    live = tmp_path / "live.toml"
    live.write_text('mode = "live"\n[feed]\nkind = "binance"\n[binance_feed]\n'
                    'symbols = ["BTCUSDT"]\n[execution]\nvenue = "binance"\n'
                    '[execution.binance]\nnetwork = "mainnet"\nsecrets_file = "k.toml"\n')
    res = _check(live)
    assert res.returncode == 0, res.stderr
    assert "trades: binance mainnet (REAL MONEY, real orders) on live Binance market data" \
        in res.stdout.splitlines()
    replay_live = tmp_path / "replay_live.toml"
    replay_live.write_text('mode = "live"\n[execution]\nvenue = "binance"\n'
                           '[execution.binance]\nnetwork = "mainnet"\nsecrets_file = "k.toml"\n')
    res = _check(replay_live)
    assert res.returncode == 2 and "mode: 'live' needs feed.kind = 'binance'" in res.stderr
