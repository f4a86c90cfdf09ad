"""The shipped process-manager files, exercised for real: supervisord runs the daemon from
supervisor/dolphind.conf; systemd-analyze verifies systemd/dolphind.service."""

from __future__ import annotations

import configparser
import getpass
import os
import shutil
import site
import subprocess
import sys
import tempfile
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


def _service_user() -> tuple[str, str, int]:
    """(user, python, uid) the daemon runs as under supervisord, as in production: an
    unprivileged account. As root (supervisord switches users only then) that is ``nobody``,
    with an interpreter it can execute (this venv's, or the same CPython version's system
    one with this venv's packages on PYTHONPATH when the venv's base is private, e.g. under
    /root); otherwise the current user."""
    if os.geteuid() != 0:
        return getpass.getuser(), sys.executable, os.geteuid()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        ok = subprocess.run(["runuser", "-u", "nobody", "--", python, "-c", "import sys"],
                            capture_output=True, timeout=30).returncode == 0
        if ok:
            return "nobody", python, 65534
    pytest.fail(f"no python{version} that user nobody may execute (the venv's base is private)")


@pytest.mark.timeout(900)  # a cold numba compile as the service user: minutes on a busy machine
def test_supervisord_starts_reloads_and_stops_the_daemon(tmp_path: Path) -> None:
    port = free_port()
    user, python, uid = _service_user()
    # The service's own folder (as /var/lib/dolphind): owned by the service user, outside
    # pytest's private tmp root, which the service user cannot enter.
    home = Path(tempfile.mkdtemp(prefix="dolphind-deploy-"))
    os.chmod(home, 0o755)
    os.chown(home, uid, -1)
    cfg = write_config(home / "dolphind.toml", port)
    prog = dict(_program_section())
    # Adapt the shipped program's paths; every other setting (user= included) is as shipped.
    prog["command"] = prog["command"].replace("/opt/dolphind/.venv/bin/dolphind",
                                              f"{python} -m dolphind.cli").replace(
        "/etc/dolphind/dolphind.toml", str(cfg))
    prog["directory"] = prog["directory"].replace("/var/lib/dolphind", str(home))
    assert prog["user"] == "dolphind"
    prog["user"] = user
    prog["stdout_logfile"] = str(tmp_path / "dolphind.log")
    paths = ":".join([str(REPO), *site.getsitepackages()])
    prog["environment"] = prog["environment"].replace("/var/lib/dolphind", str(home)) \
        + f',DOLPHIND_OPS_TOKEN="{TOKEN}",PYTHONPATH="{paths}"'
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
        # The kernels compile from scratch (an empty numba cache): /healthz says STARTING
        # (200: alive) all that time, never DEAD; /readyz says 503 until they are done.
        health: list[tuple[int, bytes]] = []

        def ready() -> bool:
            health.append(d.get("/healthz") if d.get("/metrics")[0] == 200 else (0, b""))
            return d.get("/readyz")[0] == 200
        wait_until(ready, timeout=600, interval=0.5,
                   what=f"ready under supervisord: {d.logs()[-3000:]}")
        answered = [(code, body) for code, body in health if code]
        assert answered and all(code == 200 for code, _ in answered), answered
        assert any(b'"STARTING"' in body for _, body in answered), answered
        pid = int(_supervisorctl(conf, "pid", "dolphind").strip())
        uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("Uid:"))
        assert uids.split()[1:3] == [str(uid), str(uid)], uids  # real and effective
        assert (home / "numba-cache").is_dir()  # numba's cache, writable by the service user
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
        shutil.rmtree(home, ignore_errors=True)


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


def test_systemd_unit_is_hardened(tmp_path: Path) -> None:
    """``systemd-analyze security`` rates the unit's exposure 4.0 or less (it was 7.9)."""
    unit = tmp_path / "dolphind.service"
    unit.write_text((REPO / "systemd" / "dolphind.service").read_text())
    res = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                         capture_output=True, text=True, timeout=60)
    line = next(x for x in res.stdout.splitlines() if "Overall exposure level" in x)
    exposure = float(line.split(":")[1].split()[0])
    assert exposure <= 4.0, res.stdout
    svc = _unit()["Service"]
    # What the daemon needs stays allowed: numba's JIT (W+X memory), the network.
    assert "MemoryDenyWriteExecute" not in svc and "PrivateNetwork" not in svc
    assert svc["UMask"] == "0077"
