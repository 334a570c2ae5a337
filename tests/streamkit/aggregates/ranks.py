"""Rank checks computed by DuckDB from the raw rows, independently of the sketch: for each
answer ``x`` of a group, the group's non-null count ``n``, ``count(< x)`` and ``count(<= x)``."""

from __future__ import annotations

from fractions import Fraction
from math import ceil

import duckdb
import polars as pl


def ranks(answers: pl.DataFrame, rows: pl.DataFrame, keys: list[str], value: str) -> pl.DataFrame:
    """``answers`` (keys..., ``x``) joined with the rows of the same group in ``rows``."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("a", answers.select(*keys, "x").to_arrow())
    con.register("r", rows.select(*keys, value).to_arrow())
    on = " AND ".join(f"a.{k} IS NOT DISTINCT FROM r.{k}" for k in keys)
    cols = ", ".join(f"a.{k}" for k in keys)
    sql = f"""
        SELECT {cols}, a.x, count(r.{value}) AS n,
               count(r.{value}) FILTER (WHERE r.{value} < a.x) AS below,
               count(r.{value}) FILTER (WHERE r.{value} <= a.x) AS upto
        FROM a LEFT JOIN r ON {on} GROUP BY ALL"""
    frame = pl.from_arrow(con.sql(sql).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    assert frame.height == answers.height
    return frame


def assert_within(checked: pl.DataFrame, q: float, accuracy: int, exact_up_to: int) -> None:
    """The documented guarantee: ``count(< x) <= q n + n/accuracy`` and ``count(<= x) >=
    q n - n/accuracy``; Spark's exact rank (the ``ceil(q n)``-th value) for small groups;
    null for groups without values."""
    for row in checked.iter_rows(named=True):
        n, below, upto, x = row["n"], row["below"], row["upto"], row["x"]
        if n == 0:
            assert x is None, row
            continue
        assert x is not None, row
        qn = Fraction(str(q)) * n
        if n <= exact_up_to:
            target = max(1, ceil(qn))
            assert below < target <= upto, (row, target)
        slack = Fraction(n, accuracy)
        assert below <= qn + slack, (row, float((below - qn) / n))
        assert upto >= qn - slack, (row, float((upto - qn) / n))
