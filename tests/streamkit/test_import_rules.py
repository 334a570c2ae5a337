"""Import rules of the tree, checked on the source (imports inside functions count too).

- The engine (``streamkit`` outside ``cli`` and ``testing``) never imports a connector
  (``streamkit_kinesis``, ``streamkit_kafka``) nor AWS or Kafka client libraries at load
  time; its core (plan, expressions, executor, aggregates, streaming) not even lazily.
- No import cycle at load time; with lazy imports counted, the only cycle allowed is the
  ``df.write_stream`` facade (``streamkit.frame`` -> ``streamkit.streaming.api``), and no
  cycle ever passes through a connector.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streamkit.testing.imports import ImportGraph, components

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "streamkit": ROOT / "streamkit",
    "streamkit_kinesis": ROOT / "connectors" / "kinesis" / "streamkit_kinesis",
    "streamkit_kafka": ROOT / "connectors" / "kafka" / "streamkit_kafka",
}
CONNECTORS = ("streamkit_kinesis", "streamkit_kafka")
CLIENT_LIBRARIES = ("boto3", "botocore", "aiokafka", "kafka", "localstack_client", "moto")
CORE = ("streamkit.plan", "streamkit.expr", "streamkit.execute", "streamkit.aggregate",
        "streamkit.aggregates", "streamkit.streaming", "streamkit.frame", "streamkit.io",
        "streamkit.windows", "streamkit.functions")  # fmt: skip
FACADE = ("streamkit.frame", "streamkit.streaming.api")
"""The one deliberate lazy edge: ``DataFrame.write_stream`` builds the streaming writer."""


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def engine_violations(graph: ImportGraph) -> list[str]:
    """Imports that break the engine rules, as ``module:line -> target`` strings."""
    found = []
    for module, imports in graph.imports.items():
        outside = ("streamkit.cli", "streamkit.testing")
        if not _under(module, ("streamkit",)) or _under(module, outside):
            continue
        for imp in imports:
            connector = _under(imp.target, CONNECTORS)
            client = _under(imp.target, CLIENT_LIBRARIES)
            if (connector and (_under(module, CORE) or not imp.lazy)) or (client and not imp.lazy):
                found.append(f"{module}:{imp.line} -> {imp.target}")
    return found


def cycle_violations(graph: ImportGraph) -> list[list[str]]:
    """Load-time cycles, plus lazy cycles that remain once the facade edge is removed."""
    bad = graph.cycles(lazy=False)
    edges = graph.edges(lazy=True)
    edges[FACADE[0]] = edges.get(FACADE[0], set()) - {FACADE[1]}
    return bad + [c for c in components(edges) if c not in bad]


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return ImportGraph.scan(PACKAGES)


def test_the_scan_sees_the_whole_tree(graph: ImportGraph) -> None:
    for module in ("streamkit.streaming.query", "streamkit_kinesis.leases.dynamodb",
                   "streamkit_kafka.source", "streamkit.cli.main"):  # fmt: skip
        assert module in graph.files
    lazy = [i for i in graph.imports["streamkit.streaming.api"] if i.lazy]
    assert lazy, "imports inside functions must be seen"


def test_engine_imports_no_connector_and_no_client_library(graph: ImportGraph) -> None:
    assert engine_violations(graph) == []


def test_no_import_cycles(graph: ImportGraph) -> None:
    assert cycle_violations(graph) == []


def test_connectors_use_only_public_engine_seams(graph: ImportGraph) -> None:
    """A connector reaches the engine through its contracts and helpers, never through the
    DataFrame API or the query loop (which would make the engine depend back on it)."""
    private = ("streamkit.frame", "streamkit.streaming.query", "streamkit.streaming.api")
    found = [
        f"{m}:{i.line} -> {i.target}"
        for m, imps in graph.imports.items()
        if _under(m, CONNECTORS)
        for i in imps
        if _under(i.target, private)
    ]
    assert found == []


def _tree(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"streamkit": root / "streamkit", "streamkit_kinesis": root / "streamkit_kinesis"}


def test_a_planted_connector_import_is_caught(tmp_path: Path) -> None:
    """The rule checker itself: a lazy connector import in the executor is a violation."""
    packages = _tree(tmp_path, {
        "streamkit/__init__.py": "",
        "streamkit/execute.py": "def run():\n    from streamkit_kinesis.source import S\n",
        "streamkit_kinesis/__init__.py": "",
        "streamkit_kinesis/source.py": "import streamkit.execute\n",
    })  # fmt: skip
    graph = ImportGraph.scan(packages)
    assert engine_violations(graph) == ["streamkit.execute:2 -> streamkit_kinesis.source"]
    assert cycle_violations(graph) == [["streamkit.execute", "streamkit_kinesis.source"]]


def test_type_checking_imports_do_not_count(tmp_path: Path) -> None:
    packages = _tree(tmp_path, {
        "streamkit/__init__.py": "",
        "streamkit/plan.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                             "    import boto3\n    from streamkit_kinesis import x\n",
        "streamkit_kinesis/__init__.py": "",
    })  # fmt: skip
    assert engine_violations(ImportGraph.scan(packages)) == []
