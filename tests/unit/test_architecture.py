"""The architecture rules (docs/architecture.md), checked on the source with ``ast``.

Every import in ``dolphind/`` counts: at module level, inside a function (lazy) and under
``if TYPE_CHECKING:``, because each one is a dependency a reader has to follow and a lazy
import only hides a cycle until the day it bites at run time. From those imports the test
builds the module graph and fails on

- a module-level import cycle (the cycle is printed),
- a folder that imports a folder the allow-map below does not give it,
- the daemon importing the wiring (``dolphind.app``), or an ``open_*`` wiring function outside
  the shell,
- a bundled plugin (``plugins/*``) importing ``dolphind`` outside the plugin API package,
- a class over 400 lines or a module over 600 lines (the numba kernels file excepted).

The second half of the file plants each kind of violation in a package written to
``tmp_path`` and runs the same checker on it: a rules test that cannot fail proves nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "dolphind"

# --- the rules, as data ------------------------------------------------------------------------

# The base: what every stage may use. Top-level modules and folders of dolphind/ (a folder
# stands for everything under it).
BASE = frozenset({
    "__init__", "events", "channels", "clock", "config", "telemetry", "control", "backoff",
    "logs", "affinity", "ports", "stage",
})
# The outer shell: the wiring (app/), the daemon, the CLI and the tools around them. The shell
# may import anything; nothing below it imports the shell.
SHELL = frozenset({
    "ops", "app", "daemon", "cli", "backtest", "preflight", "supervisor", "tui", "opsclient",
    "opsview", "tradelog", "config_doc",
})
# Which layer may import which (besides itself). A layer missing from a value is forbidden.
ALLOWED: Mapping[str, frozenset[str]] = {
    "base": frozenset(),
    "statebus": frozenset({"base"}),
    "orders": frozenset({"base"}),
    "store": frozenset({"base", "orders"}),
    "alpha": frozenset({"base", "statebus"}),
    "scan": frozenset({"base", "statebus"}),
    "risk": frozenset({"base", "alpha", "orders"}),
    "feed": frozenset({"base", "statebus", "alpha"}),  # it produces alpha's typed views
    "report": frozenset({"base"}),
    "venues": frozenset({"base", "statebus", "feed", "orders", "risk"}),
    "execution": frozenset({"base", "statebus", "store", "orders", "alpha", "risk", "venues",
                            "report", "feed"}),
    "plugins": frozenset({"base"}),  # the typed plugin API package, with its own loader
    "shell": frozenset({"base", "statebus", "orders", "store", "alpha", "scan", "risk", "feed",
                        "report", "venues", "execution", "plugins"}),
}
# Module pairs forbidden although their layers allow them: the wiring builds the services and
# the daemon runs them, so the daemon must not reach back into the wiring.
FORBIDDEN_MODULE_IMPORTS = (("dolphind.daemon", "dolphind.app"),)
# The prefix a bundled plugin may import from dolphind: the plugin API package.
PLUGIN_API = "dolphind.plugins"
MAX_CLASS_LINES = 400
MAX_MODULE_LINES = 600
SIZE_EXEMPT = frozenset({"dolphind/scan/kernels.py"})  # the numba kernels: one file on purpose


def layer_of(module: str) -> str:
    """The layer of a dolphind module name (``dolphind.venues.binance.venue`` -> ``venues``)."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    if head in BASE:
        return "base"
    if head in SHELL:
        return "shell"
    if head in ALLOWED:
        return head
    raise LookupError(f"{module}: its folder {head!r} is in no layer; add it to the allow-map "
                      "in tests/unit/test_architecture.py and to docs/architecture.md")


# --- the checker --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to a module of the package."""

    source: str  # importing module, e.g. dolphind.alpha.stage
    target: str  # imported module, e.g. dolphind.orders.portfolio
    line: int
    kind: str  # "module", "lazy" (inside a function) or "type-checking"

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}, {self.kind})"


