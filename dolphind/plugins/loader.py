"""The plugin loader and host: entry-point discovery, the version check, isolation, budgets.

Plugins are found only through the ``dolphind.plugins`` entry-point group, the bundled M-series
exactly like a third-party one. An entry point names a factory (usually the class) called with
no arguments; the object it returns must be a ``api.Plugin`` whose ``API_VERSION`` equals
``api.API_VERSION`` (else start-up fails, naming the plugin and both versions).

Async hooks run in the plugin's own task, fed by a bounded drop-oldest channel: a slow or hung
plugin delays only itself, never the trading loop. The pre-trade ``veto`` is synchronous and
must return within its time budget: one that raises or overruns refuses the entry it was asked
about (fail closed); exits are never refused by a broken hook.

Two hooks are fed by the host itself, so they need nothing from the pipeline: ``on_tick``
(every ``tick_interval_s``; a tick is queued only when the previous one has been handled, so a
slow plugin skips ticks rather than piling them up and pushing real events out of its queue),
and ``on_control`` / ``on_incident`` (the host subscribes to the plugins' ``ctx.control``).

A plugin that raises (or overruns) is logged with ``plugin=`` bound and counted; after
``plugins.max_failures`` consecutive failures it is disabled. It never takes the daemon down.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.metadata as md
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import structlog

from dolphind.channels import Channel, Overflow
from dolphind.config import Config
from dolphind.control import Control, ControlAction
from dolphind.events import Bar, Fill, Order, OrderIntent, ScanRecord
from dolphind.plugins.api import (
    API_VERSION,
    HOOKS,
    ClosedTradeView,
    OrderCheckView,
    PluginContext,
    PostureChange,
    Tick,
)
from dolphind.telemetry.metrics import Metrics

ENTRY_POINT_GROUP = "dolphind.plugins"
# An async hook that takes longer than this is cancelled and counted as a failure.
HOOK_TIMEOUT_S = 5.0
_QUEUE_CAPACITY = 256
DEFAULT_TICK_INTERVAL_S = 1.0
_MIN_TICK_INTERVAL_S = 0.05

log = structlog.get_logger("dolphind.plugins")


class PluginError(Exception):
    """A plugin problem that must stop start-up (missing, wrong API version, bad settings)."""


@dataclass(slots=True)
class LoadedPlugin:
    name: str
    plugin: Any
    distribution: str
    version: str
    hooks: tuple[str, ...]
    enabled: bool = True
    consecutive_failures: int = 0
    failures_total: int = 0
    last_error: str | None = None
    queue: Channel[tuple[str, Any]] | None = None
    tick_pending: bool = False


def discover() -> dict[str, md.EntryPoint]:
    return {ep.name: ep for ep in md.entry_points(group=ENTRY_POINT_GROUP)}


def check_required(required: tuple[str, ...]) -> list[str]:
    """``"dist>=N"`` entries: the distribution must be installed with major version >= N."""
    problems = []
    for spec in required:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(?:>=\s*(\d+))?\s*", spec)
        if not m:
            problems.append(f"plugins.required: {spec!r} is not like 'dolphind-guardian>=1'")
            continue
        dist, major = m[1], int(m[2] or 0)
        try:
            have = md.version(dist)
        except md.PackageNotFoundError:
            problems.append(f"plugins.required: {dist} is not installed")
            continue
        leading = re.match(r"\d+", have)
        have_major = int(leading[0]) if leading else 0
        if have_major < major:
            problems.append(f"plugins.required: {dist} {have} is installed, need >= {major}")
    return problems


def instantiate(name: str, available: Mapping[str, md.EntryPoint],
                settings: Mapping[str, Any]) -> LoadedPlugin:
    """Load one enabled plugin and validate its settings; PluginError says what is wrong."""
    ep = available.get(name)
    if ep is None:
        have = ", ".join(sorted(available)) or "none"
        raise PluginError(f"plugin {name!r} is enabled but not installed "
                          f"(installed {ENTRY_POINT_GROUP} entry points: {have})")
    try:
        factory = ep.load()
        plugin = factory()
    except Exception as exc:
        raise PluginError(f"plugin {name!r} ({ep.value}) failed to load: "
                          f"{type(exc).__name__}: {exc}") from exc
    declared = getattr(plugin, "API_VERSION", None)
    if declared != API_VERSION:
        raise PluginError(f"plugin {name!r} declares API_VERSION {declared!r}, but this "
                          f"dolphind provides API_VERSION {API_VERSION}; install a matching "
                          "version of the plugin")
    missing = [a for a in ("name", "version", "validate", "start", "reload", "stop")
               if not hasattr(plugin, a)]
    if missing:
        raise PluginError(f"plugin {name!r} lacks {', '.join(missing)} (see dolphind.plugins)")
    try:
        problems = plugin.validate(settings)
    except Exception as exc:  # a plugin bug is a start-up problem to report, not a traceback
        raise PluginError(f"plugins.{name}: validate raised {type(exc).__name__}: {exc}") from exc
    if problems:
        raise PluginError("\n".join(f"plugins.{name}.{p}" for p in problems))
    dist = ep.dist.name if ep.dist is not None else "?"
    hooks = tuple(h for h in HOOKS if callable(getattr(plugin, h, None)))
    return LoadedPlugin(name, plugin, dist, str(plugin.version), hooks)


def validate_plugin_settings(cfg: Config) -> list[str]:
    """Problems with the plugin part of ``cfg`` (for check-config and reload)."""
    problems = check_required(cfg.plugins.required)
    available = discover()
    for name in cfg.plugins.enabled:
        try:
            instantiate(name, available, cfg.plugins.settings.get(name, {}))
        except PluginError as exc:
            problems.extend(str(exc).splitlines())
    for name in cfg.plugins.settings:
        if name not in cfg.plugins.enabled and name not in available:
            problems.append(f"plugins.{name}: no such plugin installed")
    return problems


class PluginHost:
    """Owns the loaded plugins: their tasks, their failures, and dispatch to their hooks."""

    def __init__(self, config: Callable[[], Config], metrics: Metrics,
                 context: Callable[[str, Mapping[str, Any]], PluginContext]) -> None:
        self._config = config
        self._metrics = metrics
        self._context = context
        self.plugins: dict[str, LoadedPlugin] = {}
        self._control: Control | None = None
        # Times veto hooks against their budget (replaceable, so a test needs no slow hook).
        self._perf: Callable[[], float] = time.perf_counter

    def load(self) -> None:
        cfg = self._config()
        problems = check_required(cfg.plugins.required)
        if problems:
            raise PluginError("\n".join(problems))
        available = discover()
        for name in cfg.plugins.enabled:
            lp = instantiate(name, available, cfg.plugins.settings.get(name, {}))
            lp.queue = Channel(f"plugin:{name}", _QUEUE_CAPACITY, Overflow.DROP_OLDEST,
                               self._metrics.channels)
            self.plugins[name] = lp
            self._metrics.plugin_enabled.labels(name).set(1)
            self._metrics.plugin_failures.labels(name)  # exported at 0: alerts see the first
            log.info("plugin.loaded", plugin=name, version=lp.version,
                     distribution=lp.distribution, hooks=list(lp.hooks))

    def _settings(self, cfg: Config, name: str) -> dict[str, Any]:
        # A private copy: a plugin that mutates its settings must not change the config.
        return copy.deepcopy(dict(cfg.plugins.settings.get(name, {})))

    async def start_all(self) -> None:
        cfg = self._config()
        for lp in self.plugins.values():
            ctx = self._context(lp.name, self._settings(cfg, lp.name))
            self.attach_control(ctx.control)
            await self._guard(lp, "start", lp.plugin.start(ctx))

    def attach_control(self, control: Control | None) -> None:
        """Forward the control plane's actions to ``on_control`` / ``on_incident`` (once)."""
        # A test's context may carry no control plane (None): then there is nothing to forward.
        if self._control is None and control is not None:
            self._control = control
            control.subscribe(self._on_control_action)

    def _on_control_action(self, action: ControlAction) -> None:
        self._queue("on_control", action)
        if action.action == "incident":
            self._queue("on_incident", action)

    def close_queues(self) -> None:
        """No more events; each plugin task ends once it has handled what is queued."""
        for lp in self.plugins.values():
            if lp.queue is not None:
                lp.queue.close()

    async def stop_all(self) -> None:
        self.close_queues()
        if self._control is not None:
            self._control.unsubscribe(self._on_control_action)
            self._control = None
        for lp in reversed(list(self.plugins.values())):
            await self._guard(lp, "stop", lp.plugin.stop(), count=False)

    async def reload(self, cfg: Config) -> None:
        for lp in self.plugins.values():
            if lp.enabled:
                await self._guard(lp, "reload", lp.plugin.reload(self._settings(cfg, lp.name)))

    def validate(self, cfg: Config) -> list[str]:
        """Problems with the new settings of the loaded plugins (before a reload is applied)."""
        problems: list[str] = []
        for lp in self.plugins.values():
            try:
                found = lp.plugin.validate(cfg.plugins.settings.get(lp.name, {}))
            except Exception as exc:
                found = [f"<validate raised {type(exc).__name__}: {exc}>"]
            problems.extend(f"plugins.{lp.name}.{p}" for p in found)
        return problems

    # ---- the typed hook calls: the daemon's side of ``api.Hooks`` (never blocks) ----------

    def on_bar(self, bar: Bar) -> None:
        self._queue("on_bar", bar)

    def on_scan(self, scan: ScanRecord) -> None:
        self._queue("on_scan", scan)

    def on_intent(self, intent: OrderIntent) -> None:
        self._queue("on_intent", intent)

    def on_order(self, order: Order) -> None:
        self._queue("on_order", order)

    def on_fill(self, fill: Fill) -> None:
        self._queue("on_fill", fill)

    def on_posture(self, change: PostureChange) -> None:
        self._queue("on_posture", change)

    def on_trade(self, trade: ClosedTradeView) -> None:
        self._queue("on_trade", trade)

    def _queue(self, hook: str, event: Any) -> None:
        """Queue ``event`` for every enabled plugin with ``hook``. Never blocks. Only the
        typed calls above name a hook: each is a method of ``api.Hooks``."""
        for lp in self.plugins.values():
            if lp.enabled and hook in lp.hooks and lp.queue is not None and not lp.queue.closed:
                lp.queue.offer((hook, event))  # drop-oldest: never waits

    def veto(self, order: OrderCheckView) -> tuple[str, str] | None:
        """(plugin, reason) of the first plugin that vetoes ``order``, else None.

        A veto hook that raises or overruns ``plugins.veto_budget_ms`` counts as a failure and
        refuses an entry (fail closed, like the risk rails: a check that cannot answer in time
        must not wave an order through). A reduce-only order (an exit) is never refused by a
        broken hook: a failing plugin must not trap a position."""
        budget_s = self._config().plugins.veto_budget_ms / 1000.0
        exit_order = bool(getattr(order, "reduce_only", False))
        for lp in self.plugins.values():
            fn = getattr(lp.plugin, "veto", None)
            if not lp.enabled or fn is None:
                continue
            t0 = self._perf()
            try:
                reason = fn(order)
            except Exception as exc:
                self._failed(lp, "veto", exc)
                if exit_order:
                    continue
                return lp.name, f"veto hook failed: {type(exc).__name__}: {exc}"
            elapsed_s = self._perf() - t0
            if elapsed_s > budget_s:
                self._failed(lp, "veto", TimeoutError(f"veto took over {budget_s * 1e3:g} ms"))
                if not reason and not exit_order:
                    return lp.name, (f"veto hook overran its budget: {elapsed_s * 1e3:.3f} ms "
                                     f"> {budget_s * 1e3:g} ms")
            else:
                lp.consecutive_failures = 0
            if reason:
                return lp.name, str(reason)
        return None

    async def run(self, name: str) -> None:
        """The plugin's own task: deliver its queued events to its hooks, in order."""
        lp = self.plugins[name]
        assert lp.queue is not None
        async with asyncio.TaskGroup() as tg:
            ticker = tg.create_task(self._tick(lp), name=f"plugin-tick:{name}") \
                if "on_tick" in lp.hooks else None
            try:
                async for hook, event in lp.queue:
                    if hook == "on_tick":
                        lp.tick_pending = False
                    if lp.enabled:
                        await self._guard(lp, hook, getattr(lp.plugin, hook)(event))
            finally:
                if ticker is not None:
                    ticker.cancel()

    async def _tick(self, lp: LoadedPlugin) -> None:
        """Queue an ``on_tick`` every ``tick_interval_s`` until the plugin's queue closes."""
        assert lp.queue is not None
        while not lp.queue.closed:
            interval = getattr(lp.plugin, "tick_interval_s", DEFAULT_TICK_INTERVAL_S)
            try:
                interval = max(float(interval), _MIN_TICK_INTERVAL_S)
            except (TypeError, ValueError):
                interval = DEFAULT_TICK_INTERVAL_S
            await asyncio.sleep(interval)
            if lp.tick_pending and len(lp.queue) == 0:
                lp.tick_pending = False  # it was pushed out of a full queue, never delivered
            if lp.enabled and not lp.tick_pending and not lp.queue.closed:
                lp.tick_pending = True
                lp.queue.offer(("on_tick", Tick(time.monotonic(), time.time())))

    async def _guard(self, lp: LoadedPlugin, what: str, coro: Any, count: bool = True) -> None:
        try:
            async with asyncio.timeout(HOOK_TIMEOUT_S):
                await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # isolation: a plugin's failure is the plugin's
            if count:
                self._failed(lp, what, exc)
            else:
                log.warning("plugin.error", plugin=lp.name, hook=what, error=repr(exc))
            return
        if count:
            lp.consecutive_failures = 0

    def _failed(self, lp: LoadedPlugin, what: str, exc: BaseException) -> None:
        lp.consecutive_failures += 1
        lp.failures_total += 1
        lp.last_error = f"{what}: {type(exc).__name__}: {exc}"
        self._metrics.plugin_failures.labels(lp.name).inc()
        log.warning("plugin.failed", plugin=lp.name, hook=what, error=repr(exc),
                    consecutive=lp.consecutive_failures)
        if lp.enabled and lp.consecutive_failures >= self._config().plugins.max_failures:
            lp.enabled = False
            self._metrics.plugin_enabled.labels(lp.name).set(0)
            log.error("plugin.disabled", plugin=lp.name, failures=lp.consecutive_failures,
                      last_error=lp.last_error)

    def status(self) -> list[dict[str, Any]]:
        return [{"name": lp.name, "version": lp.version, "distribution": lp.distribution,
                 "enabled": lp.enabled, "healthy": lp.enabled and lp.consecutive_failures == 0,
                 "failures_total": lp.failures_total, "last_error": lp.last_error,
                 "hooks": list(lp.hooks), **self._detail(lp)} for lp in self.plugins.values()]

    def _detail(self, lp: LoadedPlugin) -> dict[str, Any]:
        """The plugin's own ``status()`` (optional) under ``detail``; never breaks /status."""
        fn = getattr(lp.plugin, "status", None)
        if not callable(fn):
            return {}
        try:
            return {"detail": fn()}
        except Exception as exc:  # a plugin's view must not take /status down
            return {"detail": {"error": f"{type(exc).__name__}: {exc}"}}
