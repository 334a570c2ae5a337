"""Watermarks across restarts, for every output mode and aggregate, with session windows.

Each test feeds fixed batches to a memory stream, stops the query and starts a new one on
the same checkpoint twice, and checks against values computed here in plain Python:

- the watermark after batch n is max(event time through n) - delay, also after a restart;
- Spark's rules: a row is late (dropped, kept in ``late_rows``) exactly when its window
  ended at or before the watermark in force (for a session, its own ``[t, t + gap)``), also
  when the batch that set it ran before a restart; a row behind the watermark whose window
  is open is counted; complete mode keeps late rows of time windows;
- after a batch that moved the watermark (append and update), one batch without input
  runs and evicts what it closed; state rows fall once the watermark passes a window
  (complete mode keeps every group, as Spark does);
- append mode emits each window once, when the watermark passes it, never again after a
  restart; update mode's latest emission per group and complete mode's last result equal
  the aggregate over the rows that were not late.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.sources.memory import MemoryStream

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from streamkit.aggs import AggExpr
    from streamkit.streaming.incremental import OutputMode
    from streamkit.streaming.query import StreamingQuery

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DELAY = timedelta(minutes=5)
SIZE = timedelta(minutes=10)
GAP = timedelta(minutes=5)
SCHEMA = pa.schema(
    [("event_time", pa.timestamp("us", "UTC")), ("k", pa.string()), ("v", pa.int64()),
     ("user", pa.string())]
)  # fmt: skip

Row = tuple[int, str, int, str]
"""(minutes after T0, key, value, user)."""

# Runs of batches; a restart (a new query on the same checkpoint) between runs.
RUNS: list[list[list[Row]]] = [
    [
        [(1, "a", 5, "u1"), (2, "a", -3, "u2"), (4, "b", 7, "u1"), (12, "a", 2, "u1"),
         (14, "b", 9, "u3")],  # W = 9
        [(8, "a", 4, "u3"), (31, "a", 1, "u2")],  # 8 is behind W but its window is open; W = 26
    ],
    [
        [(3, "a", 100, "u9"), (19, "b", 50, "u9"), (28, "b", 6, "u1"), (33, "a", 2, "u1")],
        [(47, "a", 3, "u2")],  # W = 42
    ],
    [
        [(25, "b", 1, "u1"), (41, "a", 8, "u4"), (44, "a", 8, "u4"), (60, "a", 1, "u1")],
    ],
]  # fmt: skip

# Sessions (gap 5 min): rows less than the gap apart share a session (the README's rule;
# DESIGN.md says t <= last + gap, so that touching sessions merge: a at 4 and 9 here).
SESSION_RUNS: list[list[list[Row]]] = [
    [
        [(0, "a", 1, "u"), (4, "a", 2, "u"), (9, "a", 3, "u"), (2, "b", 5, "u")],  # W = 4
        [(20, "a", 1, "u"), (30, "b", 2, "u")],  # W = 25: a[0,14) and b[2,7) close
    ],
    [
        [(13, "a", 7, "u"), (6, "b", 9, "u"), (22, "a", 4, "u"), (40, "a", 1, "u")],  # W = 35
        [(50, "b", 1, "u")],  # W = 45
    ],
    [
        [(27, "a", 6, "u"), (44, "a", 2, "u"), (70, "a", 1, "u")],  # W = 65
    ],
]  # fmt: skip


def minutes(m: int) -> datetime:
    return T0 + timedelta(minutes=m)


def table(rows: list[Row]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"event_time": minutes(m), "k": k, "v": v, "user": u} for m, k, v, u in rows],
        schema=SCHEMA,
    )


AGGREGATES: dict[str, tuple[Callable[[], AggExpr], Callable[[list[Row]], Any]]] = {
    "count": (sk.count, len),
    "sum": (lambda: sk.sum("v"), lambda rs: sum(r[2] for r in rs)),
    "avg": (lambda: sk.avg("v"), lambda rs: statistics.fmean(r[2] for r in rs)),
    "min": (lambda: sk.min("v"), lambda rs: min(r[2] for r in rs)),
    "max": (lambda: sk.max("v"), lambda rs: max(r[2] for r in rs)),
    "count_distinct": (lambda: sk.count_distinct("user"), lambda rs: len({r[3] for r in rs})),
}

Group = tuple[datetime, datetime, str]
"""(window start, window end, key)."""


# -- the expected run, in plain Python ---------------------------------------------------


def tumbling(m: int) -> tuple[datetime, datetime]:
    start = T0 + (minutes(m) - T0) // SIZE * SIZE
    return start, start + SIZE


@dataclass
class Expected:
    """What the engine must do with the batches, derived here without streamkit."""

    watermarks: list[datetime] = field(default_factory=list)
    """Watermark after each batch."""
    late: list[Row] = field(default_factory=list)
    kept: list[Row] = field(default_factory=list)

    @classmethod
    def tumbling(cls, runs: list[list[list[Row]]], mode: str = "update") -> Expected:
        out, top, previous = cls(), None, None
        for batch in (b for run in runs for b in run):
            for row in batch:
                late = previous is not None and tumbling(row[0])[1] <= previous
                late = late and mode != "complete"  # complete mode drops no late row
                (out.late if late else out.kept).append(row)
            top = max([minutes(r[0]) for r in batch] + ([top] if top else []))
            previous = top - DELAY
            out.watermarks.append(previous)
        return out

    def groups(self, rows: list[Row] | None = None) -> dict[Group, list[Row]]:
        by: dict[Group, list[Row]] = {}
        for row in self.kept if rows is None else rows:
            start, end = tumbling(row[0])
            by.setdefault((start, end, row[1]), []).append(row)
        return by

    def open_groups_after(self, n: int, kept_so_far: list[Row]) -> int:
        return sum(1 for g in self.groups(kept_so_far) if g[1] > self.watermarks[n])


def sessions(rows: list[Row]) -> dict[Group, list[Row]]:
    """Sessions per key over ``rows``: ``[first, last + gap)``; a row joins when it is at or
    before the session's end (``t <= last + gap``)."""
    out: dict[Group, list[Row]] = {}
    for key in sorted({r[1] for r in rows}):
        current: list[Row] = []
        for row in sorted((r for r in rows if r[1] == key), key=lambda r: r[0]):
            if current and minutes(row[0]) > minutes(current[-1][0]) + GAP:
                out[(minutes(current[0][0]), minutes(current[-1][0]) + GAP, key)] = current
                current = []
            current.append(row)
        out[(minutes(current[0][0]), minutes(current[-1][0]) + GAP, key)] = current
    return out


