"""The Binance venue's background loops are stages run by the real supervisor (issue #14): a
crash is seen and counted by it and the loop restarted, a crash loop is fatal, and closing
the venue ends every loop (a closed venue must not renew its lease)."""

from __future__ import annotations

import asyncio

import pytest

from dolphind.supervisor import supervised
from dolphind.config import SupervisionConfig
from dolphind.stage import offered_stages
from dolphind.supervisor import StageCrashLoop
from dolphind.telemetry.health import Health
from dolphind.venues.binance import BinanceVenue
from tests.conftest import eventually
from tests.unit.venue.conftest import creds, venue_config, venue_loops


def sample(m, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


async def test_a_loop_crash_is_seen_counted_and_restarted_by_the_supervisor(fake,
                                                                            metrics_factory):
    m = metrics_factory()
    health = Health(m, lambda: 30.0)
    venue = BinanceVenue(lambda: venue_config(fake), None, m.venue, creds(fake))
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")
        await asyncio.Event().wait()

    async with venue, venue_loops(venue, m, health=health) as loops:
        loops.start([venue.loop("flaky", flaky)])
        await eventually(lambda: len(runs) == 3, what="restarted twice")
        # The supervisor's view: two errors, two restarts, running again.
        assert sample(m, "dolphind_stage_errors_total", stage="binance:flaky") == 2
        assert sample(m, "dolphind_stage_restarts_total", stage="binance:flaky") == 2
        state = health.stages["binance:flaky"]
        assert state.restarts == 2 and state.running
        assert state.last_error == "RuntimeError: boom"
        # The venue's own record (metric, /status) as before.
        assert sample(m, "dolphind_venue_loop_crashes_total", loop="flaky") == 2
        assert venue.status()["loop_crashes"] == {"flaky": 2}
        # Every venue loop is supervised under its own name.
        assert {"binance:lease", "binance:maintenance"} <= set(health.stages)


async def test_a_crash_looping_venue_loop_is_fatal(fake, metrics_factory):
    m = metrics_factory()
    venue = BinanceVenue(lambda: venue_config(fake), None, m.venue, creds(fake))

    async def broken() -> None:
        raise ValueError("always")

    settings = SupervisionConfig(max_restarts=2, restart_window_s=60.0,
                                 backoff_initial_s=0.01, backoff_max_s=0.01)
    with pytest.raises(BaseExceptionGroup) as caught:
        async with venue, venue_loops(venue, m, settings) as loops:
            loops.start([venue.loop("broken", broken)])
            await asyncio.sleep(30)  # cancelled by the crash loop, never reached the end
    crash = caught.value.subgroup(StageCrashLoop)
    assert crash is not None and crash.exceptions[0].stage == "binance:broken"
    assert venue.loop_crashes == {"broken": 3}
    assert sample(m, "dolphind_stage_errors_total", stage="binance:broken") == 3


async def test_closing_the_venue_ends_its_loops(fake, metrics_factory):
    m = metrics_factory()
    health = Health(m, lambda: 30.0)
    venue = BinanceVenue(lambda: venue_config(fake), None, m.venue, creds(fake))
    async with venue, venue_loops(venue, m, health=health) as loops:
        loops.start(venue.stages())
        await eventually(lambda: venue.reconciled, what="reconciled")
        await venue.aclose()
        names = [s.name for s in (*venue.upkeep_stages(), *venue.stages())]
        await eventually(lambda: all(health.stages[n].finished for n in names),
                         what="every loop finished")
        assert not venue.lease.held
        await asyncio.sleep(venue_config(fake).lease_renew_s * 2)
        assert not venue.lease.held  # not taken again by a loop of the closed venue
    assert venue.loop_crashes == {}


async def test_a_failure_of_the_opening_leaves_as_itself_and_stops_the_loops(metrics_factory):
    """A refused start (ForeignHoldings, ...) reaches the daemon unwrapped: it says it in one
    line and exits 2, instead of a crash with an exception group."""
    m = metrics_factory()
    health = Health(m, lambda: 30.0)

    class Forever:
        name = "binance:forever"

        async def run(self) -> None:
            await asyncio.Event().wait()

    with pytest.raises(ValueError, match="refused"):
        async with supervised(health, m, lambda: SupervisionConfig()) as loops:
            loops.start([Forever()])
            await eventually(lambda: health.stages["binance:forever"].running)
            raise ValueError("refused")
    assert not health.stages["binance:forever"].running


async def test_each_loop_has_one_runner(fake, metrics_factory):
    """The daemon runs what the venue offers (``stages()``: the stream's loops); the wiring
    runs the upkeep from the opening. No loop is in both (two user streams would race)."""
    m = metrics_factory()
    venue = BinanceVenue(lambda: venue_config(fake), None, m.venue, creds(fake))
    offered = [s.name for s in offered_stages(venue)]
    upkeep = [s.name for s in venue.upkeep_stages()]
    assert offered == ["binance:user_stream", "binance:listen_key", "binance:poll"]
    assert upkeep == ["binance:lease", "binance:maintenance"]
