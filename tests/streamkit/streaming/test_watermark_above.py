"""The watermark column renamed or computed BETWEEN ``with_watermark`` and the stateful
operator (issue 18), as PySpark 4.3 runs it (the same inputs and shapes, Spark-checked, are
in ``tests/differential/test_watermark_lineage.py``):

- a plain rename (``select(col("ts").alias("t"))``, ``with_column("t", col("ts"))``, with
  or without the original kept) carries the watermark: windows on ``t`` evict and drop
  late rows with the watermark on ``ts``, unchanged;
- a column computed from it (``ts + 7 s``) carries none: append mode is refused with
  Spark's reason; update mode runs, never evicts, never drops a late row, and still owes
  the no-data batch when the watermark moves;
- ``drop_duplicates`` judges late rows and expires keys on the input column that carries
  the watermark, none when it was computed or pruned away, and is refused when two do.

Grouping by the renamed column itself, without a window: test_watermark_key.py.

Times are seconds after T0; delay 5 s; windows 10 s. Expected batches are worked out by
hand in the comments (batch n evicts with W(n-1), drops rows whose window ended at or
before W(n-2); a no-data batch runs at the end when W moved).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from streamkit.streaming.chain import ChainQuery, make_engine
from streamkit.streaming.incremental import IncrementalQuery, OutputMode
from streamkit.streaming.sources.memory import MemoryStream

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SCHEMA = pa.schema([("ts", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64())])
DELAY = "5 seconds"
SHIFT = timedelta(seconds=7)
Row = tuple[int, str, int]
"""(seconds after T0, key, value)."""
Out = tuple[Any, ...]

AGG_BATCHES: list[list[Row]] = [
    [(10, "a", 1), (100, "z", 200), (90, "q", 300)],  # W = 95
    [(12, "a", 3), (30, "a", 4)],  # in force 95: [10,20) and [30,40) leave
    [(15, "a", 5)],  # [10,20) ended at 20 <= 95: late
    [(200, "a", 7)],  # W = 195; the no-data batch then closes [90,100), [100,110)
]
RENAMED: dict[str, dict[int, list[Out]]] = {
    "update": {
        0: [(10, "a", 1, 1), (90, "q", 1, 300), (100, "z", 1, 200)],
        1: [(10, "a", 2, 4), (30, "a", 1, 4)],
        2: [],
        3: [(200, "a", 1, 7)],
        4: [],
    },
    "append": {
        0: [],
        1: [(10, "a", 2, 4), (30, "a", 1, 4)],
        2: [],
        3: [],
        4: [(90, "q", 1, 300), (100, "z", 1, 200)],
    },
}
RENAMED_STATE = [3, 2, 2, 3, 1]
"""Groups held after each batch (Spark's ``numRowsTotal``)."""
# t = ts + 7: nothing is late, nothing leaves; W is still on ts (95, then 195)
COMPUTED: dict[int, list[Out]] = {
    0: [(10, "a", 1, 1), (90, "q", 1, 300), (100, "z", 1, 200)],
    1: [(10, "a", 2, 4), (30, "a", 1, 4)],
    2: [(20, "a", 1, 5)],
    3: [(200, "a", 1, 7)],
    4: [],
}
COMPUTED_STATE = [3, 4, 5, 6, 6]


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def frame(rows: list[Row]) -> pl.DataFrame:
    return pl.DataFrame(
        {"ts": [at(s) for s, _, _ in rows], "k": [k for _, k, _ in rows],
         "v": [v for _, _, v in rows]},
        schema={"ts": pl.Datetime("us", "UTC"), "k": pl.String, "v": pl.Int64},
    )  # fmt: skip


def stream() -> sk.DataFrame:
    return sk.from_arrow(SCHEMA.empty_table()).with_watermark("ts", DELAY)


def counts(df: sk.DataFrame, column: str | sk.Expr = "t") -> sk.DataFrame:
    return df.group_by(sk.window(column, "10 seconds"), "k").agg(
        sk.count().alias("n"), sk.sum("v").alias("s")
    )


def seconds(value: Any) -> Any:
    if isinstance(value, dict):  # a window: its start
        value = value["start"]
    return (value - T0) // timedelta(seconds=1) if isinstance(value, datetime) else value


def rows_of(out: pl.DataFrame) -> list[Out]:
    return sorted(tuple(seconds(v) for v in r.values()) for r in out.to_dicts())


def drive(
    query: IncrementalQuery | ChainQuery, batches: list[list[Row]]
) -> tuple[dict[int, list[Out]], list[int], list[int | None]]:
    """The batches as Spark's ``available_now`` runs them (one file a batch, the no-data
    batch after the last while one is owed): rows out, state held and W per batch."""
    out: dict[int, list[Out]] = {}
    held: list[int] = []
    marks: list[int | None] = []

    def record(result: Any) -> None:
        out[len(out)] = rows_of(result.output)
        held.append(query.state_rows)
        marks.append(result.watermark)

    for batch in batches:
        record(query.run(frame(batch)))
    while query.owes_batch:
        record(query.run_no_data())
    return out, held, marks


RENAMES: dict[str, Callable[[sk.DataFrame], sk.DataFrame]] = {
    "select_alias": lambda d: d.select(sk.col("ts").alias("t"), "k", "v"),
    "with_column_copy": lambda d: d.with_column("t", sk.col("ts")),  # ts and t both kept
    "copy_then_original_overwritten": lambda d: d.with_column("t", sk.col("ts")).with_column(
        "ts", sk.col("ts") + SHIFT
    ),
    "renamed_twice": lambda d: d.select(sk.col("ts").alias("u"), "k", "v").select(
        sk.col("u").alias("t"), "k", "v"
    ),
}
COMPUTES: dict[str, Callable[[sk.DataFrame], sk.DataFrame]] = {
    "with_column_computed": lambda d: d.with_column("t", sk.col("ts") + SHIFT),
    "select_computed": lambda d: d.select((sk.col("ts") + SHIFT).alias("t"), "k", "v"),
}


@pytest.mark.parametrize("mode", ["update", "append"])
@pytest.mark.parametrize("name", list(RENAMES))
def test_a_window_on_a_renamed_watermark_column_evicts_and_drops_late_rows(
    name: str, mode: str
) -> None:
    q = IncrementalQuery(counts(RENAMES[name](stream())).plan, mode)  # type: ignore[arg-type]
    out, held, marks = drive(q, AGG_BATCHES)
    assert out == RENAMED[mode]
    assert held == RENAMED_STATE
    assert marks == [us(95), us(95), us(95), us(195), us(195)]  # on ts, unchanged


def test_the_late_row_of_a_renamed_window_is_kept_as_read() -> None:
    q = IncrementalQuery(counts(RENAMES["select_alias"](stream())).plan, "update")
    for batch in AGG_BATCHES[:2]:
        q.run(frame(batch))
    late = q.run(frame(AGG_BATCHES[2])).late_rows
    assert late.columns == ["ts", "k", "v"]
    assert rows_of(late) == [(15, "a", 5)]


@pytest.mark.parametrize("name", [*COMPUTES, "window_on_an_expression"])
def test_a_computed_column_carries_no_watermark_update_mode_never_evicts(name: str) -> None:
    """Spark: no late row is dropped, no group leaves, W still moves on ts (and the
    no-data batch still runs: batch 4)."""
    if name == "window_on_an_expression":
        plan = counts(stream(), sk.col("ts") + SHIFT).plan
    else:
        plan = counts(COMPUTES[name](stream())).plan
    out, held, marks = drive(IncrementalQuery(plan, "update"), AGG_BATCHES)
    assert out == COMPUTED
    assert held == COMPUTED_STATE
    assert marks == [us(95), us(95), us(95), us(195), us(195)]


# complete mode: every window every batch (t = ts + 7: 15 counts in [20,30)), no no-data
# batch, 3, 4, 5, 6 groups held (Spark's numRowsTotal; PySpark 4.3 gives these batches in
# tests/differential/test_watermark_lineage.py, window_on_computed-complete)
COMPUTED_COMPLETE: dict[int, list[Out]] = {
    0: [(10, "a", 1, 1), (90, "q", 1, 300), (100, "z", 1, 200)],
    1: [(10, "a", 2, 4), (30, "a", 1, 4), (90, "q", 1, 300), (100, "z", 1, 200)],
    2: [(10, "a", 2, 4), (20, "a", 1, 5), (30, "a", 1, 4), (90, "q", 1, 300), (100, "z", 1, 200)],
    3: [(10, "a", 2, 4), (20, "a", 1, 5), (30, "a", 1, 4), (90, "q", 1, 300), (100, "z", 1, 200),
        (200, "a", 1, 7)],
}  # fmt: skip


@pytest.mark.parametrize("name", [*COMPUTES, "window_on_an_expression"])
def test_complete_mode_with_a_window_on_a_computed_column(name: str) -> None:
    if name == "window_on_an_expression":
        plan = counts(stream(), sk.col("ts") + SHIFT).plan
    else:
        plan = counts(COMPUTES[name](stream())).plan
    out, held, _ = drive(IncrementalQuery(plan, "complete"), AGG_BATCHES)
    assert out == COMPUTED_COMPLETE
    assert held == [3, 4, 5, 6]


@pytest.mark.parametrize(
    "build",
    [
        lambda: counts(COMPUTES["with_column_computed"](stream())),
        lambda: counts(COMPUTES["select_computed"](stream())),
        lambda: counts(stream(), sk.col("ts") + SHIFT),
        lambda: counts(stream(), sk.col("ts").alias("x")),  # Spark: no metadata either
        lambda: stream().group_by("k").agg(sk.count().alias("n")),
        # copied BELOW the watermark: the copy never carried it
        lambda: counts(
            sk.from_arrow(SCHEMA.empty_table())
            .with_column("t", sk.col("ts"))
            .with_watermark("ts", DELAY)
        ),
    ],
    ids=["with_column", "select", "window_expr", "window_alias", "no_window", "copy_below"],
)
def test_append_mode_without_a_watermarked_window_is_refused_with_sparks_reason(
    build: Callable[[], sk.DataFrame],
) -> None:
    with pytest.raises(PlanError, match="Invalid streaming output mode: append") as err:
        IncrementalQuery(build().plan, "append")
    assert "compute the event time before with_watermark" in str(err.value)


def us(second: int) -> int:
    return int(at(second).timestamp()) * 1_000_000


# -- sessions -------------------------------------------------------------------------
# gap 5: B0 a@10,13 -> [10,18), b@40 -> [40,45), W = 35; B1 a@12 joins [10,18) (3 rows,
# 7), b@41 -> [40,46); in force 35: [10,18) leaves. B2 a@16: its own [16,21) ended at
# 21 <= 35: late; c@100: W = 95. The no-data batch closes [40,46).
SESSION_BATCHES: list[list[Row]] = [
    [(10, "a", 1), (13, "a", 2), (40, "b", 3)],
    [(12, "a", 4), (41, "b", 5)],
    [(16, "a", 6), (100, "c", 1)],
]


def test_a_session_window_on_a_renamed_watermark_column() -> None:
    df = RENAMES["select_alias"](stream())
    plan = (
        df.group_by(sk.session_window("t", "5 seconds"), "k")
        .agg(sk.count().alias("n"), sk.sum("v").alias("s"))
        .plan
    )
    out, held, _ = drive(IncrementalQuery(plan, "append"), SESSION_BATCHES)
    assert out == {0: [], 1: [(10, "a", 3, 7)], 2: [], 3: [(40, "b", 2, 8)]}
    assert held == [2, 1, 2, 1]


def test_a_session_window_on_a_computed_column_is_refused_in_append() -> None:
    df = COMPUTES["with_column_computed"](stream())
    plan = df.group_by(sk.session_window("t", "5 seconds"), "k").agg(sk.count()).plan
    with pytest.raises(PlanError, match="Invalid streaming output mode: append"):
        IncrementalQuery(plan, "append")


# -- drop_duplicates -------------------------------------------------------------------
# B0: first (a,10), (b,30); W = 25. B1 (in force 25): (a,10), (b,30) duplicates, (c,12)
# new; keys with t <= 25 leave. B2 (late: <= 25): (a,10), (d,11) late. B3: (e,200), W = 195;
# the no-data batch expires (b,30).
DEDUP_BATCHES: list[list[Row]] = [
    [(10, "a", 1), (10, "a", 2), (30, "b", 3)],
    [(10, "a", 4), (30, "b", 6), (12, "c", 8)],
    [(10, "a", 5), (11, "d", 9)],
    [(200, "e", 7)],
]
DEDUPED = {0: [(10, "a", 1), (30, "b", 3)], 1: [(12, "c", 8)], 2: [], 3: [(200, "e", 7)], 4: []}


def renamed_stream() -> sk.DataFrame:
    return RENAMES["select_alias"](stream())


@pytest.mark.parametrize(
    ("build", "held"),
    [
        (lambda: renamed_stream().drop_duplicates(["k", "t"]), [2, 1, 1, 2, 1]),
        (lambda: renamed_stream().drop_duplicates_within_watermark(["k"]), [2, 1, 1, 2, 1]),
        (lambda: renamed_stream().drop_duplicates(["k"]), [2, 3, 3, 4, 4]),  # never expire
        # late rows judged on ts (kept, carrying the watermark); t = ts + 7 no key expires
        (
            lambda: stream().with_column("t", sk.col("ts") + SHIFT).drop_duplicates(["k", "t"]),
            [2, 3, 3, 4, 4],
        ),
    ],
    ids=["keys_k_t", "within_watermark", "key_k", "computed_key_ts_kept"],
)
def test_drop_duplicates_on_a_renamed_watermark_column(
    build: Callable[[], sk.DataFrame], held: list[int]
) -> None:
    out, state, _ = drive(IncrementalQuery(build().plan, "append"), DEDUP_BATCHES)
    assert {b: [(r[0], r[1], r[2]) for r in rows] for b, rows in out.items()} == DEDUPED
    assert state == held


@pytest.mark.parametrize(
    "build",
    [
        lambda: (
            stream().select((sk.col("ts") + SHIFT).alias("t"), "k", "v").drop_duplicates(["k", "t"])
        ),
        # ts is read by no key and not output: Spark prunes it, and its late-row rule
        lambda: renamed_stream().drop_duplicates(["k"]).select("k", "v"),
    ],
    ids=["computed", "pruned"],
)
def test_drop_duplicates_without_a_watermarked_input_column_drops_nothing_late(
    build: Callable[[], sk.DataFrame],
) -> None:
    """(d, 11) comes out in batch 2: nothing is late; no key ever expires."""
    out, state, _ = drive(IncrementalQuery(build().plan, "append"), DEDUP_BATCHES)
    assert [r[-2:] for r in out[2]] == [("d", 9)]
    assert state == [2, 3, 4, 5, 5]


def test_drop_duplicates_with_the_watermark_column_and_a_copy_is_refused() -> None:
    """Spark fails it with MULTIPLE_EVENT_TIME_COLUMNS."""
    plan = stream().with_column("t", sk.col("ts")).drop_duplicates(["k", "t"]).plan
    with pytest.raises(PlanError, match="More than one event time columns"):
        IncrementalQuery(plan, "append")


def test_drop_duplicates_within_watermark_on_a_computed_column_is_refused() -> None:
    """Spark: "dropDuplicatesWithinWatermark is not supported on streaming
    DataFrames/DataSets without watermark"."""
    df = stream().select((sk.col("ts") + SHIFT).alias("t"), "k", "v")
    with pytest.raises(PlanError, match="dropDuplicatesWithinWatermark is not supported"):
        IncrementalQuery(df.drop_duplicates_within_watermark(["k"]).plan, "append")


# -- apply_in_pandas_with_state with EventTimeTimeout: rows per key per batch; (a, 15) is
# late in batch 2 (at or behind 95) when an input column carries the watermark ----------
def rows_per_key(key: Any, frames: Any, state: Any) -> Any:
    import pandas as pd

    n = sum(len(f) for f in frames)
    if n:
        yield pd.DataFrame({"k": [key[0]], "n": [n]})


def per_key(df: sk.DataFrame) -> sk.DataFrame:
    return df.group_by("k").apply_in_pandas_with_state(
        rows_per_key, "k string, n bigint", "n bigint", "update",
        sk.GroupStateTimeout.EventTimeTimeout,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["select_alias", "with_column_computed"])
def test_event_time_timeouts_judge_late_rows_on_the_column_carrying_the_watermark(
    name: str,
) -> None:
    """A rename carries it; with ts kept beside a computed t, ts does (Spark: the same)."""
    build = RENAMES.get(name) or COMPUTES[name]
    out, _, _ = drive(IncrementalQuery(per_key(build(stream())).plan, "update"), AGG_BATCHES)
    assert out == {0: [("a", 1), ("q", 1), ("z", 1)], 1: [("a", 2)], 2: [], 3: [("a", 1)], 4: []}


def test_event_time_timeouts_without_a_watermarked_input_column_are_refused() -> None:
    """Spark: "Watermark must be specified ... for using event-time timeout"."""
    plan = per_key(COMPUTES["select_computed"](stream())).plan
    with pytest.raises(PlanError, match="Watermark must be specified"):
        IncrementalQuery(plan, "update")


# -- transform_with_state_in_pandas in EventTime: the same rows per key and batch; with no
# input column carrying the watermark, Spark drops no row as late: (a, 15) is counted -----
class RowsPerKey(sk.StatefulProcessor):
    def init(self, handle: Any) -> None:
        pass

    def handle_input_rows(self, key: Any, rows: Any, timer_values: Any) -> Any:
        import pandas as pd

        n = sum(len(r) for r in rows)
        if n:
            yield pd.DataFrame({"k": [key[0]], "n": [n]})

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("name", "late"), [("select_alias", True), ("select_computed", False)])
def test_transform_with_state_judges_late_rows_only_on_a_watermarked_column(
    name: str, late: bool
) -> None:
    build = RENAMES.get(name) or COMPUTES[name]
    df = (
        build(stream())
        .group_by("k")
        .transform_with_state_in_pandas(RowsPerKey(), "k string, n bigint", "update", "EventTime")
    )
    out, _, _ = drive(IncrementalQuery(df.plan, "update"), AGG_BATCHES)
    batch2: list[Out] = [] if late else [("a", 1)]
    assert out == {0: [("a", 1), ("q", 1), ("z", 1)], 1: [("a", 2)], 2: batch2,
                   3: [("a", 1)], 4: []}  # fmt: skip


