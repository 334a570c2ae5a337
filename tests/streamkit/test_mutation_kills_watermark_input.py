"""Which rows move the watermark: what `make mutation` found untested in watermark_input.py.

Every case runs :func:`watermark_filter` on a plan and four rows, ``a`` (v 1), ``b``
(v 5), a null key (v 1) and ``c`` (v 1) at 10, 20, 30 and 40 s, and compares the rows that
move the watermark with a list written by hand from the rules in the module docstring of
``streamkit.streaming.watermark_input`` (Spark's optimizer: filters pushed below the
watermark node, ``IS NOT NULL`` and static-side key filters inferred through an inner join).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.plan import Watermark
from streamkit.streaming.static_sides import bind_static_sides
from streamkit.streaming.watermark_input import counted, watermark_filter

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SCHEMA = pa.schema(
    [("ts", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64()), ("u", pa.int64())]
)
STREAM = sk.read_stream.memory(SCHEMA)


def rows() -> pl.DataFrame:
    """Built per test: a frame built at import would start polars' thread pool in the
    mutation runner's fork server (tests/mutation/test_fork_safety.py)."""
    return pl.DataFrame(
        {"ts": [T0 + timedelta(seconds=s) for s in (10, 20, 30, 40)], "k": ["a", "b", None, "c"],
         "v": [1, 5, 1, 1], "u": [0, 0, 0, 0]},
        schema={"ts": pl.Datetime("us", "UTC"), "k": pl.String, "v": pl.Int64, "u": pl.Int64},
    )  # fmt: skip


ALL = [True, True, True, True]
NOT_NULL = [True, True, False, True]
ONLY_A = [True, False, False, False]

STATIC = sk.from_arrow(pa.table({"k": ["a", "b"], "grp": ["x", "y"]}))
KEYED = sk.from_arrow(pa.table({"key": ["a", "b"], "grp": ["x", "y"]}))
"""STATIC with its key named ``key`` (joined by the condition ``k == key``)."""
U = sk.from_arrow(pa.table({"u": ["a", "b"]}))
"""A static key named like the stream's column ``u`` (which a select drops first)."""


def wm(frame: sk.DataFrame) -> sk.DataFrame:
    return frame.with_watermark("ts", "5 seconds")


def moving(frame: sk.DataFrame, *, bind: bool = True) -> list[bool]:
    """Per row of :func:`rows`, whether it moves the watermark of ``frame``'s plan (bound as the
    engines bind it, or as built: the function takes either)."""
    plan = bind_static_sides(frame.plan)[0] if bind else frame.plan
    mark = next(n for n in plan.chain() if isinstance(n, Watermark))
    mask = counted(rows(), watermark_filter(plan, mark))
    return ALL if mask is None else mask.to_list()


def count(frame: sk.DataFrame) -> sk.DataFrame:
    return frame.group_by(sk.window("ts", "10 seconds")).agg(sk.count())


