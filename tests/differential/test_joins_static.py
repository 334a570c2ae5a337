"""Joins against Spark: batch joins of every type, then stream-static joins (a file
stream, one file per micro-batch, ``available_now``, foreach-batch sinks) whose every
batch id and rows equal Spark's, and Spark's refusals.

Inputs have null keys (never matching), keys repeated on the static side (one output
row per match) and stream keys absent from the static side (unmatched rows of a left
outer join, nulls on the static side's columns).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from tests.differential.engines import order

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

HOWS = ["inner", "left", "right", "full", "semi", "anti"]
SPARK_HOW = {"semi": "left_semi", "anti": "left_anti"}

LEFT = pa.table(
    {
        "k": ["a", "a", "b", None, "c", "e", None, "b"],
        "u": [1, 2, 1, 1, None, 3, None, 2],
        "v": [10, 20, 30, 40, 50, 60, 70, 80],
    }
)
RIGHT = pa.table(
    {
        "k": ["a", "a", "b", None, "d", "b", "c"],
        "u": [1, 1, 2, 1, 4, None, None],
        "name": ["alpha", "alef", "beta", "nil", "delta", "bet", "gamma"],
    }
)
LEFT_DDL = "k string, u bigint, v bigint"
RIGHT_DDL = "k string, u bigint, name string"


def spark_table(spark: Any, table: pa.Table, ddl: str) -> Any:
    return spark.createDataFrame([tuple(r.values()) for r in table.to_pylist()], ddl)


def rows(table: pa.Table) -> list[tuple[Any, ...]]:
    return sorted(zip(*(c.to_pylist() for c in table.columns), strict=True), key=order)


@pytest.mark.parametrize("on", [["k"], ["k", "u"]], ids=["k", "k_u"])
@pytest.mark.parametrize("how", HOWS)
def test_batch_join_matches_spark(spark: Any, how: str, on: list[str]) -> None:
    """Columns (names and order) and rows of every join type equal Spark's; on ``k``
    alone ``u`` is on both sides, so the right side's is renamed first."""
    import streamkit as sk

    right_arrow = RIGHT if len(on) == 2 else RIGHT.rename_columns(["k", "ru", "name"])
    right_ddl = RIGHT_DDL if len(on) == 2 else "k string, ru bigint, name string"
    ours = sk.from_arrow(LEFT).join(sk.from_arrow(right_arrow), on=on, how=how).to_arrow()
    theirs = spark_table(spark, LEFT, LEFT_DDL).join(
        spark_table(spark, right_arrow, right_ddl), on=on, how=SPARK_HOW.get(how, how)
    )
    assert ours.column_names == theirs.columns
    assert rows(ours) == sorted((tuple(r) for r in theirs.collect()), key=order)
