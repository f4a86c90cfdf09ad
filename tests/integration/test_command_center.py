"""The Command Center page in a real browser (Debian's headless Chromium, driven by Playwright)
against the real daemon on replay: the page loads clean, goes live, follows the bars, shows an
entry in its feed, and its halt button is refused without the token and halts with it.

Screenshots go to the test's tmp dir, and also to $DOLPHIND_SCREENSHOTS when set (that is how
docs/img/command-center.png was made).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import wait_until
from tests.integration.harness import TOKEN, Daemon, free_port, write_config

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No network but loopback, no first-run chores, nothing that phones home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


def trading_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A replay daemon that is warm and trading, paced so a viewer can follow it."""
    port = free_port()
    # Through the scans' 750-bar warm-up as fast as the stages go, then (a config reload, as an
    # operator would) 600x: ten bars a second, an entry every few seconds to see on the page.
    config = write_config(tmp_path / "dolphind.toml", port, speed=0.0)
    d = Daemon(config, port).start()
    try:
        d.wait_ready()
        wait_until(lambda: d.get_json("/ui/snapshot")["scan"]["vel_div"] is not None,
                   timeout=60, what="vel_div warm")
        write_config(config, port, speed=600.0)
        status, body = d.post("/reload")
        assert status == 200 and body["applied"] == ["replay.speed"], body
        yield d
    finally:
        d.stop()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    yield from trading_daemon(tmp_path)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (scripts/test.sh installs it)"
    profile = tmp_path / "chromium-profile"
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1480, "height": 1000}, device_scale_factor=1)
        try:
            yield ctx
        finally:
            ctx.close()


def _shot(page: Any, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    page.screenshot(path=str(out), full_page=True)
    extra = os.environ.get("DOLPHIND_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(extra) / name)
    return out


def test_command_center_live_in_a_real_browser(daemon: Daemon, browser: Any,
                                               tmp_path: Path) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"requestfailed: {r.url}")
            if "/ui/events" not in r.url else None)  # the stream is cut when the page closes

    resp = page.goto(daemon.url + "/")
    assert resp is not None and resp.status == 200
    page.wait_for_function("document.getElementById('conn').textContent === 'live'",
                           timeout=15_000)
    # The strip is filled from the daemon's own state.
    page.wait_for_function("document.getElementById('s-mode').textContent === 'paper'")
    assert page.text_content("#s-venue") == "paper"
    assert page.text_content("#s-ready") == "READY"
    assert page.text_content("#s-trading") == "ACTIVE"

    # The page follows the bars: the latest scan number it shows keeps going up.
    def shown_scan() -> int:
        return int(page.evaluate("window.commandCenter.snapshot.scan.scan_number ?? -1"))

    first = shown_scan()
    wait_until(lambda: shown_scan() >= first + 5, timeout=30, what="the page to follow bars")
    wait_until(lambda: page.evaluate("window.commandCenter.pts.length") >= 5, timeout=30,
               what="vel_div points on the chart")

    # An entry decided by the alpha engine shows in the feed, then its position in the strip.
    # (li.new: pushed live by a tick, not part of the history the page got on connecting)
    page.wait_for_selector("#feed li.new.entry", timeout=90_000)
    entry_text = page.text_content("#feed li.new.entry")
    assert re.search(r"ENTRY (BUY|SELL) [A-Z]+USDT", entry_text or ""), entry_text
    page.wait_for_function(
        "window.commandCenter.snapshot.exposure > 0 || window.commandCenter.snapshot.trades.length",
        timeout=30_000)
    assert page.evaluate("window.commandCenter.entries.size") >= 1  # marked on the chart
    _shot(page, tmp_path, "command-center.png")

    assert errors == [], errors  # a clean page so far

    # Halt without the token: the control plane refuses, nothing is halted.
    page.fill("#token", "")
    page.click("#btn-halt")
    page.wait_for_selector("#toast.err:not([hidden])")
    assert "refused (401)" in (page.text_content("#toast") or "")
    assert daemon.get_json("/status")["control"]["halted"] is False
    assert page.text_content("#s-trading") == "ACTIVE"
    # Chromium logs the refused request itself; that one line is the only console error.
    assert errors == ["console.error: Failed to load resource: the server responded with a "
                      "status of 401 (Unauthorized)"], errors
    errors.clear()

    # With the token typed in: halted, shown in the strip (by whom) and in the feed.
    page.fill("#token", TOKEN)
    assert page.text_content("#access") == "token set"
    page.click("#btn-halt")
    page.wait_for_function("document.getElementById('s-trading').textContent === 'HALTED'",
                           timeout=10_000)
    assert "by http:127.0.0.1" in (page.text_content("#s-haltedby") or "")
    page.wait_for_selector("#feed li[data-kind=control].halt")
    assert daemon.get_json("/status")["control"]["halted"] is True
    _shot(page, tmp_path, "command-center-halted.png")

    page.click("#btn-resume")
    page.wait_for_function("document.getElementById('s-trading').textContent === 'ACTIVE'",
                           timeout=10_000)
    assert daemon.get_json("/status")["control"]["halted"] is False

    # Flatten asks first (a dialog), then goes through the control plane: halted, and the
    # execution stage is asked to close everything.
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#btn-flatten")
    page.wait_for_selector("#feed li[data-kind=control].flatten", timeout=10_000)
    control = daemon.get_json("/status")["control"]
    assert control["flatten_requests"] == 1 and control["halted"] is True
    page.wait_for_function("document.getElementById('s-trading').textContent === 'HALTED'")
    page.close()
    assert errors == [], errors
