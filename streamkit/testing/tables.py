"""Table assertions for tests: order-insensitive, float-tolerant, with readable diffs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Union

import polars as pl
import pyarrow as pa

Tabular = Union[pa.Table, pl.DataFrame]  # noqa: UP007 - pyarrow is untyped here


def _frame(table: Tabular) -> pl.DataFrame:
    frame = table if isinstance(table, pl.DataFrame) else pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _flatten(frame: pl.DataFrame) -> pl.DataFrame:
    structs = [n for n, t in frame.schema.items() if isinstance(t, pl.Struct)]
    for name in structs:
        fields = frame[name].struct.fields
        frame = frame.with_columns(
            pl.col(name).struct.field(f).alias(f"{name}.{f}") for f in fields
        ).drop(name)
    return frame


def _close(a: Any, b: Any, rel_tol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float | int):
        return math.isclose(a, float(b), rel_tol=rel_tol, abs_tol=rel_tol)
    if isinstance(b, float) and isinstance(a, int):
        return math.isclose(float(a), b, rel_tol=rel_tol, abs_tol=rel_tol)
    return bool(a == b)


def assert_table_equal(
    actual: Tabular,
    expected: Tabular,
    *,
    sort_by: Sequence[str] | None = None,
    rel_tol: float = 1e-9,
    check_dtypes: bool = False,
) -> None:
    """Assert two tables hold the same rows (in any order when ``sort_by`` is given).

    Struct columns are compared field by field (``window.start``...). Floats compare with
    ``rel_tol``; everything else exactly. Raises AssertionError naming the first difference.
    """
    a, e = _flatten(_frame(actual)), _flatten(_frame(expected))
    if sorted(a.columns) != sorted(e.columns):
        raise AssertionError(f"columns differ: {a.columns} != {e.columns}")
    e = e.select(a.columns)
    if check_dtypes and a.schema != e.schema:
        raise AssertionError(f"types differ: {a.schema} != {e.schema}")
    if a.height != e.height:
        raise AssertionError(f"row counts differ: {a.height} != {e.height}")
    if sort_by:
        order = [c for s in sort_by for c in a.columns if c == s or c.startswith(f"{s}.")]
        a, e = a.sort(order, nulls_last=True), e.sort(order, nulls_last=True)
    for name in a.columns:
        for i, (x, y) in enumerate(zip(a[name].to_list(), e[name].to_list(), strict=True)):
            if not _close(x, y, rel_tol):
                row = {k: a[k][i] for k in (sort_by or [])[:4] if k in a.columns}
                raise AssertionError(f"column {name!r} row {i} {row}: {x!r} != {y!r}")
