"""The alpha stage around the pure engine: what it feeds the engine between bars (the daemon's
health for survival Cat1, ACB external factors from the bus or a file, a recalibrated w750
threshold) and what it exports (dolphind_signals_total{outcome}, /status)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from decimal import Decimal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np
import orjson
import pytest

from dolphind.alpha.acb import ExternalFactors
from dolphind.alpha.engine import AlphaEngine
from dolphind.alpha.params import CHAMPION
from dolphind.alpha.warmup import warmup
from dolphind.alpha.stage import HEALTH_REFRESH_S, AlphaStage
from dolphind.alpha.views import PortfolioView
from dolphind.app import venue_entry_check
from dolphind.channels import Channel, Overflow
from dolphind.config import Config, ScanConfig, StrategyConfig
from dolphind.events import ScanRecord, frozen_array
from dolphind.orders.filters import fallback_filters
from dolphind.control import Control
from dolphind.telemetry.health import Health
from dolphind.telemetry.metrics import Metrics
from dolphind.statebus.base import FEATURES
from dolphind.statebus.memory import MemoryStateBus
from tests.conftest import eventually

BAR_NS = 60_000_000_000
T0 = 1_700_000_000_000_000_000
SYMS = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "BTCUSDT")
STAGES = ("feed", "market", "scan", "alpha", "execution")


def scan(bar: int, vel_div: float = 0.0, w750: float = 0.001) -> ScanRecord:
    """AAA falls steadily (the SHORT candidate IRP picks), the others drift or chop."""
    # Read-only, as the scanner hands them out (numba compiles per array flavour).
    prices = np.array([1.0 - 0.0005 * bar, 2.0 + 0.001 * bar, 3.0 + 0.01 * (-1) ** bar,
                       50_000.0 + bar])
    return ScanRecord(
        scan_number=bar, ts_ns=T0 + bar * BAR_NS, n_symbols=len(SYMS), symbols=SYMS,
        prices=frozen_array(prices), lambda_max=(1.0,) * 4, velocity=(0.0, 0.0, 0.0, w750),
        instability=(0.0,) * 4, vel_div=vel_div, regime_signal=0.0,
        instability_composite=0.0)


class FlatBooks:
    """Execution's side of the stage: a flat portfolio (no fills in these tests)."""

    def portfolio_view(self) -> PortfolioView:
        return PortfolioView(capital=10_000.0, equity=10_000.0)

    def on_bar(self, ts_ns: int) -> None:
        pass

    def note_intent(self, intent_id: str, leverage: float) -> None:
        pass


class Heard:
    """The stage's listener port (``AlphaEvents``): what it told the wiring."""

    def __init__(self) -> None:
        self.intents: list[Any] = []
        self.postures: list[tuple[str, str, float, int]] = []

    def on_intent(self, intent: Any) -> None:
        self.intents.append(intent)

    def on_posture(self, posture: str, previous: str, rm: float, scan_number: int) -> None:
        self.postures.append((posture, previous, rm, scan_number))


@dataclass
class StageRig:
    metrics: Metrics
    # The rig's toy universe has a few symbols: the minimum-universe gate (scan.min_symbols,
    # issue 16) is off here so these tests exercise the other gates.
    config: Config = field(default_factory=lambda: Config(scan=ScanConfig(min_symbols=0)))
    mono: float = 100.0
    bus: MemoryStateBus = field(default_factory=MemoryStateBus)
    stage: AlphaStage = field(init=False)
    source: Channel[ScanRecord] = field(init=False)
    health: Health = field(init=False)
    next_bar: int = 0
    market_factors: Any = None
    heard: Heard = field(default_factory=Heard)

    def __post_init__(self) -> None:
        self.health = Health(self.metrics, lambda: 5.0, monotonic=lambda: self.mono)
        for name in STAGES:
            self.health.register(name)
            self.health.set_running(name, True)
        self.source = Channel("scans", 100_000, Overflow.BLOCK)
        output: Channel[Any] = Channel("intents", 100_000, Overflow.BLOCK)
        control = Control(self.metrics, lambda cause: None, monotonic=lambda: self.mono)

        async def settled(sent: int) -> bool:
            return True

        self.stage = AlphaStage(self.source, output, AlphaEngine(), FlatBooks(), settled,
                                lambda: None, control, self.health, self.metrics,
                                self.heard, bus=self.bus,
                                config=lambda: self.config, monotonic=lambda: self.mono,
                                market_factors=self.market_factors)

    async def bars(self, n: int, vel_div: float = 0.0, w750: float = 0.001) -> None:
        """Feed ``n`` bars and wait until the stage has decided on each of them."""
        target = self.stage.decisions + n
        for _ in range(n):
            await self.source.put(scan(self.next_bar, vel_div, w750))
            self.next_bar += 1
        await eventually(lambda: self.stage.decisions >= target, what=f"{n} decisions")

    def signals(self, outcome: str) -> float:
        v = self.metrics.registry.get_sample_value("dolphind_signals_total",
                                                   {"outcome": outcome})
        return 0.0 if v is None else v

    def status(self) -> dict[str, Any]:
        # Round-trip through JSON as /status does (orjson: NaN becomes null).
        return orjson.loads(orjson.dumps(self.stage.status(), option=orjson.OPT_SERIALIZE_NUMPY))


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    """The numba kernels, compiled (or loaded from cache) before the loop runs, as the
    daemon does in a worker thread: compiling reads files, which the loop must not."""
    warmup(CHAMPION)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()  # reads /proc: built outside the loop, as the daemon does


