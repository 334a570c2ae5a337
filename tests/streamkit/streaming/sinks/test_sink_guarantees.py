"""Every sink declares its delivery guarantee as a class attribute, and README.md's sink
table says the same: the table is tested against the attributes, so neither can change
alone, and a new sink without a row (or a row for a sink that is gone) fails here."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from streamkit.streaming import sinks
from streamkit.streaming.contracts import Guarantee

README = Path(__file__).resolve().parents[4] / "README.md"
HEADER = "| sink | class | guarantee | how |"
CONNECTOR_SINKS = (
    "streamkit_kafka.KafkaSink",
    "streamkit_kafka.TransactionalKafkaSink",
    "streamkit_kinesis.sink.KinesisSink",
)
"""Sinks of the connector distributions (installed editable by ``make test``)."""


def readme_rows(text: str) -> list[list[str]]:
    """The cells of the sink table's rows (after the header and the separator line)."""
    lines = text.splitlines()
    assert HEADER in lines, f"README.md lost its sink table (header {HEADER!r})"
    rows = []
    for line in lines[lines.index(HEADER) + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def table_by_class(text: str) -> dict[str, str]:
    """Class path -> guarantee text, for rows that name a class."""
    out = {}
    for cells in readme_rows(text):
        assert len(cells) == 4, f"a sink table row needs 4 cells: {cells}"
        if cells[1]:
            out[cells[1].strip("`")] = cells[2]
    return out


def resolve(path: str) -> type:
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert inspect.isclass(cls)
    return cls


def guarantee_of(cls: type) -> str:
    """The class attribute ``guarantee`` (own or inherited), as its text."""
    return str(inspect.getattr_static(cls, "guarantee"))


def all_sinks() -> dict[str, type]:
    """Every public sink class of the engine and of the connectors, by README path."""
    found = {
        f"streamkit.streaming.sinks.{name}": obj
        for name in sinks.__all__
        if inspect.isclass(obj := getattr(sinks, name)) and hasattr(obj, "add_batch")
    }
    for path in CONNECTOR_SINKS:
        found[path] = resolve(path)
    return found


def test_every_sink_declares_a_guarantee() -> None:
    for path, cls in all_sinks().items():
        declared = guarantee_of(cls)  # AttributeError: the sink declares none
        assert declared in {g.value for g in Guarantee}, f"{path}: {declared!r} is no Guarantee"


def test_readme_sink_table_matches_the_attributes() -> None:
    table = table_by_class(README.read_text(encoding="utf-8"))
    declared = {path: guarantee_of(cls) for path, cls in all_sinks().items()}
    assert table == declared


def test_rows_without_a_class_still_use_a_guarantee_value() -> None:
    for cells in readme_rows(README.read_text(encoding="utf-8")):
        assert cells[2] in {g.value for g in Guarantee}, cells


def test_the_check_fails_when_only_one_side_changes() -> None:
    text = README.read_text(encoding="utf-8")
    declared = {path: guarantee_of(cls) for path, cls in all_sinks().items()}
    row = "| `streamkit.streaming.sinks.ConsoleSink` | at-least-once |"
    assert row in text
    edited = text.replace(
        row, "| `streamkit.streaming.sinks.ConsoleSink` | exactly-once (idempotent by batch id) |"
    )
    assert table_by_class(edited) != declared  # the row changed alone
    declared["streamkit.streaming.sinks.MemorySink"] = Guarantee.AT_LEAST_ONCE.value
    assert table_by_class(text) != declared  # the attribute changed alone


@pytest.mark.parametrize("path", CONNECTOR_SINKS)
def test_connector_sinks_are_in_the_table(path: str) -> None:
    assert path in table_by_class(README.read_text(encoding="utf-8"))
