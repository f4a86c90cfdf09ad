"""Logging: JSON lines off a terminal, key=value on one, and no frame locals in tracebacks."""

from __future__ import annotations

import subprocess
import sys

import orjson

# A crash inside a function holding a secret, logged the way stages log their crashes.
_SCRIPT = """
import sys
from dolphind import logs
import structlog
logs.configure("info", sys.argv[1])
def sign(secret):
    signed = "sig-" + secret
    raise RuntimeError("venue said no")
try:
    sign("SECRET-abc123")
except RuntimeError:
    structlog.get_logger("t").error("stage.crashed", exc_info=True)
"""


def _run(fmt: str) -> str:
    res = subprocess.run([sys.executable, "-c", _SCRIPT, fmt], capture_output=True, text=True,
                         timeout=60, check=True)
    return res.stdout


def test_json_lines_carry_the_traceback_without_frame_locals() -> None:
    out = _run("json")
    line = orjson.loads(out.strip().splitlines()[-1])
    assert line["event"] == "stage.crashed" and line["level"] == "error"
    frames = line["exception"][0]["frames"]
    assert any(f["name"] == "sign" for f in frames)  # the traceback is there...
    assert "SECRET-abc123" not in out  # ...but not the secret held in a local variable


def test_console_format_is_key_value_and_hides_locals_too() -> None:
    out = _run("console")
    assert "stage.crashed" in out and "RuntimeError: venue said no" in out
    assert not out.lstrip().startswith("{")
    assert "SECRET-abc123" not in out


_STDLIB = """
import logging, sys
from dolphind import logs
logs.configure("info", sys.argv[1])
logging.getLogger("aiohttp.server").error("Error handling request")
"""


def test_library_log_lines_are_json_too() -> None:
    res = subprocess.run([sys.executable, "-c", _STDLIB, "json"], capture_output=True, text=True,
                         timeout=60, check=True)
    line = orjson.loads(res.stdout.strip().splitlines()[-1])
    assert line["event"] == "Error handling request" and line["level"] == "error"
    assert line["logger"] == "aiohttp.server" and "timestamp" in line