@contextlib.asynccontextmanager
async def running(rig: StageRig) -> AsyncIterator[StageRig]:
    task = asyncio.create_task(rig.stage.run())
    try:
        yield rig
    finally:
        rig.source.close()
        await asyncio.wait_for(task, 10)


# ---- item 7: the outcome counter moves ---------------------------------------------------


async def test_signals_total_counts_every_decision_by_outcome(metrics: Metrics) -> None:
    async with running(StageRig(metrics)) as rig:
        await rig.bars(99, vel_div=-0.03)
        assert rig.signals("warmup") == 99
        await rig.bars(1, vel_div=-0.03)
        assert rig.signals("entered") == 1
        # The portfolio stays flat (no fills here): the engine waits for the acknowledgement.
        await rig.bars(1, vel_div=-0.03)
        assert rig.signals("entry_pending") == 1
        await rig.bars(3, vel_div=-0.001)
        assert rig.signals("no_signal") == 3
    total = sum(s.value for m in metrics.signals.collect() for s in m.samples
                if s.name == "dolphind_signals_total")
    assert total == rig.stage.decisions == 104


# ---- item 1: survival Cat1 is the daemon's own health ------------------------------------


async def test_cat1_follows_the_daemon_health(metrics: Metrics) -> None:
    async with running(StageRig(metrics)) as rig:
        await rig.bars(5)
        st = rig.status()
        assert (st["health_level"], st["system_alive"], st["posture"]) == ("GREEN", 1.0, "APEX")
        # Most stages down and the sensors failing: CRITICAL (SPEC §9) -> Cat1 kill switch.
        for name in ("feed", "market", "scan", "execution"):
            rig.health.set_running(name, False)
        rig.health.sensors.update(feed=0.0, statebus=0.0)
        assert rig.health.score()[1].value == "CRITICAL"
        rig.mono += HEALTH_REFRESH_S  # the stage re-reads health at most this often
        await rig.bars(2)
        st = rig.status()
        assert (st["health_level"], st["system_alive"]) == ("CRITICAL", 0.0)
        assert st["rm"] == 0.0
        assert st["posture"] == "HIBERNATE"  # two bars down (hysteresis_down = 2)
        # The change is told to the wiring (which audits it), with the posture it left.
        assert [(p[0], p[1]) for p in rig.heard.postures] == [("HIBERNATE", "APEX")]
        await rig.bars(1, vel_div=-0.03)
        assert rig.signals("posture_hibernate") >= 1


async def test_degraded_health_still_trades(metrics: Metrics) -> None:
    async with running(StageRig(metrics)) as rig:
        rig.health.set_running("execution", False)
        rig.health.sensors.update(feed=0.0, statebus=0.0)
        assert rig.health.score()[1].value == "DEGRADED"
        await rig.bars(3)
        assert rig.status()["system_alive"] == 1.0 and rig.status()["posture"] == "APEX"


# ---- item 2: ACB external factors from the bus or the file ---------------------------------


