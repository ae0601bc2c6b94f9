"""The collector package is a downward chain: no import circle, nothing upward, nothing of the dashboard.

Every module of ``collectors/`` is parsed (``ast``), with the imports inside functions and under
``if TYPE_CHECKING`` counted like the ones at the top: a circle held apart by a function-level import is
still a circle. Importing ``a.b.c`` also runs the ``__init__`` of ``a.b`` (unless the importer is inside
it), so that edge is counted too. The checker is first shown to catch each kind of problem on small
packages written here, then run on the real one.
"""
from __future__ import annotations

import ast
import importlib
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "collectors"
DASHBOARD_SIDE = ("dash", "services", "callbacks", "components", "app")
"""Top-level names the collector must never import (the viewer sits above it, never below)."""

LAYERS: dict[str, int] = {
    "collectors.runformat": 0,
    "collectors.runtime": 1,
    "collectors.recovery": 1,
    "collectors.alerts": 2,
    "collectors.notify": 2,
    "collectors.control": 2,
    "collectors.plugin": 2,
    "collectors.writer": 2,
    "collectors.snapshots": 3,
    "collectors.experiments": 3,
    "collectors.anomaly": 4,
    "collectors.samples": 4,
    "collectors.spectral": 4,
    "collectors.ranks": 4,
    "collectors.features": 5,
    "collectors.monitor": 6,
    "collectors.callback": 7,
    "collectors.skip_batches": 7,
    "collectors.demo": 8,
    "collectors.enable": 8,
    "collectors": 9,
}
"""The chain, bottom first: a unit (a top-level module or subpackage of collectors/) may import only units
of a lower rank. A new unit must be placed here on purpose."""


# --------------------------------------------------------------------------- the checker (pure over files)

