"""approx_percentile in a stream: sketches merged across micro-batches, checkpointed and
restored on a restart midway, give answers within the documented bound of the exact
ranks (counted by DuckDB), exactly like the batch run, in every output mode."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.testing.tables import assert_table_equal
from tests.oracle.events import events
from tests.streamkit.aggregates.ranks import assert_within, ranks
from tests.streamkit.aggregates.streams import run_with_restart
from tests.streamkit.aggregates.test_approx_percentile_oracle import windowed_rows

DATA = events(n=6000, seed=41, span_hours=12).filter(
    pa.compute.is_valid(pa.compute.field("event_time"))
)
ACCURACY = 5  # k = 40 values per level: groups of ~100 values are compacted


def query(df: sk.DataFrame, watermark: bool) -> sk.DataFrame:
    df = df.with_watermark("event_time", "150 minutes") if watermark else df
    return df.group_by(sk.window("event_time", "1 hour"), "action").agg(
        sk.count().alias("n"),
        sk.approx_percentile("value", 0.5, ACCURACY).alias("p50"),
        sk.approx_percentile("value", 0.9, ACCURACY).alias("p90"),
    )


def flat(frame: pl.DataFrame) -> pl.DataFrame:
    start = pl.col("window").struct.field("start").dt.epoch("us").alias("wstart")
    return frame.with_columns(start).drop("window")


def check_bound(result: pl.DataFrame) -> None:
    rows = windowed_rows(DATA, 60, 60)
    for col, q in (("p50", 0.5), ("p90", 0.9)):
        answers = result.select("wstart", "action", pl.col(col).alias("x"))
        checked = ranks(answers, rows, ["wstart", "action"], "value")
        assert (checked["n"] > 8 * ACCURACY).any()
        assert_within(checked, q, ACCURACY, exact_up_to=8 * ACCURACY)


@pytest.mark.parametrize("mode", ["complete", "update", "append"])
def test_stream_with_restart_is_within_bound_like_batch(mode: str, tmp_path: Path) -> None:
    watermark = mode == "append"
    stream = flat(
        run_with_restart(
            DATA, lambda df: query(df, watermark), mode, tmp_path / "ck", keys=["window", "action"]
        )
    )
    batch = pl.from_arrow(query(sk.from_arrow(DATA), watermark=False).to_arrow())
    assert isinstance(batch, pl.DataFrame)
    batch = flat(batch)
    if mode == "append":  # only windows the watermark has passed are out
        assert 0 < stream.height < batch.height
        emitted = stream.select("wstart", "action")
        batch = batch.join(emitted, on=["wstart", "action"], nulls_equal=True)
    keys = ["wstart", "action"]
    assert_table_equal(stream.select(*keys, "n"), batch.select(*keys, "n"), sort_by=keys)
    check_bound(stream)
    check_bound(batch)
