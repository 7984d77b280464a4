"""The package's shape (docs/architecture.md): short modules and functions, a small top level, no private
names imported across modules, an acyclic module-level import graph, and printing only in cli/ (worker
processes print their protocol lines for the parent, not for people)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "deploycc"
MODULES = sorted(PACKAGE.rglob("*.py"))
WORKERS = {"bench/worker.py", "bench/scaling.py", "bench/peers.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def test_modules_and_functions_are_short():
    long_modules = [f"{p.relative_to(PACKAGE)}: {p.read_text().count(chr(10))}" for p in MODULES
                    if p.read_text().count("\n") > 400]
    long_functions = [f"{p.relative_to(PACKAGE)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
                      for p in MODULES for n in ast.walk(tree(p))
                      if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno >= 60]
    assert not long_modules and not long_functions, (long_modules, long_functions)


def test_the_top_level_is_small():
    assert len(list(PACKAGE.glob("*.py"))) <= 12


def test_no_private_name_is_imported_across_modules():
    found = [f"{p.relative_to(PACKAGE)}: {a.name} from {n.module}" for p in MODULES for n in ast.walk(tree(p))
             if isinstance(n, ast.ImportFrom) and (n.level > 0 or (n.module or "").startswith("deploycc"))
             for a in n.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found


def module_imports(path: Path) -> set[str]:
    """deploycc modules imported at module level (not inside functions) by `path`."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in tree(path).body:
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("deploycc"):
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("deploycc"))
    return out


def test_module_level_imports_have_no_cycle():
    names = {module_name(p): p for p in MODULES}
    graph = {name: {m for m in module_imports(path) if m in names and m != name} for name, path in names.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_only_the_cli_prints():
    printing = [f"{p.relative_to(PACKAGE)}:{n.lineno}" for p in MODULES for n in ast.walk(tree(p))
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
                and not str(p.relative_to(PACKAGE)).startswith("cli/")
                and str(p.relative_to(PACKAGE)) not in WORKERS]
    assert not printing
