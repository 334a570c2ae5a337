"""The AggregateFunction protocol is the only seam: aggregates defined here, in the test,
run in batch and in a restarted stream without touching any streamkit module. One uses
group-by expressions only, the other the sketch hooks with a numpy kernel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.aggregates import AggregateFunction
from streamkit.aggs import AggExpr
from streamkit.testing.tables import assert_table_equal
from tests.streamkit.aggregates.streams import run_with_restart


@dataclass(frozen=True)
class Spread(AggregateFunction):
    """max - min of the non-null values; state: both."""

    name: ClassVar[str] = "spread"
    state_parts: ClassVar[tuple[str, ...]] = ("lo", "hi")

    def result_dtype(self, input_dtype: pl.DataType | None, argument: str = "") -> pl.DataType:
        return pl.Int64()

    def partial(
        self, inputs: list[str], states: list[str], input_dtype: pl.DataType | None
    ) -> list[pl.Expr]:
        v = pl.col(inputs[0])
        return [v.min().alias(states[0]), v.max().alias(states[1])]

    def merge(self, states: list[str]) -> list[pl.Expr]:
        return [pl.col(states[0]).min(), pl.col(states[1]).max()]

    def finalize(self, states: list[str], input_dtype: pl.DataType | None) -> pl.Expr:
        return (pl.col(states[1]) - pl.col(states[0])).cast(pl.Int64)

    def empty_state(self, input_dtype: pl.DataType | None) -> list[Any]:
        return [None, None]


@dataclass(frozen=True)
class BitOr(AggregateFunction):
    """Bitwise OR of non-null values, as a sketch: 64 flag bytes built and merged by numpy
    in the sketch hooks (no group-by expression)."""

    name: ClassVar[str] = "bit_or"
    reads_rows: ClassVar[bool] = True

    def result_dtype(self, input_dtype: pl.DataType | None, argument: str = "") -> pl.DataType:
        return pl.Int64()

    def inputs(self, value: pl.Expr) -> list[pl.Expr]:
        return [value.cast(pl.Int64)]

    def partial(
        self, inputs: list[str], states: list[str], input_dtype: pl.DataType | None
    ) -> list[pl.Expr]:
        return []

    def merge(self, states: list[str]) -> list[pl.Expr]:
        return []

    def finalize(self, states: list[str], input_dtype: pl.DataType | None) -> pl.Expr:
        weights = pl.Series([1 << j for j in range(63)] + [-(1 << 63)], dtype=pl.Int64)
        return pl.col(states[0]).map_batches(
            lambda s: pl.Series((s.to_numpy().astype(np.int64) * weights.to_numpy()).sum(axis=1)),
            return_dtype=pl.Int64,
        )

    def empty_state(self, input_dtype: pl.DataType | None) -> list[Any]:
        return [[0] * 64]

    def build_sketch(
        self,
        rows: pl.DataFrame,
        groups: pl.DataFrame,
        keys: list[str],
        inputs: list[str],
        states: list[str],
    ) -> pl.DataFrame:
        v = rows[inputs[0]].fill_null(0).to_numpy().astype(np.uint64)
        shifts = np.arange(64, dtype=np.uint64)
        matrix = ((v[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
        bits = rows.select(keys).hstack(pl.DataFrame(matrix, schema=[f"b{j}" for j in range(64)]))
        flags = bits.group_by(keys).agg(pl.all().max())
        return self._attach(groups, flags, keys, states)

    def merge_sketch(
        self, frame: pl.DataFrame, merged: pl.DataFrame, keys: list[str], states: list[str]
    ) -> pl.DataFrame:
        wide = frame.select(*keys, pl.col(states[0]).arr.to_struct()).unnest(states[0])
        flags = wide.group_by(keys).agg(pl.all().max())
        return self._attach(merged, flags, keys, states)

    @staticmethod
    def _attach(
        target: pl.DataFrame, flags: pl.DataFrame, keys: list[str], states: list[str]
    ) -> pl.DataFrame:
        fields = [c for c in flags.columns if c not in keys]
        packed = flags.select(
            *keys, pl.concat_arr(fields).cast(pl.Array(pl.UInt8, 64)).alias(states[0])
        )
        return target.join(packed, on=keys, how="left", nulls_equal=True, maintain_order="left")


DATA = pa.table(
    {
        "k": pa.array(np.random.default_rng(3).integers(0, 7, 3000)),
        "v": pa.array(
            np.random.default_rng(4).integers(0, 1 << 20, 3000), mask=np.arange(3000) % 11 == 0
        ),
    }
)
EXPECTED_SQL = "SELECT k, max(v) - min(v) AS spread, bit_or(v) AS bits FROM data GROUP BY k"


def query(df: sk.DataFrame) -> sk.DataFrame:
    col = sk.col("v")
    return df.group_by("k").agg(
        AggExpr(Spread(), col).alias("spread"), AggExpr(BitOr(), col).alias("bits")
    )


def expected() -> pl.DataFrame:
    con = duckdb.connect()
    con.register("data", DATA)
    frame = pl.from_arrow(con.sql(EXPECTED_SQL).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def test_custom_aggregates_in_batch_match_duckdb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streamkit.io.CHUNK_ROWS", 700)  # several chunks: states are merged
    got = query(sk.from_arrow(DATA)).to_arrow()
    assert_table_equal(got, expected(), sort_by=["k"])
    assert [f.name for f in got.schema] == ["k", "spread", "bits"]


@pytest.mark.parametrize("mode", ["complete", "update"])
def test_custom_aggregates_in_a_restarted_stream_match_duckdb(mode: str, tmp_path: Path) -> None:
    got = run_with_restart(DATA, query, mode, tmp_path / "ck", keys=["k"], rows_per_batch=250)
    assert_table_equal(got, expected(), sort_by=["k"])


def test_default_output_name_comes_from_the_class() -> None:
    out = sk.from_arrow(DATA).agg(AggExpr(Spread(), sk.col("v"))).to_arrow()
    assert out.column_names == ["spread(v)"]