async def test_absent_external_factors_mean_boost_1_with_the_reason(metrics: Metrics) -> None:
    async with running(StageRig(metrics)) as rig:
        await rig.bars(2)
        st = rig.status()
        assert st["acb_boost"] == 1.0 and "no external factors" in st["acb_reason"]
        assert st["external_factors"]["source"] == "none"
        assert metrics.registry.get_sample_value("dolphind_acb_boost") == 1.0


async def test_exf_latest_on_the_bus_sets_the_boost_and_a_bad_payload_is_reported(
        metrics: Metrics) -> None:
    async with running(StageRig(metrics)) as rig:
        await rig.bars(1)
        rig.bus.put(FEATURES, "exf_latest", {"dvol_btc": 90.0, "taker": 0.7, "fng": None,
                                             "_pushed_at": 1_700_000_000.0})
        await rig.bars(2)  # read on the next bar, applied at the start of the one after
        st = rig.status()
        assert st["acb_boost"] == pytest.approx(1.549, abs=1e-3)  # two signals (bible §10.2)
        assert st["external_factors"]["source"] == "bus"
        assert st["external_factors"]["problem"] is None
        assert metrics.registry.get_sample_value("dolphind_acb_boost") == pytest.approx(
            1.549, abs=1e-3)
        # A broken feed: logged, shown, never applied; the last good factors stay in force.
        rig.bus.put(FEATURES, "exf_latest", {"dvol_btc": "high", "taker": 0.7})
        await rig.bars(2)
        st = rig.status()
        assert "dvol_btc" in st["external_factors"]["problem"]
        assert st["acb_boost"] == pytest.approx(1.549, abs=1e-3)
        rig.bus.put(FEATURES, "exf_latest", [1, 2, 3])
        await rig.bars(1)
        assert "JSON object" in rig.status()["external_factors"]["problem"]
        # A good payload again clears the problem.
        rig.bus.put(FEATURES, "exf_latest", {"funding_btc": -0.001})
        await rig.bars(2)
        st = rig.status()
        assert st["acb_boost"] == pytest.approx(1.347, abs=1e-3)
        assert st["external_factors"]["problem"] is None


