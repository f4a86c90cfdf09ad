from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dolphind.alpha import profile
from dolphind.config import ConfigError, config_from_dict, load_config, plan_reload, read_ops_token

REPO = Path(__file__).resolve().parents[2]


def test_default_config_file_is_valid() -> None:
    cfg = load_config(REPO / "dolphind.toml")
    assert cfg.mode == "paper"
    assert cfg.feed.kind == "replay"
    # Relative paths resolve against the config file's folder, not the working directory.
    assert cfg.resolve(cfg.replay.paths[0]) == REPO / "data" / "sample"
    assert cfg.data_dir == REPO / "var"
    assert len(cfg.hash) == 16


def test_every_problem_is_reported_with_its_key_path() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({
            "mdoe": "paper",
            "ops": {"listen": 9108, "extra": 1},
            "feed": {"kind": "ftp", "bar_seconds": "5"},
            "replay": {"speed": True, "loop": "yes"},
            "plugins": {"enabled": "guardian", "guardian": 3},
        })
    problems = err.value.problems
    assert "mdoe: unknown key" in problems
    assert "ops.extra: unknown key" in problems
    assert "ops.listen: expected a string, got an integer" in problems
    assert any(p.startswith("feed.kind: must be one of") for p in problems)
    assert "feed.bar_seconds: expected an integer, got a string" in problems
    assert "replay.speed: expected a number, got a boolean" in problems
    assert "replay.loop: expected true or false, got a string" in problems
    assert any(p.startswith("plugins.guardian:") for p in problems)
    assert len(problems) == 8


@pytest.mark.parametrize("listen,ok", [("127.0.0.1:9108", True), ("[::1]:0", True),
                                       ("localhost", False), (":80", False),
                                       ("127.0.0.1:99999", False), ("127.0.0.1:x", False)])
def test_listen_address(listen: str, ok: bool) -> None:
    if ok:
        config_from_dict({"ops": {"listen": listen}})
    else:
        with pytest.raises(ConfigError, match="ops.listen"):
            config_from_dict({"ops": {"listen": listen}})


def test_values_are_range_checked() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"shutdown_timeout_s": 0, "replay": {"speed": -1.0},
                          "feed": {"bar_seconds": 0}})
    assert {"shutdown_timeout_s: must be > 0",
            "replay.speed: must be >= 0 (0 = as fast as possible)",
            "feed.bar_seconds: must be > 0"} <= set(err.value.problems)


def test_plugin_sections_are_kept_for_the_plugins() -> None:
    cfg = config_from_dict({"plugins": {"enabled": ["guardian"],
                                        "guardian": {"drawdown_pct": 5}}})
    assert cfg.plugins.settings == {"guardian": {"drawdown_pct": 5}}


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("mode = [paper\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_reload_plan_applies_reloadable_keys_and_reports_restart_ones() -> None:
    old = config_from_dict({"replay": {"speed": 1.0}, "ops": {"listen": "127.0.0.1:1"}})
    new = config_from_dict({"replay": {"speed": 5.0, "paths": ["elsewhere"]},
                            "ops": {"listen": "127.0.0.1:2"}, "logging": {"level": "debug"},
                            "plugins": {"guardian": {"x": 1}}})
    plan = plan_reload(old, new)
    assert set(plan.applied) == {"replay.speed", "logging.level", "plugins.settings.guardian"}
    assert set(plan.needs_restart) == {"replay.paths", "ops.listen"}
    assert plan.config.replay.speed == 5.0
    assert plan.config.ops.listen == "127.0.0.1:1"  # kept: needs a restart
    assert plan.config.replay.paths == old.replay.paths
    assert plan_reload(old, old).applied == ()


def test_keys_read_only_at_start_are_reported_as_needing_a_restart() -> None:
    old = config_from_dict({})
    new = config_from_dict({"plugins": {"enabled": ["guardian"]},
                            "ops": {"token_file": "/etc/dolphind/ops.token"}})
    plan = plan_reload(old, new)
    assert plan.applied == ()
    assert set(plan.needs_restart) == {"plugins.enabled", "ops.token_file"}
    assert plan.config.plugins.enabled == () and plan.config.ops.token_file == ""


def test_ops_token_from_env_or_file(tmp_path: Path) -> None:
    tok = tmp_path / "token"
    tok.write_text("s3cret\n")
    cfg = config_from_dict({"ops": {"token_file": str(tok)}})
    assert read_ops_token(cfg, {}) == "s3cret"
    assert read_ops_token(cfg, {"DOLPHIND_OPS_TOKEN": "env"}) == "env"
    assert read_ops_token(config_from_dict({}), {}) is None
    tok.write_text("  \n")
    with pytest.raises(ConfigError, match="empty"):
        read_ops_token(cfg, {})


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dolphind.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_check_config_cli(tmp_path: Path) -> None:
    ok = _check_config(REPO / "dolphind.toml")
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('mode = "papr"\n[ops]\nlisten = 5\nfoo = 1\n[replay]\nspeed = "fast"\n')
    res = _check_config(bad)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines == [
        "mode: must be one of 'paper', 'live', 'backtest', got 'papr'",
        "ops.foo: unknown key",
        "ops.listen: expected a string, got an integer",
        "replay.speed: expected a number, got a string",
    ]


def test_commented_live_feed_defaults_in_dolphind_toml_are_the_real_defaults() -> None:
    """dolphind.toml shows [binance_feed] and [book] commented out; uncommented, they must
    be exactly the defaults in config.py (every key, every value), or the file misleads."""
    import dataclasses
    import tomllib

    from dolphind.config import BinanceFeedConfig, BookConfig

    text = (REPO / "dolphind.toml").read_text()
    region = text[text.index("# [binance_feed]"):text.index("\n[replay]")]
    body = "\n".join(line[2:] for line in region.splitlines()
                     if line.startswith("# [") or (line.startswith("# ") and " = " in line))
    shown = tomllib.loads(body)
    for section, cls in (("binance_feed", BinanceFeedConfig), ("book", BookConfig)):
        defaults = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
        defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}
        assert shown[section] == defaults, section