# -- chains: drop_duplicates(k, ts) then a window (nothing is duplicated: the aggregation's
# batches are RENAMED's, Spark-checked) ---------------------------------------------------
CHAINS: dict[str, Callable[[], sk.DataFrame]] = {
    "copy_after_dedup": lambda: counts(
        stream().drop_duplicates(["k", "ts"]).with_column("t", sk.col("ts"))
    ),
    "rename_before_dedup": lambda: counts(renamed_stream().drop_duplicates(["k", "t"])),
    # ts and its copy t reach the dedup, but the window reads t only: Spark prunes ts
    "copy_before_dedup": lambda: counts(
        stream().with_column("t", sk.col("ts")).drop_duplicates(["k", "t"])
    ),
}


@pytest.mark.parametrize("mode", ["update", "append"])
@pytest.mark.parametrize("name", list(CHAINS))
def test_a_chain_follows_the_renamed_watermark_column(name: str, mode: str) -> None:
    engine = make_engine(CHAINS[name]().plan, mode)  # type: ignore[arg-type]
    assert isinstance(engine, ChainQuery)
    out, held, _ = drive(engine, AGG_BATCHES)
    assert out == RENAMED[mode]
    # Spark's numRowsTotal: the aggregation's RENAMED_STATE plus the deduplication's keys
    # (3; 1 once W = 95 expires all but (z, 100); 1; 2 with (a, 200); 1 at W = 195)
    assert held == [a + d for a, d in zip(RENAMED_STATE, [3, 1, 1, 2, 1], strict=True)]


