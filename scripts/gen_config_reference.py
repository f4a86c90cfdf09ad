"""Regenerate docs/config-reference.md and the settings tables of plugins/*/README.md from the
code (the daemon's config dataclasses, the strategy parameters, each plugin's settings
dataclass). tests/unit/test_config_reference_doc.py fails when they are stale."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dolphind.config_doc import (  # noqa: E402
    reference_markdown, settings_markdown, strategy_markdown)

# plugin name -> (module, settings class)
PLUGINS = {"guardian": ("dolphind_guardian.settings", "GuardianSettings"),
           "scheduler": ("dolphind_scheduler.settings", "SchedulerSettings"),
           "governor": ("dolphind_governor.settings", "GovernorSettings"),
           "comms": ("dolphind_comms.settings", "CommsSettings")}


def plugin_table(name: str) -> Callable[[], str]:
    module, cls = PLUGINS[name]
    return lambda: settings_markdown(getattr(importlib.import_module(module), cls),
                                     f"plugins.{name}")


def blocks() -> dict[Path, dict[str, Callable[[], str]]]:
    doc = {"config": reference_markdown, "strategy": strategy_markdown}
    doc.update({f"plugin-{n}": plugin_table(n) for n in PLUGINS})
    out = {ROOT / "docs" / "config-reference.md": doc}
    for n in PLUGINS:
        out[ROOT / "plugins" / n / "README.md"] = {"settings": plugin_table(n)}
    return out


def render(text: str, makers: dict[str, Callable[[], str]]) -> str:
    for name, make in makers.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + m.group(2), text)
    return text


if __name__ == "__main__":
    for path, makers in blocks().items():
        path.write_text(render(path.read_text(), makers))
