"""docs/config-reference.md and the plugin READMEs' settings tables match the code."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gen_config_reference",
                                               REPO / "scripts" / "gen_config_reference.py")
assert _spec and _spec.loader
gen = importlib.util.module_from_spec(_spec)
sys.modules["gen_config_reference"] = gen
_spec.loader.exec_module(gen)


def test_generated_tables_are_current() -> None:
    for path, makers in gen.blocks().items():
        text = path.read_text()
        for name in makers:
            assert f"<!-- {name}:start -->" in text, f"{path}: no {name} block"
        assert gen.render(text, makers) == text, \
            f"{path} is stale: run .venv/bin/python scripts/gen_config_reference.py"


def test_nested_tables_plugin_keys_and_strategy_parameters_each_have_a_row() -> None:
    from dolphind.alpha.params import StrategyParams
    from dolphind.config import BinanceVenueConfig
    from dolphind_comms.settings import CommsSettings

    text = (REPO / "docs" / "config-reference.md").read_text()
    for f in dataclasses.fields(BinanceVenueConfig):
        assert f"| `execution.binance.{f.name}` |" in text, f.name
    for f in dataclasses.fields(StrategyParams):
        assert f"| `strategy.params.{f.name}` |" in text, f.name
    for f in dataclasses.fields(CommsSettings):
        assert f"| `plugins.comms.{f.name}` |" in text, f.name
    assert "| `plugins.scheduler.rules[].threshold` |" in text
    readme = (REPO / "plugins" / "comms" / "README.md").read_text()
    assert "| `plugins.comms.max_per_minute` |" in readme
