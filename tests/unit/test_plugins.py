from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from dolphind.config import Config, config_from_dict
from dolphind.telemetry.metrics import Metrics
from dolphind.plugins import (
    PluginContext,
    PluginError,
    PluginHost,
    check_required,
    discover,
    validate_plugin_settings,
)
from dolphind.plugins.figures import figures_from_metrics
from dolphind.risk.rails import OrderCheck
from tests.plugins import install_sample_plugin


@pytest.fixture
def plugin_site(tmp_path: Path) -> Iterator[Path]:
    site = install_sample_plugin(tmp_path / "site")
    sys.path.insert(0, str(site))
    yield site
    sys.path.remove(str(site))
    sys.modules.pop("dolphind_sample_plugin", None)


def _host(cfg: Config) -> tuple[PluginHost, Metrics]:
    m = Metrics()
    ctx = lambda name, settings: PluginContext(name, settings, None, m.registry, None,  # noqa: E731
                                               Path("/nonexistent"), None,
                                               lambda: figures_from_metrics(m))
    return PluginHost(lambda: cfg, m, ctx), m


def test_discovered_through_entry_point_metadata(plugin_site: Path) -> None:
    eps = discover()
    assert eps["sample"].value == "dolphind_sample_plugin:SamplePlugin"
    assert eps["sample"].dist is not None and eps["sample"].dist.name == "dolphind-sample-plugin"
    assert check_required(("dolphind-sample-plugin>=1",)) == []
    assert check_required(("dolphind-sample-plugin>=2",)) == [
        "plugins.required: dolphind-sample-plugin 1.2.0 is installed, need >= 2"]
    assert check_required(("dolphind-nothing>=1",)) == [
        "plugins.required: dolphind-nothing is not installed"]


def test_enabled_list_controls_loading(plugin_site: Path) -> None:
    host, m = _host(config_from_dict({"plugins": {"enabled": ["sample"]}}))
    host.load()
    assert list(host.plugins) == ["sample"]
    assert host.plugins["sample"].hooks == ("on_bar",)
    assert m.registry.get_sample_value("dolphind_plugin_enabled", {"plugin": "sample"}) == 1
    empty, _ = _host(config_from_dict({}))
    empty.load()
    assert empty.plugins == {}


def test_missing_plugin_fails_with_the_installed_list(plugin_site: Path) -> None:
    host, _ = _host(config_from_dict({"plugins": {"enabled": ["guardain"]}}))
    with pytest.raises(PluginError, match="'guardain' is enabled but not installed.*sample"):
        host.load()


def test_wrong_api_version_fails_startup_naming_both_versions(tmp_path: Path) -> None:
    site = install_sample_plugin(tmp_path / "site", api_version=99)
    sys.path.insert(0, str(site))
    try:
        host, _ = _host(config_from_dict({"plugins": {"enabled": ["sample"]}}))
        with pytest.raises(PluginError, match="declares API_VERSION 99.*provides API_VERSION 2"):
            host.load()
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("dolphind_sample_plugin", None)


def test_plugin_settings_are_validated_with_key_paths(plugin_site: Path) -> None:
    cfg = config_from_dict({"plugins": {"enabled": ["sample"],
                                        "sample": {"threshold": -1, "colour": "red"}}})
    assert validate_plugin_settings(cfg) == ["plugins.sample.colour: unknown key",
                                             "plugins.sample.threshold: expected an integer >= 0"]


def test_a_validate_that_raises_is_a_clear_startup_problem(plugin_site: Path) -> None:
    cfg = config_from_dict({"plugins": {"enabled": ["sample"],
                                        "sample": {"explode_in_validate": True}}})
    assert validate_plugin_settings(cfg) == [
        "plugins.sample: validate raised ValueError: validate blew up"]


async def _drive(host: PluginHost, bars: int) -> None:
    task = asyncio.create_task(host.run("sample"))
    for i in range(bars):
        host.on_bar(type("Bar", (), {"seq": i})())
        await asyncio.sleep(0)
    host.close_queues()
    await task


@pytest.fixture
def failing_host(plugin_site: Path) -> tuple[PluginHost, Metrics]:
    cfg = config_from_dict({"plugins": {"enabled": ["sample"], "max_failures": 3,
                                        "sample": {"fail_on_bar": True}}})
    host, m = _host(cfg)
    host.load()
    return host, m


async def test_a_failing_plugin_is_isolated_counted_and_disabled(
        failing_host: tuple[PluginHost, Metrics]) -> None:
    host, m = failing_host
    await host.start_all()
    await _drive(host, 10)
    lp = host.plugins["sample"]
    assert not lp.enabled
    assert lp.failures_total == 3  # disabled after 3 in a row; later events are not delivered
    assert m.registry.get_sample_value("dolphind_plugin_failures_total", {"plugin": "sample"}) == 3
    assert m.registry.get_sample_value("dolphind_plugin_enabled", {"plugin": "sample"}) == 0
    status: Any = host.status()[0]
    assert status["enabled"] is False and "fails on purpose" in status["last_error"]


def test_veto_hook_is_checked_with_a_budget(plugin_site: Path) -> None:
    host, m = _host(config_from_dict({"plugins": {"enabled": ["sample"]}}))
    host.load()
    plugin = host.plugins["sample"].plugin
    plugin.veto = lambda order: "too big" if order > 10 else None
    assert host.veto(5) is None
    assert host.veto(11) == ("sample", "too big")

    def broken(order: object) -> None:
        raise ValueError("bad veto")

    plugin.veto = broken
    # Fail closed: a risk check that raises rejects the order, and counts as a failure.
    assert host.veto(1) == ("sample", "veto hook failed: ValueError: bad veto")
    assert m.registry.get_sample_value("dolphind_plugin_failures_total", {"plugin": "sample"}) == 1


def test_a_broken_or_slow_veto_refuses_entries_but_never_exits(plugin_site: Path) -> None:
    host, m = _host(config_from_dict({"plugins": {"enabled": ["sample"],
                                                  "max_failures": 100}}))
    host.load()
    plugin = host.plugins["sample"].plugin
    clock = iter(x * 0.006 for x in range(1000))  # every hook 'takes' 6 ms: over the 5 ms budget
    host._perf = lambda: next(clock)
    entry = OrderCheck("BTCUSDT", "SELL", 100.0, 2.0, reduce_only=False)
    exit_ = OrderCheck("BTCUSDT", "BUY", 100.0, 2.0, reduce_only=True)
    plugin.veto = lambda order: None
    who, why = host.veto(entry)
    assert who == "sample" and why == "veto hook overran its budget: 6.000 ms > 5 ms"
    assert host.veto(exit_) is None  # counted, not obeyed: an exit must get out

    def broken(order: object) -> None:
        raise ValueError("bad veto")

    plugin.veto = broken
    assert host.veto(exit_) is None
    assert host.veto(entry) == ("sample", "veto hook failed: ValueError: bad veto")
    assert m.registry.get_sample_value("dolphind_plugin_failures_total",
                                       {"plugin": "sample"}) == 4
