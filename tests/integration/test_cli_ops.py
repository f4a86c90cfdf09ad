"""`dolphind status | positions | trades | profit | daily | halt | resume | flatten` against the
real daemon (a subprocess on loopback), run as a user would: the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import wait_until
from tests.integration.harness import TOKEN, Daemon, free_port, write_config

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "DOLPHIND_OPS_TOKEN"}
    return subprocess.run([sys.executable, "-m", "dolphind.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**base, **(env or {})}, cwd=cwd)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("cli")
    port = free_port()
    # Fast enough that trades close within seconds; the sample data has some in its first day.
    cfg = write_config(tmp / "dolphind.toml", port, speed=3000.0)
    cfg.write_text(cfg.read_text().replace('format = "json"', 'format = "json"\nheartbeat_s = 0.5'))
    d = Daemon(cfg, port).start()
    try:
        d.wait_ready(timeout=120)
        wait_until(lambda: d.get_json("/profit")["trades"] >= 2, timeout=120,
                   what="two closed trades")
        yield d
    finally:
        d.stop()


def test_log_has_fill_closed_and_heartbeat_lines(daemon: Daemon) -> None:
    events = daemon.events()
    closed = [e for e in events if e["event"] == "trade.closed"]
    fills = [e for e in events if e["event"] == "trade.fill"]
    beats = [e for e in events if e["event"] == "heartbeat"]
    assert len(fills) >= 2 * len(closed) >= 4  # an entry and an exit per round trip
    first = closed[0]
    assert {"symbol", "side", "entry", "exit", "pnl_usdt", "reason", "held"} <= set(first)
    # the first closed trade is the last trade of /trades (oldest), with the same PnL
    oldest = daemon.get_json("/trades?limit=10000")["trades"][-1]
    assert (first["symbol"], first["pnl_usdt"]) == (oldest["symbol"],
                                                    round(oldest["pnl_usdt"], 2))
    assert fills[0]["reason"] and fills[0]["at"].startswith("20")
    assert beats
    assert {"equity_usdt", "open_positions", "posture", "halted", "warm"} <= set(beats[-1])
    assert TOKEN not in daemon.logs()


def test_version() -> None:
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.strip().startswith("dolphind 0.")


def test_help_lists_examples_and_exit_codes() -> None:
    res = cli("--help")
    assert res.returncode == 0
    for word in ("examples:", "exit codes:", "status", "halt", "flatten", "profit", "daily"):
        assert word in res.stdout, word


def test_status_is_one_screen_and_json_is_the_document(daemon: Daemon) -> None:
    res = cli("status", "--url", daemon.url)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) <= 24  # one screen, no config dump
    text = res.stdout
    assert "ready      yes" in text and "mode paper" in text and "equity" in text
    assert "posture" in text and "stages     feed ok" in text
    raw = cli("status", "--url", daemon.url, "--json")
    doc = json.loads(raw.stdout)
    assert doc["mode"] == "paper" and "config" in doc


def test_status_needs_no_trading_credentials(daemon: Daemon, tmp_path: Path) -> None:
    # A live config whose credentials are not in the environment: `run` and `check-config`
    # refuse it, `status` only needs [ops] listen from it.
    live = tmp_path / "live.toml"
    live.write_text(f'mode = "live"\n[ops]\nlisten = "127.0.0.1:{daemon.port}"\n'
                    '[execution]\nvenue = "binance"\n')
    assert cli("check-config", str(live)).returncode == 2
    res = cli("status", "--config", str(live))
    assert res.returncode == 0, res.stderr
    assert f"pid {daemon.proc.pid}" in res.stdout  # type: ignore[union-attr]
    # and the default is ./dolphind.toml in the current folder
    res = cli("status", cwd=daemon.config.parent)
    assert res.returncode == 0
    assert f"pid {daemon.proc.pid}" in res.stdout  # type: ignore[union-attr]


def test_trades_profit_daily_agree_with_the_daemon(daemon: Daemon) -> None:
    trades = json.loads(cli("trades", "--url", daemon.url, "--json", "--limit", "3").stdout)
    assert 1 <= len(trades["trades"]) <= 3 and trades["total"] >= 2
    newest = trades["trades"][0]
    text = cli("trades", "--url", daemon.url, "--limit", "3").stdout
    assert newest["symbol"] in text and newest["exit_reason"] in text
    profit = json.loads(cli("profit", "--url", daemon.url, "--json").stdout)
    assert profit["trades"] == profit["wins"] + profit["draws"] + profit["losses"] >= 2
    assert "net PnL" in cli("profit", "--url", daemon.url).stdout
    daily = json.loads(cli("daily", "--url", daemon.url, "--json", "--days", "30").stdout)
    # every closed trade is in exactly one day
    later = json.loads(cli("profit", "--url", daemon.url, "--json").stdout)["trades"]
    assert profit["trades"] <= sum(d["trades"] for d in daily["days"]) <= later
    assert "pnl USDT" in cli("daily", "--url", daemon.url).stdout
    pos = cli("positions", "--url", daemon.url)
    assert pos.returncode == 0 and "equity" in pos.stdout


def test_halt_resume_flatten_with_token_from_env_or_file(daemon: Daemon, tmp_path: Path) -> None:
    # no token: a usage error (2), nothing sent
    res = cli("halt", "--url", daemon.url)
    assert res.returncode == 2 and "no control token" in res.stderr
    # wrong token: refused (3)
    res = cli("halt", "--url", daemon.url, env={"DOLPHIND_OPS_TOKEN": "wrong"})
    assert res.returncode == 3 and "401" in res.stderr
    assert daemon.get_json("/status")["control"]["halted"] is False
    # token from the environment
    res = cli("halt", "--url", daemon.url, "--reason", "cli test",
              env={"DOLPHIND_OPS_TOKEN": TOKEN})
    assert res.returncode == 0, res.stderr
    assert "HALTED (cli test)" in res.stdout
    assert daemon.get_json("/status")["control"]["halted"] is True
    assert "HALTED: cli test" in cli("status", "--url", daemon.url).stdout
    # token from a file
    token_file = tmp_path / "ops.token"
    token_file.write_text(TOKEN + "\n")
    res = cli("resume", "--url", daemon.url, "--token-file", str(token_file))
    assert res.returncode == 0, res.stderr
    assert daemon.get_json("/status")["control"]["halted"] is False
    res = cli("flatten", "--url", daemon.url, "--token-file", str(token_file), "--reason", "x")
    assert res.returncode == 0 and "flatten requested" in res.stdout
    st = daemon.get_json("/status")["control"]
    assert st["halted"] is True and st["flatten_requests"] >= 1
    cli("resume", "--url", daemon.url, "--token-file", str(token_file))


def test_unreachable_daemon_and_bad_flags() -> None:
    port = free_port()
    res = cli("status", "--url", f"http://127.0.0.1:{port}")
    assert res.returncode == 1 and "not answering" in res.stderr
    res = cli("status", "--config", "/nonexistent/dolphind.toml")
    assert res.returncode == 2 and "no such config file" in res.stderr
    res = cli("trades", "--limit", "0")
    assert res.returncode == 2  # argparse: invalid choice


def test_check_config_takes_the_same_config_flag(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "dolphind.toml", free_port())
    assert cli("check-config", "--config", str(cfg)).returncode == 0
    assert cli("check-config", str(cfg)).returncode == 0  # the positional path still works
    assert cli("check-config", cwd=tmp_path).returncode == 0  # ./dolphind.toml by default
    other = tmp_path / "other.toml"
    other.write_text(cfg.read_text())
    res = cli("check-config", str(cfg), "--config", str(other))
    assert res.returncode == 2 and "give the config once" in res.stderr


def test_trades_and_profit_survive_a_restart(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "dolphind.toml", port, speed=3000.0)
    d = Daemon(cfg, port).start()
    try:
        d.wait_ready(timeout=120)
        wait_until(lambda: d.get_json("/profit")["trades"] >= 2, timeout=120,
                   what="two closed trades")
    finally:
        assert d.stop() == 0
    closed = [e for e in d.events() if e["event"] == "trade.closed"]  # the first run's log
    assert len(closed) >= 2
    # The second run replays slowly: no new trade closes while the test reads.
    cfg.write_text(cfg.read_text().replace("speed = 3000.0", "speed = 1.0"))
    d2 = Daemon(cfg, port).start()
    try:
        wait_until(lambda: d2.get("/trades")[0] == 200, timeout=120, what="the pipeline")
        doc = d2.get_json("/trades?limit=10000")
        profit = d2.get_json("/profit")
    finally:
        d2.stop()
    history = [t for t in reversed(doc["trades"]) if t["trade_id"].startswith("h")]
    assert len(history) == len(closed)  # every trade of the first run, none twice
    for logged, rebuilt in zip(closed, history):
        assert (logged["symbol"], logged["reason"]) == (rebuilt["symbol"], rebuilt["exit_reason"])
        assert logged["pnl_usdt"] == round(rebuilt["pnl_usdt"], 2)
    assert profit["trades"] >= len(closed)
    # the rebuilt trades are not logged again as closed by the second run
    assert not [e for e in d2.events() if e["event"] == "trade.closed"]
