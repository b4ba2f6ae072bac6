"""The library's layers import one way (docs/design.md): a module imports only from its own package or from a
lower layer, never from a package of the same layer, and no modules import each other in a circle. Imports inside
functions count too (a lazy import is still a dependency)."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

# Bottom to top. A package's modules may import from their own package and from lower layers only.
LAYERS = [
    {"ctxkit", "ctxkit.env"},
    {"ctxkit.plan"},
    {"ctxkit.records", "ctxkit.hardware", "ctxkit.models", "ctxkit.plots", "ctxkit.workspace", "ctxkit.sse",
     "ctxkit.deployment", "ctxkit.peers"},
    {"ctxkit.completions", "ctxkit.params"},
    {"ctxkit.backends"},
    {"ctxkit.schedulers", "ctxkit.runs"},
    {"ctxkit.collectors"},
    {"ctxkit.load"},
    {"ctxkit.experiments", "ctxkit.doctor"},
    {"ctxkit.cli"},
]


def unit_of(module: str) -> str:
    """The layer unit a module belongs to: its subpackage (ctxkit.load.engine -> ctxkit.load) or itself."""
    parts = module.split(".")
    for n in (2, 1):
        if ".".join(parts[:n]) in set().union(*LAYERS):
            return ".".join(parts[:n])
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def rank(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """ctxkit modules a file imports (`from ctxkit.x import y` counts ctxkit.x.y when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ctxkit")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ctxkit"):
            found.add(node.module)
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if (ROOT / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                        (ROOT / Path(*sub.split(".")) / "__init__.py").is_file():
                    found.add(sub)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted((ROOT / "ctxkit").rglob("*.py"))}


def wrong_imports(g: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, deps in g.items():
        me = unit_of(module)
        for dep in deps:
            other = unit_of(dep)
            if other == me or other == "ctxkit":
                continue
            if rank(other) >= rank(me):
                wrong.append(f"{module} imports {dep} ({other} is not below {me})")
    return sorted(wrong)


def test_every_import_points_down_or_within_its_package():
    wrong = wrong_imports(graph())
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if dep not in g or dep == node:
                continue
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The rule above can fail: a collectors module importing the load layer is reported (the module is written
    outside the package: a test never writes into ctxkit/)."""
    bad = tmp_path / "_layer_probe.py"
    bad.write_text("from ctxkit.load.engine import measure\n")
    deps = imports_of(bad)
    assert "ctxkit.load.engine" in deps
    assert wrong_imports({"ctxkit.collectors._layer_probe": deps}) == [
        "ctxkit.collectors._layer_probe imports ctxkit.load.engine (ctxkit.load is not below ctxkit.collectors)"]
