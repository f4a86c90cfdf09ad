"""The daemon's shared services and its ops server, built from the config alone.

Built outside the event loop (the metrics' process collectors read /proc when registered), in
the order each needs the previous: config -> metrics -> health, control -> bus -> publisher,
plugins. The daemon receives them; it builds nothing itself.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

import structlog

from dolphind.config import Config, parse_listen, read_ops_token
from dolphind.control import Control
from dolphind.daemon import CurrentConfig, ReloadRequests, Services
from dolphind.ops.http import DaemonView, HttpServer, build_app
from dolphind.ops.systemd import SystemdNotifier
from dolphind.plugins import PluginContext, PluginHost
from dolphind.plugins.figures import figures_from_metrics
from dolphind.risk.rails import RULES
from dolphind.statebus.hazelcast import HazelcastStateBus, client_options
from dolphind.statebus.memory import MemoryStateBus
from dolphind.statebus import base as bus_names
from dolphind.statebus.publish import Publisher
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics

log = structlog.get_logger("dolphind.app")


def open_services(cfg: Config) -> Services:
    """Every shared part of a daemon running ``cfg`` (the state bus is not connected yet: the
    daemon runs its loops, ``bus.stages()``, on the loop)."""
    config = CurrentConfig(cfg)
    metrics = Metrics(risk_rules=RULES)  # every rail's rejection counter at 0 from the start
    reload_requests = ReloadRequests()
    control = Control(metrics, reload_requests)
    bus = open_bus(cfg, metrics)

    def plugin_context(name: str, settings: Mapping[str, Any]) -> PluginContext:
        return PluginContext(name=name, settings=settings, control=control,
                             metrics_registry=metrics.registry,
                             features=functools.partial(bus.put, bus_names.FEATURES),
                             data_dir=config().data_dir / "plugins" / name,
                             log=structlog.get_logger(f"dolphind.plugin.{name}").bind(plugin=name),
                             figures=functools.partial(figures_from_metrics, metrics))

    return Services(
        config=config,
        metrics=metrics,
        health=Health(metrics, lambda: config().supervision.heartbeat_timeout_s),
        control=control,
        reload_requests=reload_requests,
        bus=bus,
        publisher=Publisher(bus, lambda: config().statebus.publish_interval_s),
        plugins=PluginHost(config, metrics, plugin_context),
        notifier=SystemdNotifier(),
    )


def open_bus(config: Config, metrics: Metrics) -> MemoryStateBus | HazelcastStateBus:
    """The bus ``[statebus] kind`` asks for, wired to the daemon's metrics: a MemoryStateBus
    (default) or a HazelcastStateBus (nothing runs yet: the daemon supervises its loops,
    ``bus.stages()``, and the connector connects in the background)."""
    writes = {o: metrics.statebus_writes.labels(o) for o in ("ok", "rejected")}
    cfg = config.statebus
    if cfg.kind != "hazelcast":
        return MemoryStateBus(on_write=lambda outcome: writes[outcome].inc())
    file_dir = Path(cfg.file_dir)
    if not file_dir.is_absolute():
        file_dir = config.data_dir / file_dir
    events = {e: metrics.statebus_events.labels(e) for e in HazelcastStateBus.EVENTS}
    bus = HazelcastStateBus(cfg, file_dir, client_options(cfg, resolve=config.resolve),
                            on_event=lambda event: events[event].inc(),
                            on_write=lambda outcome: writes[outcome].inc())
    metrics.statebus_file_only.set_function(lambda: 0.0 if bus.healthy() else 1.0)
    return bus


@contextlib.asynccontextmanager
async def open_ops_server(config: CurrentConfig, daemon: DaemonView) -> AsyncIterator[HttpServer]:
    """The ops HTTP surface (metrics, health, status, control) of ``daemon``, bound on enter."""
    cfg = config()
    token = read_ops_token(cfg)
    if token is None and cfg.mode != "backtest":
        log.warning("ops.no_token", hint="control endpoints disabled; set "
                    "DOLPHIND_OPS_TOKEN or ops.token_file")
    host, port = parse_listen(cfg.ops.listen)
    async with HttpServer(build_app(daemon, token), host, port) as server:
        yield server