async def test_external_factors_file_read_at_start_and_on_reload(metrics: Metrics,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "exf.json"
    path.write_text(json.dumps({"funding_btc": -0.001}))
    cfg = Config(source=str(tmp_path / "d.toml"),
                 strategy=StrategyConfig(external_factors_file="exf.json"))
    async with running(StageRig(metrics, config=cfg)) as rig:
        await rig.bars(2)
        st = rig.status()
        assert st["acb_boost"] == pytest.approx(1.347, abs=1e-3)
        assert st["external_factors"]["source"] == "file"
        # Only a reload re-reads the file (the daemon swaps the config object).
        path.write_text(json.dumps({"funding_btc": -0.001, "dvol_btc": 90.0, "taker": 0.7}))
        await rig.bars(2)
        assert rig.status()["acb_boost"] == pytest.approx(1.347, abs=1e-3)
        rig.config = dataclasses.replace(rig.config)
        await rig.bars(2)
        assert rig.status()["acb_boost"] == pytest.approx(1.693, abs=1e-3)
        # The bus wins over the file when both are present.
        rig.bus.put(FEATURES, "exf_latest", {"dvol_btc": 90.0})
        await rig.bars(2)
        st = rig.status()
        assert st["acb_boost"] == pytest.approx(1.347, abs=1e-3)
        assert st["external_factors"]["source"] == "bus"


async def test_unreadable_external_factors_file_is_reported_not_fatal(metrics: Metrics,
                                                                      tmp_path: Path) -> None:
    (tmp_path / "exf.json").write_text("{not json")
    cfg = Config(source=str(tmp_path / "d.toml"),
                 strategy=StrategyConfig(external_factors_file="exf.json"))
    async with running(StageRig(metrics, config=cfg)) as rig:
        await rig.bars(2)
        st = rig.status()
        assert st["acb_boost"] == 1.0
        assert "not valid JSON" in st["external_factors"]["problem"]
        rig.config = dataclasses.replace(cfg, strategy=StrategyConfig(
            external_factors_file="missing.json"))
        await rig.bars(2)
        assert "cannot read" in rig.status()["external_factors"]["problem"]


# ---- item 3: a recalibrated w750 threshold from the bus ------------------------------------


async def test_published_w750_threshold_decides_beta_and_shows_in_status(
        metrics: Metrics) -> None:
    async with running(StageRig(metrics)) as rig:
        await rig.bars(3, w750=0.001)
        st = rig.status()
        # Fewer than 100 samples: the engine has no percentile yet and runs on BETA_LOW.
        assert st["acb_w750_source"] == "percentile" and st["acb_w750_threshold"] is None
        assert st["acb_beta"] == 0.2
        rig.bus.put(FEATURES, "acb_w750_threshold",
                    {"threshold": 0.0005, "percentile": 60.0, "samples": 500, "ts": 1.0})
        await rig.bars(2, w750=0.001)
        st = rig.status()
        assert st["acb_w750_threshold"] == 0.0005 and st["acb_w750_source"] == "recalibrated"
        assert st["acb_beta"] == 0.8  # w750 velocity 0.001 >= 0.0005: BETA_HIGH
        assert st["w750_calibration"]["source"] == "bus"
        # An invalid publication is refused; the threshold in force stays.
        rig.bus.put(FEATURES, "acb_w750_threshold", {"threshold": 7.0})
        await rig.bars(1)
        st = rig.status()
        assert "outside" in st["w750_calibration"]["problem"]
        assert st["acb_w750_threshold"] == 0.0005
        rig.bus.put(FEATURES, "acb_w750_threshold", {"threshold": 0.002})
        await rig.bars(2, w750=0.001)
        st = rig.status()
        assert st["acb_w750_threshold"] == 0.002 and st["acb_beta"] == 0.2
        assert st["w750_calibration"]["problem"] is None


# ---- issue 16: minimum universe, eligibility, the ranking behind each entry ----------------


async def test_a_scan_over_fewer_than_min_symbols_opens_nothing(metrics: Metrics) -> None:
    cfg = Config(scan=ScanConfig(min_symbols=len(SYMS) + 1))
    async with running(StageRig(metrics, config=cfg)) as rig:
        await rig.bars(105, vel_div=-0.03)
        assert rig.signals("entered") == 0
        assert rig.signals("thin_universe") == 105 - 99
        # A reload that lowers the bar makes the same market tradeable.
        rig.config = dataclasses.replace(cfg, scan=ScanConfig(min_symbols=len(SYMS)))
        await rig.bars(1, vel_div=-0.03)
        assert rig.signals("entered") == 1


async def test_irp_skips_assets_outside_the_allowlist_and_says_so(metrics: Metrics) -> None:
    async with running(StageRig(metrics)) as rig:
        await rig.bars(100, vel_div=-0.03)
        assert rig.signals("entered") == 1
        first = rig.stage.last_intents[-1]
        assert first["symbol"] == "AAAUSDT"  # the steady faller: IRP's pick when all may trade
        assert [i.symbol for i in rig.heard.intents] == ["AAAUSDT"]  # the port heard it too
        ranking = rig.stage.entry_rankings[-1]
        assert ranking["symbol"] == "AAAUSDT"
        chosen = [c for c in ranking["candidates"] if c["excluded_by"] == ""]
        assert [c["symbol"] for c in chosen] == ["AAAUSDT"]
        # Now AAA may not be traded: the walk goes on and never proposes it.
        allowed = tuple(s for s in SYMS if s != "AAAUSDT")
        rig.config = dataclasses.replace(
            rig.config, risk=dataclasses.replace(rig.config.risk, allowed_symbols=allowed))
        await rig.bars(30, vel_div=-0.03)
        entries = [i for i in rig.stage.last_intents if not i["reduce_only"]][1:]
        assert all(i["symbol"] in allowed for i in entries)
        later = list(rig.stage.entry_rankings)[1:]
        for r in later:
            assert r["symbol"] in allowed
            assert any(c["symbol"] == "AAAUSDT" and c["excluded_by"] == "not_eligible"
                       for c in r["candidates"]), r
        assert entries or rig.signals("irp_no_match") > 0
        # The audit gets the ranking with the intent (the order record carries the gates).
        assert "irp_candidates" in first["gates"]
        ranked = [c.split(":") for c in first["gates"]["irp_candidates"].split("|")]
        assert [(sym, why) for sym, _, why in ranked if why == ""] == [("AAAUSDT", "")]
        assert [sym for sym, _, _ in ranked] == [c["symbol"] for c in ranking["candidates"]]


async def test_irp_skips_assets_the_venue_cannot_take_and_names_the_gate(
        metrics: Metrics) -> None:
    """Issue 15/16: eligibility beyond the allowlist. The venue's exchangeInfo decides too: a
    symbol it does not list (or not TRADING) is ``venue_symbol``, one where the sized order
    falls below MIN_NOTIONAL or the min quantity is ``min_notional``; IRP takes the next asset
    and the ranking says why. The check is the real one the daemon wires (app.py)."""
    class Venue:
        def __init__(self, filters: dict[str, Any]) -> None:
            self.filters = filters

        def filters_for(self, symbol: str) -> Any:
            return self.filters.get(symbol)

    listed = {s: fallback_filters(s) for s in SYMS}
    async with running(StageRig(metrics)) as rig:
        engine = rig.stage.engine
        await rig.bars(100, vel_div=-0.03)
        assert rig.stage.entry_rankings[-1]["symbol"] == "AAAUSDT"  # IRP pick, all tradeable
        for gate, filters in (
                ("venue_symbol", {s: f for s, f in listed.items() if s != "AAAUSDT"}),
                ("venue_symbol", {**listed, "AAAUSDT": dataclasses.replace(
                    listed["AAAUSDT"], status="SETTLING")}),
                ("min_notional", {**listed, "AAAUSDT": dataclasses.replace(
                    listed["AAAUSDT"], min_notional=Decimal("1e12"))}),
                ("min_notional", {**listed, "AAAUSDT": dataclasses.replace(
                    listed["AAAUSDT"], min_qty=Decimal("1e12"), market_min_qty=Decimal("1e12"))}),
        ):
            engine.set_venue_check(venue_entry_check(Venue(filters)))
            before = len(rig.stage.entry_rankings)
            await rig.bars(30, vel_div=-0.03)
            later = list(rig.stage.entry_rankings)[before:]
            assert later, gate  # entries were still made: on the next eligible asset
            for r in later:
                assert r["symbol"] != "AAAUSDT", (gate, r)
                assert any(c["symbol"] == "AAAUSDT" and c["excluded_by"] == gate
                           for c in r["candidates"]), (gate, r)
        # The venue takes it again: AAA is IRP's pick once more.
        engine.set_venue_check(venue_entry_check(Venue(listed)))
        before = len(rig.stage.entry_rankings)
        await rig.bars(30, vel_div=-0.03)
        assert any(r["symbol"] == "AAAUSDT" for r in list(rig.stage.entry_rankings)[before:])


async def test_market_data_funding_feeds_the_acb_at_bar_time(metrics: Metrics,
                                                              tmp_path: Path) -> None:
    """Issue 16: a replay's funding prints reach the ACB (bible §10.2), read at the bar's own
    time; the bus or the factors file, when present, still win."""
    seen: list[int] = []

    def factors(ts_ns: int) -> ExternalFactors | None:
        seen.append(ts_ns)
        return None if ts_ns < T0 + 3 * BAR_NS else ExternalFactors(funding_btc=-0.0002)

    async with running(StageRig(metrics, market_factors=factors)) as rig:
        await rig.bars(3)
        assert rig.status()["acb_boost"] == 1.0
        await rig.bars(2)
        assert seen == [T0 + k * BAR_NS for k in range(5)]
        st = rig.status()
        assert st["acb_boost"] > 1.3 and "funding=1" in st["acb_reason"]
        # A factors file takes precedence over the market data.
        (tmp_path / "exf.json").write_text('{"funding_btc": 0.001}')
        rig.config = Config(source=str(tmp_path / "d.toml"), scan=ScanConfig(min_symbols=0),
                            strategy=StrategyConfig(external_factors_file="exf.json"))
        await rig.bars(2)
        assert rig.status()["acb_boost"] == 1.0


async def test_status_states_the_mc_gate_fallback(metrics: Metrics) -> None:
    async with running(StageRig(metrics)) as rig:
        await rig.bars(1)
        st = rig.status()
        assert st["mc_source"] == "FALLBACK_NO_MODEL"
        assert "fallback ORANGE" in st["mc_statement"] and "half" in st["mc_statement"]
