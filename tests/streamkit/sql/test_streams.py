"""One SQL text over a streaming view runs as a stream: batch by batch, it emits exactly
what the DataFrame-API query emits on the same micro-batches (the watermark comes from
the view's DataFrame, as in Spark)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import streamkit as sk
from streamkit.sql import Catalog
from streamkit.streaming.incremental import OutputMode
from streamkit.streaming.sources.memory import MemoryStream
from tests.differential.inputs import SCHEMA, random_files, rows_table

C = sk.col
FILES = random_files(11, files=10)
Batches = list[tuple[int, list[dict[str, object]]]]


def run(build: Callable[[sk.DataFrame], sk.DataFrame], mode: OutputMode) -> Batches:
    """``build`` over a memory stream fed one file per micro-batch; every batch emitted."""
    stream = MemoryStream(SCHEMA)
    seen: Batches = []
    frame = build(sk.read_stream.source(stream).with_watermark("ts", "10 seconds"))
    assert frame.is_streaming
    query = (
        frame.write_stream.output_mode(mode)
        .foreach_batch(lambda df, batch: seen.append((batch, df.to_arrow().to_pylist())))
        .start()
    )
    try:
        for rows in FILES:
            stream.add_rows(rows_table(rows))
            query.process_all_available()
    finally:
        query.stop()
    return seen


def via_sql(query: str) -> Callable[[sk.DataFrame], sk.DataFrame]:
    def build(events: sk.DataFrame) -> sk.DataFrame:
        views = Catalog()
        views.register("events", events)
        return sk.sql(query, catalog=views)

    return build


CASES: dict[str, tuple[OutputMode, str, Callable[[sk.DataFrame], sk.DataFrame]]] = {
    "windowed count by key, window aliased": (
        "append",
        "SELECT window(ts, '10 seconds') AS w, k, count(*) FROM events GROUP BY 1, 2",
        lambda df: (
            df.group_by(sk.window("ts", "10 seconds"), "k")
            .agg(sk.count())
            .select(C("window").alias("w"), "k", "count")
        ),
    ),
    "sliding window sum with WHERE": (
        "append",
        "SELECT window(ts, '20 seconds', '10 seconds'), sum(v) AS s FROM events"
        " WHERE v IS NOT NULL GROUP BY 1",
        lambda df: (
            df.filter(C("v").is_not_null())
            .group_by(sk.window("ts", "20 seconds", "10 seconds"))
            .agg(sk.sum("v").alias("s"))
        ),
    ),
    "session window": (
        "append",
        "SELECT session_window(ts, '5 seconds'), k, count(*) AS n FROM events GROUP BY 1, 2",
        lambda df: df.group_by(sk.session_window("ts", "5 seconds"), "k").agg(
            sk.count().alias("n")
        ),
    ),
    "HAVING in update mode": (
        "update",
        "SELECT window(ts, '10 seconds'), k, count(*) AS n FROM events"
        " GROUP BY 1, 2 HAVING count(*) >= 2",
        lambda df: (
            df.group_by(sk.window("ts", "10 seconds"), "k")
            .agg(sk.count().alias("n"))
            .filter(C("n") >= 2)
        ),
    ),
    "projection without aggregation": (
        "append",
        "SELECT k, v * 10 AS v10 FROM events WHERE v > 5",
        lambda df: df.filter(C("v") > 5).select("k", (C("v") * 10).alias("v10")),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_sql_stream_emits_what_the_dataframe_api_stream_emits(name: str) -> None:
    mode, query, build = CASES[name]
    want = run(build, mode)
    assert sum(len(rows) for _, rows in want) > 0
    assert run(via_sql(query), mode) == want


def test_a_view_without_watermark_cannot_run_append_aggregation() -> None:
    stream = MemoryStream(SCHEMA)
    views = Catalog()
    views.register("events", sk.read_stream.source(stream))
    frame = sk.sql("SELECT window(ts, '10 seconds'), count(*) FROM events GROUP BY 1",
                   catalog=views)  # fmt: skip
    with pytest.raises(sk.PlanError, match="append mode on an aggregation needs a watermark"):
        frame.write_stream.output_mode("append").foreach_batch(lambda df, b: None).start()
