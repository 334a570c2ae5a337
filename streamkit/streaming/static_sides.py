"""The static side of a stream-static join inside a streaming query.

A streaming query runs its plan once per micro-batch with the batch's rows in place of
the stream's scan. :func:`bind_static_sides` replaces the other input of every
stream-static :class:`~streamkit.join_plan.Join` with a scan of a :class:`StaticSide`: the
static plan's result, computed once and kept in memory, so a micro-batch costs one
vectorised join of its rows against it, not a re-read of the table.

Guarantees:

- one snapshot per micro-batch: :meth:`StaticSide.refresh` runs before each batch; the
  rows it pins are what every join of that batch reads;
- a static side with no ``reload_every`` source is read once, before the first batch;
  one that reads ``sk.read.parquet(path, reload_every=...)`` is recomputed in the first
  batch after a reload of that table (:mod:`streamkit.reloading`), never more often;
- the join holds no state: after a restart the replayed batches join again, against the
  snapshot then current (the same rows unless the table was reloaded or rewritten in
  between). A fleet query, whose ranges are re-read by another worker after a takeover,
  allows no reloading table and checks at every worker start that each side's rows are the
  ones the query started with (:mod:`streamkit.fleet.static_snapshot`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import fields, is_dataclass, replace
from typing import Any

import polars as pl

from streamkit.errors import PlanError
from streamkit.execute import execute
from streamkit.join_plan import Join
from streamkit.plan import Plan, Project, Scan, Watermark
from streamkit.reloading import reloadable_sources
from streamkit.stream_static import is_streaming


class StaticSide:
    """The rows of a static plan, pinned for the micro-batch being run (a
    :class:`~streamkit.stream_static.Pinned` source). Thread-safe: the source tasks of a
    fleet worker share one side and refresh it from their threads; it is computed once
    per snapshot, whoever asks first."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._lock = threading.Lock()
        self.schema: pl.Schema = plan.schema
        self._rows: pl.DataFrame | None = None
        self._versions: tuple[int, ...] = ()
        self.loads = 0
        """How many times the static plan was computed."""

    def refresh(self) -> None:
        """Pin the rows for the next micro-batch: recompute them on first use and after a
        reloadable table under the static plan took a new snapshot."""
        with self._lock:
            versions = tuple(source.refresh() for source in reloadable_sources(self.plan))
            if self._rows is None or versions != self._versions:
                self._rows, self._versions = execute(self.plan), versions
                self.loads += 1

    def snapshot(self) -> pl.DataFrame:
        """The pinned rows, all columns (computed now if no batch pinned them yet)."""
        if self._rows is None:
            self.refresh()
        assert self._rows is not None
        return self._rows

    def pinned(self, columns: list[str]) -> pl.LazyFrame:
        """The pinned rows (computed now if no batch pinned them yet)."""
        return self.snapshot().lazy().select(columns)

    def batches(self, columns: list[str], dictionary: list[str]) -> Iterator[pl.DataFrame]:
        """The pinned rows as one chunk."""
        yield self.pinned(columns).collect()

    def describe(self) -> str:
        return f"static side pinned per micro-batch ({self.plan.describe()})"


def bind_static_sides(plan: Plan) -> tuple[Plan, list[StaticSide]]:
    """``plan`` with the static input of each stream-static join replaced by a scan of a
    :class:`StaticSide` (the same object when there is no such join), and those sides.
    Binding a bound plan returns its sides as they are."""
    sides: list[StaticSide] = []
    bound = _bind(plan, sides)
    if sides:
        _check_watermarks(bound)
    return bound, sides


def _bind(node: Plan, sides: list[StaticSide]) -> Plan:
    if not is_streaming(node):
        return node
    if isinstance(node, Join) and is_streaming(node.left) != is_streaming(node.right):
        if is_streaming(node.left):
            side, scan = _side(node.right)
            sides.append(side)
            return replace(node, left=_bind(node.left, sides), right=scan)
        side, scan = _side(node.left)
        sides.append(side)
        return replace(node, left=scan, right=_bind(node.right, sides))
    changes: dict[str, Any] = {}
    target: Any = node  # every plan node is a dataclass
    for f in fields(target) if is_dataclass(target) else ():
        value = getattr(node, f.name)
        if f.init and isinstance(value, Plan):
            bound = _bind(value, sides)
            if bound is not value:
                changes[f.name] = bound
    return replace(target, **changes) if changes else node


def _side(static: Plan) -> tuple[StaticSide, Scan]:
    """The pinned side of ``static`` and its scan: a plan bound already keeps its side (so
    binding is idempotent, and every engine over one bound plan shares its snapshot)."""
    if isinstance(static, Scan) and isinstance(static.source, StaticSide):
        return static.source, static
    side = StaticSide(static)
    return side, Scan(side)


def _check_watermarks(plan: Plan) -> None:
    """A watermark's event time must derive from the stream's columns only: the engine
    judges each row read (its event time as it reaches the watermark), so a column of a
    static side, which a stream row matching several static rows has several values of,
    is refused (Spark would judge each joined row)."""
    for node in plan.chain():
        if not isinstance(node, Watermark):
            continue
        static = static_lineage(node.input, {node.column})
        if static is not None:
            raise PlanError(
                f"with_watermark({node.column!r}) reads {static!r}, a column of the static "
                "side of a join below it; compute the event time from the "
                "stream's columns only, or declare the watermark before the join"
            )


def static_lineage(node: Plan, names: set[str]) -> str | None:
    """A column of the static side of a stream-static join that any of ``names`` (columns
    of ``node``) is computed from, following projections down (None: there is none). The
    keys of a using join are the stream's."""
    names &= set(node.schema.names())
    if not names:
        return None
    if isinstance(node, Join) and is_streaming(node.left) != is_streaming(node.right):
        stream, static = (node.left, node.right)
        if not is_streaming(node.left):  # static.join(stream, on, "right" | "inner")
            stream, static = static, stream
        found = sorted(n for n in names if n in static.schema and n not in node.using)
        return found[0] if found else static_lineage(stream, names)
    if isinstance(node, Project):
        below: set[str] = set()
        for name in names:
            made = [e for e in node.exprs if e.output_name == name]
            below |= made[0].columns() if made else {name}
        return static_lineage(node.input, below)
    for child in node.children:
        found_in_child = static_lineage(child, set(names))
        if found_in_child is not None:
            return found_in_child
    return None
