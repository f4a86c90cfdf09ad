"""The shipped process-manager files, exercised for real: supervisord runs the daemon from
supervisor/dolphind.conf; systemd-analyze verifies systemd/dolphind.service."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dolphind.config import load_config
from tests.conftest import wait_until
from tests.integration.harness import REPO, TOKEN, Daemon, free_port, write_config

pytestmark = pytest.mark.integration
DEFAULT_SHUTDOWN_S = load_config(REPO / "dolphind.toml").shutdown_timeout_s


def _program_section() -> configparser.SectionProxy:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(REPO / "supervisor" / "dolphind.conf")
    return parser["program:dolphind"]


def test_supervisor_conf_is_sane() -> None:
    prog = _program_section()
    assert int(prog["stopwaitsecs"]) > DEFAULT_SHUTDOWN_S
    assert prog["stopsignal"] == "TERM"
    assert prog["autorestart"] == "unexpected" and prog["exitcodes"] == "0"
    assert " run --config " in prog["command"]


def _supervisorctl(conf: Path, *args: str) -> str:
    res = subprocess.run(["supervisorctl", "-c", str(conf), *args], capture_output=True,
                         text=True, timeout=60)
    return res.stdout + res.stderr


def test_supervisord_starts_reloads_and_stops_the_daemon(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "dolphind.toml", port)
    prog = dict(_program_section())
    # Adapt the shipped program to the temp dir; every other setting is used as shipped.
    dolphind_bin = Path(sys.executable).parent / "dolphind"
    prog["command"] = prog["command"].replace("/opt/dolphind/.venv/bin/dolphind",
                                              str(dolphind_bin)).replace(
        "/etc/dolphind/dolphind.toml", str(cfg))
    prog["directory"] = str(tmp_path)
    prog.pop("user")
    prog["stdout_logfile"] = str(tmp_path / "dolphind.log")
    prog["environment"] += f',DOLPHIND_OPS_TOKEN="{TOKEN}",PYTHONPATH="{REPO}"'
    sock = tmp_path / "s.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        f"[unix_http_server]\nfile={sock}\n\n"
        f"[supervisord]\nlogfile={tmp_path / 'supervisord.log'}\npidfile={tmp_path / 'sd.pid'}\n"
        f"childlogdir={tmp_path}\n\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
        f"[supervisorctl]\nserverurl=unix://{sock}\n\n[program:dolphind]\n"
        + "".join(f"{k}={v}\n" for k, v in prog.items()))
    supervisord = subprocess.Popen(["supervisord", "-n", "-c", str(conf)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "dolphind" in _supervisorctl(conf, "status"), timeout=30,
                   what="supervisord up")
        assert "STOPPED" in _supervisorctl(conf, "status", "dolphind")  # autostart=false
        out = _supervisorctl(conf, "start", "dolphind")
        assert "started" in out, out
        assert "RUNNING" in _supervisorctl(conf, "status", "dolphind")
        d = Daemon(cfg, port)
        d.log_path = tmp_path / "dolphind.log"
        wait_until(lambda: d.get("/readyz")[0] == 200, timeout=60, what="ready under supervisord")
        # Operators reload with a signal through supervisorctl too.
        assert "signalled" in _supervisorctl(conf, "signal", "HUP", "dolphind")
        wait_until(lambda: any(e.get("event") == "config.reloaded" for e in d.events()),
                   what="reload under supervisord")
        out = _supervisorctl(conf, "stop", "dolphind")
        assert "stopped" in out, out
        status = _supervisorctl(conf, "status", "dolphind")
        assert "STOPPED" in status, status
        names = [e.get("event") for e in d.events()]
        assert "daemon.stopped" in names  # a clean drain, not a SIGKILL after stopwaitsecs
    finally:
        supervisord.terminate()
        supervisord.wait(30)


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(REPO / "systemd" / "dolphind.service")
    return parser


def test_systemd_unit_is_sane_and_verifies(tmp_path: Path) -> None:
    svc = _unit()["Service"]
    assert svc["Type"] == "notify"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["Restart"] == "on-failure"
    for key in ("MemoryMax", "TasksMax", "CPUQuota", "WatchdogSec"):
        assert svc[key]
    assert int(svc["TimeoutStopSec"]) > DEFAULT_SHUTDOWN_S
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: .ci/run installs systemd")
    unit = tmp_path / "dolphind.service"
    unit.write_text((REPO / "systemd" / "dolphind.service").read_text().replace(
        "/opt/dolphind/.venv/bin/dolphind", str(Path(sys.executable).parent / "dolphind")))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    assert res.returncode == 0, res.stderr
    assert "dolphind.service" not in res.stderr, res.stderr  # no warnings about our unit
