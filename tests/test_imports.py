"""No import cycles among rlhfkit's modules: counting imports inside functions too, and the command modules
`cli.py` imports by name. (A cycle hidden inside functions still ties two modules into one; the pipeline
once ran its stages through `cli.main`, and `cli` imported the pipeline.)"""

from __future__ import annotations

import ast
from pathlib import Path

import rlhfkit
from rlhfkit.cli import COMMAND_MODULES

ROOT = Path(rlhfkit.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The rlhfkit modules `module` imports anywhere in its file, with the packages that importing them runs
    (except `module`'s own packages, which Python has already started)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                      for a in node.names}  # fmt: skip
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    if module == "rlhfkit.cli":
        names |= set(COMMAND_MODULES)
    own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
    out = set()
    for name in names:
        if name.startswith("rlhfkit"):
            parts = name.split(".")
            out |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
    return {m for m in out if m in known and m not in own}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others():
    known = _modules()
    graph = {m: _imports(m, p, known) for m, p in known.items()}
    assert "rlhfkit.pipeline.commands" in graph["rlhfkit.cli"]  # the walk sees the command modules
    assert _cycles(graph) == []