# -- running the query ---------------------------------------------------------------------


@dataclass
class Run:
    """Every batch every query emitted, and each query's progress and late rows."""

    emitted: list[list[dict[str, Any]]] = field(default_factory=list)
    progress: list[Any] = field(default_factory=list)
    """Every batch's progress, no-data batches included."""
    late: list[dict[str, Any]] = field(default_factory=list)


def run_with_restarts(
    runs: list[list[list[Row]]],
    mode: str,
    ck: Path,
    query: Callable[[sk.DataFrame], sk.DataFrame],
) -> Run:
    stream = MemoryStream(SCHEMA)
    out = Run()

    def collect(df: sk.DataFrame, batch_id: int) -> None:
        out.emitted.append(df.to_arrow().to_pylist())

    for batches in runs:
        df = sk.read_stream.source(stream).with_watermark("event_time", "5 minutes")
        writer = query(df).write_stream.output_mode(cast("OutputMode", mode)).checkpoint(str(ck))
        q: StreamingQuery = writer.foreach_batch(collect).start()
        try:
            for batch in batches:
                stream.add_rows(table(batch))
                q.process_all_available()  # waits for the no-data batch too
        finally:
            q.stop()
            q.await_termination()
        out.progress += q.recent_progress
        late = q.late_rows
        out.late += [] if late is None else late.select(["event_time", "k", "v"]).to_pylist()
    return out


def key_of(row: dict[str, Any], window: str = "window") -> Group:
    return (row[window]["start"], row[window]["end"], row["k"])


