"""The plugin API is what docs/plugin-api.md says, and the bundled plugins use nothing else.

Both read the sources (the API's classes, the plugins' files), so a hook added without its
documentation, or a plugin that reaches past the API into the daemon, fails here."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from dolphind.plugins import api
from dolphind.plugins.figures import Figures

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


def dolphind_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of a dolphind module in ``source``, at any depth
    (lazy imports in a function and TYPE_CHECKING blocks count too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "dolphind":  # from dolphind import x: x is the module
                found += [(node.lineno, f"dolphind.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return sorted((line, m) for line, m in found if m == "dolphind" or m.startswith("dolphind."))


def outside_the_api(source: str) -> list[str]:
    return [f"line {line}: {m}" for line, m in dolphind_imports(source)
            if m != "dolphind.plugins" and not m.startswith("dolphind.plugins.")]


def test_the_check_sees_a_forbidden_import_anywhere() -> None:
    planted = ("import dolphind.plugins\nfrom dolphind.plugins.figures import Figures\n"
               "def f():\n    from dolphind.statebus.base import FEATURES\n"
               "if True:\n    import dolphind.control as c\nfrom dolphind import events\n"
               "import dolphind_scheduler.rules\n")
    assert outside_the_api(planted) == ["line 4: dolphind.statebus.base",
                                        "line 6: dolphind.control", "line 7: dolphind.events"]


def test_bundled_plugins_import_nothing_of_dolphind_but_the_api() -> None:
    sources = sorted(BUNDLED.glob("*/dolphind_*/**/*.py"))
    assert len({p.parts[len(BUNDLED.parts)] for p in sources}) == 4  # all four are walked
    bad = {str(p.relative_to(REPO)): found for p in sources
           if (found := outside_the_api(p.read_text()))}
    assert bad == {}


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
