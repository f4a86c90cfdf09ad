"""The live ACB external-factor producer (bible §10.2, issue 16).

Inside the daemon, every ``external_factors.interval_s`` it fetches:

- ``funding_btc``: BTCUSDT's latest settled funding rate, Binance USDT-M public REST
  ``GET /fapi/v1/fundingRate?symbol=BTCUSDT&limit=1`` -> ``[{"fundingRate": "0.0001", ...}]``;
- ``taker``: BTCUSDT's taker buy/sell volume ratio over the last 5 minutes,
  ``GET /futures/data/takerlongshortRatio?symbol=BTCUSDT&period=5m&limit=1`` ->
  ``[{"buySellRatio": "0.95", ...}]``;
- ``dvol_btc``: from ``dvol_url``: Deribit's ``get_volatility_index_data`` shape
  (``{"result": {"data": [[ts, open, high, low, close], ...]}}``, the last close) or
  ``{"value": x}``;
- ``fng``: from ``fng_url``: alternative.me's ``{"data": [{"value": "25", ...}]}`` or
  ``{"value": x}``;

and publishes ``DOLPHIN_FEATURES/exf_latest`` on the state bus (the alpha stage reads it;
bible §10.5: applied at the next bar). Every key is always published: a source that failed, is
not configured, or whose last good value is older than ``max_age_intervals`` intervals is
``null`` (absent), never a guess or a default. /status shows each source's value, age and
last problem. Nothing here decides a trade: the ACB does, from what is published.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp
import structlog

from dolphind.config import Config, ExternalFactorsConfig
from dolphind.statebus.base import FEATURES, StateBus

log = structlog.get_logger("dolphind.exf")

EXF_KEY = "exf_latest"
FUNDING_PATH = "/fapi/v1/fundingRate?symbol=BTCUSDT&limit=1"
TAKER_PATH = "/futures/data/takerlongshortRatio?symbol=BTCUSDT&period=5m&limit=1"
FACTORS = ("funding_btc", "dvol_btc", "fng", "taker")


class SourceError(Exception):
    """A source answered with something we cannot read as its factor."""


def _number(v: Any, what: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise SourceError(f"{what}: not a number: {v!r}") from None
    if not math.isfinite(x):
        raise SourceError(f"{what}: not finite: {v!r}")
    return x


def parse_funding(payload: Any) -> float:
    if not isinstance(payload, list) or not payload or not isinstance(payload[-1], dict):
        raise SourceError(f"fundingRate: expected a non-empty list of objects, got {payload!r:.80}")
    return _number(payload[-1].get("fundingRate"), "fundingRate")


def parse_taker(payload: Any) -> float:
    if not isinstance(payload, list) or not payload or not isinstance(payload[-1], dict):
        raise SourceError(f"takerlongshortRatio: expected a non-empty list, got {payload!r:.80}")
    return _number(payload[-1].get("buySellRatio"), "buySellRatio")


def parse_dvol(payload: Any) -> float:
    if isinstance(payload, dict) and "value" in payload:
        return _number(payload["value"], "dvol value")
    try:
        rows = payload["result"]["data"]
        return _number(rows[-1][4], "dvol close")
    except (KeyError, IndexError, TypeError):
        raise SourceError(f"dvol: neither {{'value': x}} nor Deribit's result.data rows: "
                          f"{payload!r:.80}") from None


def parse_fng(payload: Any) -> float:
    if isinstance(payload, dict) and "value" in payload:
        return _number(payload["value"], "fng value")
    try:
        return _number(payload["data"][0]["value"], "fng value")
    except (KeyError, IndexError, TypeError):
        raise SourceError(f"fng: neither {{'value': x}} nor alternative.me's data[0].value: "
                          f"{payload!r:.80}") from None


@dataclass
class SourceState:
    """One factor's last good value and what went wrong since, for /status."""

    url: str
    value: float | None = None
    at: float | None = None  # monotonic time of the last good value
    problem: str | None = None
    fetches: int = 0
    failures: int = 0


class ExfProducer:
    """A daemon stage: fetch on a schedule, publish on the bus, never raise for a source."""

    name = "exf"
    is_source = True  # never ends by itself: cancelled at shutdown like the feed
    output = None  # it publishes on the state bus: no stage reads from it

    def __init__(self, config: Callable[[], Config], bus: StateBus,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._bus = bus
        self._mono = monotonic
        c = config().external_factors
        base = c.binance_rest_url.rstrip("/")
        self.sources: dict[str, SourceState] = {
            "funding_btc": SourceState(base + FUNDING_PATH),
            "taker": SourceState(base + TAKER_PATH),
            "dvol_btc": SourceState(c.dvol_url),
            "fng": SourceState(c.fng_url),
        }
        self._parsers = {"funding_btc": parse_funding, "taker": parse_taker,
                         "dvol_btc": parse_dvol, "fng": parse_fng}
        self.published: dict[str, float | None] | None = None
        self.rounds = 0

    @property
    def _settings(self) -> ExternalFactorsConfig:
        return self._config().external_factors

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            while True:
                await self.fetch_once(session)
                await asyncio.sleep(self._settings.interval_s)

    async def fetch_once(self, session: aiohttp.ClientSession) -> dict[str, float | None]:
        """One round: every configured source at once, then publish what is fresh."""
        names = [n for n, s in self.sources.items() if s.url]
        await asyncio.gather(*(self._fetch(session, n) for n in names))
        payload = self.current()
        self._bus.put(FEATURES, EXF_KEY, payload)
        self.published = payload
        self.rounds += 1
        log.info("exf.published", **payload)
        return payload

    async def _fetch(self, session: aiohttp.ClientSession, name: str) -> None:
        st = self.sources[name]
        st.fetches += 1
        try:
            async with session.get(st.url) as resp:
                if resp.status != 200:
                    raise SourceError(f"HTTP {resp.status}")
                body = await resp.json(content_type=None)
            st.value = self._parsers[name](body)
            st.at = self._mono()
            st.problem = None
        except (SourceError, aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            st.failures += 1
            st.problem = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SourceError) \
                else str(exc)
            log.warning("exf.source_failed", factor=name, problem=st.problem)

    def current(self) -> dict[str, float | None]:
        """The payload to publish: each factor's value while fresh, else None (absent)."""
        max_age = self._settings.interval_s * self._settings.max_age_intervals
        now = self._mono()
        out: dict[str, float | None] = {}
        for name in FACTORS:
            st = self.sources[name]
            fresh = st.value is not None and st.at is not None and now - st.at <= max_age
            out[name] = st.value if fresh else None
        return out

    def status(self) -> dict[str, Any]:
        now = self._mono()
        return {"rounds": self.rounds, "published": self.published,
                "sources": {n: {"url": s.url or None, "value": s.value,
                                "age_s": None if s.at is None else round(now - s.at, 3),
                                "problem": s.problem if s.url else "not configured",
                                "fetches": s.fetches, "failures": s.failures}
                            for n, s in self.sources.items()}}
