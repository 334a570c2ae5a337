"""``drop_duplicates`` in the plan: validation, what streams refuse (as Spark does), and
the watermark rules on small hand-made batches (expected rows written out by hand)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.streaming.incremental import IncrementalQuery

SCHEMA = pa.schema([("ts", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64())])
EMPTY = sk.from_arrow(SCHEMA.empty_table())
BASE = datetime(2024, 1, 1, tzinfo=UTC)


def rows(*items: tuple[int, str, int]) -> pl.DataFrame:
    table = pa.table(
        [[BASE + timedelta(seconds=s) for s, _, _ in items], [k for _, k, _ in items],
         [v for *_, v in items]],
        schema=SCHEMA,
    )  # fmt: skip
    out = pl.from_arrow(table)
    assert isinstance(out, pl.DataFrame)
    return out


def values(frame: pl.DataFrame) -> list[int]:
    return frame["v"].to_list()


def test_unknown_or_empty_subset_is_refused_when_built() -> None:
    with pytest.raises(PlanError, match="nope"):
        EMPTY.drop_duplicates(["nope"])
    with pytest.raises(PlanError, match="at least one column"):
        EMPTY.drop_duplicates([])


def test_stream_refusals() -> None:
    with pytest.raises(PlanError, match="complete mode needs an aggregation"):
        IncrementalQuery(EMPTY.drop_duplicates(["k"]).plan, "complete")
    with pytest.raises(PlanError, match="needs a watermark"):
        IncrementalQuery(EMPTY.drop_duplicates_within_watermark(["k"]).plan, "append")
    twice = EMPTY.drop_duplicates(["k"]).group_by("k").agg(sk.count())
    with pytest.raises(PlanError, match="one stateful operator"):
        IncrementalQuery(twice.plan, "update")


def test_without_watermark_every_key_is_held_for_ever() -> None:
    q = IncrementalQuery(EMPTY.drop_duplicates(["k"]).plan, "append")
    assert values(q.run(rows((0, "a", 1), (0, "a", 2), (0, "b", 3))).output) == [1, 3]
    assert values(q.run(rows((900, "a", 4), (0, "c", 5))).output) == [5]
    assert not q.owes_batch
    assert q.state_rows == 3


def test_select_after_drop_duplicates_runs_on_the_rows_emitted() -> None:
    df = EMPTY.drop_duplicates(["k"]).with_column("w", sk.col("v") * 2).select("k", "w")
    q = IncrementalQuery(df.plan, "append")
    out = q.run(rows((0, "a", 1), (0, "a", 2), (0, "b", 3))).output
    assert out.rows() == [("a", 2), ("b", 6)]


def test_a_chain_runs_through_make_engine() -> None:
    from streamkit.streaming.chain import ChainQuery, make_engine

    twice = EMPTY.drop_duplicates(["k"]).group_by("k").agg(sk.count())
    assert isinstance(make_engine(twice.plan, "update"), ChainQuery)
    assert isinstance(make_engine(EMPTY.drop_duplicates(["k"]).plan, "append"), IncrementalQuery)
