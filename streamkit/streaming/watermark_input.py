"""Which rows of a micro-batch move the watermark: Spark's, after its optimizer.

Spark computes the watermark in ``EventTimeWatermarkExec`` on the rows that reach it. Its
optimizer pushes a filter's deterministic conjuncts that do not read the event-time column
below ``EventTimeWatermark`` (``PushPredicateThroughNonJoin``), and a filter declared
before ``with_watermark`` is below it anyway. So a ``WHERE k = 'a'`` over a watermarked
view keeps the rows it rejects out of the watermark. Here the conjuncts of the filters
between the source and the first stateful operator are evaluated on the rows as read,
with the same rule; a conjunct reading a column computed on the way is left out (it then
runs only where it stands, as before).
"""

from __future__ import annotations

import polars as pl

from streamkit.expr import BinOp, Col, Expr
from streamkit.plan import Aggregate, Deduplicate, Filter, Plan, Project, Watermark
from streamkit.stateful import FlatMapGroupsWithState
from streamkit.transform_state import TransformWithState


def _conjuncts(predicate: Expr) -> list[Expr]:
    if isinstance(predicate, BinOp) and predicate.op == "&":
        return _conjuncts(predicate.left) + _conjuncts(predicate.right)
    return [predicate]


def watermark_filter(plan: Plan, mark: Watermark) -> Expr | None:
    """The condition a row must meet to count toward ``mark``'s watermark (None: every
    row counts), over the columns of the stream as read."""
    leaf = plan.chain()[-1]
    computed: set[str] = set()
    below = True
    kept: list[Expr] = []
    for node in reversed(plan.chain()[:-1]):
        if isinstance(node, Aggregate | Deduplicate | FlatMapGroupsWithState | TransformWithState):
            break
        if node is mark:
            below = False
        elif isinstance(node, Project):
            if not node.keep_input:
                computed |= set(leaf.schema.names())
            for e in node.exprs:
                if not (isinstance(e, Col) and e.name == e.output_name):
                    computed.add(e.output_name)
        elif isinstance(node, Filter):
            for c in _conjuncts(node.predicate):
                readable = not (c.columns() & computed) and c.columns() <= set(leaf.schema)
                if readable and (below or mark.column not in c.columns()):
                    kept.append(c)
    if not kept:
        return None
    out = kept[0]
    for c in kept[1:]:
        out = out & c
    return out


def counted(rows: pl.DataFrame, condition: Expr | None) -> pl.Series | None:
    """Per row, whether it counts toward the watermark (None: all do)."""
    if condition is None or not rows.height:
        return None
    return rows.select(condition.to_polars().fill_null(False)).to_series()
