"""The live external-factor producer inside the real daemon (issue 16).

A loopback HTTP fake (in this process, on 127.0.0.1) answers the four public endpoints with
their documented payload shapes; the daemon (a subprocess replaying the bundled sample) runs
the producer, the state bus carries its payload to the alpha stage, and the ACB boost the
strategy sizes with moves. The DVOL source is then broken: it is reported and published as
absent, never guessed.
"""

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

# Payload shapes of the public documentation (Binance USDT-M, Deribit, alternative.me).
BODIES: dict[str, Any] = {
    "/fapi/v1/fundingRate": [{"symbol": "BTCUSDT", "fundingTime": 1698768000000,
                              "fundingRate": "-0.00010000", "markPrice": "34287.5"}],
    "/futures/data/takerlongshortRatio": [{"buySellRatio": "0.7586", "buyVol": "387.33",
                                           "sellVol": "510.50", "timestamp": "1585614900000"}],
    "/api/v2/public/get_volatility_index_data": {
        "jsonrpc": "2.0", "result": {"data": [[1598019300000, 61.1, 85.2, 60.9, 84.9]],
                                     "continuation": None}},
    "/fng/": {"name": "Fear and Greed Index",
              "data": [{"value": "21", "value_classification": "Extreme Fear"}]},
}


class Fake:
    def __init__(self) -> None:
        self.broken: set[str] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                path = self.path.split("?", 1)[0]
                body = BODIES.get(path)
                status = 503 if path in fake.broken else 200 if body is not None else 404
                data = json.dumps(body).encode() if status == 200 else b"unavailable"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[Fake]:
    f = Fake()
    try:
        yield f
    finally:
        f.close()


def test_the_producer_feeds_the_acb_of_the_running_daemon(tmp_path: Path, fake: Fake) -> None:
    port = free_port()
    extra = f"""
[external_factors]
enabled = true
binance_rest_url = "{fake.url}"
dvol_url = "{fake.url}/api/v2/public/get_volatility_index_data?currency=BTC&resolution=60"
fng_url = "{fake.url}/fng/?limit=1"
interval_s = 10.0
timeout_s = 2.0
max_age_intervals = 1
"""
    d = Daemon(write_config(tmp_path / "dolphind.toml", port, extra=extra,
                            data_dir=str(tmp_path / "var")), port).start()
    try:
        d.wait_ready(timeout=60)

        def alpha() -> dict[str, Any]:
            return d.get_json("/status")["alpha"]

        wait_until(lambda: alpha()["external_factors"]["source"] == "bus", timeout=30,
                   what="the producer's payload in the alpha stage")
        wait_until(lambda: alpha()["acb_boost"] > 1.0, timeout=30, what="the ACB boost moved")
        a = alpha()
        assert a["external_factors"]["payload"] == {
            "funding_btc": -0.0001, "dvol_btc": 84.9, "fng": 21.0, "taker": 0.7586}
        assert "missing" not in a["acb_reason"]
        st = d.get_json("/status")["external_factors"]
        assert st["sources"]["funding_btc"]["problem"] is None and st["rounds"] >= 1
        # DVOL breaks: after max_age_intervals it is published as absent, with the cause.
        fake.broken.add("/api/v2/public/get_volatility_index_data")
        wait_until(lambda: alpha()["external_factors"]["payload"]["dvol_btc"] is None,
                   timeout=45, what="DVOL published as absent")
        st = d.get_json("/status")["external_factors"]
        assert st["sources"]["dvol_btc"]["problem"] == "HTTP 503"
        assert "dvol" in alpha()["acb_reason"]  # named among the missing factors
    finally:
        assert d.stop() == 0
