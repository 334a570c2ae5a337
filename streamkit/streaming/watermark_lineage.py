"""Which columns carry the watermark ABOVE ``with_watermark``, as Spark's event-time
metadata (``spark.watermarkDelayMs``) travels up to the stateful operator (checked against
PySpark 4.3, ``tests/differential/test_watermark_lineage.py``):

- ``with_watermark(c)`` marks ``c`` (a later ``with_watermark`` moves the mark);
- filters, stream-static joins and ``drop_duplicates`` pass every column on, mark and all;
- a projection passes the mark on to a column that is a plain reference to a marked column,
  under its own name or another (``select(col("ts").alias("t"))``,
  ``with_column("t", col("ts"))``: an alias of an attribute keeps its metadata); a column
  computed from it (``ts + interval``, a cast) carries none, and a column it replaces loses
  its mark.

A window carries the mark when its time column is a marked column (``TimeWindowing`` gives
the window the column's metadata), never when it is an expression. The values of a marked
column are those of the watermark's column at ``with_watermark`` (renames only), so the
lateness of a row can be judged there.

``drop_duplicates`` sees its input after Spark's column pruning: a marked column that is
neither a key nor read by the plan above it (through filters, projections, stream-static
joins and an aggregation: :mod:`~streamkit.streaming.pruning`) is pruned away, and with it
the late-row rule (:func:`dedup_time_columns`).
"""

from __future__ import annotations

from streamkit.expr import Alias, Col, Expr
from streamkit.plan import Aggregate, Deduplicate, Plan, Project, Watermark
from streamkit.streaming.downstream import above
from streamkit.streaming.pruning import columns_read


def plain_reference(expr: Expr) -> str | None:
    """The column ``expr`` copies unchanged (under any alias), or None if it computes."""
    while isinstance(expr, Alias):
        expr = expr.operand
    return expr.name if isinstance(expr, Col) else None


def _through(node: Plan, marked: set[str]) -> set[str]:
    """The marked columns of ``node``'s output, given those of its first input."""
    if isinstance(node, Watermark):
        return {node.column}
    if isinstance(node, Project):
        made = {e.output_name for e in node.exprs}
        out = {c for c in marked if c not in made} if node.keep_input else set()
        return out | {e.output_name for e in node.exprs if plain_reference(e) in marked}
    return {c for c in marked if c in node.schema}


def carried(node: Plan, mark: Watermark) -> tuple[str, ...] | None:
    """The columns of ``node``'s output that carry ``mark``'s watermark, in ``node``'s
    column order (None: ``mark`` is not on ``node``'s chain of first inputs)."""
    return carried_from(node, mark, (mark.column,))


def carried_from(node: Plan, start: Plan, marked: tuple[str, ...]) -> tuple[str, ...] | None:
    """The columns of ``node``'s output that carry the watermark, when ``marked`` are the
    columns of ``start``'s output that do (None: ``start`` is not on ``node``'s chain)."""
    nodes = node.chain()
    at = next((i for i, n in enumerate(nodes) if n is start), None)
    if at is None:
        return None
    names = set(marked)
    for step in reversed(nodes[:at]):
        names = _through(step, names)
    return tuple(c for c in node.schema.names() if c in names)


def marked_window_column(column: Expr, marked: tuple[str, ...]) -> bool:
    """Whether a window on ``column`` carries the watermark (a marked column, as is)."""
    return isinstance(column, Col) and column.name in marked


def window_watermark(agg: Aggregate | None, mark: Watermark | None) -> Watermark | None:
    """``mark`` when ``agg``'s window carries it (None: the aggregation has no watermark:
    no eviction, no late rows, append mode refused, as in Spark)."""
    if agg is None or mark is None or agg.window is None:
        return None
    return mark if marked_window_column(agg.window.column, carried(agg.input, mark) or ()) else None


def watermarked_keys(agg: Aggregate, mark: Watermark) -> list[str]:
    """``agg``'s plain group keys that carry ``mark``'s watermark (Spark evicts groups by
    such a key when no window carries it)."""
    marked = carried(agg.input, mark) or ()
    return [k.output_name for k in agg.keys if plain_reference(k) in marked]


def dedup_time_columns(
    node: Deduplicate, mark: Watermark | None, above: Plan | None = None
) -> tuple[str, ...]:
    """The columns of ``node``'s input that carry ``mark``'s watermark once Spark has
    pruned the columns that neither the keys nor ``above`` (the plan over ``node``'s
    output; None: nothing, every column is output) read. ``mark`` not on ``node``'s chain
    (the watermark a stream-stream join passes on): its column, if ``node`` reads it."""
    if mark is None:
        return ()
    marked = carried(node.input, mark)
    if marked is None:
        marked = (mark.column,) if mark.column in node.input.schema else ()
    needed = columns_read(above) if above is not None else None
    return tuple(c for c in marked if needed is None or c in needed or c in node.keys)


def marks_above(plan: Plan, stateful: Plan, marks: tuple[Watermark, ...]) -> tuple[Watermark, ...]:
    """``marks`` (the watermarks ``stateful`` passes on, on columns of its output) moved to
    the columns of ``plan`` (the input of the operator above it) that carry them: the column
    itself or a plain rename of it between the two, with the mark's delay, in ``plan``'s
    column order; a column computed from it, or one that replaced it, carries none (as
    Spark's event-time metadata). Each mark is on ``plan`` re-rooted on ``stateful``'s
    output (:func:`~streamkit.streaming.downstream.above`)."""
    staged = above(plan, stateful)
    found = {
        column: m.delay_ns
        for m in marks
        for column in carried_from(plan, stateful, (m.column,)) or ()
    }
    return tuple(Watermark(staged, c, found[c]) for c in staged.schema.names() if c in found)