@pytest.mark.parametrize(("body", "problem"), [
    ('[execution.binance]\nleverage = 3\n',
     "execution.binance.leverage: expected a table like { BTCUSDT = ... }, got an integer"),
    ('[execution.binance]\nmargin_type = "x"\n',
     "execution.binance.margin_type: expected a table like { BTCUSDT = ... }, got a string"),
    ('[execution.binance]\nleverage = { BTCUSDT = "x" }\n',
     "execution.binance.leverage.BTCUSDT: expected an integer, got a string"),
])
def test_per_symbol_tables_are_type_checked(tmp_path: Path, body: str, problem: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('mode = "paper"\n' + body)
    res = _check_config(bad)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [problem]


def test_check_config_refuses_a_changed_champion_parameter_and_lists_the_keys(
        tmp_path: Path) -> None:
    """SPEC §3: changing a champion parameter without naming a new profile refuses to start."""
    # A minimal valid config of its own: the repo's dolphind.toml may grow a [strategy] table.
    base = f'[replay]\npaths = ["{REPO / "data" / "sample"}"]\n'
    assert profile.load_config(_write(tmp_path / "base.toml", base)).strategy.profile == "champion"
    tweaked = tmp_path / "tweaked.toml"
    tweaked.write_text(base + '\n[strategy.params]\nfixed_tp_pct = 0.012\nmax_hold_s = 300.0\n')
    res = _check_config(tweaked)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "profile 'champion' is frozen" in res.stderr
    assert "fixed_tp_pct, max_hold_s" in res.stderr
    with pytest.raises(ConfigError, match="fixed_tp_pct, max_hold_s"):
        profile.load_config(tweaked)
    # The same change under its own profile name is a valid research variant.
    renamed = tmp_path / "renamed.toml"
    renamed.write_text(base + '\n[strategy]\nprofile = "research-tp120"\n'
                       '[strategy.params]\nfixed_tp_pct = 0.012\nmax_hold_s = 300.0\n')
    ok = _check_config(renamed)
    assert ok.returncode == 0, ok.stderr
    assert profile.load_config(renamed).strategy.profile == "research-tp120"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_durations_are_set_in_seconds_not_bars(tmp_path: Path) -> None:
    """Issue 16: a bar count means a different time on every interval; the config says so."""
    base = f'[replay]\npaths = ["{REPO / "data" / "sample"}"]\n[strategy]\nprofile = "r"\n'
    bars = _write(tmp_path / "bars.toml", base + "[strategy.params]\nmax_hold_bars = 60\n")
    with pytest.raises(ConfigError, match="max_hold_bars: durations are defined in seconds.*max_hold_s"):
        profile.load_config(bars)
    bad = _write(tmp_path / "bad.toml", base + "[strategy.params]\nlookback_s = 0.0\n")
    with pytest.raises(ConfigError, match="lookback_s: must be > 0"):
        profile.load_config(bad)
    thin = _write(tmp_path / "thin.toml", base + "[scan]\nmin_symbols = -1\n")
    with pytest.raises(ConfigError, match="scan.min_symbols: must be 0-10000"):
        profile.load_config(thin)
    assert profile.load_config(_write(tmp_path / "ok.toml", base + "[scan]\nmin_symbols = 3\n")).scan.min_symbols == 3


def test_warm_start_values_are_range_checked() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"warm_start": {"checkpoint_every_s": -1, "max_gap_s": -5,
                                         "weight_share": 0, "weight_limit_1m": 10,
                                         "max_requests_per_symbol": 0,
                                         "rest_base_url": "fapi.binance.com"}})
    assert set(err.value.problems) == {
        "warm_start.checkpoint_every_s: must be in [0, 3600]",
        "warm_start.max_gap_s: must be in [0, 604800]",
        "warm_start.weight_share: must be in (0, 1]",
        "warm_start.weight_limit_1m: must be in [20, 100000]",
        "warm_start.max_requests_per_symbol: must be in [1, 100000]",
        "warm_start.rest_base_url: must start with http:// or https://"}
    ok = config_from_dict({"warm_start": {"weight_share": 1.0, "checkpoint_every_s": 0},
                           "replay": {"preroll": True, "resume": False}})
    assert ok.warm_start.weight_share == 1.0 and ok.replay.preroll and not ok.replay.resume
