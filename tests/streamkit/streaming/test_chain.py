"""Chains of stateful operators on a stream, without Spark (the differential tests in
tests/differential/test_chains.py compare them with PySpark): a query restarted from its
checkpoint emits what one uninterrupted run emits (the state of every operator is
checkpointed, as deltas and snapshots), the batch API runs the same plan, and what Spark
refuses is refused when the query starts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamkit as sk
from streamkit.errors import PlanError
from tests.differential.inputs import SCHEMA, Files, write_files
from tests.differential.test_operators import duplicated_files

FILES = duplicated_files(21, files=14)


def dedup_then_window(frame: sk.DataFrame) -> sk.DataFrame:
    kept = frame.with_watermark("ts", "4 seconds").drop_duplicates(["k", "ts"])
    return kept.group_by(sk.window("ts", "10 seconds"), "k").agg(sk.count().alias("n"))


def window_then_window(frame: sk.DataFrame) -> sk.DataFrame:
    first = frame.with_watermark("ts", "3 seconds").group_by(sk.window("ts", "5 seconds"), "k")
    counts = first.agg(sk.count().alias("n"), sk.sum("v").alias("s"))
    second = counts.group_by(sk.window(sk.window_time("window"), "20 seconds"), "k")
    return second.agg(sk.sum("n").alias("n"), sk.max("s").alias("top"))


def sessions_then_window(frame: sk.DataFrame) -> sk.DataFrame:
    sessions = frame.with_watermark("ts", "3 seconds").group_by(
        sk.session_window("ts", "4 seconds"), "k"
    )
    counts = sessions.agg(sk.count().alias("n"))
    by = sk.window(sk.window_time("window"), "20 seconds")
    return counts.group_by(by, "k").agg(sk.sum("n").alias("n"))


def window_then_sessions(frame: sk.DataFrame) -> sk.DataFrame:
    tumbling = frame.with_watermark("ts", "3 seconds").group_by(sk.window("ts", "5 seconds"), "k")
    counts = tumbling.agg(sk.count().alias("n"))
    by = sk.session_window(sk.window_time("window"), "6 seconds")
    return counts.group_by(by, "k").agg(sk.sum("n").alias("n"))


def run(query: Any, directory: Path, checkpoint: Path | None) -> list[tuple[Any, ...]]:
    source = sk.read_stream.files(
        str(directory), format="json", schema=SCHEMA, max_files_per_trigger=1
    )
    seen: list[tuple[Any, ...]] = []
    writer = query(source).write_stream.output_mode("append")
    if checkpoint is not None:
        writer = writer.checkpoint(str(checkpoint))
    handle = (
        writer.trigger(available_now=True)
        .foreach_batch(
            lambda f, _: seen.extend(tuple(map(str, r.values())) for r in f.to_arrow().to_pylist())
        )
        .start()
    )
    assert handle.await_termination(timeout=300)
    assert handle.exception is None, repr(handle.exception)
    return seen


@pytest.mark.parametrize(
    "query", [dedup_then_window, window_then_window, sessions_then_window, window_then_sessions]
)
@pytest.mark.parametrize("cut", [3, 7])
def test_a_restarted_chain_resumes_every_operators_state(
    query: Any, cut: int, tmp_path: Path
) -> None:
    whole = run(query, write_files(tmp_path / "all", FILES, "json"), None)
    assert whole
    directory, checkpoint = tmp_path / "in", tmp_path / "ck"
    write_files(directory, FILES[:cut], "json")
    first = run(query, directory, checkpoint)
    more = write_files(tmp_path / "more", FILES, "json")
    for index in range(cut, len(FILES)):
        (more / f"part-{index:04d}.json").rename(directory / f"part-{index:04d}.json")
    second = run(query, directory, checkpoint)
    assert second, "the second run should emit windows closed after the restart"
    assert sorted(first + second) == sorted(whole)


def test_batch_drop_duplicates_then_count_reads_across_files(tmp_path: Path) -> None:
    """A batch aggregation above drop_duplicates sees every file at once (not per chunk)."""
    for i in range(3):
        pq.write_table(pa.table({"k": ["a", "b", "a"], "v": [i, i, i]}), tmp_path / f"{i}.parquet")
    frame = sk.read.parquet(str(tmp_path))
    counted = frame.drop_duplicates(["k"]).agg(sk.count().alias("n")).to_polars()
    assert counted["n"].to_list() == [2]


def _stream() -> sk.DataFrame:
    return sk.read_stream.memory(SCHEMA).with_watermark("ts", "5 seconds")


def _windows() -> sk.DataFrame:
    return _stream().group_by(sk.window("ts", "10 seconds"), "k").agg(sk.count().alias("n"))


REFUSED: dict[str, tuple[Any, Any, str]] = {
    "update after an aggregation": (
        lambda: (
            _windows().group_by(sk.window(sk.window_time("window"), "1 minute")).agg(sk.sum("n"))
        ),
        "update",
        "possible 'correctness' issue",
    ),
    "complete after an aggregation": (
        lambda: (
            _windows().group_by(sk.window(sk.window_time("window"), "1 minute")).agg(sk.sum("n"))
        ),
        "complete",
        "possible 'correctness' issue",
    ),
    "second aggregation by key only": (
        lambda: _windows().group_by("k").agg(sk.sum("n")),
        "append",
        "without watermark.*window_time",
    ),
    "second window over window.start": (
        lambda: (
            _windows()
            .group_by(sk.window(sk.col("window").get_field("start"), "1 minute"))
            .agg(sk.sum("n"))
        ),
        "append",
        "without watermark",
    ),
    # a copy of ts (with_column("t2", col("ts"))) carries the watermark and runs, as in
    # Spark (test_watermark_above.py); a column computed from it does not
    "window on a computed column after drop_duplicates": (
        lambda: (
            _stream()
            .drop_duplicates(["k", "ts"])
            .with_column("t2", sk.col("ts") + timedelta(seconds=1))
            .group_by(sk.window("t2", "1 minute"))
            .agg(sk.count())
        ),
        "append",
        "watermarked column 'ts'",
    ),
    "drop_duplicates after an aggregation": (
        lambda: _windows().drop_duplicates(["k", "window"]),
        "append",
        "not supported by streamkit yet",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_chains_spark_refuses_are_refused_at_start(name: str) -> None:
    build, mode, reason = REFUSED[name]
    with pytest.raises(PlanError, match=reason):
        build().write_stream.output_mode(mode).foreach_batch(lambda f, i: None).start()


def test_state_of_both_operators_is_counted_and_bounded(tmp_path: Path) -> None:
    """Every operator's state leaves with the watermark: after the last no-data batch
    only what is still open is held."""
    files: Files = [[(t, "a", t, 0)] for t in range(0, 200, 7)]
    source = sk.read_stream.files(
        str(write_files(tmp_path / "in", files, "json")), format="json", schema=SCHEMA,
        max_files_per_trigger=1,
    )  # fmt: skip
    handle = (
        window_then_window(source).write_stream.output_mode("append")
        .trigger(available_now=True).foreach_batch(lambda f, i: None).start()
    )  # fmt: skip
    assert handle.await_termination(timeout=300)
    assert handle.exception is None
    assert handle.last_progress is not None
    held = handle.last_progress.state_rows
    # open at the end (W = 196 - 3 = 193): 5 s window [195,200) of the first operator and
    # the 20 s window [180,200) of the second
    assert held == 2


def test_process_all_available_waits_for_the_no_data_batchs_output() -> None:
    """The no-data batch that closes the windows stops being owed when it starts; the call
    returns only once its output is in the sink (a slow sink shows the difference)."""
    import time
    from datetime import UTC, datetime, timedelta

    seen: list[int] = []

    def slow_sink(frame: sk.DataFrame, batch_id: int) -> None:
        if frame.count():
            time.sleep(1.0)
            seen.append(batch_id)

    stream = sk.read_stream.memory(SCHEMA)
    q = (
        window_then_window(stream)
        .write_stream.output_mode("append")
        .foreach_batch(slow_sink)
        .start()
    )
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    stream.stream.add_rows(
        [{"ts": t0 + timedelta(seconds=s), "k": "a", "v": 1, "u": 0} for s in (1, 2, 60)]
    )
    q.process_all_available()
    try:
        assert seen == [1], "the windows closed by the no-data batch 1 should be in the sink"
    finally:
        q.stop()


@pytest.mark.parametrize("order", [("lt", "rt", "k", "rv"), ("rt", "lt", "k", "rv")])
def test_a_function_after_a_join_judges_late_rows_on_the_first_event_time_it_keeps(
    order: tuple[str, ...],
) -> None:
    """Spark's stateful operators take the first watermarked column of their input
    (``child.output.find``), so a select that puts the right side's event time first
    moves late-row judgement to it."""
    from datetime import timedelta

    from streamkit.streaming.chain import ChainQuery
    from streamkit.streaming.function_stage import FunctionStage

    ts = pa.timestamp("us", "UTC")
    left_schema = pa.schema([("lt", ts), ("k", pa.string()), ("lv", pa.int64())])
    right_schema = pa.schema([("rt", ts), ("rk", pa.string()), ("rv", pa.int64())])
    left = sk.read_stream.memory(left_schema).with_watermark("lt", "10 seconds")
    right = sk.read_stream.memory(right_schema).with_watermark("rt", "10 seconds")
    cond = (
        (sk.col("k") == sk.col("rk"))
        & (sk.col("rt") >= sk.col("lt"))
        & (sk.col("rt") <= sk.col("lt") + timedelta(seconds=30))
    )

    def tally(key: Any, frames: Any, state: Any) -> Any:
        yield from ()

    joined = left.join(right, cond, "inner").select(*order)
    query = joined.group_by("k").apply_in_pandas_with_state(
        tally, "k string", "n bigint", "append", "EventTimeTimeout"
    )
    chain = ChainQuery(query._plan, "append")
    (stage,) = [s for s in chain.stages if isinstance(s, FunctionStage)]
    assert stage.engine._mark is not None
    assert stage.engine._mark.column == order[0]