def module_files(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` under ``root/package`` (``__init__`` names the package)."""
    out: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve_from(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from X import ...`` (relative imports resolved against ``importer``)."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, modules: set[str]) -> tuple[set[str], set[str]]:
    """``(collector modules imported, external top-level names imported)`` by one module, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    internal: set[str] = set()
    external: set[str] = set()

    def add(target: str) -> None:
        if target == PACKAGE or target.startswith(PACKAGE + "."):
            internal.add(target)
        elif target:
            external.add(target.split(".")[0])

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(name, is_package, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in modules else base)
    resolved: set[str] = set()
    for target in internal:
        while target and target not in modules:  # "import collectors.x.y" where y is a name, not a module
            target = target.rpartition(".")[0]
        if target:
            resolved.add(target)
    return resolved, external


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path, package: str = PACKAGE) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The module import graph of ``root/package`` (implicit parent ``__init__`` edges included) and, per
    module, the external top-level names it imports."""
    files = module_files(root, package)
    modules = set(files)
    graph: dict[str, set[str]] = {}
    externals: dict[str, set[str]] = {}
    for name, path in files.items():
        internal, external = imports_of(name, path, modules)
        own = set(ancestors(name)) | {name}
        edges = set()
        for target in internal:
            edges.add(target)
            edges.update(a for a in ancestors(target) if a not in own and a in modules)
        edges.discard(name)
        graph[name] = edges
        externals[name] = external
    return graph, externals


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each as one closed path for the message."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(_closed_path(sorted(group), graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def _closed_path(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One circle through the group's first module, e.g. ``[a, b, c, a]`` (breadth-first, shortest)."""
    members = set(group)
    start = group[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return group


def dashboard_imports(externals: dict[str, set[str]]) -> list[str]:
    return sorted(f"{mod} imports {name}" for mod, names in externals.items() for name in names
                  if name in DASHBOARD_SIDE or name.startswith("dash_"))


def unit_of(module: str) -> str:
    """The layer unit of a module: ``collectors`` itself, or its first two dotted parts."""
    return ".".join(module.split(".")[:2])


def upward_imports(graph: dict[str, set[str]], layers: dict[str, int] = LAYERS) -> list[str]:
    """Imports from a unit to one of the same or a higher rank in ``layers`` (and units missing from it)."""
    problems = []
    for mod, targets in sorted(graph.items()):
        src = unit_of(mod)
        if src not in layers:
            problems.append(f"{src} is not placed in LAYERS (tests/test_structure.py): give it a rank")
            continue
        for t in sorted(targets):
            dst = unit_of(t)
            if dst == src:
                continue
            if dst not in layers:
                problems.append(f"{dst} is not placed in LAYERS (tests/test_structure.py): give it a rank")
            elif layers[dst] >= layers[src]:
                problems.append(f"{mod} (rank {layers[src]}) imports {t} (rank {layers[dst]}): upward")
    return sorted(set(problems))


# --------------------------------------------------------------------------- the checker catches problems

def _write_package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_checker_finds_a_circle_hidden_in_a_function(tmp_path: Path) -> None:
    _write_package(tmp_path, {
        "__init__.py": "",
        "monitor.py": "from collectors.feature import plugin\n",
        "feature/__init__.py": "",
        "feature/plugin.py": "from collectors import snaps\n",
        "snaps.py": "def later():\n    from collectors.monitor import x  # held apart, still a circle\n",
    })
    graph, _ = import_graph(tmp_path)
    assert find_cycles(graph) == [["collectors.feature.plugin", "collectors.snaps", "collectors.monitor",
                                   "collectors.feature.plugin"]]


def test_checker_counts_the_init_an_import_runs(tmp_path: Path) -> None:
    _write_package(tmp_path, {
        "__init__.py": "",
        "low.py": "from collectors.pkg.leaf import f\n",  # runs collectors/pkg/__init__.py first
        "pkg/__init__.py": "from collectors import high\n",
        "pkg/leaf.py": "",
        "high.py": "import collectors.low\n",
    })
    graph, _ = import_graph(tmp_path)
    assert "collectors.pkg" in graph["collectors.low"]
    assert find_cycles(graph) and set(find_cycles(graph)[0]) == {"collectors.low", "collectors.pkg", "collectors.high"}


def test_checker_resolves_relative_imports_and_finds_dashboard_imports(tmp_path: Path) -> None:
    _write_package(tmp_path, {
        "__init__.py": "",
        "a/__init__.py": "",
        "a/x.py": "from . import y\nfrom ..b import z\n",
        "a/y.py": "def f():\n    import dash\n    from services.runstore import RunStore\n",
        "b/__init__.py": "",
        "b/z.py": "import os, json\nfrom components import ids\n",
    })
    graph, externals = import_graph(tmp_path)
    assert {"collectors.a.y", "collectors.b.z", "collectors.b"} <= graph["collectors.a.x"]
    assert find_cycles(graph) == []
    assert dashboard_imports(externals) == ["collectors.a.y imports dash", "collectors.a.y imports services",
                                            "collectors.b.z imports components"]


def test_checker_flags_upward_and_unplaced_imports() -> None:
    layers = {"collectors.runformat": 0, "collectors.monitor": 6}
    graph = {"collectors.runformat": {"collectors.monitor"}, "collectors.monitor": {"collectors.runformat"},
             "collectors.extra": set()}
    assert upward_imports(graph, layers) == [
        "collectors.extra is not placed in LAYERS (tests/test_structure.py): give it a rank",
        "collectors.runformat (rank 0) imports collectors.monitor (rank 6): upward"]


# --------------------------------------------------------------------------- the real package

@pytest.fixture(scope="module")
def real_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    return import_graph(ROOT)


def test_collectors_have_no_import_circle(real_graph) -> None:
    graph, _ = real_graph
    assert len(graph) > 20  # the whole package was read
    cycles = find_cycles(graph)
    assert cycles == [], "import circles in collectors/:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_collectors_never_import_the_dashboard(real_graph) -> None:
    _, externals = real_graph
    bad = dashboard_imports(externals)
    assert bad == [], "the collector imports the dashboard side:\n" + "\n".join(bad)


def test_collectors_imports_run_downward_only(real_graph) -> None:
    graph, _ = real_graph
    bad = upward_imports(graph)
    assert bad == [], "imports against the chain (see LAYERS):\n" + "\n".join(bad)


def test_monitor_names_no_feature() -> None:
    """The Monitor knows the plugin protocol and features.py, never a feature package or class name."""
    graph, _ = import_graph(ROOT)
    feature_units = {"collectors.anomaly", "collectors.samples", "collectors.spectral", "collectors.snapshots"}
    assert {unit_of(t) for t in graph["collectors.monitor"]} & feature_units == set()
    tree = ast.parse((ROOT / PACKAGE / "monitor.py").read_text(encoding="utf-8"))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert names & {"AnomalyPlugin", "SamplesPlugin", "SpectralPlugin", "make_spectral_plugin"} == set()
    compared = [c for c in ast.walk(tree) if isinstance(c, ast.Compare)
                and any(isinstance(x, ast.Attribute) and x.attr == "__name__" for x in ast.walk(c))]
    assert compared == [], "monitor.py recognises plugins by class name"


def test_public_lazy_names_resolve() -> None:
    """Every name ``collectors/__init__.py`` promises (the guides' imports) points at a module that has it."""
    import collectors

    for name, module in collectors._LAZY.items():
        assert hasattr(importlib.import_module(module), name), f"{module} has no {name}"
