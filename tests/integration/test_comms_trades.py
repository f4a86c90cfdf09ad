"""The comms plugin in the real daemon: entries and exits with their PnL reach a loopback
generic webhook, the same trades /trades reports (the plugin reaches the daemon only through
the plugin API: on_fill and the on_trade hook)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import wait_until
from tests.integration.harness import Daemon, free_port, write_config

pytestmark = pytest.mark.integration
HOOK_ENV = "DOLPHIND_TEST_TRADE_HOOK"


@pytest.fixture
def hook() -> Iterator[tuple[list[dict[str, Any]], str]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received, f"http://127.0.0.1:{server.server_address[1]}/hook/secret-part"
    server.shutdown()
    server.server_close()


def test_entries_and_exits_with_pnl_reach_the_webhook(
        tmp_path: Path, hook: tuple[list[dict[str, Any]], str]) -> None:
    received, url = hook
    port = free_port()
    cfg = write_config(tmp_path / "d.toml", port, speed=3000.0, extra=f"""
[plugins]
enabled = ["comms"]

[plugins.comms]
url_env = "{HOOK_ENV}"
format = "webhook"
title = "itest"
max_per_minute = 600
""")
    d = Daemon(cfg, port, env={HOOK_ENV: url}).start()
    try:
        d.wait_ready(timeout=120)
        wait_until(lambda: sum(1 for m in received if m["event"] == "exit") >= 2, timeout=120,
                   what="two exit messages")
        trades = d.get_json("/trades?limit=10000")["trades"]
        status = d.get_json("/status")
    finally:
        d.stop()
    exits = [m for m in received if m["event"] == "exit"]
    entries = [m for m in received if m["event"] == "entry"]
    assert len(entries) >= len(exits)
    oldest = trades[-1]  # /trades is newest first
    first = exits[0]["data"]
    assert (first["symbol"], first["exit_reason"]) == (oldest["symbol"], oldest["exit_reason"])
    assert first["pnl_usdt"] == pytest.approx(oldest["pnl_usdt"], abs=1e-9)
    assert f"PnL {oldest['pnl_usdt']:+,.2f} USDT" in exits[0]["text"]
    assert entries[0]["data"]["symbol"] == oldest["symbol"]
    assert "[itest] ENTRY" in entries[0]["text"]
    comms = next(p for p in status["plugins"] if p["name"] == "comms")
    assert "on_trade" in comms["hooks"] and comms["detail"]["sent"] >= 3
    assert url not in d.logs() and "secret-part" not in d.logs()
