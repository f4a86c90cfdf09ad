"""The running daemon against bad config files and hostile HTTP (issue 17).

One real daemon: SIGHUP and POST /reload with a file nested 600 levels deep, and with files the
next start would refuse; the daemon keeps running on its old config, answers with the problems,
counts every failure; hostile HTTP bodies are counted 400/413 and no header value reaches the log.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import wait_until
from tests.integration.harness import TOKEN, Daemon, free_port, write_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("bad-input")
    port = free_port()
    d = Daemon(write_config(tmp / "dolphind.toml", port), port).start()
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


def _failures(d: Daemon) -> float:
    return d.metric("dolphind_config_reload_failures_total") or 0.0


def _reload_failed_with(d: Daemon, text: str, via: str) -> list[str]:
    good = d.config.read_text()
    before = _failures(d)
    hash_before = d.get_json("/status")["config"]["hash"]
    d.config.write_text(text)
    try:
        if via == "sighup":
            d.signal(signal.SIGHUP)
            wait_until(lambda: _failures(d) == before + 1, timeout=30, what="reload failure")
            result = d.get_json("/status")["last_reload"]
        else:
            code, result = d.post("/reload")
            assert code == 422, (code, result)
            assert _failures(d) == before + 1
    finally:
        d.config.write_text(good)
    assert d.proc is not None and d.proc.poll() is None, d.logs()[-2000:]
    assert result["ok"] is False
    assert d.get_json("/status")["config"]["hash"] == hash_before
    return result["problems"]


@pytest.mark.parametrize("via", ["sighup", "http"])
def test_a_deeply_nested_file_is_refused_and_the_daemon_lives(daemon: Daemon, via: str) -> None:
    text = daemon.config.read_text() + "\n[plugins.x]\nv = " + "[" * 600 + "]" * 600 + "\n"
    problems = _reload_failed_with(daemon, text, via)
    assert len(problems) == 1 and "nested too deeply" in problems[0], problems


@pytest.mark.parametrize("change,problem", [
    ('[plugins]\nenabled = ["not_installed_plugin"]\n',
     "plugin 'not_installed_plugin' is enabled but not installed"),
    ('[feed]\nkind = "replay"\n[execution]\nexchange_info = "missing.json"\n',
     "execution.exchange_info: cannot read"),
])
def test_a_reload_refuses_what_the_next_start_would_refuse(daemon: Daemon, change: str,
                                                           problem: str) -> None:
    problems = _reload_failed_with(daemon, daemon.config.read_text() + change, "http")
    assert any(problem in p for p in problems), problems


def test_a_reload_refuses_a_missing_replay_path_and_an_unwritable_data_dir(
        daemon: Daemon, tmp_path: Path) -> None:
    text = daemon.config.read_text()
    (tmp_path / "file").write_text("x")
    moved = text.replace('dir = "var"', f'dir = "{tmp_path / "file" / "var"}"')
    assert moved != text
    problems = _reload_failed_with(daemon, moved, "sighup")
    assert any(p.startswith("data.dir: cannot write in") for p in problems), problems
    gone = text.replace("paths = [", f'paths = ["{tmp_path / "gone"}", ')
    problems = _reload_failed_with(daemon, gone, "http")
    assert problems == [f"replay.paths: {tmp_path / 'gone'}: no such file or folder"], problems


def test_a_reload_that_moves_the_address_to_a_taken_port_says_so(daemon: Daemon) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = daemon.config.read_text().replace(f"127.0.0.1:{daemon.port}", f"127.0.0.1:{port}")
        problems = _reload_failed_with(daemon, text, "http")
    assert any(p.startswith(f"ops.listen: cannot listen on 127.0.0.1:{port}") for p in problems)


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_hostile_http_is_answered_counted_and_never_logged(daemon: Daemon) -> None:
    def count(status: str) -> float:
        return daemon.metric("dolphind_http_requests_total",
                             f'route="/kill",status="{status}"') or 0.0

    def post(body: bytes, extra: bytes = b"") -> bytes:
        return _raw(daemon.port, b"POST /kill HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\nX-Dolphind-Token: %s\r\n%s\r\n" % (
                        len(body), TOKEN.encode(), extra) + body)

    c400, c413 = count("400"), count("413")
    assert post(b"[" * 30_000 + b"]" * 30_000).startswith(b"HTTP/1.1 400 ")
    assert post(b'{"reason": "' + b"x" * 70_000 + b'"}').startswith(b"HTTP/1.1 413 ")
    assert count("400") == c400 + 1 and count("413") == c413 + 1
    secret = b"leak-me-" + TOKEN.encode()
    _raw(daemon.port, b"POST /kill HTTP/1.1\r\nHost: x\r\nX-Dolphind-Token: " + secret
         + b"\x01\r\n\r\n")
    assert daemon.get_json("/status")["control"]["halted"] is False
    wait_until(lambda: "Error handling request" in daemon.logs(), what="aiohttp's error line")
    assert TOKEN not in daemon.logs() and "leak-me" not in daemon.logs()


def test_the_data_dir_is_private_to_the_daemons_user(daemon: Daemon) -> None:
    """0700 folders and 0600 files (the umask run() sets): the books are nobody else's."""
    data = daemon.config.parent / "var"
    wait_until(lambda: (daemon.metric("dolphind_bars_total") or 0) >= 2, what="bars")
    assert data.stat().st_mode & 0o777 == 0o700
    found = {p.name: p.stat().st_mode & 0o777 for p in data.rglob("*")}
    assert {"dolphind.sqlite", "audit.jsonl", "dolphind.lock"} <= set(found), found
    loose = {name: oct(mode) for name, mode in found.items() if mode & 0o077}
    assert not loose, loose