def module_files(root: Path) -> dict[str, Path]:
    """Every module under the package folder ``root``, by dotted name."""
    mods: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _dynamic_import(node: ast.AST) -> ast.Import | None:
    """``importlib.import_module("x.y")`` or ``__import__("x.y")`` as the import it is."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return None
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(
        func, ast.Attribute) else ""
    if name not in ("import_module", "__import__"):
        return None
    return ast.Import(names=[ast.alias(name=node.args[0].value)], lineno=node.lineno)


def _walk_imports(tree: ast.AST) -> Iterable[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import with its kind, at any depth (functions, classes, ifs, trys), including
    ``importlib.import_module`` with a literal name: a string is no way around the rules."""
    stack: list[tuple[ast.AST, str]] = [(tree, "module")]
    while stack:
        node, kind = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, kind
            continue
        dynamic = _dynamic_import(node)
        if dynamic is not None:
            yield dynamic, kind
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            kind = "lazy"
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend((child, "type-checking") for child in node.body)
            stack.extend((child, kind) for child in node.orelse)
            continue
        stack.extend((child, kind) for child in ast.iter_child_nodes(node))


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name an ImportFrom names (``from ..x import y`` -> ``pkg.x``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: Mapping[str, Path], package: str) -> list[Import]:
    """The package-internal imports of one module, each resolved to a module that exists.

    ``from a.b import c`` points at the module ``a.b.c`` when there is one (a submodule),
    else at ``a.b`` (a name defined in, or re-exported by, ``a/b``).
    """
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []
    for node, kind in _walk_imports(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = _absolute(module, path.name == "__init__.py", node)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                     for alias in node.names]
        for name in names:
            if name != package and not name.startswith(package + "."):
                continue
            while name not in modules:  # an attribute of a module: the module it lives in
                name = name.rpartition(".")[0]
            if name != module:
                found.append(Import(module, name, node.lineno, kind))
    return sorted(set(found), key=lambda imp: (imp.line, imp.target))


def import_graph(root: Path) -> list[Import]:
    """Every package-internal import of the package folder ``root``."""
    modules = module_files(root)
    return [imp for mod, path in modules.items()
            for imp in imports_of(mod, path, modules, root.name)]


def cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """One shortest cycle through each strongly connected component of a directed graph.

    Each cycle is returned as the path ``[a, b, ..., a]``.
    """
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    # Tarjan's algorithm, iterative (the graph is small, but no recursion limit to think about).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_shortest_cycle(graph, comp) for comp in components]


def _shortest_cycle(graph: Mapping[str, set[str]], component: set[str]) -> list[str]:
    """The shortest cycle through the component's first member (breadth-first, within it)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in its component")  # Tarjan guarantees one


def layer_violations(imports: Iterable[Import]) -> list[str]:
    """The imports that cross from one layer to a layer the allow-map does not give it."""
    bad = []
    for imp in imports:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src != dst and dst not in ALLOWED[src]:
            bad.append(f"{src} may not import {dst}: {imp}")
    for imp in imports:
        for src, dst in FORBIDDEN_MODULE_IMPORTS:
            if (imp.source == src or imp.source.startswith(src + ".")) and (
                    imp.target == dst or imp.target.startswith(dst + ".")):
                bad.append(f"{src} may not import {dst}: {imp}")
    return bad


def unplaced(root: Path) -> list[str]:
    """The modules whose folder is in no layer (a new folder must be placed on purpose)."""
    bad = []
    for module in module_files(root):
        try:
            layer_of(module)
        except LookupError as exc:
            bad.append(str(exc))
    return bad


def _is_wiring(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """An ``open_*`` function of the config: it builds concrete parts from the config (``open_bus
    (config, metrics)``), unlike a domain ``open_trade(conn, pos)``."""
    params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
    return node.name.startswith("open_") and any(a.arg in ("config", "cfg") for a in params)


def wiring_outside_shell(root: Path) -> list[str]:
    """Module-level wiring functions (see ``_is_wiring``) in modules below the shell."""
    bad = []
    for module, path in module_files(root).items():
        if layer_of(module) == "shell":
            continue
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_wiring(node):
                bad.append(f"{module}.{node.name} (line {node.lineno}): wiring belongs in "
                           "dolphind/app/")
    return bad


def plugin_violations(plugins_dir: Path, package: str = PACKAGE) -> list[str]:
    """Imports of the package outside its plugin API package, in the bundled plugins."""
    bad = []
    for path in sorted(plugins_dir.glob("*/**/*.py")):
        found = _walk_imports(ast.parse(path.read_text(), str(path)))
        for node, kind in sorted(found, key=lambda pair: pair[0].lineno):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    continue  # the plugin's own modules
                names = [node.module or ""]
            else:
                names = [alias.name for alias in node.names]
            for name in names:
                inside = name == package or name.startswith(package + ".")
                api = name == PLUGIN_API or name.startswith(PLUGIN_API + ".")
                if inside and not api:
                    bad.append(f"{path.relative_to(plugins_dir.parent)}:{node.lineno} imports "
                               f"{name} ({kind}); plugins reach dolphind only through "
                               f"{PLUGIN_API}")
    return bad


def oversized(root: Path) -> list[str]:
    """Classes over MAX_CLASS_LINES and modules over MAX_MODULE_LINES lines."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES and rel not in SIZE_EXEMPT:
            bad.append(f"{rel}: module of {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text, rel)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    bad.append(f"{rel}:{node.lineno}: class {node.name} of {size} lines "
                               f"(at most {MAX_CLASS_LINES})")
    return bad


