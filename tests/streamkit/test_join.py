"""Joins without a server: misuse refused when the plan is built, a reloadable static
side re-read at most every ``reload_every`` (injected clock), and a stream-static join
restarted after a failure mid-stream giving DuckDB's answer over all rows.

The differential tests against PySpark are in ``tests/differential/test_joins_static.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamkit as sk
from streamkit.errors import DurationError, PlanError, SchemaError
from streamkit.streaming.runner import StreamingQueryError

EVENTS = pa.schema([("ts", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64())])


def table(**columns: list[Any]) -> sk.DataFrame:
    return sk.from_arrow(pa.table(columns))


def stream() -> sk.DataFrame:
    return sk.read_stream.memory(EVENTS)


# -- refused when built ----------------------------------------------------------------


def test_unknown_join_type_names_the_accepted_ones() -> None:
    with pytest.raises(PlanError, match=r"unknown join type 'sideways'.*'left_outer'"):
        table(k=["a"]).join(table(k=["a"]), "k", "sideways")


def test_missing_join_column_names_the_side() -> None:
    with pytest.raises(PlanError, match="join key 'x' is not a column of the right side"):
        table(k=["a"], x=[1]).join(table(k=["a"]), "x")


def test_join_columns_of_different_types_ask_for_a_cast() -> None:
    with pytest.raises(SchemaError, match=r"key 'k' is String on the left and Int64.*cast"):
        table(k=["a"]).join(table(k=[1]), "k")


def test_a_column_on_both_sides_outside_on_asks_for_a_rename() -> None:
    with pytest.raises(PlanError, match=r"\['v'\] are on both sides of the join; rename"):
        table(k=["a"], v=[1]).join(table(k=["a"], v=[2]), "k")


@pytest.mark.parametrize(
    ("how", "stream_left", "reason"),
    [
        ("left", False, "LeftOuter join with a streaming DataFrame/Dataset on the right"),
        ("right", True, "RightOuter join with a streaming DataFrame/Dataset on the left"),
        ("full", True, "FullOuter joins with streaming DataFrames/Datasets on the left"),
        ("full", False, "FullOuter joins with streaming DataFrames/Datasets on the right"),
        ("semi", False, "LeftSemi join with a streaming DataFrame/Dataset on the right"),
        ("anti", False, "LeftAnti joins with a streaming DataFrame/Dataset on the right"),
    ],
)
def test_spark_refusals_of_stream_static_joins(how: str, stream_left: bool, reason: str) -> None:
    """Spark's table (UnsupportedOperationChecker; checked against PySpark in
    tests/differential/test_joins_static.py): the stream must be on the preserved side."""
    events, dim = stream(), table(k=["a"], name=["x"])
    with pytest.raises(PlanError, match=reason):
        events.join(dim, "k", how) if stream_left else dim.join(events, "k", how)


def test_a_watermark_on_a_static_column_is_refused_at_start() -> None:
    dim = table(k=["a"], seen=pa.array([0], pa.timestamp("us", "UTC")))
    joined = stream().join(dim, "k").with_watermark("seen", "1 minute")
    with pytest.raises(PlanError, match=r"static side of a join.*before the join"):
        joined.write_stream.memory("refused").start()


# -- reloadable static side ------------------------------------------------------------


class Batches:
    """A foreach-batch sink keeping every batch's rows by batch id."""

    def __init__(self) -> None:
        self.seen: dict[int, list[dict[str, Any]]] = {}

    def __call__(self, frame: sk.DataFrame, batch_id: int) -> None:
        self.seen[batch_id] = frame.to_arrow().sort_by([("k", "ascending")]).to_pylist()


def names(rows: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(r["k"], r["name"]) for r in rows]


def reloading_dim(
    tmp_path: Path, every: str = "5 minutes"
) -> tuple[list[float], Path, sk.DataFrame]:
    """A folder ``dim`` holding ``part-0.parquet`` (k a, name v1), read with ``reload_every``
    ``every`` on a settable clock (``now[0]``, seconds): (the clock, the folder, the table)."""
    now = [0.0]
    folder = tmp_path / "dim"
    folder.mkdir()
    pq.write_table(pa.table({"k": ["a"], "name": ["v1"]}), folder / "part-0.parquet")
    return now, folder, sk.read.parquet(str(folder), reload_every=every, clock=lambda: now[0])


def test_reload_every_rereads_the_table_at_most_every_interval(tmp_path: Path) -> None:
    """Batches before the interval has passed keep the first snapshot although the files
    changed; the first batch after it sees the new files (new rows, rewritten rows)."""
    now, folder, dim = reloading_dim(tmp_path)
    events, out = stream(), Batches()
    q = events.join(dim, "k", "left").write_stream.foreach_batch(out).start()

    def batch(at: float, *keys: str) -> list[tuple[str, str | None]]:
        now[0] = at
        events.stream.add_rows([{"ts": None, "k": k, "v": 0} for k in keys])
        q.process_all_available()
        return names(out.seen[max(out.seen)])

    try:
        assert batch(0, "a") == [("a", "v1")]
        pq.write_table(pa.table({"k": ["a"], "name": ["v2"]}), folder / "part-0.parquet")
        pq.write_table(pa.table({"k": ["b"], "name": ["new"]}), folder / "part-1.parquet")
        assert batch(60, "a", "b") == [("a", "v1"), ("b", None)]
        assert batch(299, "a", "b") == [("a", "v1"), ("b", None)]
        assert batch(300, "a", "b") == [("a", "v2"), ("b", "new")]
        pq.write_table(pa.table({"k": ["b"], "name": ["newer"]}), folder / "part-1.parquet")
        assert batch(599, "b") == [("b", "new")]
        assert batch(600, "b") == [("b", "newer")]
    finally:
        q.stop()


