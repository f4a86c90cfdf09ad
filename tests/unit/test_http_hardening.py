"""The ops HTTP server against hostile requests (issue 17): bounded bodies, every response
counted, idle sockets closed, and no header value in any log line (aiohttp's included).

The real app and the real server class on loopback; requests written byte for byte where a
client library would refuse them.
"""

from __future__ import annotations

import asyncio
import logging
import types

import pytest

from dolphind.control import Control
from dolphind.ops.http import MAX_BODY_DEPTH, HttpServer, build_app, json_depth
from dolphind.telemetry.metrics import Metrics

TOKEN = "s3cret-token-value"


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()  # built off the loop: the process collector reads /proc


def _daemon(metrics: Metrics, status: object = None) -> types.SimpleNamespace:
    def _status() -> object:
        if isinstance(status, Exception):
            raise status
        return {"ok": True}
    return types.SimpleNamespace(control=Control(metrics, lambda cause: None), metrics=metrics,
                                 pipeline=None, status=_status)


async def _raw(port: int, head: bytes, body: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + body)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
        await writer.wait_closed()


def _post(path: str, body: bytes, token: bytes = TOKEN.encode()) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n").encode() \
        + b"X-Dolphind-Token: " + token + b"\r\n\r\n"


def _count(metrics: Metrics, route: str, status: str) -> float:
    return metrics.registry.get_sample_value("dolphind_http_requests_total",
                                             {"route": route, "status": status}) or 0.0


async def _server(metrics: Metrics, daemon: types.SimpleNamespace,
                  header_timeout_s: float = 10.0) -> HttpServer:
    return HttpServer(build_app(daemon, TOKEN), "127.0.0.1", 0, header_timeout_s)


async def test_a_deeply_nested_body_is_a_counted_400(metrics: Metrics) -> None:
    body = b"[" * 30_000 + b"]" * 30_000  # 60 KB, under the size limit
    async with await _server(metrics, _daemon(metrics)) as srv:
        resp = await _raw(srv.bound[1], _post("/kill", body), body)
        shallow = b'{"action": "halt", "reason": ' + b"[" * (MAX_BODY_DEPTH + 1) \
            + b"]" * (MAX_BODY_DEPTH + 1) + b"}"
        resp2 = await _raw(srv.bound[1], _post("/kill", shallow), shallow)
    assert resp.startswith(b"HTTP/1.1 400 "), resp[:200]
    assert resp2.startswith(b"HTTP/1.1 400 ") and b"nested" in resp2, resp2[:300]
    assert _count(metrics, "/kill", "400") == 2


async def test_an_oversized_body_is_a_counted_413(metrics: Metrics) -> None:
    body = b'{"reason": "' + b"x" * 70_000 + b'"}'
    async with await _server(metrics, _daemon(metrics)) as srv:
        resp = await _raw(srv.bound[1], _post("/kill", body), body)
    assert resp.startswith(b"HTTP/1.1 413 "), resp[:200]
    assert _count(metrics, "/kill", "413") == 1


async def test_a_failing_handler_is_a_counted_500_that_names_no_request_data(
        metrics: Metrics, capsys: pytest.CaptureFixture[str]) -> None:
    daemon = _daemon(metrics, status=RuntimeError(f"boom {TOKEN}"))
    async with await _server(metrics, daemon) as srv:
        resp = await _raw(srv.bound[1], b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close"
                          b"\r\nX-Dolphind-Token: " + TOKEN.encode() + b"\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 500 "), resp[:200]
    assert _count(metrics, "/status", "500") == 1
    assert TOKEN not in capsys.readouterr().out


@pytest.mark.parametrize("header", [
    b"X-Dolphind-Token: " + TOKEN.encode() + b"\x01ctl",  # a control character: parser error
    b"X-Dolphind-Token " + TOKEN.encode(),                 # no colon: parser error
    b"X-Dolphind-Token: " + TOKEN.encode() + b"\r\n X-folded",  # obsolete line folding
])
async def test_no_header_value_reaches_any_log_line(
        metrics: Metrics, header: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with await _server(metrics, _daemon(metrics)) as srv:
        resp = await _raw(srv.bound[1], b"POST /kill HTTP/1.1\r\nHost: x\r\nContent-Length: 0"
                          b"\r\nConnection: close\r\n" + header + b"\r\n\r\n")
    assert resp.split(b" ", 2)[1].startswith(b"4"), resp[:200]  # the sender sees its error
    text = "\n".join(r.getMessage() + str(r.exc_info) + str(r.exc_text) for r in caplog.records)
    assert TOKEN[:8] not in text, text


async def test_a_socket_that_never_completes_its_request_head_is_closed(
        metrics: Metrics) -> None:
    async with await _server(metrics, _daemon(metrics), header_timeout_s=0.5) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.bound[1])
        writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        await writer.drain()
        # Closed by the server long before this bound (without the timeout: after ~1 hour).
        data = await asyncio.wait_for(reader.read(), 15)
        writer.close()
        await writer.wait_closed()
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", srv.bound[1])
        idle = await asyncio.wait_for(idle_reader.read(), 15)  # sends nothing at all
        idle_writer.close()
        await idle_writer.wait_closed()
    assert b" 200 " not in data and idle == b""


def test_json_depth() -> None:
    assert json_depth(1) == 0 and json_depth({}) == 1 and json_depth([[{"a": [1]}]]) == 4