# -- restart ---------------------------------------------------------------------------
# ``process_all_available`` runs the owed no-data batch at once. b0: AGG_BATCHES[0], W = 95;
# b1 (no data, in force 95): [10,20) leaves; b2: 12 and 30 are late ([10,20) and [30,40)
# ended at or before 95). Restart. b3: 15 is late against the saved 95; b4: 200, W = 195;
# b5 (no data, in force 195): [90,100) and [100,110) leave.
RESTARTED: dict[str, dict[int, list[Out]]] = {
    "update": {
        0: [(10, "a", 1, 1), (90, "q", 1, 300), (100, "z", 1, 200)],
        1: [], 2: [], 3: [], 4: [(200, "a", 1, 7)], 5: [],
    },
    "append": {
        0: [], 1: [(10, "a", 1, 1)], 2: [], 3: [], 4: [],
        5: [(90, "q", 1, 300), (100, "z", 1, 200)],
    },
}  # fmt: skip


def restarted(
    build: Callable[[sk.DataFrame], sk.DataFrame],
    batches: list[list[Row]],
    mode: OutputMode,
    ck: Path,
) -> tuple[dict[int, list[Out]], list[Out]]:
    """``build`` over the watermarked stream run on checkpoint ``ck``, ``batches`` one at a
    time, a restart after the second: (rows emitted per batch id, late rows sorted)."""
    source = MemoryStream(SCHEMA)
    seen: dict[int, list[Out]] = {}
    late: list[Out] = []

    def collect(df: sk.DataFrame, batch_id: int) -> None:
        seen[batch_id] = rows_of(pl.from_arrow(df.to_arrow()))  # type: ignore[arg-type]

    for part in (batches[:2], batches[2:]):
        df = build(sk.read_stream.source(source).with_watermark("ts", DELAY))
        query = df.write_stream.output_mode(mode).checkpoint(str(ck)).foreach_batch(collect)
        handle = query.start()
        try:
            for batch in part:
                source.add_rows(pa.Table.from_pylist(
                    [{"ts": at(s), "k": k, "v": v} for s, k, v in batch], schema=SCHEMA
                ))  # fmt: skip
                handle.process_all_available()
        finally:
            handle.stop()
            handle.await_termination()
        table = handle.late_rows
        late = sorted(late + ([] if table is None else rows_of(pl.from_arrow(table))))  # type: ignore[arg-type]
    return seen, late


@pytest.mark.parametrize("mode", ["update", "append"])
def test_a_renamed_window_keeps_the_watermark_across_a_restart(
    mode: OutputMode, tmp_path: Path
) -> None:
    """Batches of AGG_BATCHES one at a time, a restart on the checkpoint after the second:
    the row at 15 s is late against the watermark saved before the restart."""
    seen, late = restarted(
        lambda df: counts(RENAMES["select_alias"](df)), AGG_BATCHES, mode, tmp_path
    )
    assert seen == RESTARTED[mode]
    assert late == [(12, "a", 3), (15, "a", 5), (30, "a", 4)]
