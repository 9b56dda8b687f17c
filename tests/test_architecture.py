"""The package's import graph: imports run downhill through the stages, and no module imports
itself back through others (docs/architecture.md draws the same picture).

Every ``import`` and ``from ... import`` of ``echomtl`` counts, those inside functions too: a
deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: The stages, lowest first; a module may import its own stage and the ones before it only.
STAGES = (
    ("foundation", ("echomtl", "echomtl.atomic", "echomtl.console", "echomtl.methods")),
    ("data", ("echomtl.data",)),
    ("config", ("echomtl.config",)),
    ("study", ("echomtl.study",)),
    ("models", ("echomtl.models", "echomtl.losses", "echomtl.balancing")),
    ("training", ("echomtl.training",)),
    ("evaluation", ("echomtl.evaluation",)),
    ("report", ("echomtl.report", "echomtl.paper")),
    ("jobs", ("echomtl.jobs",)),
    ("release", ("echomtl.archive",)),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The echomtl modules a file imports (``from a import b`` is ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package upwards
                parts = (package or module_name(path)).split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] == "echomtl" and m in MODULES}


MODULES = {module_name(p): p for p in SRC.joinpath("echomtl").rglob("*.py")}
GRAPH = {name: imports(path) - {name} for name, path in MODULES.items()}


def stage(module: str) -> int:
    best = max(
        (
            (len(prefix), i)
            for i, (_, prefixes) in enumerate(STAGES)
            for prefix in prefixes
            if module == prefix or module.startswith(prefix + ".")
        ),  # fmt: skip
        default=None,
    )
    if best is None:
        raise AssertionError(f"{module} belongs to no stage of STAGES: add it where it belongs")
    return best[1]


def test_every_module_has_a_stage():
    assert len(MODULES) > 50
    for module in MODULES:
        stage(module)


def test_no_import_runs_uphill():
    uphill = [
        f"{a} ({STAGES[stage(a)][0]}) imports {b} ({STAGES[stage(b)][0]})"
        for a, targets in sorted(GRAPH.items())
        for b in sorted(targets)
        if stage(b) > stage(a) and not (a == "echomtl" or b.startswith(a + "."))
    ]
    assert not uphill, "\n".join(uphill)


def test_no_import_cycle():
    """Strongly connected groups of modules (Tarjan), ignoring a package's own __init__."""
    graph = {a: {b for b in t if not a.startswith(b + ".") and b != "echomtl"}
             for a, t in GRAPH.items()}  # fmt: skip
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, cycles


@pytest.mark.parametrize("module", ["echomtl.study", "echomtl.methods", "echomtl.config"])
def test_the_plan_needs_no_torch(module):
    """The rules read these at parse time (and the study model is unit-tested alone)."""
    closure, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in closure:
            closure.add(m)
            todo += GRAPH[m]
    heavy = [m for m in sorted(closure) if {"torch", "matplotlib"} & _top_imports(m)]
    assert not heavy, heavy


def _top_imports(module: str) -> set[str]:
    """The top-level packages a module imports at import time (not inside functions)."""
    tree = ast.parse(MODULES[module].read_text())
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return {n.split(".")[0] for n in names}


def test_every_job_script_names_a_job_that_exists():
    """The rules' scripts are thin entry points; a job moved between stages must move here too
    (a dry run cannot see it: the script runs only in the job)."""
    import importlib

    scripts = sorted((SRC.parent / "workflow" / "scripts").glob("*.py"))
    assert len(scripts) > 10
    for script in scripts:
        tree = ast.parse(script.read_text())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("echomtl"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{script.name}: {node.module}.{alias.name}"