def _report(title: str, problems: list[str]) -> str:
    return f"{len(problems)} {title}:\n  " + "\n  ".join(problems)


# --- the rules on the real tree -----------------------------------------------------------------

def test_the_allow_map_itself_points_one_way() -> None:
    edges = [(src, dst) for src, dsts in ALLOWED.items() for dst in dsts]
    assert not cycles(edges), "the allow-map has a cycle"
    assert all(dst in ALLOWED for _, dst in edges), "the allow-map names an unknown layer"
    assert not BASE & SHELL


def test_every_module_is_in_a_layer() -> None:
    bad = unplaced(REPO / PACKAGE)
    assert not bad, _report("modules in no layer", bad)


def test_no_import_cycles() -> None:
    found = cycles((imp.source, imp.target) for imp in import_graph(REPO / PACKAGE))
    assert not found, _report("import cycles (lazy and TYPE_CHECKING imports count)",
                              [" -> ".join(cycle) for cycle in found])


def test_imports_point_one_way() -> None:
    bad = layer_violations(import_graph(REPO / PACKAGE))
    assert not bad, _report("forbidden imports", bad)


def test_wiring_lives_in_the_shell() -> None:
    bad = wiring_outside_shell(REPO / PACKAGE)
    assert not bad, _report("wiring functions below the shell", bad)


def test_plugins_import_only_the_plugin_api() -> None:
    bad = plugin_violations(REPO / "plugins")
    assert not bad, _report("plugin imports outside the plugin API", bad)


def test_no_oversized_classes_or_modules() -> None:
    bad = oversized(REPO / PACKAGE)
    assert not bad, _report("oversized classes or modules", bad)


# --- the checker catches what it should: violations planted in tmp_path ------------------------

