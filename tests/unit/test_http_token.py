"""The control token check on the real ops app: every malformed token is a 401, never a 500."""

from __future__ import annotations

import asyncio
import types

import pytest
from aiohttp.test_utils import TestServer

from dolphind.control import Control
from dolphind.ops.http import build_app
from dolphind.telemetry.metrics import Metrics


async def _raw_post(server: TestServer, token_header: bytes) -> bytes:
    """POST /kill with a header written byte for byte (a client library would refuse it)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"POST /kill HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n"
                 + token_header + b"\r\n\r\n")
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    return response


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()  # built off the loop: the process collector reads /proc


@pytest.mark.parametrize("header", [
    b"X-Dolphind-Token: s3cre\xff",   # not UTF-8
    b"X-Dolphind-Token: S3CRET",
    b"X-Other: s3cret",
])
async def test_malformed_or_wrong_tokens_are_401(header: bytes, metrics: Metrics) -> None:
    control = Control(metrics, lambda cause: None)
    daemon = types.SimpleNamespace(control=control, metrics=metrics, pipeline=None)
    async with TestServer(build_app(daemon, "s3cret")) as server:
        status_line = (await _raw_post(server, header)).split(b"\r\n", 1)[0]
    assert b" 401 " in status_line, status_line
    assert not control.halted


async def test_the_right_token_still_works(metrics: Metrics) -> None:
    control = Control(metrics, lambda cause: None)
    daemon = types.SimpleNamespace(control=control, metrics=metrics, pipeline=None)
    async with TestServer(build_app(daemon, "s3cret")) as server:
        status_line = (await _raw_post(server, b"X-Dolphind-Token: s3cret")).split(b"\r\n", 1)[0]
    assert b" 200 " in status_line, status_line
    assert control.halted
