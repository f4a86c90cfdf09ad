from __future__ import annotations

import asyncio

import pytest

from dolphind.config import SupervisionConfig
from dolphind.telemetry.health import Health, HealthLevel
from dolphind.telemetry.metrics import Metrics
from dolphind.supervisor import StageCrashLoop, supervise

FAST = SupervisionConfig(max_restarts=3, restart_window_s=60, backoff_initial_s=0.001,
                         backoff_max_s=0.004)


class Flaky:
    """Raises ``failures`` times, then finishes normally."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        await asyncio.sleep(0)
        if self.runs <= self.failures:
            raise RuntimeError(f"boom {self.runs}")


@pytest.fixture
def setup() -> tuple[Metrics, Health]:
    # Built outside the event loop, as the daemon does (collectors read /proc when registered).
    m = Metrics()
    h = Health(m, lambda: 30.0)
    h.register("flaky")
    return m, h


async def test_a_stage_that_raises_is_restarted_and_counted(setup: tuple[Metrics, Health]) -> None:
    m, h = setup
    stage = Flaky(failures=2)
    await supervise(stage, h, m, lambda: FAST)
    assert stage.runs == 3
    assert m.registry.get_sample_value("dolphind_stage_restarts_total", {"stage": "flaky"}) == 2
    assert m.registry.get_sample_value("dolphind_stage_errors_total", {"stage": "flaky"}) == 2
    assert h.stages["flaky"].restarts == 2
    assert h.stages["flaky"].finished


async def test_a_stage_that_keeps_crashing_ends_with_a_crash_loop(setup: tuple[Metrics, Health]) -> None:
    m, h = setup
    stage = Flaky(failures=100)
    with pytest.raises(StageCrashLoop, match="flaky.*boom 4"):
        await supervise(stage, h, m, lambda: FAST)
    assert stage.runs == FAST.max_restarts + 1
    assert h.stages["flaky"].last_error == "RuntimeError: boom 4"


async def test_crashes_outside_the_window_do_not_accumulate(setup: tuple[Metrics, Health]) -> None:
    m, h = setup
    clock = iter(range(0, 10_000, 100))  # every crash 100 s after the previous one
    stage = Flaky(failures=10)
    await supervise(stage, h, m, lambda: FAST, monotonic=lambda: float(next(clock)))
    assert stage.runs == 11


async def test_cancellation_is_not_a_crash(setup: tuple[Metrics, Health]) -> None:
    m, h = setup

    class Forever:
        name = "flaky"

        async def run(self) -> None:
            await asyncio.Event().wait()

    task = asyncio.create_task(supervise(Forever(), h, m, lambda: FAST))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Exported at 0 from registration (issue 20: alerts see the first error); still no error.
    assert m.registry.get_sample_value("dolphind_stage_errors_total", {"stage": "flaky"}) == 0


def test_health_score_is_a_weighted_sum() -> None:
    m = Metrics()
    h = Health(m, lambda: 30.0)
    for name in ("a", "b"):
        h.register(name)
        h.set_running(name, True)
    assert h.score() == (1.0, HealthLevel.GREEN)
    h.set_running("b", False)
    score, level = h.score()
    assert score == pytest.approx(1.0 - 0.5 * 0.5)  # half the stages down: one sensor halved
    assert level is HealthLevel.DEGRADED
    h.set_running("a", False)
    assert h.score() == (0.0, HealthLevel.DEAD)


def test_a_stage_is_stalled_only_when_work_waits_for_it() -> None:
    m = Metrics()
    now = [0.0]
    backlog = [0]
    h = Health(m, lambda: 5.0, monotonic=lambda: now[0])
    st = h.register("scan", backlog=lambda: backlog[0])
    h.set_running("scan", True)
    h.beat("scan")
    now[0] = 100.0
    assert not h.stalled(st)  # idle, nothing queued: healthy
    backlog[0] = 3
    assert h.stalled(st)
    h.beat("scan")
    assert not h.stalled(st)


def test_health_is_starting_until_a_stage_runs() -> None:
    """Issue 17: a first start compiles the kernels for tens of seconds before any stage runs;
    that is STARTING (alive), not DEAD, or a liveness probe kills a daemon that is starting."""
    h = Health(Metrics(), lambda: 30.0)
    assert h.score()[1] is HealthLevel.STARTING
    h.register("a")
    assert h.score()[1] is HealthLevel.STARTING  # registered, not yet running
    h.set_running("a", True)
    assert h.score()[1] is HealthLevel.GREEN
    h.set_running("a", False)
    assert h.score() == (0.0, HealthLevel.DEAD)  # once it ran, all stages down is DEAD
