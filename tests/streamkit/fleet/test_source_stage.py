"""The source stage: every partition gets a chunk, a key's windows go to one partition, the
batch maximum follows the rows that move the watermark, and a re-read batch encodes to
the same bytes (so a re-emission after a takeover is recognisably the same chunk)."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pyarrow as pa

import streamkit as sk
from streamkit.fleet import FleetPlan, SourceStage, decode_chunk

from .sim import MIN_US, SCHEMA, T0, T0_US, plan, table


def test_every_partition_gets_one_chunk_even_without_rows() -> None:
    stage = SourceStage(plan("tumbling", "update"))
    rows = pl.DataFrame({"k": ["a"], "v": [1], "t": [T0]}, schema=SCHEMA)
    out = stage.run(rows)
    chunks = stage.chunks(out, "s0", "5", "9", out.max_event, False, 8, "q")
    assert [len(parts) for parts in chunks] == [1] * 8
    headers = [decode_chunk(parts[0])[0] for parts in chunks]
    assert sorted(h.rows for h in headers) == [0] * 7 + [1]
    assert {(h.source, h.first, h.last, h.max_event) for h in headers} == {("s0", "5", "9", T0_US)}


def test_a_keys_windows_and_sessions_meet_in_one_partition() -> None:
    for window in ("tumbling", "sliding", "session"):
        stage = SourceStage(plan(window, "complete"))
        out = stage.run(table(3, 400, keys=5))
        chunks = stage.chunks(out, "s0", None, "1", out.max_event, False, 4, "q")
        owner: dict[str | None, int] = {}
        for p, parts in enumerate(chunks):
            for part in parts:
                for key in decode_chunk(part)[1]["k"].unique().to_list():
                    assert owner.setdefault(key, p) == p


def test_the_batch_maximum_counts_only_rows_that_move_the_watermark() -> None:
    empty = pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.int64()),
                      "t": pa.array([], pa.timestamp("us", "UTC"))})  # fmt: skip
    df = sk.from_arrow(empty).with_watermark("t", "5 minutes").filter(sk.col("k") == "a")
    fleet = FleetPlan.of(df.group_by(sk.window("t", "10 minutes")).agg(sk.count()).plan, "update")
    rows = pl.DataFrame({"k": ["a", "b"], "v": [1, 1],
                         "t": [T0, T0 + timedelta(minutes=50)]}, schema=SCHEMA)  # fmt: skip
    out = SourceStage(fleet).run(rows)
    # the filter on k is pushed below the watermark (Spark's optimizer): b's row does not count
    assert out.max_event == T0_US
    assert out.rows == 2
    assert out.states["__n"].sum() == 1
    assert out.max_event != T0_US + 50 * MIN_US


def test_the_batch_maximum_follows_the_rows_a_static_join_and_filter_keep() -> None:
    """A stream-static join and a filter on a static column before ``with_watermark``: only
    the rows that come out of them reach Spark's watermark (a's; b is in group y, c has no
    match), as in the single-process engine."""
    stream = sk.read_stream.memory(SCHEMA.to_arrow())
    static = sk.from_arrow(pa.table({"k": ["a", "b"], "grp": ["x", "y"]}))
    df = stream.join(static, "k").filter(sk.col("grp") == "x").with_watermark("t", "5 minutes")
    fleet = FleetPlan.of(df.group_by(sk.window("t", "10 minutes")).agg(sk.count()).plan, "update")
    rows = pl.DataFrame({"k": ["a", "b", "c"], "v": [1, 1, 1],
                         "t": [T0, T0 + timedelta(minutes=50), T0 + timedelta(minutes=40)]},
                        schema=SCHEMA)  # fmt: skip
    stage = SourceStage(fleet)
    fleet.refresh_static()
    out = stage.run(rows)
    assert out.max_event == T0_US
    assert out.rows == 3
    assert out.states["__n"].sum() == 1


def test_the_batch_maximum_is_over_the_event_time_computed_before_the_watermark() -> None:
    """``t + 7 minutes`` before ``with_watermark``: the maximum of rows at 0 and 50 is 57
    (the column as read would give 50); windows are on the computed column too."""
    empty = pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.int64()),
                      "t": pa.array([], pa.timestamp("us", "UTC"))})  # fmt: skip
    df = sk.from_arrow(empty).with_column("t", sk.col("t") + timedelta(minutes=7))
    df = df.with_watermark("t", "5 minutes")
    fleet = FleetPlan.of(df.group_by(sk.window("t", "10 minutes")).agg(sk.count()).plan, "update")
    rows = pl.DataFrame({"k": ["a", "b"], "v": [1, 1],
                         "t": [T0, T0 + timedelta(minutes=50)]}, schema=SCHEMA)  # fmt: skip
    out = SourceStage(fleet).run(rows)
    assert out.max_event == T0_US + 57 * MIN_US
    assert out.states["__n"].sum() == 2


def test_a_re_read_batch_encodes_to_the_same_bytes() -> None:
    stage = SourceStage(plan("sliding", "update"), budget=2048)
    rows = table(4, 300)
    first = stage.run(rows)
    again = stage.run(rows.sample(fraction=1.0, shuffle=True, seed=9))
    args = ("s0", "1", "2", first.max_event, False, 3, "q")
    assert stage.chunks(first, *args) == stage.chunks(again, *args)


def test_start_and_end_markers_cover_no_records_and_are_told_apart_from_chunks() -> None:
    """A start marker (a task starts reading the shard) and an end marker (it ended) carry
    no rows and no event time; a chunk of records never has ``first == last``."""
    stage = SourceStage(plan("tumbling", "append"))
    out = stage.run(pl.DataFrame({"k": ["a"], "v": [1], "t": [T0]}, schema=SCHEMA))
    ((chunk,),) = stage.chunks(out, "s0", None, "9", out.max_event, True, 1, "q")
    ((fresh,),) = SourceStage.start_chunks("s0", None, 1, "q")
    ((taken,),) = SourceStage.start_chunks("s0", "9", 1, "q")
    ((end,),) = SourceStage.end_chunks("s0", "9", 1, "q")
    heads = [decode_chunk(c)[0] for c in (chunk, fresh, taken, end)]
    assert [(h.is_start, h.is_end) for h in heads] == [
        (False, False), (True, False), (True, False), (False, True)]  # fmt: skip
    assert [(h.first, h.last, h.rows, h.max_event) for h in heads[1:]] == [
        ("0", "0", 0, None), ("9", "9", 0, None), ("9", "9", 0, None)]  # fmt: skip
    assert SourceStage.start_chunks("s0", "9", 1, "q") == [[taken]]  # sent again: same bytes
