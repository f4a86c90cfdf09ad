"""/positions, /orders and the token-protected POST /flatten on the real ops app."""

from __future__ import annotations

import types
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dolphind.control import Control
from dolphind.ops.http import TOKEN_HEADER, build_app
from dolphind.telemetry.metrics import Metrics


class FakeStage:
    """Stands in for ExecutionStage's two view methods (the stage itself is tested in
    test_stage.py; here only the HTTP wiring is under test)."""

    def positions_view(self) -> dict[str, Any]:
        return {"positions": [{"symbol": "BTCUSDT", "qty": -0.05}], "equity_usdt": 10_019.4}

    def orders_view(self) -> dict[str, Any]:
        return {"working": [], "recent": [{"client_id": "dd-1", "state": "filled"}]}


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


async def test_views_and_flatten(metrics):
    control = Control(metrics, lambda cause: None)
    actions = []
    control.subscribe(actions.append)
    daemon = types.SimpleNamespace(control=control, metrics=metrics,
                                   pipeline=types.SimpleNamespace(execution=FakeStage()))
    async with TestClient(TestServer(build_app(daemon, "s3cret"))) as client:
        r = await client.get("/positions")
        assert r.status == 200 and (await r.json())["positions"][0]["qty"] == -0.05
        r = await client.get("/orders")
        assert (await r.json())["recent"][0]["state"] == "filled"
        r = await client.post("/flatten")
        assert r.status == 401 and not actions
        r = await client.post("/flatten", json={"reason": "drill"},
                              headers={TOKEN_HEADER: "s3cret"})
        assert r.status == 200 and (await r.json())["flatten_requested"]
        assert [a.action for a in actions] == ["halt", "flatten"] and control.halted
        r = await client.post("/flatten", json={"halt": False},
                              headers={TOKEN_HEADER: "s3cret"})
        assert [a.action for a in actions][-1] == "flatten" and control.flatten_requests == 2


async def test_views_without_an_execution_stage(metrics):
    daemon = types.SimpleNamespace(control=Control(metrics, lambda c: None), metrics=metrics,
                                   pipeline=types.SimpleNamespace())
    async with TestClient(TestServer(build_app(daemon, None))) as client:
        assert (await client.get("/positions")).status == 503
        assert (await client.post("/flatten")).status == 403  # no token: control disabled
