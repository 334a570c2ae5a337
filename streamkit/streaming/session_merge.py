"""An aggregation grouped by the session window of the aggregation below it (a chain,
:mod:`~streamkit.streaming.chain`): Spark plans it as a session window aggregation, so
the sessions of rows with equal other group keys merge where they overlap or touch (a
session starting at or before the latest end of those before it joins them; checked
against PySpark 4.3), and the merged session is the group key.

In append mode (the only mode Spark allows above an aggregation) the aggregation below
emits a session only once it ends at or before the watermark in force, and the one above
evicts by the same watermark, so it holds no session across batches: merging the rows of
one batch is Spark's merge."""

from __future__ import annotations

import polars as pl

_START, _END, _ROW, _RUN = "__session_start", "__session_end", "__session_row", "__session_run"


def merge_sessions(rows: pl.DataFrame, column: str, by: list[pl.Expr]) -> pl.DataFrame:
    """``rows`` (same order) with each row's session struct ``column`` replaced by the
    merged session of the rows equal on ``by`` (at least one key: Spark refuses a session
    window aggregation without one) whose sessions overlap or touch."""
    if not rows.height:
        return rows
    parts = [f"__session_by{i}" for i in range(len(by))]
    session = pl.col(column)
    marked = rows.with_columns(
        *(b.alias(p) for b, p in zip(by, parts, strict=True)),
        session.struct.field("start").to_physical().alias(_START),
        session.struct.field("end").to_physical().alias(_END),
        pl.int_range(pl.len()).alias(_ROW),
    ).sort([*parts, _START], nulls_last=True)
    reach = pl.col(_END).cum_max().shift(1).over(parts)
    runs = marked.with_columns(
        (reach.is_null() | (pl.col(_START) > reach)).cum_sum().over(parts).alias(_RUN)
    )
    group = [*parts, _RUN]
    merged = pl.struct(
        pl.col(_START).min().over(group).alias("start"),
        pl.col(_END).max().over(group).alias("end"),
    ).cast(rows.schema[column])
    out = runs.with_columns(merged.alias(column)).sort(_ROW)
    return out.drop([*parts, _START, _END, _ROW, _RUN])
