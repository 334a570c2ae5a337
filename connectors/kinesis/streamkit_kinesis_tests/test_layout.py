"""Import rules of the package: test helpers stay out of it, and the polling fetcher is
chosen at one place only (so another fetcher plugs in there)."""

from __future__ import annotations

import ast
from pathlib import Path

import streamkit_kinesis

PACKAGE = Path(streamkit_kinesis.__file__).parent


def imports_of(path: Path) -> set[str]:
    """Modules ``path`` imports (absolute names; relative imports resolved)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts if path.name == "__init__.py" else parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def modules(under: str = "") -> dict[str, set[str]]:
    """Import sets of every module of the package (or of one of its sub-packages)."""
    root = PACKAGE / under
    return {str(p.relative_to(PACKAGE)): imports_of(p) for p in sorted(root.rglob("*.py"))}


def importers(prefix: str, under: str = "") -> set[str]:
    return {
        name
        for name, found in modules(under).items()
        if any(m == prefix or m.startswith(prefix + ".") for m in found)
    }


def test_the_walker_sees_imports() -> None:
    assert "streamkit_kinesis.errors" in modules()["client.py"]  # from .errors import ...
    assert "consumer/shard_task.py" in importers("streamkit_kinesis.retrieval.fetcher")
    assert "source/stream_source.py" in importers("streamkit_kinesis.source.buffers")


def test_nothing_outside_testing_imports_the_test_helpers() -> None:
    outside = {n for n in importers("streamkit_kinesis.testing") if not n.startswith("testing/")}
    assert outside == set()


def test_the_consumer_names_the_polling_fetcher_in_its_config_only() -> None:
    assert importers("streamkit_kinesis.retrieval.polling", "consumer") == {"consumer/config.py"}
