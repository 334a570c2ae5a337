"""Stream-static joins: which sides may stream, and the pinned static side's protocol.

A :class:`~streamkit.join_plan.Join` with a stream on exactly one side is a stream-static
join. Spark allows it when the stream is on the side an outer join preserves (inner
always; left outer, left semi and left anti with the stream on the left; right outer with
the stream on the right) and refuses the rest (:func:`check_stream_static`, with Spark's
words). In a streaming query the static side is computed once and pinned per
micro-batch (:mod:`streamkit.streaming.static_sides`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from streamkit.errors import PlanError
from streamkit.plan import Plan, Scan

if TYPE_CHECKING:
    import polars as pl

@runtime_checkable
class Pinned(Protocol):
    """A source whose rows are fixed in memory for the micro-batch being run: the static
    side of a stream-static join (:mod:`streamkit.streaming.static_sides`). A loader that
    serves a stream's micro-batch in place of its scan reads these instead."""

    def pinned(self, columns: list[str]) -> pl.LazyFrame:
        """The pinned rows, ``columns`` only."""
        ...


def is_streaming(plan: Plan) -> bool:
    """True when a leaf of ``plan`` reads a stream (its source says ``is_stream``)."""
    if isinstance(plan, Scan):
        return bool(getattr(plan.source, "is_stream", False))
    return any(is_streaming(child) for child in plan.children)


_SPARK_REFUSALS: dict[tuple[str, str], str] = {
    ("left", "right"): "LeftOuter join with a streaming DataFrame/Dataset on the right and a "
    "static DataFrame/Dataset on the left is not supported",
    ("right", "left"): "RightOuter join with a streaming DataFrame/Dataset on the left and a "
    "static DataFrame/DataSet on the right not supported",
    ("full", "left"): "FullOuter joins with streaming DataFrames/Datasets on the left and a "
    "static DataFrame/Dataset on the right is not supported",
    ("full", "right"): "FullOuter joins with streaming DataFrames/Datasets on the right and "
    "a static DataFrame/Dataset on the left is not supported",
    ("left_semi", "right"): "LeftSemi join with a streaming DataFrame/Dataset on the right and a "
    "static DataFrame/Dataset on the left is not supported",
    ("left_anti", "right"): "LeftAnti joins with a streaming DataFrame/Dataset on the right are "
    "not supported",
}
"""Spark 4's refusals of stream-static joins (UnsupportedOperationChecker), by (join type,
streaming side): an outer join must preserve the stream's side only, since the static
side's unmatched rows would have to wait for a stream that never ends."""

_FIXES: dict[str, str] = {
    "left": "put the stream on the left (stream.join(static, on, 'left'))",
    "right": "put the stream on the right (static.join(stream, on, 'right')) or use a left "
    "join with the stream on the left",
    "full": "use a left join with the stream on the left",
    "left_semi": "put the stream on the left (stream.join(static, on, 'left_semi'))",
    "left_anti": "put the stream on the left (stream.join(static, on, 'left_anti'))",
}


def check_stream_static(how: str, left_streams: bool, right_streams: bool) -> None:
    """Refuse what Spark refuses for a join with a stream on exactly one side (a join of
    two streams has its own rules, :mod:`streamkit.streaming.stream_join`)."""
    if left_streams == right_streams:
        return
    reason = _SPARK_REFUSALS.get((how, "left" if left_streams else "right"))
    if reason is not None:
        raise PlanError(f"{reason} (Spark refuses it too): {_FIXES[how]}")


def stream_side_first(left: Plan, right: Plan) -> tuple[Plan, Plan]:
    """A join's inputs, the streaming one first when only the right side streams (so
    that ``chain()`` follows the stream down to its scan)."""
    if is_streaming(right) and not is_streaming(left):
        return (right, left)
    return (left, right)