def test_a_chain_rereads_a_static_side_above_its_first_operator(tmp_path: Path) -> None:
    """``drop_duplicates`` then the join then a count per (k, name) (update mode): the
    static side above the chain's first operator is re-read as below it, at most every
    ``reload_every``. Batch 0 (t 0): a -> (a, v1, 1). Batch 1 (t 60, files changed): a
    again, deduplicated away; b new, joined to nothing yet: (b, None, 1). Batch 2 (t 300):
    c, and b's second value: (b, new, 1) with the reloaded names, (c, None, 1)."""
    now, folder, dim = reloading_dim(tmp_path)
    events, out = stream(), Batches()
    counted = events.drop_duplicates(["k", "v"]).join(dim, "k", "left").group_by("k", "name")
    query = counted.agg(sk.count().alias("n")).write_stream.output_mode("update")
    q = query.foreach_batch(out).start()

    def batch(at: float, *rows: tuple[str, int]) -> list[tuple[str, str | None, int]]:
        now[0] = at
        events.stream.add_rows([{"ts": None, "k": k, "v": v} for k, v in rows])
        q.process_all_available()
        return [(r["k"], r["name"], r["n"]) for r in out.seen[max(out.seen)]]

    try:
        assert batch(0, ("a", 1)) == [("a", "v1", 1)]
        pq.write_table(pa.table({"k": ["b"], "name": ["new"]}), folder / "part-1.parquet")
        assert batch(60, ("a", 1), ("b", 1)) == [("b", None, 1)]
        assert batch(300, ("b", 2), ("c", 1)) == [("b", "new", 1), ("c", None, 1)]
    finally:
        q.stop()


def test_a_failed_reload_keeps_the_previous_snapshot(tmp_path: Path) -> None:
    """The table's folder vanishes: the stream keeps joining the rows it last read."""
    now, folder, dim = reloading_dim(tmp_path, "1 minute")
    events, out = stream(), Batches()
    q = events.join(dim, "k").write_stream.foreach_batch(out).start()
    try:
        events.stream.add_rows([{"ts": None, "k": "a", "v": 0}])
        q.process_all_available()
        (folder / "part-0.parquet").unlink()
        folder.rmdir()
        now[0] = 120
        events.stream.add_rows([{"ts": None, "k": "a", "v": 1}])
        q.process_all_available()
        assert q.exception is None
        assert [names(rows) for _, rows in sorted(out.seen.items())] == [[("a", "v1")]] * 2
    finally:
        q.stop()


def test_a_reload_with_another_schema_is_refused(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "dim.parquet"
    pq.write_table(pa.table({"k": ["a"], "name": ["v1"]}), path)
    dim = sk.read.parquet(str(path), reload_every="1 minute", clock=lambda: now[0])
    pq.write_table(pa.table({"k": ["a"], "name": [1]}), path)
    now[0] = 60
    with pytest.raises(SchemaError, match=r"changed its schema on reload.*restart"):
        dim.to_arrow()


def test_reload_every_must_be_positive(tmp_path: Path) -> None:
    pq.write_table(pa.table({"k": ["a"]}), tmp_path / "d.parquet")
    with pytest.raises(DurationError, match="must be positive"):
        sk.read.parquet(str(tmp_path / "d.parquet"), reload_every="0 seconds")


# -- restart ---------------------------------------------------------------------------


class FailOnce(Batches):
    """Keeps each batch by id (a replay overwrites it) and fails once, at batch ``at``,
    after its rows reached the sink and before the batch is committed."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def __call__(self, frame: sk.DataFrame, batch_id: int) -> None:
        super().__call__(frame, batch_id)
        self.calls += 1
        if batch_id == self.at and self.calls == self.at + 1:
            raise RuntimeError("the sink failed")


def test_a_restart_mid_stream_gives_duckdb_s_left_join_of_all_rows(tmp_path: Path) -> None:
    """The join holds no state: the failed batch is replayed from the source's offsets in
    the checkpoint and the final result is the left join of every row, once."""
    import duckdb

    from tests.differential.inputs import SCHEMA, random_files, rows_table, write_files

    files = random_files(21, files=6)
    folder = write_files(tmp_path / "in", files, "json")
    dim_table = pa.table({"k": ["a", "a", "b", None], "name": ["alpha", "alef", "beta", "nil"]})
    sink = FailOnce(at=3)

    def run() -> bool:
        events = sk.read_stream.files(str(folder), "json", SCHEMA, max_files_per_trigger=1)
        joined = events.join(sk.from_arrow(dim_table), "k", "left")
        writer = joined.write_stream.checkpoint(str(tmp_path / "ck")).foreach_batch(sink)
        finished: bool = writer.trigger(available_now=True).start().await_termination(120)
        return finished

    with pytest.raises(StreamingQueryError, match="the sink failed"):
        run()
    assert sorted(sink.seen) == [0, 1, 2, 3]
    assert run()
    assert sorted(sink.seen) == list(range(len(files)))
    assert sink.calls == len(files) + 1, "batch 3 ran twice, no other batch did"
    ours = sorted(
        ((r["ts"], r["k"], r["v"], r["u"], r["name"]) for rows in sink.seen.values() for r in rows),
        key=repr,
    )
    events = rows_table([row for rows in files for row in rows])  # noqa: F841 (DuckDB reads it)
    joined = duckdb.sql(
        "SELECT e.ts, e.k, e.v, e.u, d.name FROM events e LEFT JOIN dim_table d ON e.k = d.k"
    )
    assert joined is not None
    assert ours == sorted(joined.fetchall(), key=repr)
