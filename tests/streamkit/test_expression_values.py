"""Values of ``//``, ``%``, ``cast`` and ``sk.from_epoch``, negatives included.

The README lists ``// %`` among the expression operators without qualification: they are
Python's operators on a Python API, so they follow Python (floor division; the remainder
takes the divisor's sign). Spark has no ``//`` and its ``%`` truncates (``-7 % 2 = -1``);
DuckDB's ``//`` and ``%`` truncate too. ``cast`` of a float to an integer truncates toward
zero, as Python's ``int()`` and Spark's ``CAST`` do (DuckDB's ``CAST`` rounds: -2.5 -> -3).
Expected values are computed here with Python's own operators, never by streamkit, and
the same expressions are checked on the batch engine and in a streaming query.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.sources.memory import MemoryStream

if TYPE_CHECKING:
    from streamkit.expr import Expr
    from streamkit.time_expr import EpochUnit

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NUMBERS = [-7, -6, -1, 0, 1, 6, 7, 2**40 + 3, -(2**40) - 3]
DIVISORS = [-3, -2, -1, 1, 2, 3]
PAIRS = list(itertools.product(NUMBERS, DIVISORS))
FLOATS = [-2.7, -2.5, -0.5, -0.0, 0.5, 2.5, 2.7, -1e9 - 0.9, 1e9 + 0.9]


def batch_values(table: pa.Table, expr: Expr) -> list[Any]:
    values: list[Any] = sk.from_arrow(table).select(expr.alias("x")).to_arrow()["x"].to_pylist()
    return values


def stream_values(table: pa.Table, expr: Expr) -> list[Any]:
    stream = MemoryStream(table.schema)
    seen: list[pa.Table] = []
    q = (
        sk.read_stream.source(stream)
        .select(expr.alias("x"))
        .write_stream.foreach_batch(lambda df, _: seen.append(df.to_arrow()))
        .start()
    )
    try:
        stream.add_rows(table)
        q.process_all_available()
    finally:
        q.stop()
    return [v for t in seen for v in t["x"].to_pylist()]


@pytest.fixture(params=["batch", "stream"])
def values(request: pytest.FixtureRequest) -> Any:
    return batch_values if request.param == "batch" else stream_values


def int_pairs() -> pa.Table:
    return pa.table(
        {"a": pa.array([a for a, _ in PAIRS], pa.int64()),
         "b": pa.array([b for _, b in PAIRS], pa.int64())}
    )  # fmt: skip


def test_floor_division_of_integers_is_pythons(values: Any) -> None:
    got = values(int_pairs(), sk.col("a") // sk.col("b"))
    assert got == [a // b for a, b in PAIRS]
    assert got[PAIRS.index((-7, 2))] == -4  # floor, not Spark/DuckDB truncation (-3)


def test_modulo_of_integers_takes_the_divisors_sign(values: Any) -> None:
    got = values(int_pairs(), sk.col("a") % sk.col("b"))
    assert got == [a % b for a, b in PAIRS]
    assert got[PAIRS.index((-7, 2))] == 1  # Spark's -7 % 2 is -1
    assert got[PAIRS.index((7, -2))] == -1
    # the identity a == (a // b) * b + a % b holds row by row
    div = values(int_pairs(), sk.col("a") // sk.col("b"))
    assert all(q * b + r == a for (a, b), q, r in zip(PAIRS, div, got, strict=True))


def test_floor_division_and_modulo_of_floats(values: Any) -> None:
    table = pa.table({"f": pa.array(FLOATS, pa.float64())})
    assert values(table, sk.col("f") // 1) == [math.floor(f) for f in FLOATS]
    assert values(table, sk.col("f") % 1) == pytest.approx([f % 1 for f in FLOATS])


def test_cast_float_to_integer_truncates_toward_zero(values: Any) -> None:
    table = pa.table({"f": pa.array(FLOATS, pa.float64())})
    got = values(table, sk.col("f").cast("int64"))
    assert got == [int(f) for f in FLOATS]  # Python int() and Spark CAST: toward zero
    assert got[FLOATS.index(-2.7)] == -2
    assert got[FLOATS.index(-2.5)] == -2  # not rounded (DuckDB's CAST gives -3)


def test_cast_integer_to_float_and_string(values: Any) -> None:
    table = pa.table({"a": pa.array(NUMBERS, pa.int64())})
    assert values(table, sk.col("a").cast("float64")) == [float(a) for a in NUMBERS]
    assert values(table, sk.col("a").cast("string")) == [str(a) for a in NUMBERS]


@pytest.mark.parametrize(
    ("unit", "per_second"), [("s", 1), ("ms", 1_000), ("us", 1_000_000), ("ns", 1_000_000_000)]
)
def test_from_epoch_in_every_unit_before_and_after_1970(
    unit: EpochUnit, per_second: int, values: Any
) -> None:
    micros = [-86_400_000_001, -1_500_000, -1, 0, 1, 1_700_000_000_123_456]
    # the same instants in ``unit`` (whole units only: no rounding question arises)
    step = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1}[unit]
    instants = [m - m % step for m in micros]
    numbers = [m * per_second // 1_000_000 for m in instants]
    table = pa.table({"e": pa.array(numbers, pa.int64())})
    got = values(table, sk.from_epoch("e", unit))
    assert got == [EPOCH + timedelta(microseconds=m) for m in instants]
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in got)
