"""The import graph of a source tree, read from the code (no import is executed).

Used by the import-rule tests: which modules a module imports (at load time, or anywhere,
including imports inside functions), and the cycles of that graph. Imports under
``if TYPE_CHECKING:`` are ignored: they never run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path


@dataclass(frozen=True)
class Import:
    """One import statement's target module, as found in the source."""

    target: str
    """Imported module (``from a import b`` gives ``a.b`` when ``b`` is a module)."""
    lazy: bool
    """True when the import is inside a function (runs on first call, not at load time)."""
    line: int
    """Line of the statement."""


@dataclass
class ImportGraph:
    """Modules of the given packages and the imports between them (and to outside names)."""

    files: dict[str, Path] = field(default_factory=dict)
    imports: dict[str, list[Import]] = field(default_factory=dict)

    @classmethod
    def scan(cls, packages: Mapping[str, Path]) -> ImportGraph:
        """Read every ``.py`` file under each package directory (``{name: path}``)."""
        graph = cls()
        for top, root in packages.items():
            for path in sorted(root.rglob("*.py")):
                parts = [top, *path.relative_to(root).with_suffix("").parts]
                if parts[-1] == "__init__":
                    parts.pop()
                graph.files[".".join(parts)] = path
        for module, path in graph.files.items():
            graph.imports[module] = list(_imports(module, path, set(graph.files)))
        return graph

    def edges(self, *, lazy: bool) -> dict[str, set[str]]:
        """Module -> modules of this graph it imports (``lazy=False``: load time only)."""
        return {
            m: {i.target for i in imps if i.target in self.files and (lazy or not i.lazy)} - {m}
            for m, imps in self.imports.items()
        }

    def cycles(self, *, lazy: bool) -> list[list[str]]:
        """Strongly connected components of more than one module (each a cycle or more)."""
        return components(self.edges(lazy=lazy))


def _imports(module: str, path: Path, known: set[str]) -> Iterable[Import]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node, lazy in _walk(tree, in_function=False):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, lazy, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield Import(sub if sub in known else base, lazy, node.lineno)


def _walk(node: ast.AST, *, in_function: bool) -> Iterable[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            yield from ((n, in_function) for n in child.orelse)
            continue
        yield child, in_function
        inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
        yield from _walk(child, in_function=inner)


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def components(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of size > 1, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
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
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found
