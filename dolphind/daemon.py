"""The loop's owner: signals, supervised stages, reload, ordered shutdown.

The daemon builds nothing: ``dolphind.app`` (the one wiring place) builds the ``Services`` and
the openers of the pipeline and the ops server, and hands them to ``Daemon``; this module never
imports it (``run`` takes the builder as an argument).

Life of a daemon (DESIGN.md "Lifecycle"):

1. ``asyncio.Runner`` with uvloop runs ``Daemon.serve``.
2. Components are entered in order through one ``AsyncExitStack`` (data-dir lock, state bus
   and its loops, HTTP server, plugins, the pipeline) and unwind in reverse, even when
   start-up fails half-way.
3. Every background loop runs under a supervisor (``dolphind.supervisor``: a crash is counted
   and restarted, a crash loop ends the daemon): the state bus's loops from the start (a
   ``supervised`` group of their own, left after the pipeline), the venue's upkeep loops while
   the pipeline opens (dolphind/app/venues.py), then, in one ``TaskGroup``, each pipeline
   stage and each background loop a component offers (``dolphind.stage``), next to each
   plugin's task and the housekeeping loop. The few tasks a component keeps (the store's
   checkpointer, the audit writer, the lease's lock owner, the Command Center's poller) are
   started with ``dolphind.stage.start_watched``: a crash is logged, counted and handed to
   their owner. No task is fire-and-forget.
4. Signal handlers only record intent; the housekeeping loop acts on it: SIGHUP -> reload,
   SIGTERM/SIGINT -> ordered shutdown (halt entries, stop the feed, let the stages drain their
   channels, stop the background loops, stop plugins, close the server) under
   ``shutdown_timeout_s``; a second SIGINT exits at once.

Exit codes: 0 clean stop, 1 an error that ends the run with its traceback (a failed audit
log's close: records were not written), 2 bad config or start-up refused (the venue too:
unreachable, keys refused, hedge mode), 3 a stage crash loop, 130 a second SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import structlog

from dolphind import __version__, logs
from dolphind.logs import heartbeat_fields
from dolphind.affinity import pin_process
from dolphind.venues.venue import VenueStartupError
from dolphind.feed.history import HistoryError
from dolphind.alpha.profile import load_config
from dolphind.config import (
    Config,
    ConfigError,
    config_to_jsonable,
    describe_trading,
    plan_reload,
)
from dolphind.control import Control
from dolphind.telemetry.health import Health, HealthLevel
from dolphind.ops.http import DaemonView, HttpServer
from dolphind.telemetry.metrics import Metrics
from dolphind.ops.systemd import SystemdNotifier
from dolphind.plugins import PluginError, PluginHost
from dolphind.preflight import preflight, secret_file_warnings
from dolphind.stage import Stage
from dolphind.statebus import base as bus_names
from dolphind.statebus.base import StateBus
from dolphind.statebus.publish import Publisher
from dolphind.supervisor import StageCrashLoop, supervise, supervised

log = structlog.get_logger("dolphind.daemon")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_CRASH_LOOP = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C

_HOUSEKEEPING_S = 0.5


class StartupError(Exception):
    """Start-up refused for a reason the operator must fix (the message says which)."""


class CurrentConfig:
    """The config every component reads through ``config()``; a reload swaps it in one
    assignment (``swap``), so a reader sees the old config or the new one, never a mix."""

    def __init__(self, config: Config) -> None:
        self._config = config

    def __call__(self) -> Config:
        return self._config

    def swap(self, config: Config) -> None:
        self._config = config


class ReloadRequests:
    """Reload intents (SIGHUP, POST /reload, plugins, all through the control plane): recorded
    here with their causes, acted on by the housekeeping loop."""

    def __init__(self) -> None:
        self.pending = asyncio.Event()
        self._causes: list[str] = []

    def __call__(self, cause: str) -> None:
        self._causes.append(cause)
        self.pending.set()

    def take(self) -> list[str]:
        """The causes recorded since the last call; clears the request."""
        self.pending.clear()
        causes, self._causes = self._causes, []
        return causes


@dataclass(frozen=True)
class Services:
    """The parts every stage and the ops surface share, built by ``dolphind.app``."""

    config: CurrentConfig
    metrics: Metrics
    health: Health
    control: Control  # its reload requests go to ``reload_requests``
    reload_requests: ReloadRequests
    bus: StateBus
    publisher: Publisher
    plugins: PluginHost
    notifier: SystemdNotifier


class RunningPipeline(Protocol):
    """What the daemon needs of the pipeline ``dolphind.app`` opens."""

    @property
    def stages(self) -> Sequence[Stage]:
        """The data flow, sources first; each ends when its input is closed and drained."""

    @property
    def background(self) -> Sequence[Stage]:
        """The loops components offer (``dolphind.stage.StageOwner``); cancelled at the end."""

    def readiness(self) -> dict[str, str]: ...

    def status(self) -> dict[str, Any]: ...


OpenPipeline = Callable[[], AbstractAsyncContextManager[RunningPipeline]]
OpenOpsServer = Callable[[DaemonView], AbstractAsyncContextManager[HttpServer]]


class Daemon:
    def __init__(self, services: Services, open_pipeline: OpenPipeline,
                 open_ops_server: OpenOpsServer, exit_when_done: bool = False) -> None:
        self.services = services
        self._config = services.config
        self._open_pipeline = open_pipeline
        self._open_ops_server = open_ops_server
        # Backtest: stop by itself once every stage has finished (the replay ran out).
        self.exit_when_done = exit_when_done
        self.metrics = services.metrics
        self.health = services.health
        self.control = services.control
        self.bus = services.bus
        self.publisher = services.publisher
        self.plugins = services.plugins
        self.notifier = services.notifier
        self._reload = services.reload_requests
        self.pipeline: Any = None  # the RunningPipeline dolphind.app opened, while running
        self._plugin_tasks: list[asyncio.Task[None]] = []
        self._deadline: float | None = None  # monotonic end of the shutdown budget
        self._ready_sent = False  # READY=1 told to systemd (once /readyz first passed)
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self._stop = asyncio.Event()
        self._sigint_count = 0
        self._data_dir_writable = False
        self.last_reload: dict[str, Any] | None = None
        self.http: HttpServer | None = None
        self._stage_tasks: dict[str, asyncio.Task[None]] = {}
        self._background_tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def config(self) -> Config:
        return self._config()

    # ---- signals -----------------------------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        # Through the control plane, like POST /reload: the request is recorded and audited.
        loop.add_signal_handler(signal.SIGHUP, self.control.reload, "signal:SIGHUP")
        loop.add_signal_handler(signal.SIGTERM, self._request_stop, "signal:SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)

    def _remove_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    def _on_sigint(self) -> None:
        self._sigint_count += 1
        if self._sigint_count > 1:
            # The operator insists: leave now. Nothing acknowledged is lost (crash-only).
            os.write(2, b"dolphind: second SIGINT, exiting immediately\n")
            os._exit(EXIT_INTERRUPTED)
        self._request_stop("signal:SIGINT")

    def _request_stop(self, cause: str) -> None:
        if not self._stop.is_set():
            log.info("daemon.stop_requested", cause=cause)
        self._stop.set()

    # ---- main --------------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        try:
            return await self._serve()
        except BaseExceptionGroup as eg:
            crash = eg.subgroup(StageCrashLoop)
            if crash is None:
                raise
            first = crash.exceptions[0]
            log.error("daemon.crash_loop", stage=getattr(first, "stage", "?"), error=str(first))
            return EXIT_CRASH_LOOP
        finally:
            self._remove_signals(loop)
            self.notifier.close()

    async def _serve(self) -> int:
        cfg = self.config
        self.metrics.start_time.set(self.started_at)
        self.metrics.config_info.labels(cfg.hash, cfg.mode).set(1)
        async with contextlib.AsyncExitStack() as stack:
            await asyncio.to_thread(self._lock_data_dir, stack)
            # The state bus's loops (a cluster bus connects in the background) run supervised
            # from now until the pipeline has closed (the lease and the stages use the bus
            # while they stop); then they stop and the bus closes, in that order.
            stack.push_async_callback(self.bus.close)
            bus_loops = await stack.enter_async_context(
                supervised(self.health, self.metrics, lambda: self.config.supervision))
            bus_loops.start(self.bus.stages())
            self.http = await stack.enter_async_context(self._open_ops_server(self))
            assert self.http.bound is not None  # bound on enter
            log.info("ops.listening", address=f"{self.http.bound[0]}:{self.http.bound[1]}")
            await asyncio.to_thread(self.plugins.load)  # entry points: file system + imports
            self.pipeline = await stack.enter_async_context(self._open_pipeline())
            await self.plugins.start_all()
            stack.push_async_callback(self._stop_plugins)
            log.info("daemon.started", version=__version__, mode=cfg.mode,
                     config=cfg.source, config_hash=cfg.hash, pid=os.getpid())
            async with asyncio.TaskGroup() as tg:
                for stage in self.pipeline.stages:
                    self._stage_tasks[stage.name] = tg.create_task(
                        self._run_stage(stage), name=f"stage:{stage.name}")
                for stage in self.pipeline.background:
                    self._background_tasks[stage.name] = tg.create_task(
                        self._supervise(stage), name=f"loop:{stage.name}")
                for name in self.plugins.plugins:
                    self._plugin_tasks.append(
                        tg.create_task(self.plugins.run(name), name=f"plugin:{name}"))
                await self._housekeeping()
                await self._shutdown()
        log.info("daemon.stopped")
        return EXIT_OK

    async def _supervise(self, stage: Stage) -> None:
        await supervise(stage, self.health, self.metrics, lambda: self.config.supervision)

    async def _run_stage(self, stage: Stage) -> None:
        try:
            await self._supervise(stage)
        finally:
            # The stage is done (input drained, cancelled, or crash loop): its consumers may
            # drain what it produced and then end too.
            if stage.output is not None:
                stage.output.close()
            if self.exit_when_done and all(t.done() or t is asyncio.current_task()
                                           for t in self._stage_tasks.values()):
                # The last stage is done: stop now, not at the next housekeeping tick (a
                # backtest would otherwise idle up to _HOUSEKEEPING_S before its report).
                self._request_stop("pipeline finished")

    def _lock_data_dir(self, stack: contextlib.AsyncExitStack) -> None:
        """One daemon per data dir: two writers would corrupt the store and the audit chain."""
        data = self.config.data_dir
        data.mkdir(parents=True, exist_ok=True)
        # The store, the audit log and the plugins' state are the account's books: this user's
        # only (files are 0600 through the umask that run() sets).
        if data.stat().st_mode & 0o077:
            try:
                data.chmod(0o700)
            except OSError as exc:
                log.warning("daemon.data_dir_mode", path=str(data), error=exc.strerror)
        lock = open(data / "dolphind.lock", "a+")  # noqa: SIM115 - closed by the exit stack
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise StartupError(
                f"data dir {data} is in use by another dolphind (pid {holder})") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        stack.callback(lock.close)
        self._data_dir_writable = True

    async def _housekeeping(self) -> None:
        """Act on recorded intents; refresh health; feed the systemd watchdog."""
        last_watchdog = 0.0
        last_disk_check = 0.0
        last_heartbeat = time.monotonic()
        while not self._stop.is_set():
            if self._reload.pending.is_set():
                causes = self._reload.take()
                await self.reload_now(", ".join(causes) or "request")
            now = time.monotonic()
            if now - last_disk_check > 5.0:
                last_disk_check = now
                self._data_dir_writable = await asyncio.to_thread(
                    os.access, self.config.data_dir, os.W_OK)
            self.control.expire()  # overrides that ran out drop back even with no reader
            score, level = self.health.score()
            self.metrics.ready.set(1 if self.readiness()[0] else 0)  # for the alert rules
            if not self._ready_sent and self.readiness()[0]:
                self._ready_sent = True
                self.notifier.ready()
                log.info("daemon.ready")
            wd = self.notifier.watchdog_interval_s
            if wd and level is not HealthLevel.DEAD and now - last_watchdog >= wd:
                last_watchdog = now
                self.notifier.watchdog()
            if self.exit_when_done and self._stage_tasks and all(
                    t.done() for t in self._stage_tasks.values()):
                self._request_stop("pipeline finished")
                break
            self.health.sensors["statebus"] = 1.0 if self.bus.healthy() else 0.0
            self.publisher.tick(now, self)
            every = self.config.logging.heartbeat_s
            if every and now - last_heartbeat >= every and self.config.mode != "backtest":
                last_heartbeat = now
                log.info("heartbeat", **heartbeat_fields(self.status()))
            self.bus.put(bus_names.HEARTBEAT, "dolphind",
                         {"ts": time.time(), "pid": os.getpid(), "health": level.value})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_HOUSEKEEPING_S):
                    await self._stop.wait()

    async def _shutdown(self) -> None:
        timeout = self.config.shutdown_timeout_s
        self.notifier.stopping()
        t0 = time.monotonic()
        if not self.control.halted:
            self.control.halt("shutdown", "daemon stopping")
        log.info("daemon.shutdown", timeout_s=timeout)
        # Stop the sources; every stage downstream ends when its input is closed and drained.
        for stage in self.pipeline.stages:
            if stage.is_source:
                self._stage_tasks[stage.name].cancel()
        pending = [t for t in self._stage_tasks.values() if not t.done()]
        if pending:
            done, still = await asyncio.wait(pending, timeout=timeout)
            for task in still:
                log.warning("daemon.drain_timeout", task=task.get_name())
                task.cancel()
            if still:
                await asyncio.wait(still)
        # The pipeline has drained: the loops that served it (the venue's user stream...) end.
        await self._stop_background()
        # Plugins get what the stages published while draining, then their tasks end; a slow
        # plugin gets what is left of the budget, not HOOK_TIMEOUT_S per queued event.
        self.plugins.close_queues()
        self._deadline = t0 + timeout
        pending = [t for t in self._plugin_tasks if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=self._budget_left())
            for task in still:
                log.warning("daemon.drain_timeout", task=task.get_name())
                task.cancel()
        log.info("daemon.drained", seconds=round(time.monotonic() - t0, 3))

    async def _stop_background(self) -> None:
        running = [t for t in self._background_tasks.values() if not t.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)

    def _budget_left(self) -> float:
        """Seconds left of shutdown_timeout_s (at least a moment, so clean-up can still run)."""
        if self._deadline is None:
            return self.config.shutdown_timeout_s
        return max(self._deadline - time.monotonic(), 0.1)

    async def _stop_plugins(self) -> None:
        try:
            async with asyncio.timeout(self._budget_left()):
                await self.plugins.stop_all()
        except TimeoutError:
            log.warning("daemon.plugin_stop_timeout")

    # ---- reload ------------------------------------------------------------------------

    async def reload_now(self, cause: str) -> dict[str, Any]:
        """Validate the whole file, then swap the reloadable parts in one assignment."""
        # systemd pairs RELOADING=1 with READY=1; before the first READY=1 (still starting)
        # neither is sent: readiness is announced by housekeeping, with /readyz.
        announce = self._ready_sent
        if announce:
            self.notifier.reloading()
        try:
            result = await self._reload_once(cause)
        finally:
            if announce:
                self.notifier.ready()
        self.last_reload = result
        self.control.reloaded(cause, **{k: v for k, v in result.items()
                                        if k not in ("cause", "ts")})
        return result

    async def _reload_once(self, cause: str) -> dict[str, Any]:
        path = self.config.source
        try:
            new = await asyncio.to_thread(load_config, path)
            problems = self.plugins.validate(new)
            # Everything a start would check: a config the next start refuses is refused now,
            # not reported as "needs restart" for a process manager to restart-loop on.
            found = await asyncio.to_thread(preflight, new, self.config)
            problems += [p for p in found if p not in problems]  # plugins validate in both
            if problems:
                raise ConfigError(problems)
        except Exception as exc:  # noqa: BLE001 - a reload must never take the daemon down
            problems = exc.problems if isinstance(exc, ConfigError) else \
                [f"{path}: reload failed ({type(exc).__name__}: {exc})"]
            self.metrics.config_reload_failures.inc()
            log.error("config.reload_failed", cause=cause, path=path, problems=problems)
            return {"ok": False, "cause": cause, "ts": time.time(), "problems": problems,
                    "config_hash": self.config.hash}
        plan = plan_reload(self.config, new)
        old_logging = self.config.logging
        self._config.swap(plan.config)  # the atomic swap: components read the CurrentConfig
        if plan.config.logging != old_logging:
            logs.configure(plan.config.logging.level, plan.config.logging.format)
        if any(k.startswith("plugins.") for k in plan.applied):
            await self.plugins.reload(plan.config)
        self.metrics.config_reloads.inc()
        self.metrics.config_info.clear()
        self.metrics.config_info.labels(new.hash, self.config.mode).set(1)
        log.info("config.reloaded", cause=cause, config_hash=new.hash,
                 applied=list(plan.applied), needs_restart=list(plan.needs_restart))
        return {"ok": True, "cause": cause, "ts": time.time(), "config_hash": new.hash,
                "applied": list(plan.applied), "needs_restart": list(plan.needs_restart)}

    # ---- views for the ops surface -----------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, str] = {}
        pipeline = self.pipeline
        if pipeline is None:
            checks["pipeline"] = "starting"
        else:
            checks.update(pipeline.readiness())
        checks["store"] = "ok" if self._data_dir_writable else \
            f"data dir {self.config.data_dir} not writable"
        # A state bus outage never gates trading, nor readiness (a daemon started while the
        # cluster is down must still come up): /status "statebus" and the health sensor show it.
        checks["statebus"] = "ok"
        for name, st in self.health.stages.items():
            if not st.running and not st.finished:
                checks[f"stage:{name}"] = st.last_error or "not running"
        if self._stop.is_set():
            checks["shutdown"] = "stopping"
        return all(v == "ok" for v in checks.values()), checks

    def health_summary(self) -> dict[str, Any]:
        score, level = self.health.score()
        return {"level": level.value, "score": round(score, 4)}

    def status(self) -> dict[str, Any]:
        cfg = self.config
        ready, checks = self.readiness()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "mode": cfg.mode,
            "trading": describe_trading(cfg),
            "uptime_s": round(time.monotonic() - self._started_mono, 3),
            "started_at": self.started_at,
            "config": {"path": cfg.source, "hash": cfg.hash,
                       "values": config_to_jsonable(cfg)},
            "last_reload": self.last_reload,
            "ready": ready,
            "readiness": checks,
            "health": self.health_summary(),
            "stages": self.health.snapshot(),
            "plugins": self.plugins.status(),
            "control": self.control.status(),
            "statebus": self.bus.status(),
            **(self.pipeline.status() if self.pipeline is not None else {}),
        }


def run(config_path: str | Path, build: Callable[[Config], Daemon]) -> int:
    """Load the config and run the daemon ``build`` makes of it (``dolphind.app.build_daemon``)
    until it is stopped; returns the exit code."""
    # Everything the daemon creates (data dir, store, audit log, scans, plugin state) is
    # readable by its own user only: 0700 folders, 0600 files.
    os.umask(0o077)
    try:
        cfg = load_config(config_path)
        problems = preflight(cfg)
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        logs.configure()
        log.error("config.invalid", path=str(config_path), problems=exc.problems)
        for p in exc.problems:
            os.write(2, f"dolphind: {p}\n".encode())
        return EXIT_CONFIG
    logs.configure(cfg.logging.level, cfg.logging.format)
    for warning in secret_file_warnings(cfg):
        log.warning("config.secret_file_readable", problem=warning)
    if cfg.cpu_affinity:
        pin_process(cfg.cpu_affinity)  # before the loop and its helper threads exist
        log.info("daemon.cpu_affinity", cpus=sorted(set(cfg.cpu_affinity)))
    import uvloop

    daemon = build(cfg)  # outside the loop: the metrics' collectors read /proc
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            try:
                return runner.run(daemon.serve())
            # HistoryError: the replay data named in the config is missing or unreadable.
            # VenueStartupError: unreachable venue, refused keys, hedge mode, foreign holdings.
            except (StartupError, PluginError, ConfigError, HistoryError, OSError,
                    VenueStartupError) as exc:
                log.error("daemon.startup_failed", error=str(exc))
                os.write(2, f"dolphind: cannot start: {exc}\n".encode())
                return EXIT_CONFIG
    except KeyboardInterrupt:
        # A second Ctrl-C after the daemon's own handler is gone (the end of shutdown): the
        # operator insists. Nothing acknowledged is lost (crash-only); no traceback.
        os.write(2, b"dolphind: interrupted, exiting\n")
        return EXIT_INTERRUPTED
    finally:
        # Past this point (interpreter teardown) another Ctrl-C just ends the process.
        signal.signal(signal.SIGINT, _exit_interrupted)


def _exit_interrupted(signum: int, frame: Any) -> None:
    os._exit(EXIT_INTERRUPTED)
