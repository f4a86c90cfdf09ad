"""The plugin API is what docs/plugin-api.md says, and the bundled plugins use nothing else.

Both read the sources (the API's classes, the plugins' files), so a hook added without its
documentation, or a plugin that reaches past the API into the daemon (or reads the daemon's
metrics instead of the figures), fails here."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from dolphind.plugins import api
from dolphind.plugins.figures import Figures
from tests.unit.test_architecture import plugin_violations

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "plugin-api.md"
BUNDLED = REPO / "plugins"


def _hooks() -> dict[str, str]:
    """Each hook of ``api.Hooks`` as it must be documented: ``name(arg: Type)``."""
    out = {}
    for name, fn in vars(api.Hooks).items():
        if name.startswith("_") or not inspect.isfunction(fn):
            continue
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
        out[name] = f"{name}({', '.join(f'{p.name}: {p.annotation}' for p in params)})"
    return out


def test_every_hook_is_documented_with_its_arguments() -> None:
    text = DOC.read_text()
    documented = dict(re.findall(r"^### `(\w+)(\(.*\))`$", text, re.M))
    for name, signature in _hooks().items():
        assert name in documented, f"docs/plugin-api.md: hook {name} is not documented"
        assert name + documented[name] == signature, \
            f"docs/plugin-api.md documents {name}{documented[name]}, the API has {signature}"
    assert set(documented) <= set(_hooks()), \
        f"docs/plugin-api.md documents hooks the API lacks: {set(documented) - set(_hooks())}"


def test_the_queued_hooks_are_the_async_hooks_of_the_protocol() -> None:
    is_async = {n: inspect.iscoroutinefunction(getattr(api.Hooks, n)) for n in _hooks()}
    assert set(api.HOOKS) == {n for n, a in is_async.items() if a}
    assert is_async["veto"] is False  # called inside the rails' budget, never queued


@pytest.mark.parametrize("cls", [api.PluginContext, Figures])
def test_every_context_field_and_figure_has_a_row(cls: type) -> None:
    text = DOC.read_text()
    rows = set(re.findall(r"^\| `(\w+)` \|", text, re.M))
    names = {f.name for f in dataclasses.fields(cls)}
    assert names <= rows, f"docs/plugin-api.md lacks rows for {sorted(names - rows)}"


def test_bundled_plugins_import_nothing_of_dolphind_but_the_api() -> None:
    # The architecture test's walker (lazy and TYPE_CHECKING imports count; its own test
    # plants each kind of violation), run on the four bundled plugins.
    sources = sorted(BUNDLED.glob("*/dolphind_*/**/*.py"))
    assert len({p.parts[len(BUNDLED.parts)] for p in sources}) == 4  # all four are there
    assert plugin_violations(BUNDLED) == []


def test_bundled_plugins_declare_the_api_version_they_import() -> None:
    for path in sorted(BUNDLED.glob("*/dolphind_*/plugin.py")):
        tree = ast.parse(path.read_text())
        declared = [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "API_VERSION" for t in n.targets)]
        assert declared and all(isinstance(v, ast.Name) and v.id == "API_VERSION"
                                for v in declared), f"{path}: API_VERSION must be imported"


def test_bundled_plugins_read_no_metric_of_the_daemon() -> None:
    """The figures contract is the read side: no plugin collects or samples a registry."""
    readers = ("get_sample_value", "restricted_registry", "collect")
    for path in sorted(BUNDLED.glob("*/dolphind_*/**/*.py")):
        used = {n.attr for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.Attribute) and n.attr in readers}
        assert not used, f"{path} reads metrics ({sorted(used)}): use ctx.figures()"
