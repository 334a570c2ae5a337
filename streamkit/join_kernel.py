"""The vectorised join kernel shared by batch joins and stream-stream joins.

:func:`pairs` finds every (left row, right row) pair satisfying a :class:`Join`'s
condition (a hash join on the equality keys, then the rest of the condition as a filter;
a cross product filtered when there is no equality key). :func:`assemble` turns pairs and
unmatched rows into the join's output columns. :func:`join_frames` is the batch join.
"""

from __future__ import annotations

import polars as pl

from streamkit.join_plan import Join

LID, RID = "__sk_lid", "__sk_rid"
"""Row ids added to each side, so that pairs can be traced back to their rows."""


def _right_name(name: str) -> str:
    return f"__sk_right_{name}"


def pairs(
    left: pl.DataFrame, right: pl.DataFrame, node: Join, *, nulls_equal: bool = False
) -> pl.DataFrame:
    """Every pair of a ``left`` and a ``right`` row that satisfies ``node``'s condition:
    the columns of both (the right side's ``using`` keys renamed). A condition that is
    null counts as false. Null equality keys match nothing, unless ``nulls_equal`` (what
    Spark's stream-stream join does: its state matches keys as whole rows)."""
    renamed = right.rename({n: _right_name(n) for n in node.using})
    using = set(node.using)
    left_on = [a for a, _ in node.pairs]
    right_on = [_right_name(b) if b in using else b for _, b in node.pairs]
    if not left.height or not right.height:
        frame = pl.concat([left.head(0), renamed.head(0)], how="horizontal")
    elif left_on:
        frame = left.join(
            renamed, left_on=left_on, right_on=right_on, how="inner", coalesce=False,
            nulls_equal=nulls_equal,
        )  # fmt: skip
    else:
        frame = left.join(renamed, how="cross")
    for term in node.residual:
        frame = frame.filter(term.to_polars())
    return frame


def assemble(node: Join, matched: pl.DataFrame, *unmatched: pl.DataFrame) -> pl.DataFrame:
    """The join's output rows: ``matched`` pairs (as :func:`pairs` gives them), then
    ``unmatched`` rows of either side (columns of one side only; the other side's are
    null). Using keys come from the left side (the right side in a right join; the one
    that is not null in a full join)."""
    renamed = {_right_name(n): node.right.schema[n] for n in node.using}
    full_schema = {**dict(node.left.schema), **dict(node.right.schema), **renamed}
    parts = [matched, *unmatched]
    frames = [
        p.with_columns(
            pl.lit(None, dtype=t).alias(n) for n, t in full_schema.items() if n not in p.columns
        ).select(list(full_schema))
        for p in parts
    ]
    frame = pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]
    exprs: list[pl.Expr] = []
    for name in node.schema.names():
        if name not in node.using:
            exprs.append(pl.col(name))
        elif node.how == "right":
            exprs.append(pl.col(_right_name(name)).alias(name))
        elif node.how == "full":
            exprs.append(pl.coalesce(pl.col(name), pl.col(_right_name(name))).alias(name))
        else:
            exprs.append(pl.col(name))
    return frame.select(exprs)


def _right_only(node: Join, rows: pl.DataFrame) -> pl.DataFrame:
    """Unmatched right rows, their using keys under the renamed names."""
    return rows.rename({n: _right_name(n) for n in node.using})


def join_frames(left: pl.DataFrame, right: pl.DataFrame, node: Join) -> pl.DataFrame:
    """The batch join of ``left`` and ``right`` under ``node`` (inner, left, right, full
    outer, left semi or left anti), with exactly ``node.schema``."""
    lid = left.with_row_index(LID)
    rid = right.with_row_index(RID)
    found = pairs(lid, rid, node)
    if node.how in ("left_semi", "left_anti"):
        matched = pl.col(LID).is_in(found[LID].implode())
        kept = lid.filter(matched if node.how == "left_semi" else ~matched)
        return kept.select(node.schema.names())
    extra: list[pl.DataFrame] = []
    if node.how in ("left", "full"):
        extra.append(lid.filter(~pl.col(LID).is_in(found[LID].implode())))
    if node.how in ("right", "full"):
        extra.append(_right_only(node, rid.filter(~pl.col(RID).is_in(found[RID].implode()))))
    return assemble(node, found, *extra)


def right_unmatched(node: Join, rows: pl.DataFrame) -> pl.DataFrame:
    """Right-side rows ready for :func:`assemble`'s ``unmatched`` (using keys renamed)."""
    return _right_only(node, rows)