def _write(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / PACKAGE


CLEAN = {
    "dolphind/__init__.py": "",
    "dolphind/events.py": "import json\n",
    "dolphind/orders/__init__.py": "from .portfolio import Portfolio\n",
    "dolphind/orders/portfolio.py": "from dolphind.events import *\nclass Portfolio: ...\n",
    "dolphind/alpha/__init__.py": "",
    "dolphind/alpha/stage.py": "from .. import events\n",
    "dolphind/execution/__init__.py": "",
    "dolphind/execution/stage.py": "from dolphind.orders import Portfolio\nfrom ..alpha import stage\n",
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    root = _write(tmp_path, CLEAN)
    imports = import_graph(root)
    assert {(i.source, i.target) for i in imports} == {
        ("dolphind.orders", "dolphind.orders.portfolio"),
        ("dolphind.orders.portfolio", "dolphind.events"),
        ("dolphind.alpha.stage", "dolphind.events"),
        ("dolphind.execution.stage", "dolphind.orders"),
        ("dolphind.execution.stage", "dolphind.alpha.stage"),
    }
    assert not cycles((i.source, i.target) for i in imports)
    assert not layer_violations(imports)
    assert not oversized(root)


def test_a_lazy_upward_import_is_caught(tmp_path: Path) -> None:
    root = _write(tmp_path, {**CLEAN, "dolphind/alpha/stage.py": (
        "import importlib\n"
        "def later():\n"
        "    from dolphind.execution.stage import run\n"
        "    return importlib.import_module('dolphind.execution')\n")})
    bad = layer_violations(import_graph(root))
    assert bad == ["alpha may not import execution: dolphind.alpha.stage -> "
                   "dolphind.execution.stage (line 3, lazy)",
                   "alpha may not import execution: dolphind.alpha.stage -> "
                   "dolphind.execution (line 4, lazy)"]


def test_a_type_checking_import_is_caught_and_closes_a_cycle(tmp_path: Path) -> None:
    root = _write(tmp_path, {**CLEAN, "dolphind/orders/portfolio.py": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from dolphind.execution import stage\n"
        "else:\n"
        "    import dolphind.events\n")})
    imports = import_graph(root)
    assert Import("dolphind.orders.portfolio", "dolphind.events", 5, "module") in imports
    assert layer_violations(imports) == [
        "orders may not import execution: dolphind.orders.portfolio -> "
        "dolphind.execution.stage (line 3, type-checking)"]
    assert cycles((i.source, i.target) for i in imports) == [
        ["dolphind.execution.stage", "dolphind.orders", "dolphind.orders.portfolio",
         "dolphind.execution.stage"]]


def test_the_daemon_may_not_import_the_wiring(tmp_path: Path) -> None:
    root = _write(tmp_path, {**CLEAN, "dolphind/app/__init__.py": "from dolphind import daemon\n",
                             "dolphind/daemon.py": "def run():\n    from . import app\n"})
    imports = import_graph(root)
    assert layer_violations(imports) == [
        "dolphind.daemon may not import dolphind.app: dolphind.daemon -> dolphind.app "
        "(line 2, lazy)"]
    assert cycles((i.source, i.target) for i in imports) == [
        ["dolphind.app", "dolphind.daemon", "dolphind.app"]]


def test_a_folder_in_no_layer_is_named(tmp_path: Path) -> None:
    root = _write(tmp_path, {**CLEAN, "dolphind/gadgets/__init__.py": ""})
    assert unplaced(root) == [
        "dolphind.gadgets: its folder 'gadgets' is in no layer; add it to the allow-map in "
        "tests/unit/test_architecture.py and to docs/architecture.md"]
    with pytest.raises(LookupError, match="'gadgets' is in no layer"):
        layer_violations([Import("dolphind.execution.stage", "dolphind.gadgets", 1, "module")])


def test_wiring_below_the_shell_is_caught(tmp_path: Path) -> None:
    root = _write(tmp_path, {**CLEAN, "dolphind/execution/stage.py": (
        "class Stage:\n    async def open_orders(self): ...\n"
        "async def open_books(config): ...\n"
        "def open_trade(conn, pos): ...\n"),
        "dolphind/app/__init__.py": "def open_everything(): ...\n"})
    assert wiring_outside_shell(root) == [
        "dolphind.execution.stage.open_books (line 3): wiring belongs in dolphind/app/"]


def test_a_plugin_reaching_past_the_api_is_caught(tmp_path: Path) -> None:
    _write(tmp_path, {
        "plugins/good/dolphind_good/plugin.py": (
            "from dolphind.plugins import API_VERSION\nimport dolphind.plugins.hooks\n"
            "from . import settings\n"),
        "plugins/bad/dolphind_bad/plugin.py": (
            "import dolphind\n"
            "def hook():\n    from dolphind.statebus import base\n"
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from dolphind.pluginsx import Fake\n"),
    })
    assert plugin_violations(tmp_path / "plugins") == [
        "plugins/bad/dolphind_bad/plugin.py:1 imports dolphind (module); plugins reach dolphind "
        "only through dolphind.plugins",
        "plugins/bad/dolphind_bad/plugin.py:3 imports dolphind.statebus (lazy); plugins reach "
        "dolphind only through dolphind.plugins",
        "plugins/bad/dolphind_bad/plugin.py:6 imports dolphind.pluginsx (type-checking); plugins "
        "reach dolphind only through dolphind.plugins",
    ]


def test_oversized_classes_and_modules_are_caught(tmp_path: Path) -> None:
    big_class = "class Big:\n" + "    x = 1\n" * MAX_CLASS_LINES  # 401 lines
    root = _write(tmp_path, {**CLEAN,
                             "dolphind/alpha/stage.py": big_class,
                             "dolphind/scan/kernels.py": "x = 1\n" * (MAX_MODULE_LINES + 1),
                             "dolphind/scan/other.py": "x = 1\n" * (MAX_MODULE_LINES + 1),
                             "dolphind/scan/fits.py": "x = 1\n" * MAX_MODULE_LINES})
    assert oversized(root) == [
        "dolphind/alpha/stage.py:1: class Big of 401 lines (at most 400)",
        "dolphind/scan/other.py: module of 601 lines (at most 600)",
    ]
