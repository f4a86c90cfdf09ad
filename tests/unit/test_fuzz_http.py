"""Fuzz: any HTTP body and any header get a 2xx/4xx answer from the ops server, never a 5xx,
every answer the app gives is counted, and no header value reaches a log line.

The real app and server class (``build_app``, ``HttpServer``) on loopback, in a thread with its
own event loop; hypothesis writes requests byte for byte on plain sockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import types
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dolphind.control import Control
from dolphind.ops.http import HttpServer, build_app
from dolphind.telemetry.metrics import Metrics

TOKEN = "fuzz-token-7c1e"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {record.exc_info} {record.exc_text}")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, Metrics, _Records]]:
    metrics = Metrics()
    daemon = types.SimpleNamespace(
        control=Control(metrics, lambda cause: None), metrics=metrics, pipeline=None,
        status=lambda: {"ok": True}, readiness=lambda: (True, {}),
        health_summary=lambda: {"level": "GREEN", "score": 1.0})

    async def reload_now(cause: str) -> dict[str, Any]:
        return {"ok": True}
    daemon.reload_now = reload_now
    records = _Records()
    root = logging.getLogger()
    root.addHandler(records)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with HttpServer(build_app(daemon, TOKEN), "127.0.0.1", 0) as srv:
            box["port"] = srv.bound[1]  # type: ignore[index]
            box["stop"] = asyncio.Event()
            started.set()
            await box["stop"].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        yield box["port"], metrics, records
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(30)
        root.removeHandler(records)
        root.setLevel(old_level)


def _send(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def _counted(metrics: Metrics) -> float:
    return sum(s.value for m in metrics.registry.collect()
               if m.name == "dolphind_http_requests" for s in m.samples
               if s.name == "dolphind_http_requests_total")


json_bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["action", "reason", "halt", "x"]), inner, max_size=3),
    max_leaves=10).map(lambda v: json.dumps(v).encode())
deep_bodies = st.tuples(st.integers(1, 20_000), st.sampled_from(["[", '{"a":'])).map(
    lambda t: (t[1] * t[0] + ("]" if t[1] == "[" else "}") * t[0]).encode())
bodies = json_bodies | deep_bodies | st.binary(max_size=400) | st.integers(60_000, 70_000).map(
    lambda n: b'{"reason": "' + b"x" * n + b'"}')


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["/kill", "/flatten", "/reload"]), bodies)
def test_any_body_is_answered_without_a_5xx_and_counted(
        server: tuple[int, Metrics, _Records], path: str, body: bytes) -> None:
    port, metrics, _ = server
    before = _counted(metrics)
    status = _send(port, b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Content-Length: %d\r\nX-Dolphind-Token: %s\r\n\r\n%s"
                   % (path.encode(), len(body), TOKEN.encode(), body))
    assert status < 500, (status, body[:80])
    assert _counted(metrics) == before + 1


header_names = st.text(st.characters(min_codepoint=33, max_codepoint=126,
                                     blacklist_characters=":"), min_size=1, max_size=12)
header_values = st.binary(max_size=40).map(lambda b: b.replace(b"\r\n", b"")).map(
    lambda b: TOKEN.encode() + b)  # every value carries the token: none may be logged


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(header_names, header_values), max_size=4),
       st.sampled_from([b"GET /status", b"POST /kill", b"GET /nowhere"]))
def test_any_header_is_answered_without_a_5xx_and_never_logged(
        server: tuple[int, Metrics, _Records], headers: list[tuple[str, bytes]],
        line: bytes) -> None:
    port, metrics, records = server
    head = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers)
    status = _send(port, line + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Content-Length: 0\r\n" + head + b"\r\n")
    assert status < 500, status
    leaked = [x for x in records.lines if TOKEN in x]
    assert not leaked, leaked
