"""docs/going-live.md and docs/install.md: the configs they show pass `dolphind check-config`
as printed, and every [execution.binance] key has a row of its own."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dolphind.config import BinanceVenueConfig

REPO = Path(__file__).resolve().parents[2]


def block(doc: str, name: str) -> str:
    text = (REPO / "docs" / doc).read_text()
    m = re.search(rf"<!-- {name}:start -->\s*```toml\n(.*?)```\s*<!-- {name}:end -->", text, re.S)
    assert m, f"docs/{doc} has no {name} block"
    return m.group(1)


def check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOLPHIND_")}
    return subprocess.run([sys.executable, "-m", "dolphind.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60, env={**base, **env})


def test_the_testnet_config_passes_check_config_as_printed(tmp_path: Path) -> None:
    cfg = tmp_path / "testnet.toml"
    cfg.write_text(block("going-live.md", "testnet-config"))
    (tmp_path / "ops.token").write_text("a" * 64 + "\n")
    keys = {"DOLPHIND_BINANCE_API_KEY": "k", "DOLPHIND_BINANCE_API_SECRET": "s"}
    res = check_config(cfg, keys)
    assert res.returncode == 0, res.stderr
    assert "trades: binance testnet (test money, real orders) on live Binance market data" \
        in res.stdout
    # without the keys it is refused, naming the variables the doc names
    res = check_config(cfg, {})
    assert res.returncode == 2 and "DOLPHIND_BINANCE_API_KEY" in res.stderr


def test_every_execution_binance_key_has_its_own_row() -> None:
    text = (REPO / "docs" / "going-live.md").read_text()
    rows = set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, re.M))
    keys = {f.name for f in dataclasses.fields(BinanceVenueConfig)}
    assert keys <= rows, sorted(keys - rows)


@pytest.mark.parametrize("doc,name", [("install.md", "production-config")])
def test_the_production_config_passes_check_config(tmp_path: Path, doc: str, name: str) -> None:
    text = block(doc, name)
    # The doc's absolute paths (/etc/dolphind, /var/lib/dolphind) moved under tmp_path.
    text = text.replace("/etc/dolphind", str(tmp_path / "etc")).replace(
        "/var/lib/dolphind", str(tmp_path / "var"))
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ops.token").write_text("b" * 64 + "\n")
    cfg = tmp_path / "etc" / "dolphind.toml"
    cfg.write_text(text)
    # the variables the doc's /etc/dolphind/env holds
    res = check_config(cfg, {"DOLPHIND_BINANCE_API_KEY": "k", "DOLPHIND_BINANCE_API_SECRET": "s",
                             "DOLPHIND_COMMS_WEBHOOK_URL": "https://127.0.0.1:9/hook"})
    assert res.returncode == 0, res.stderr
    assert "binance testnet" in res.stdout
