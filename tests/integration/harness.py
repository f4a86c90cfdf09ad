"""Run the real daemon as a subprocess on loopback, with a config written for the test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
TOKEN = "test-token-3f9a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, port: int, extra: str = "", speed: float = 600.0,
                 data_dir: str = "var") -> Path:
    path.write_text(f"""
mode = "paper"
shutdown_timeout_s = 5.0

[ops]
listen = "127.0.0.1:{port}"

[data]
dir = "{data_dir}"

[replay]
paths = ["{SAMPLE}"]
speed = {speed}
loop = true

[logging]
format = "json"
{extra}
""")
    return path


@dataclass
class Daemon:
    config: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self) -> "Daemon":
        env = {**os.environ, "DOLPHIND_OPS_TOKEN": TOKEN, **self.env}
        self.log_path = self.config.with_suffix(".log")
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dolphind.cli", "run", "--config", str(self.config)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.config.parent)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:  # it holds the response's socket: close it now, not at some later GC
                return exc.code, exc.read()

    def get_json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (status, body)
        return json.loads(body)

    def post(self, path: str, body: Any = None, token: str | None = TOKEN) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST")
        if token is not None:
            req.add_header("X-Dolphind-Token", token)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"null")

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.logs()}")
            return self.get("/readyz")[0] == 200
        wait_until(ready, timeout=timeout, what="daemon ready")

    def metric(self, name: str, labels: str = "") -> float | None:
        _, body = self.get("/metrics")
        prefix = f"{name}{{{labels}}} " if labels else f"{name} "
        for line in body.decode().splitlines():
            if line.startswith(prefix):
                return float(line.rsplit(" ", 1)[1])
        return None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        t0 = time.monotonic()
        code = self.proc.wait(timeout)
        self.elapsed = time.monotonic() - t0
        return code