def late_rows(rows: list[Row]) -> list[tuple[datetime, str, int]]:
    return sorted((minutes(m), k, v) for m, k, v, _ in rows)


def data_batches(run: Run) -> list[Any]:
    """Progress of the batches that read rows (every batch fed here holds rows)."""
    return [p for p in run.progress if p.num_input_rows]


def after_each_batch(run: Run) -> list[Any]:
    """Per data batch, the progress of the last batch it caused (its no-data batch, if any)."""
    ends = [i - 1 for i, p in enumerate(run.progress) if i and p.num_input_rows]
    return [run.progress[i] for i in [*ends, len(run.progress) - 1]]


def no_data_batches_follow(run: Run, watermarks: list[datetime]) -> None:
    """Batch ids run on without gaps; a no-data batch follows exactly the data batches that
    moved the watermark (each data batch's watermark against the one before it)."""
    assert [p.batch_id for p in run.progress] == list(range(len(run.progress)))
    moved = [i == 0 or w > watermarks[i - 1] for i, w in enumerate(watermarks)]
    kinds = [bool(p.num_input_rows) for p in run.progress]
    want = [k for m in moved for k in ([True, False] if m else [True])]
    assert kinds == want


def final_result(run: Run, mode: str) -> dict[Group, Any]:
    """Append: the union (checked disjoint); update: the latest per group; complete: last."""
    if mode == "complete":
        return {key_of(r): r["x"] for r in run.emitted[-1]}
    result: dict[Group, Any] = {}
    for batch in run.emitted:
        for row in batch:
            assert mode != "append" or key_of(row) not in result, f"emitted twice: {row}"
            result[key_of(row)] = row["x"]
    return result


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["update", "append", "complete"])
@pytest.mark.parametrize("agg", sorted(AGGREGATES))
def test_tumbling_windows_keep_the_watermark_across_restarts(
    mode: str, agg: str, tmp_path: Path
) -> None:
    make, compute = AGGREGATES[agg]
    run = run_with_restarts(
        RUNS, mode, tmp_path / "ck",
        lambda df: df.group_by(sk.window("event_time", "10 minutes"), "k").agg(
            make().alias("x")
        ),
    )  # fmt: skip
    want = Expected.tumbling(RUNS, mode)
    if mode != "complete":
        no_data_batches_follow(run, want.watermarks)
    data = data_batches(run)
    assert [p.watermark for p in data] == want.watermarks  # restarts included
    assert sorted((r["event_time"], r["k"], r["v"]) for r in run.late) == late_rows(want.late)
    assert [p.late_rows for p in data] == [
        sum(1 for r in batch if r in want.late) for runs in RUNS for batch in runs
    ]
    groups = {g: compute(rows) for g, rows in want.groups().items()}
    if mode == "append":  # exactly the windows the final watermark closed, once each
        closed = {g: v for g, v in groups.items() if g[1] <= want.watermarks[-1]}
        assert final_result(run, mode) == closed
    else:
        assert final_result(run, mode) == groups
    kept: list[Row] = []
    states = []
    for n, batch in enumerate(b for runs in RUNS for b in runs):
        kept += [r for r in batch if r not in want.late]
        states.append(
            len(want.groups(kept)) if mode == "complete" else want.open_groups_after(n, kept)
        )
    assert [p.state_rows for p in after_each_batch(run)] == states


