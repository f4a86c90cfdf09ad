"""The M-series as the daemon sees them: found through installed entry-point metadata, chosen
by the config, fed by the plugin host (ticks, control actions, incidents), failures isolated."""

from __future__ import annotations

import asyncio
import importlib.metadata as md
from typing import Any

import pytest

from dolphind.config import config_from_dict
from dolphind.plugins import PluginError, PluginHost, discover
from tests.conftest import eventually
from tests.unit.plugins.conftest import Rig, jsonl

MSERIES = {"guardian": "dolphind-guardian", "scheduler": "dolphind-scheduler",
           "governor": "dolphind-governor", "comms": "dolphind-comms"}


def test_discovered_through_installed_entry_point_metadata() -> None:
    eps = discover()
    for name, dist in MSERIES.items():
        assert name in eps, f"{dist} is not installed (pip install -e plugins/{name})"
        assert eps[name].dist is not None and eps[name].dist.name == dist
        assert eps[name].value == f"dolphind_{name}:{name.capitalize()}Plugin"
        assert md.version(dist) == "1.0.0"


def _host(rig: Rig, plugins: dict[str, Any]) -> PluginHost:
    cfg = config_from_dict({"plugins": plugins})
    return PluginHost(lambda: cfg, rig.metrics, rig.ctx)


def test_the_config_chooses_which_are_loaded(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOLPHIND_COMMS_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    host = _host(rig, {"enabled": list(MSERIES),
                       "required": [f"{d}>=1" for d in MSERIES.values()]})
    host.load()
    assert list(host.plugins) == list(MSERIES)
    hooks = {n: lp.hooks for n, lp in host.plugins.items()}
    assert hooks == {"guardian": ("on_scan", "on_intent", "on_tick"),
                     "scheduler": ("on_scan", "on_incident", "on_tick"),
                     "governor": ("on_fill", "on_tick", "on_control"),
                     "comms": ("on_fill", "on_incident", "on_tick", "on_trade")}
    assert callable(host.plugins["governor"].plugin.veto)
    # Disabling one in the config removes it.
    host = _host(rig, {"enabled": ["guardian", "scheduler", "governor"]})
    host.load()
    assert "comms" not in host.plugins


def test_a_wrong_api_version_fails_startup_naming_both(rig: Rig,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from dolphind_guardian import GuardianPlugin

    monkeypatch.setattr(GuardianPlugin, "API_VERSION", 1)
    with pytest.raises(PluginError, match="'guardian' declares API_VERSION 1, but this "
                                          "dolphind provides API_VERSION 2"):
        _host(rig, {"enabled": ["guardian"]}).load()


def test_bad_settings_fail_startup_with_the_full_key_path(rig: Rig) -> None:
    with pytest.raises(PluginError, match=r"plugins\.guardian\.drawdown\.threshold: must be in"):
        _host(rig, {"enabled": ["guardian"], "guardian": {"drawdown": {"threshold": 5}}}).load()


async def _run(host: PluginHost) -> list[asyncio.Task[None]]:
    await host.start_all()
    return [asyncio.create_task(host.run(n)) for n in host.plugins]


async def _stop(host: PluginHost, tasks: list[asyncio.Task[None]]) -> None:
    host.close_queues()
    await asyncio.gather(*tasks)
    await host.stop_all()


async def test_host_ticks_and_forwards_incidents_to_comms(rig: Rig) -> None:
    """Guardian sees a feed stall on its host-driven tick; its incident reaches comms through
    the control plane and the host; comms posts it (to a loopback receiver)."""
    from aiohttp import web

    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        import os

        os.environ["DOLPHIND_TEST_HOOK"] = f"http://127.0.0.1:{port}/hook"
        host = _host(rig, {"enabled": ["guardian", "comms"],
                           "guardian": {"tick_interval_s": 0.05,
                                        "exchange_lag": {"max_feed_age_s": 5}},
                           "comms": {"url_env": "DOLPHIND_TEST_HOOK",
                                     "min_severity": "warning"}})
        await asyncio.to_thread(host.load)
        tasks = await _run(host)
        import time

        rig.metrics.stage_heartbeat.labels("feed").set(time.time() - 60)  # 60 s of silence
        await eventually(lambda: got, what="incident delivered to the webhook")
        assert "exchange_lag" in got[0]["text"] and "(guardian)" in got[0]["text"]
        assert rig.control.feed_reconnect_requests == 1
        st = {p["name"]: p for p in host.status()}
        assert st["guardian"]["healthy"] and st["guardian"]["detail"]["playbooks"][
            "exchange_lag"]["fired"] == 1
        assert st["comms"]["detail"]["sent"] == 1
        folder = rig.tmp / "var" / "plugins" / "guardian"
        await _stop(host, tasks)
        assert [i["playbook"] for i in jsonl(folder / "incidents.jsonl")] == ["exchange_lag"]
    finally:
        os.environ.pop("DOLPHIND_TEST_HOOK", None)
        await runner.cleanup()


async def test_a_plugin_that_keeps_failing_is_disabled_not_fatal(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    from dolphind_guardian import GuardianPlugin

    async def broken(self: Any, tick: Any) -> None:
        raise RuntimeError("figures exploded")

    monkeypatch.setattr(GuardianPlugin, "on_tick", broken)
    host = _host(rig, {"enabled": ["guardian"], "max_failures": 3,
                       "guardian": {"tick_interval_s": 0.05}})
    await asyncio.to_thread(host.load)
    tasks = await _run(host)
    await eventually(lambda: not host.plugins["guardian"].enabled, what="disabled")
    st = host.status()[0]
    assert st["failures_total"] == 3 and "figures exploded" in st["last_error"]
    assert rig.sample("dolphind_plugin_enabled", {"plugin": "guardian"}) == 0
    await _stop(host, tasks)
