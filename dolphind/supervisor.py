"""Supervised stage tasks: restart with backoff, count, give up on a crash loop (crash-only).

A stage (``dolphind.stage.Stage``) is an object with a ``name`` and ``async def run()``. ``run``
returning means the stage finished its work (its input closed); raising means it crashed. A
crashed stage is restarted after an exponential backoff with jitter (``dolphind.backoff``);
when it crashes more than ``max_restarts`` times within ``restart_window_s`` the supervisor
raises ``StageCrashLoop``, which ends the daemon with a non-zero exit so the process manager
restarts the whole process from a clean state.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import AsyncIterator, Callable, Iterable

import structlog

from dolphind.backoff import backoff_delay
from dolphind.config import SupervisionConfig
from dolphind.stage import Stage
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics

__all__ = ["Stage", "StageCrashLoop", "StageRunner", "supervise", "supervised"]

log = structlog.get_logger("dolphind.supervisor")


class StageCrashLoop(Exception):
    """A stage crashed too often; the process must exit non-zero."""

    def __init__(self, stage: str, restarts: int, window_s: float, last: BaseException) -> None:
        super().__init__(
            f"stage {stage!r} crashed {restarts + 1} times within {window_s:g}s; last error: "
            f"{type(last).__name__}: {last}")
        self.stage = stage


async def supervise(stage: Stage, health: Health, metrics: Metrics,
                    settings: Callable[[], SupervisionConfig],
                    monotonic: Callable[[], float] = time.monotonic) -> None:
    """Run ``stage`` until it finishes, restarting it when it crashes."""
    crashes: collections.deque[float] = collections.deque()
    # A stage nobody registered (a component's background loop) is registered here: every
    # supervised stage shows in /status and in the health score.
    state = health.stages.get(stage.name) or health.register(stage.name)
    bound = log.bind(stage=stage.name)
    while True:
        health.set_running(stage.name, True)
        try:
            await stage.run()
        except asyncio.CancelledError:
            health.set_running(stage.name, False)
            raise
        except Exception as exc:  # a stage crash: isolate, count, restart
            health.set_running(stage.name, False, error=f"{type(exc).__name__}: {exc}")
            metrics.stage_errors.labels(stage.name).inc()
            cfg = settings()
            now = monotonic()
            crashes.append(now)
            while crashes and now - crashes[0] > cfg.restart_window_s:
                crashes.popleft()
            recent = len(crashes) - 1  # restarts already made inside the window
            if recent >= cfg.max_restarts:
                bound.error("stage.crash_loop", restarts=recent, exc_info=exc)
                raise StageCrashLoop(stage.name, recent, cfg.restart_window_s, exc) from exc
            delay = backoff_delay(recent, cfg.backoff_initial_s, cfg.backoff_max_s)
            bound.warning("stage.crashed", error=str(exc), error_type=type(exc).__name__,
                          restart_in_s=delay, exc_info=exc)
            await asyncio.sleep(delay)
            state.restarts += 1
            metrics.stage_restarts.labels(stage.name).inc()
            bound.info("stage.restarted", restarts=state.restarts)
            continue
        health.set_running(stage.name, False)
        state.finished = True
        bound.info("stage.finished")
        return


class StageRunner:
    """Starts stages under ``supervise`` in a TaskGroup it does not own; ``stop`` cancels
    them (each one's supervisor marks it stopped in ``health``)."""

    def __init__(self, tg: asyncio.TaskGroup, health: Health, metrics: Metrics,
                 settings: Callable[[], SupervisionConfig]) -> None:
        self._tg = tg
        self._health = health
        self._metrics = metrics
        self._settings = settings
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, stages: Iterable[Stage]) -> None:
        for stage in stages:
            if stage.name not in self._health.stages:
                self._health.register(stage.name)
            self._tasks.append(self._tg.create_task(
                supervise(stage, self._health, self._metrics, self._settings),
                name=f"stage:{stage.name}"))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()


@contextlib.asynccontextmanager
async def supervised(health: Health, metrics: Metrics,
                     settings: Callable[[], SupervisionConfig]) -> AsyncIterator[StageRunner]:
    """A TaskGroup whose stages run supervised until the context is left (then cancelled and
    awaited). A stage's crash loop cancels the body and leaves as ``StageCrashLoop`` (in an
    exception group, as from the daemon's own TaskGroup); an error of the body itself (a
    refused start, say) leaves as it is, for the daemon's one-line startup message."""
    failed: Exception | None = None
    async with asyncio.TaskGroup() as tg:
        runner = StageRunner(tg, health, metrics, settings)
        try:
            yield runner
        except Exception as exc:  # the body's own failure leaves as itself, not in a group
            failed = exc
        finally:
            runner.stop()
    if failed is not None:
        raise failed