@dataclass
class SessionModel:
    """Spark's session rules simulated in plain Python, batch by batch: late rows, the
    watermark after each batch, sessions emitted (append) and sessions held."""

    mode: str
    late: list[Row] = field(default_factory=list)
    watermarks: list[datetime] = field(default_factory=list)
    emitted: dict[Group, int] = field(default_factory=dict)
    held: dict[str, list[list[Row]]] = field(default_factory=dict)
    top: datetime | None = None
    last_in_force: datetime | None = None

    def feed(self, batch: list[Row]) -> None:
        """One batch with rows, then the no-data batch it causes (append mode)."""
        late_mark = self.last_in_force  # in force in the previous batch
        in_force = self.watermarks[-1] if self.watermarks else None
        for row in sorted(batch):  # a row is late when its own session [t, t + gap) ended
            if late_mark is not None and minutes(row[0]) + GAP <= late_mark:
                self.late.append(row)
            else:
                self.held.setdefault(row[1], []).append([row])
        for key, pieces in self.held.items():
            self.held[key] = merge_touching(pieces)
        self.top = max([minutes(r[0]) for r in batch] + ([self.top] if self.top else []))
        self.watermarks.append(self.top - DELAY)
        self.last_in_force = in_force
        if self.mode == "append" and in_force is not None:
            self.evict(in_force)
        if self.mode == "append" and (in_force is None or self.watermarks[-1] > in_force):
            self.last_in_force = self.watermarks[-1]  # the no-data batch
            self.evict(self.watermarks[-1])

    def evict(self, mark: datetime) -> None:
        for key, pieces in self.held.items():
            for rows in [p for p in pieces if session_of(p)[1] <= mark]:
                self.emitted[(*session_of(rows), key)] = sum(r[2] for r in rows)
            self.held[key] = [p for p in pieces if session_of(p)[1] > mark]

    def sessions_held(self) -> dict[Group, int]:
        return {
            (*session_of(rows), key): sum(r[2] for r in rows)
            for key, pieces in self.held.items()
            for rows in pieces
        }


def session_of(rows: list[Row]) -> tuple[datetime, datetime]:
    times = [minutes(r[0]) for r in rows]
    return min(times), max(times) + GAP


def merge_touching(pieces: list[list[Row]]) -> list[list[Row]]:
    """Sessions of one key merged while the next starts at or before the current's end."""
    out: list[list[Row]] = []
    for rows in sorted(pieces, key=lambda p: session_of(p)[0]):
        if out and session_of(rows)[0] <= session_of(out[-1])[1]:
            out[-1] = out[-1] + rows
        else:
            out.append(rows)
    return out


@pytest.mark.parametrize("mode", ["append", "complete"])
def test_session_windows_keep_the_watermark_across_restarts(mode: str, tmp_path: Path) -> None:
    run = run_with_restarts(
        SESSION_RUNS, mode, tmp_path / "ck",
        lambda df: df.group_by(sk.session_window("event_time", "5 minutes"), "k").agg(
            sk.sum("v").alias("x")
        ),
    )  # fmt: skip
    model = SessionModel(mode)
    for batch in (b for runs in SESSION_RUNS for b in runs):
        model.feed(batch)
    if mode == "append":
        no_data_batches_follow(run, model.watermarks)
    assert [p.watermark for p in data_batches(run)] == model.watermarks
    assert sorted((r["event_time"], r["k"], r["v"]) for r in run.late) == late_rows(model.late)
    want = model.emitted if mode == "append" else model.sessions_held()
    assert final_result(run, mode) == want
    assert run.progress[-1].state_rows == len(model.sessions_held())


def test_session_windows_in_update_mode_are_refused_as_in_spark() -> None:
    stream = MemoryStream(SCHEMA)
    df = sk.read_stream.source(stream).with_watermark("event_time", "5 minutes")
    grouped = df.group_by(sk.session_window("event_time", "5 minutes"), "k").agg(sk.count())
    writer = grouped.write_stream.output_mode("update").foreach_batch(lambda d, b: None)
    with pytest.raises(sk.PlanError, match="update mode is not supported for session windows"):
        writer.start()


def test_a_row_behind_the_watermark_whose_window_is_open_is_counted(tmp_path: Path) -> None:
    runs = [[[(1, "a", 1, "u"), (14, "a", 1, "u")], [(8, "a", 1, "u")]]]  # W(0) = 9 < end 10
    run = run_with_restarts(
        runs, "update", tmp_path / "ck",
        lambda df: df.group_by(sk.window("event_time", "10 minutes"), "k").agg(
            sk.count().alias("x")
        ),
    )  # fmt: skip
    assert run.late == []
    assert final_result(run, "update")[(minutes(0), minutes(10), "a")] == 2
