"""Broken and nonsensical configs get one clear line per problem, never a traceback (issue 17).

Every numeric key has a range; files, folders, plugins and addresses are checked the way a
start meets them (``dolphind.preflight``), by ``check-config`` and by ``run``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dolphind.config import (
    RANGES,
    Config,
    ConfigError,
    config_from_dict,
    load_config,
    numeric_keys,
    range_problems,
)
from dolphind.preflight import preflight, secret_file_warnings

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"


def test_every_numeric_key_has_a_range_that_holds_its_default() -> None:
    keys = dict(numeric_keys())
    assert len(keys) > 70
    missing = sorted(set(keys) - set(RANGES))
    assert not missing, f"numeric keys without a range in config.RANGES: {missing}"
    assert not sorted(set(RANGES) - set(keys)), "ranges of keys that do not exist"
    assert range_problems(Config()) == []


def _problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    return err.value.problems


@pytest.mark.parametrize("raw,problem", [
    ({"supervision": {"restart_window_s": -5.0}},
     "supervision.restart_window_s: must be in (0, 86400], got -5.0"),
    ({"execution": {"capital_usdt": 1e308}}, "execution.capital_usdt: must be in (0, 1e+12]"),
    ({"feed": {"bar_seconds": 10**15}}, "feed.bar_seconds: must be in [1, 86400]"),
    ({"risk": {"max_leverage": 1000.0}}, "risk.max_leverage: must be in (0, 125]"),
    ({"execution": {"taker_fee_bps": 50_000.0}}, "execution.taker_fee_bps: must be in [0, 1000]"),
    ({"channels": {"bars": 10**12}}, "channels.bars: must be in [1, 1e+06]"),
    ({"supervision": {"heartbeat_timeout_s": 1e12}}, "supervision.heartbeat_timeout_s"),
    ({"replay": {"max_bars": -1}}, "replay.max_bars: must be in [0, 1e+09]"),
    ({"execution": {"seed": -1}}, "execution.seed"),
    ({"plugins": {"veto_budget_ms": 0.0}}, "plugins.veto_budget_ms"),
    ({"data": {"dir": "var\x00/x"}}, "data.dir: contains a NUL character"),
])
def test_nonsense_values_are_refused_with_the_key_named(raw: dict, problem: str) -> None:
    problems = _problems(raw)
    assert any(p.startswith(problem) for p in problems), problems


def test_a_value_out_of_range_is_reported_once() -> None:
    problems = _problems({"shutdown_timeout_s": 0})
    assert [p for p in problems if p.startswith("shutdown_timeout_s")] == \
        ["shutdown_timeout_s: must be > 0"]


@pytest.mark.parametrize("depth", [40, 600, 5000])
def test_deeply_nested_toml_is_one_clear_problem(tmp_path: Path, depth: int) -> None:
    p = tmp_path / "deep.toml"
    p.write_text("[plugins.x]\na = " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert len(err.value.problems) == 1 and "nested" in err.value.problems[0], err.value.problems


def _write(tmp_path: Path, body: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(f'[replay]\npaths = ["{SAMPLE}"]\n[data]\ndir = "{tmp_path / "var"}"\n{body}')
    return p


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DOLPHIND_OPS_TOKEN"}
    return subprocess.run([sys.executable, "-m", "dolphind.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=120, env=env)


def _broken_files(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (config body, the problem check-config must print)."""
    (tmp_path / "var" / "dolphind.sqlite").mkdir(parents=True)
    (tmp_path / "xi.json").write_text("<html>not json</html>")
    (tmp_path / "xi-list.json").write_text('{"symbols": 3}')
    (tmp_path / "token").write_bytes(b"\xff\xfe\x00t")
    (tmp_path / "secrets.toml").write_bytes(b'api_key = "\xff"\napi_secret = "x"\n')
    binance = ('[execution]\nvenue = "binance"\n[execution.binance]\n'
               f'lease_dir = "{tmp_path / "leases"}"\n')
    return {
        "store-folder": ("", "store.path: "),
        "exchange-info-html": ('[execution]\nexchange_info = "xi.json"\n',
                               "execution.exchange_info: "),
        "exchange-info-shape": ('[execution]\nexchange_info = "xi-list.json"\n',
                                "execution.exchange_info: "),
        "token-not-utf8": ('[ops]\ntoken_file = "token"\n', "ops.token_file: not UTF-8 text"),
        "secrets-not-utf8": (binance + 'secrets_file = "secrets.toml"\n',
                             "execution.binance.secrets_file"),
        "plugin-missing": ('[plugins]\nenabled = ["no_such_plugin"]\n',
                           "plugin 'no_such_plugin' is enabled but not installed"),
        "listen-unresolvable": ('[ops]\nlisten = "no-such-host.invalid:9100"\n',
                                "ops.listen: cannot resolve"),
    }


def test_broken_files_are_exit_2_with_one_line_each_never_a_traceback(tmp_path: Path) -> None:
    cases = _broken_files(tmp_path)
    for name, (body, problem) in cases.items():
        res = _check(_write(tmp_path, body, f"{name}.toml"))
        assert res.returncode == 2 and "Traceback" not in res.stderr, (name, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert any(line.startswith(problem) or problem in line for line in lines), (name, lines)
        assert all(":" in line for line in lines), (name, lines)


def test_a_missing_replay_path_and_an_unwritable_data_dir_are_start_problems(
        tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = dataclasses.replace(load_config(_write(tmp_path, "")),
                              replay=dataclasses.replace(Config().replay,
                                                         paths=(str(tmp_path / "nope"),)))
    assert preflight(cfg) == [f"replay.paths: {tmp_path / 'nope'}: no such file or folder"]
    (ro / "file").write_text("x")
    cfg2 = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dir=str(ro / "file" / "d")))
    assert any(p.startswith("data.dir: cannot write in") for p in preflight(cfg2))


def test_secret_files_readable_by_others_are_warned_about(tmp_path: Path) -> None:
    tok = tmp_path / "token"
    tok.write_text("t0ken")
    tok.chmod(0o644)
    cfg = load_config(_write(tmp_path, '[ops]\ntoken_file = "token"\n'))
    assert secret_file_warnings(cfg) == [
        f"ops.token_file: {tok} is readable by other users (mode 0644); chmod 600 it"]
    tok.chmod(0o600)
    assert secret_file_warnings(cfg) == []
