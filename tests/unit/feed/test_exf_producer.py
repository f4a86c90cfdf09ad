"""The live external-factor producer (issue 16) against loopback HTTP fakes.

The fakes answer with the public payload shapes (Binance USDT-M docs examples for
``/fapi/v1/fundingRate`` and ``/futures/data/takerlongshortRatio``, Deribit's
``public/get_volatility_index_data``, alternative.me's ``/fng/``); a source that fails or goes
stale is published as null, never guessed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from dolphind.alpha.acb import compute_boost, parse_external_factors
from dolphind.alpha.params import CHAMPION
from dolphind.config import Config, ConfigError, ExternalFactorsConfig, config_from_dict
from dolphind.feed.exf import EXF_KEY, ExfProducer
from dolphind.statebus.base import FEATURES
from dolphind.statebus.memory import MemoryStateBus

FUNDING = [{"symbol": "BTCUSDT", "fundingTime": 1698768000000, "fundingRate": "-0.00010000",
            "markPrice": "34287.54619963"}]
TAKER = [{"buySellRatio": "0.7586", "buyVol": "387.3300", "sellVol": "510.5030",
          "timestamp": "1585614900000"}]
DVOL = {"jsonrpc": "2.0", "result": {"data": [[1598019300000, 61.1, 62.0, 60.9, 61.5],
                                               [1598019360000, 61.5, 85.2, 61.4, 84.9]],
                                      "continuation": None}}
FNG = {"name": "Fear and Greed Index", "data": [{"value": "21", "value_classification":
                                                  "Extreme Fear", "timestamp": "1551157200"}],
       "metadata": {"error": None}}


class Fakes:
    def __init__(self) -> None:
        self.fail: set[str] = set()
        self.hits: dict[str, int] = {}

    def handler(self, name: str, body: Any) -> Any:
        async def handle(request: web.Request) -> web.Response:
            self.hits[name] = self.hits.get(name, 0) + 1
            if name in self.fail:
                return web.Response(status=503, text="unavailable")
            return web.json_response(body)
        return handle


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Fakes]]:
    fakes = Fakes()
    app = web.Application()
    app.router.add_get("/fapi/v1/fundingRate", fakes.handler("funding", FUNDING))
    app.router.add_get("/futures/data/takerlongshortRatio", fakes.handler("taker", TAKER))
    app.router.add_get("/api/v2/public/get_volatility_index_data", fakes.handler("dvol", DVOL))
    app.router.add_get("/fng/", fakes.handler("fng", FNG))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", fakes
    finally:
        await runner.cleanup()


def producer(base: str, clock: list[float], **over: Any) -> tuple[ExfProducer, MemoryStateBus]:
    x = ExternalFactorsConfig(enabled=True, binance_rest_url=base,
                              dvol_url=f"{base}/api/v2/public/get_volatility_index_data"
                                       "?currency=BTC&resolution=60",
                              fng_url=f"{base}/fng/?limit=1", interval_s=60.0, **over)
    cfg = dataclasses.replace(Config(), external_factors=x)
    bus = MemoryStateBus()
    return ExfProducer(lambda: cfg, bus, monotonic=lambda: clock[0]), bus


async def test_every_source_is_fetched_and_published_for_the_acb(server: tuple[str, Fakes]) -> None:
    base, fakes = server
    clock = [1000.0]
    p, bus = producer(base, clock)
    async with aiohttp.ClientSession() as session:
        await p.fetch_once(session)
    payload = bus.get(FEATURES, EXF_KEY)
    assert payload == {"funding_btc": -0.0001, "dvol_btc": 84.9, "fng": 21.0, "taker": 0.7586}
    assert fakes.hits == {"funding": 1, "taker": 1, "dvol": 1, "fng": 1}
    # What the alpha stage does with it: every §10.2 factor fires.
    boost = compute_boost(parse_external_factors(payload), CHAMPION)
    assert boost.boost > 1.0 and "missing" not in boost.reason


async def test_a_failing_or_stale_source_is_absent_never_invented(
        server: tuple[str, Fakes]) -> None:
    base, fakes = server
    clock = [1000.0]
    p, bus = producer(base, clock)
    async with aiohttp.ClientSession() as session:
        await p.fetch_once(session)
        fakes.fail.add("fng")
        clock[0] += 60.0
        await p.fetch_once(session)
        # The last good fng is still young (max age: 3 intervals): kept, with the problem shown.
        assert bus.get(FEATURES, EXF_KEY)["fng"] == 21.0
        assert p.status()["sources"]["fng"]["problem"] == "HTTP 503"
        clock[0] += 3 * 60.0 + 1.0
        await p.fetch_once(session)
    payload = bus.get(FEATURES, EXF_KEY)
    assert payload["fng"] is None  # too old now: absent
    assert payload["funding_btc"] == -0.0001 and payload["taker"] == 0.7586
    st = p.status()["sources"]["fng"]
    assert st["failures"] == 2 and st["fetches"] == 3
    parse_external_factors(payload)  # still a valid payload for the ACB


async def test_unconfigured_and_malformed_sources(server: tuple[str, Fakes]) -> None:
    base, _ = server
    clock = [0.0]
    x = ExternalFactorsConfig(enabled=True, binance_rest_url=base + "/nope", interval_s=60.0)
    cfg = dataclasses.replace(Config(), external_factors=x)
    bus = MemoryStateBus()
    p = ExfProducer(lambda: cfg, bus, monotonic=lambda: clock[0])
    async with aiohttp.ClientSession() as session:
        await p.fetch_once(session)
    assert bus.get(FEATURES, EXF_KEY) == {k: None for k in ("funding_btc", "dvol_btc", "fng",
                                                            "taker")}
    st = p.status()["sources"]
    assert st["dvol_btc"]["problem"] == "not configured" and st["dvol_btc"]["fetches"] == 0
    assert st["funding_btc"]["problem"] == "HTTP 404"


def test_the_producer_settings_are_validated() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"external_factors": {"interval_s": 1.0, "dvol_url": "ftp://x",
                                               "timeout_s": 0.0}})
    problems = err.value.problems
    assert "external_factors.interval_s: must be 10-86400" in problems
    assert "external_factors.timeout_s: must be 0.1-60" in problems
    assert any(p.startswith("external_factors.dvol_url: must be an http(s) URL") for p in problems)
