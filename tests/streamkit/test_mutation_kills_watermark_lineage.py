"""Watermark lineage: what `make mutation` found untested in watermark_lineage.py.

Expected values follow the rules in the module docstring of
``streamkit.streaming.watermark_lineage`` (Spark's event-time metadata: a ``select`` that
drops the marked column drops its mark; ``drop_duplicates`` judges lateness on a marked
column only when a key or the plan above reads it), worked out by hand per plan.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

import streamkit as sk
from streamkit.plan import Watermark
from streamkit.streaming.downstream import above
from streamkit.streaming.sources.memory import MemoryStream
from streamkit.streaming.watermark_lineage import carried, dedup_time_columns, marks_above

TS = pa.timestamp("us", "UTC")
SCHEMA = pa.schema([("ts", TS), ("k", pa.string()), ("v", pa.int64())])
DELAY_NS = 5_000_000_000


def marked() -> sk.DataFrame:
    return sk.read_stream.source(MemoryStream(SCHEMA)).with_watermark("ts", "5 seconds")


def test_a_static_column_named_like_a_dropped_marked_one_carries_no_mark() -> None:
    """``select`` without ``ts`` drops the mark; the static side's ``ts`` joined in later
    is another column and carries none (a dropped mark must not linger by name)."""
    stream = marked()
    epoch = pa.array([datetime(1970, 1, 1, tzinfo=UTC)], TS)
    static = sk.from_arrow(pa.table({"k": ["a"], "ts": epoch}))
    joined = stream.select("k", "v").join(static, "k")
    assert "ts" in joined.columns
    assert isinstance(stream.plan, Watermark)
    assert carried(joined.plan, stream.plan) == ()


def test_dedup_ignores_a_foreign_mark_on_a_column_it_does_not_have() -> None:
    """A watermark off the deduplication's chain on a column its input lacks gives it no
    time column (nothing to judge lateness on)."""
    other = sk.read_stream.source(MemoryStream(pa.schema([("other_ts", TS)])))
    foreign = other.with_watermark("other_ts", "5 seconds").plan
    assert isinstance(foreign, Watermark)
    dedup = sk.read_stream.source(MemoryStream(SCHEMA)).drop_duplicates(["k"]).plan
    assert dedup_time_columns(dedup, foreign) == ()  # type: ignore[arg-type]


def test_dedup_takes_a_foreign_mark_on_a_column_it_has() -> None:
    """A watermark off the deduplication's chain (as a stream-stream join passes on) on a
    column its input has (``ts``, in its keys): that column is its time column."""
    other = sk.read_stream.source(MemoryStream(pa.schema([("ts", TS)])))
    foreign = other.with_watermark("ts", "5 seconds").plan
    assert isinstance(foreign, Watermark)
    dedup = sk.read_stream.source(MemoryStream(SCHEMA)).drop_duplicates(["k", "ts"]).plan
    assert dedup_time_columns(dedup, foreign) == ("ts",)  # type: ignore[arg-type]


def test_dedup_keeps_a_marked_non_key_column_the_plan_above_reads() -> None:
    """``ts`` is no key but ``select("k", "ts")`` above reads it: not pruned, so it is the
    deduplication's time column."""
    stream = marked()
    dedup = stream.drop_duplicates(["k"])
    over = above(dedup.select("k", "ts").plan, dedup.plan)
    assert isinstance(stream.plan, Watermark)
    assert dedup_time_columns(dedup.plan, stream.plan, over) == ("ts",)  # type: ignore[arg-type]


def test_marks_above_keep_the_delay_on_a_renamed_column() -> None:
    """A mark moved up through ``alias`` keeps its column's delay (5 s)."""
    dedup = marked().drop_duplicates(["k"])
    plan = dedup.select(sk.col("ts").alias("t"), "k").plan
    moved = marks_above(plan, dedup.plan, (Watermark(dedup.plan, "ts", DELAY_NS),))
    assert [(m.column, m.delay_ns) for m in moved] == [("t", DELAY_NS)]
