"""Spark's micro-batch rules on a file stream (one file per batch, ``available_now``).

Expected batches come from :func:`spark_model`, a plain-Python statement of the rules
(read off Spark's ``StateStoreSaveExec``/``WatermarkPropagator`` and confirmed with
PySpark 4.3 on the same file sequences): which rows are late, when windows are evicted,
when a no-data batch runs, and that an empty file is a batch.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
import pytest

import streamkit as sk

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.streaming.incremental import OutputMode

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DELAY = 5
SCHEMA = pa.schema([("t", pa.timestamp("us", "UTC")), ("k", pa.string())])

Out = list[tuple[int, int, int]]
"""(window start, window end, count) in seconds after T0, sorted."""

# Files of event times (seconds after T0); [] is an empty file.
LATE_BUT_OPEN = [[100], [200], [96], [50], [192]]
"""96 and 192: behind the watermark (195 after t=200) with their window still open."""
EMPTY_FILES = [[100], [], [200], [], []]
SLIDING = [[100], [200], [194], [192], [189]]  # 192: one window late, one open


def windows(t: int, size: int, slide: int) -> list[tuple[int, int]]:
    last = t // slide * slide
    return [(s, s + size) for s in range(last, t - size, -slide)]


def spark_model(
    files: list[list[int]], size: int, slide: int, mode: str, same_batch: bool = False
) -> tuple[list[Out], list[int]]:
    """Per batch id the rows emitted, and the late event times, under Spark's rules:

    - batch n runs with the watermark in force W_n = max event time before it - delay;
    - a row's window is dropped when its end <= W_{n-1} (complete mode drops nothing);
    - windows with end <= W_n are evicted (append emits them); update emits touched ones;
    - one file per batch, an empty file too; after the last file, a no-data batch runs in
      append/update mode when the watermark moved past the one in force in it.
    ``same_batch``: streamkit's option, eviction with the watermark after the batch's rows.
    """
    state: Counter[tuple[int, int]] = Counter()
    top: int | None = None
    in_force: int | None = None
    batches: list[Out] = []
    late: list[int] = []
    runs = [*files, None]
    for rows in runs:
        moved = top is not None and (in_force is None or top - DELAY > in_force)
        if rows is None and (mode == "complete" or same_batch or not moved):
            break
        late_mark, in_force = in_force, None if top is None else top - DELAY
        touched = set()
        for t in rows or []:
            open_ = [w for w in windows(t, size, slide) if mode == "complete" or
                     late_mark is None or w[1] > late_mark]  # fmt: skip
            late += [] if open_ else [t]
            state.update(open_)
            touched |= set(open_)
        top = max([*(rows or []), *([top] if top is not None else [])], default=None)
        if same_batch:
            in_force = None if top is None else top - DELAY
        closed = {w for w in state if in_force is not None and w[1] <= in_force}
        if mode == "complete":
            out = set(state)
        elif mode == "update":
            out = touched
        else:
            out = closed
        batches.append(sorted((s, e, state[(s, e)]) for s, e in out))
        if mode != "complete":
            for w in closed:
                del state[w]
    return batches, sorted(late)


def write_files(folder: Path, files: list[list[int]]) -> None:
    folder.mkdir()
    for i, times in enumerate(files):
        path = folder / f"f{i:03d}.json"
        text = "".join(
            json.dumps({"t": (T0 + timedelta(seconds=t)).isoformat(), "k": "a"}) + "\n"
            for t in times
        )
        path.write_text(text)
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))


def run_files(
    tmp_path: Path,
    files: list[list[int]],
    size: int,
    slide: int,
    mode: str,
    *,
    same_batch: bool = False,
) -> tuple[list[Out], list[int], list[Any]]:
    tmp_path.mkdir(exist_ok=True)
    write_files(tmp_path / "in", files)
    got: dict[int, Out] = {}

    def collect(df: sk.DataFrame, batch_id: int) -> None:
        rows = df.to_arrow().to_pylist()
        got[batch_id] = sorted(
            (seconds(r["window"]["start"]), seconds(r["window"]["end"]), r["n"]) for r in rows
        )

    stream = sk.read_stream.files(
        str(tmp_path / "in"), schema=SCHEMA, max_files_per_trigger=1
    ).with_watermark("t", f"{DELAY} seconds")
    query = stream.group_by(sk.window("t", f"{size} seconds", f"{slide} seconds")).agg(
        sk.count().alias("n")
    )
    writer = query.write_stream.output_mode(cast("OutputMode", mode))
    writer = writer.emit_on_same_batch(same_batch).trigger(available_now=True)
    q = writer.checkpoint(str(tmp_path / "ck")).foreach_batch(collect).start()
    assert q.await_termination(timeout=120)
    late = q.late_rows
    late_times = [] if late is None else sorted(seconds(t) for t in late.column("t").to_pylist())
    assert sorted(got) == list(range(len(got)))
    return [got[i] for i in range(len(got))], late_times, q.recent_progress


def seconds(value: datetime) -> int:
    return int((value - T0).total_seconds())


@pytest.mark.parametrize("mode", ["append", "update", "complete"])
@pytest.mark.parametrize(
    ("files", "size", "slide"),
    [(LATE_BUT_OPEN, 10, 10), (EMPTY_FILES, 10, 10), (SLIDING, 10, 5)],
    ids=["late-but-open", "empty-files", "sliding"],
)
def test_batches_match_sparks_rules(
    files: list[list[int]], size: int, slide: int, mode: str, tmp_path: Path
) -> None:
    want, want_late = spark_model(files, size, slide, mode)
    got, late, progress = run_files(tmp_path, files, size, slide, mode)
    assert got == want
    assert late == want_late
    assert [p.num_input_rows for p in progress][: len(files)] == [len(f) for f in files]


def test_a_row_behind_the_watermark_is_counted_while_its_window_is_open(tmp_path: Path) -> None:
    got, late, _ = run_files(tmp_path, LATE_BUT_OPEN, 10, 10, "append")
    emitted = {(s, e): n for batch in got for s, e, n in batch}
    assert emitted[(90, 100)] == 1  # t=96 arrived after the watermark reached 195
    assert late == [50]
    updates = run_files(tmp_path / "update", LATE_BUT_OPEN, 10, 10, "update")[0]
    assert updates[-1] == [(190, 200, 1)]  # t=192 < 195, but [190, 200) is open: counted


def test_an_empty_file_is_a_batch(tmp_path: Path) -> None:
    got, _, progress = run_files(tmp_path, EMPTY_FILES, 10, 10, "append")
    assert [p.num_input_rows for p in progress] == [1, 0, 1, 0, 0]
    assert got[3] == [(100, 110, 1)]  # the empty file after t=200 runs with W = 195


def test_a_no_data_batch_emits_what_the_last_file_closed(tmp_path: Path) -> None:
    got, _, progress = run_files(tmp_path, [[100], [200]], 10, 10, "append")
    assert got == [[], [], [(100, 110, 1)]]
    assert [p.num_input_rows for p in progress] == [1, 1, 0]


def test_emit_on_same_batch_is_the_old_emission(tmp_path: Path) -> None:
    files = [[100], [200], [96]]
    want, want_late = spark_model(files, 10, 10, "append", same_batch=True)
    got, late, progress = run_files(tmp_path, files, 10, 10, "append", same_batch=True)
    # [100, 110) closes in the batch of t=200; t=96 then meets the watermark of that batch
    assert got == want == [[], [(100, 110, 1)], []]
    assert late == want_late == [96]
    assert len(progress) == len(files)  # no no-data batch


def test_a_query_without_aggregation_drops_no_row(tmp_path: Path) -> None:
    write_files(tmp_path / "in", [[100], [200], [50]])
    seen: list[int] = []
    stream = sk.read_stream.files(str(tmp_path / "in"), schema=SCHEMA, max_files_per_trigger=1)
    marked = stream.with_watermark("t", "5 seconds").select("t")
    writer = marked.write_stream.trigger(available_now=True).checkpoint(str(tmp_path / "ck"))
    q = writer.foreach_batch(
        lambda df, _: seen.extend(seconds(t) for t in df.to_arrow().column("t").to_pylist())
    ).start()
    assert q.await_termination(timeout=120)
    assert seen == [100, 200, 50]
    assert q.late_rows is None


def start_counts(folder: Path, sink: Any, **trigger: bool) -> Any:
    stream = sk.read_stream.files(str(folder / "in"), schema=SCHEMA, max_files_per_trigger=1)
    marked = stream.with_watermark("t", f"{DELAY} seconds")
    query = marked.group_by(sk.window("t", "10 seconds")).agg(sk.count().alias("n"))
    writer = query.write_stream.output_mode("append").trigger(**trigger)
    return writer.checkpoint(str(folder / "ck")).foreach_batch(sink).start()


def add_file(folder: Path, index: int, times: list[int]) -> None:
    path = folder / "in" / f"f{index:03d}.json"
    lines = [json.dumps({"t": (T0 + timedelta(seconds=t)).isoformat(), "k": "a"}) for t in times]
    path.write_text("".join(line + "\n" for line in lines))
    os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))


@pytest.mark.parametrize(("t", "counted"), [(96, True), (50, False)])
def test_after_a_restart_late_rows_meet_the_watermark_in_force_in_the_last_batch(
    t: int, counted: bool, tmp_path: Path
) -> None:
    """Trigger once twice (t=100, then t=200: batch 1 ran with W = 95 in force and left
    W = 195, its no-data batch never ran), then a restart reads t: Spark judges it against
    95 (the offsets log of batch 1), so [90, 100) is open for 96 and closed for 50."""
    (tmp_path / "in").mkdir()
    got: dict[int, Out] = {}

    def collect(df: sk.DataFrame, batch_id: int) -> None:
        rows = df.to_arrow().to_pylist()
        got[batch_id] = sorted(
            (seconds(r["window"]["start"]), seconds(r["window"]["end"]), r["n"]) for r in rows
        )

    for index, times in enumerate([[100], [200]]):
        add_file(tmp_path, index, times)
        assert start_counts(tmp_path, collect, once=True).await_termination(timeout=120)
    add_file(tmp_path, 2, [t])
    q = start_counts(tmp_path, collect, available_now=True)
    assert q.await_termination(timeout=120)
    window = (t // 10 * 10, t // 10 * 10 + 10, 1)
    assert got == {0: [], 1: [], 2: sorted([(100, 110, 1), *([window] if counted else [])])}
    assert (q.late_rows is None) == counted


def test_a_no_data_batch_logged_but_not_committed_runs_again_under_its_id(
    tmp_path: Path,
) -> None:
    write_files(tmp_path / "in", [[100], [200]])
    got: dict[int, Out] = {}

    def failing(df: sk.DataFrame, batch_id: int) -> None:
        if batch_id == 2:
            raise RuntimeError("sink down")

    def collect(df: sk.DataFrame, batch_id: int) -> None:
        rows = df.to_arrow().to_pylist()
        got[batch_id] = sorted(
            (seconds(r["window"]["start"]), seconds(r["window"]["end"]), r["n"]) for r in rows
        )

    first = start_counts(tmp_path, failing, available_now=True)
    with pytest.raises(sk.StreamkitError, match="sink down"):
        first.await_termination(timeout=120)
    again = start_counts(tmp_path, collect, available_now=True)
    assert again.await_termination(timeout=120)
    assert got == {2: [(100, 110, 1)]}  # the no-data batch, with the same id
