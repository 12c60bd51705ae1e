"""The package layout (DESIGN §2, issue 11): no module over ~400 lines, no import cycle among
lmh_deploy modules (lazy imports included), and the core never imports the commands
(``lmh_deploy.cli``) or the export entry point (``lmh_deploy.export``)."""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
#: package folder -> its import name (pyproject maps training/ and export/ into lmh_deploy)
PACKAGES = {"lmh_deploy": "lmh_deploy", "training": "lmh_deploy.training",
            "export": "lmh_deploy.export"}
MAX_LINES = 400
#: modules allowed over MAX_LINES, with the reason
LONG_OK = {
    "lmh_deploy/data/transforms.py": "the data-augmentation pipeline (another issue's area)",
}


def _modules() -> dict:
    """import name -> source path of every module of the three packages."""
    out = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([name] + parts)] = path
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(name: str, path: Path, known: set) -> set:
    """Every lmh_deploy module ``name`` imports, at any depth of the file (lazy imports count)."""
    pkg = name if _is_package(path) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        for t in _imports(name, path, set(mods)):
            if not name.startswith(t + "."):  # a module reaching its own package __init__
                g.add_edge(name, t)
    return g


def test_no_module_is_longer_than_400_lines():
    long = {}
    for name, path in _modules().items():
        rel = str(path.relative_to(ROOT))
        n = len(path.read_text().splitlines())
        if n > MAX_LINES and rel not in LONG_OK:
            long[rel] = n
    assert long == {}


def test_no_import_cycle():
    g = _graph()
    assert g.number_of_edges() > 50  # the walk sees the imports
    assert ("lmh_deploy.nir.program", "lmh_deploy.nir.match") in g.edges
    cycles = list(nx.simple_cycles(g))
    assert cycles == []


#: entry-point scripts above the core (``python training/fit.py`` runs the train command)
ENTRY_POINTS = ("lmh_deploy.training.fit",)


def test_core_never_imports_the_commands_or_the_export_entry_point():
    g = _graph()
    upper = ("lmh_deploy.cli", "lmh_deploy.export") + ENTRY_POINTS
    bad = [(a, b) for a, b in g.edges
           if not a.startswith(upper) and (b == "lmh_deploy.cli" or b.startswith(upper))]
    assert bad == []