CASES: dict[str, tuple[Callable[[], sk.DataFrame], list[bool]]] = {
    # below the watermark: a join whose stream is its right input (c finds no static row),
    # and a select
    "static_join_stream_on_the_right": (
        lambda: wm(STATIC.join(STREAM, "k")),
        [True, True, False, False],
    ),
    "select_below_then_join": (
        lambda: wm(
            STREAM.select("ts", "k", "v").join(
                sk.from_arrow(pa.table({"k": ["a", "b"], "u": [7, 8]})).filter(sk.col("u") == 7),
                "k",
            )
        ),
        ONLY_A,
    ),
    # a filter above the watermark up to the aggregation is pushed below it
    "filter_then_aggregate": (lambda: count(wm(STREAM).filter(sk.col("k") == "a")), ONLY_A),
    # ... and up to a stream-stream join
    "filter_then_stream_stream_join": (
        lambda: (
            wm(STREAM)
            .filter(sk.col("k") == "a")
            .join(sk.read_stream.memory(pa.schema([("k", pa.string()), ("w", pa.int64())])), "k")
        ),
        ONLY_A,
    ),
    # a projection below the watermark is applied once: v + 1 == 2 for v == 1
    "projection_below_is_not_applied_again": (
        lambda: wm(STREAM.with_column("v", sk.col("v") + 1)).filter(sk.col("v") == 2),
        [True, False, True, True],
    ),
    # a filter reading every column left (none of them the event time) is pushed
    "filter_on_all_remaining_columns": (
        lambda: wm(STREAM).select("k").filter(sk.col("k") == "a"),
        ONLY_A,
    ),
    # ts passed through a projection still is the event time: its filter stays above
    "ts_through_select": (
        lambda: wm(STREAM).select("ts", "k", "v").filter(sk.col("ts") < T0 + timedelta(seconds=25)),
        ALL,
    ),
    "ts_through_with_column": (
        lambda: (
            wm(STREAM).with_column("z", sk.lit(1)).filter(sk.col("ts") < T0 + timedelta(seconds=25))
        ),
        ALL,
    ),
    # after a join, a projection is not added, but the stream's columns it keeps are still
    # filtered below the watermark (the inner join adds k IS NOT NULL)
    "select_after_join_then_filter": (
        lambda: wm(STREAM).join(STATIC, "k").select("ts", "k", "grp", "v").filter(sk.col("v") < 2),
        [True, False, False, True],
    ),
    "with_column_after_left_join_then_filter": (
        lambda: (
            wm(STREAM).join(STATIC, "k", "left").with_column("z", sk.lit(1)).filter(sk.col("v") < 2)
        ),
        [True, False, True, True],
    ),
    # ... a static column is not (the projection between them keeps the join outer)
    "with_column_after_left_join_then_static_filter": (
        lambda: (
            wm(STREAM)
            .join(STATIC, "k", "left")
            .with_column("z", sk.lit(1))
            .filter(sk.col("grp") == "x")
        ),
        ALL,
    ),
    # ... and a column the select dropped, named again by a second join, is the static one
    "dropped_column_renamed_by_a_second_join": (
        lambda: (
            wm(STREAM)
            .join(STATIC, "k", "left")
            .select("ts", "k", "v")
            .join(sk.from_arrow(pa.table({"k": ["a"], "u": [7]})), "k", "left")
            .filter(sk.col("u") == 7)
        ),
        NOT_NULL,
    ),
    # two filters right above a left join: the first one's null rejection makes it inner
    "two_filters_above_a_left_join": (
        lambda: (
            wm(STREAM)
            .join(STATIC, "k", "left")
            .filter(sk.col("grp") == "x")
            .filter(sk.col("v") < 10)
        ),
        NOT_NULL,
    ),
    "like_on_a_static_column_above_a_left_join": (
        lambda: wm(STREAM).join(STATIC, "k", "left").filter(sk.col("grp").like("x%")),
        NOT_NULL,
    ),
    # join keys with other names on the static side: the stream's key is inferred not null
    # and gets the static side's filter on its key
    "condition_join_stream_left": (
        lambda: wm(STREAM).join(KEYED, sk.col("k") == sk.col("key")),
        NOT_NULL,
    ),
    "condition_join_stream_right": (
        lambda: KEYED.join(wm(STREAM), sk.col("key") == sk.col("k")),
        NOT_NULL,
    ),
    "condition_join_static_key_filter": (
        lambda: wm(STREAM).join(KEYED.filter(sk.col("key") == "a"), sk.col("k") == sk.col("key")),
        ONLY_A,
    ),
    "static_key_named_like_a_dropped_stream_column": (
        lambda: (
            wm(STREAM)
            .select("ts", "k", "v")
            .join(U.filter(sk.col("u") == "a"), sk.col("k") == sk.col("u"))
        ),
        ONLY_A,
    ),
    # static-side filters on the key: all of them, through with_column and pass-through
    # selects; not through a computed key or a right join (whose key is the right side's)
    "two_static_key_filters": (
        lambda: wm(STREAM).join(STATIC.filter(sk.col("k") != "a").filter(sk.col("k") != "b"), "k"),
        [False, False, False, True],
    ),
    "static_key_filter_under_with_column": (
        lambda: wm(STREAM).join(
            STATIC.filter(sk.col("k") == "a").with_column("g2", sk.col("grp") + "!"), "k"
        ),
        ONLY_A,
    ),
    "static_key_filter_under_select": (
        lambda: wm(STREAM).join(STATIC.filter(sk.col("k") == "a").select("grp", "k"), "k"),
        ONLY_A,
    ),
    "static_key_computed_above_its_filter": (
        lambda: wm(STREAM).join(
            STATIC.filter(sk.col("k") == "a").with_column("k", sk.col("grp") + "!"), "k"
        ),
        NOT_NULL,
    ),
    # k = grp above a filter on grp: grp = 'x' holds for k, so no stream key (a, b, c) does
    "static_key_renamed_from_a_filtered_column": (
        lambda: wm(STREAM).join(
            STATIC.filter(sk.col("grp") == "x").with_column("k", sk.col("grp")), "k"
        ),
        [False, False, False, False],
    ),
    # a filter on the key under another name, renamed to the key above it (a AS k)
    "static_key_filter_under_a_rename": (
        lambda: wm(STREAM).join(
            STATIC.select(sk.col("k").alias("a"), "grp")
            .filter(sk.col("a") == "a")
            .select(sk.col("a").alias("k"), "grp"),
            "k",
        ),
        ONLY_A,
    ),
    "static_right_join_over_a_key_filter": (
        lambda: wm(STREAM).join(
            STATIC.filter(sk.col("k") == "a").join(
                sk.from_arrow(pa.table({"k": ["a", "b"], "n": [1, 2]})), "k", "right"
            ),
            "k",
        ),
        NOT_NULL,
    ),
    # the event time derived by a projection is no key to infer from; the next key is
    "join_on_event_time_then_key": (
        lambda: (
            wm(STREAM)
            .with_column("d", sk.col("ts"))
            .join(
                sk.from_arrow(
                    pa.table(
                        {
                            "d": pa.array([T0 + timedelta(seconds=35)], pa.timestamp("us", "UTC")),
                            "k": ["c"],
                        }
                    )
                ).filter(sk.col("d") > T0 + timedelta(seconds=25)),
                ["d", "k"],
            )
        ),
        NOT_NULL,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rows_that_move_the_watermark(case: str) -> None:
    build, expected = CASES[case]
    assert moving(build()) == expected


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: wm(STREAM).join(STATIC, "k"), NOT_NULL),
        (lambda: wm(STREAM).join(STATIC.filter(sk.col("k") == "a"), "k"), ONLY_A),
    ],
)
def test_an_unbound_static_side_gives_the_same_rows(build: object, expected: list[bool]) -> None:
    """The plan as built (static sides not yet pinned) infers the same filters."""
    assert callable(build)
    assert moving(build(), bind=False) == expected


def test_the_threaded_scan_says_what_it_reads() -> None:
    plan = bind_static_sides(wm(STREAM.filter(sk.col("k") == "a")).plan)[0]
    mark = next(n for n in plan.chain() if isinstance(n, Watermark))
    rows = watermark_filter(plan, mark)
    assert rows is not None
    assert "Scan micro-batch rows with their index" in rows.reach.explain()
