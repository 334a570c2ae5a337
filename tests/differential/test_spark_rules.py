"""The four rules of issue 18, each on a small hand-made stream, through PySpark and
streamkit. The expected batches are written out by hand from the rule (in each case's
docstring), checked against Spark first (so a wrong reading of Spark fails as such, not
as a streamkit bug), then streamkit is compared with Spark batch by batch. Spark runs
every case of the module at once (``spark_runs``).

Times are seconds after 2024-01-01T00:00Z; ``W(n)`` is the watermark after batch n (the
largest event time through batch n minus the delay). Batch n evicts state with
``W(n-1)`` and drops as late a row whose window ended at or before ``W(n-2)``, the
watermark the previous batch evicted with (Spark's watermark for late events); a row is
never judged on its raw event time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.differential.compare import assert_same_as_spark
from tests.differential.engines import (
    DEADLINE,
    Run,
    order,
    run_spark,
    run_spark_all,
    run_streamkit,
    spark_batch_rows,
    streamkit_batch_rows,
)
from tests.differential.inputs import SCHEMA, Files, micros, write_files
from tests.differential.oracle import expected
from tests.differential.queries import ACD, Query, streamkit_frame, streamkit_rows

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

Expected = dict[int, list[tuple[int, int, str | None, int, int | None]]]
"""Per batch id: ``(window start, window end, k, count(*), sum(v))`` of each output row."""


@dataclass(frozen=True)
class Case:
    """A hand-made stream, its query, and the batches Spark's rules give."""

    query: Query
    files: Files
    expected: Expected


CASES: dict[str, Case] = {}


def case(test: str, query: Query, files: Files, expected: Expected) -> None:
    """Register the case of ``test`` (checked there through the ``differential`` fixture)."""
    CASES[test] = Case(query, files, expected)


def w(start: int, end: int, k: str | None, n: int, s: int | None) -> tuple[Any, ...]:
    """An expected output row: window ``[start, end)`` in seconds, key, count, sum."""
    return (micros(start), micros(end), k, n, s)


def short(run: Run) -> Expected:
    """Batches reduced to window, key, count and sum (what the hand derivations state)."""
    return {bid: [(r[0], r[1], r[2], r[3], r[5]) for r in rows] for bid, rows in run.batches}


@pytest.fixture(scope="module")
def directories(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The files of every case whose test is selected, written once."""
    selected = {getattr(i, "originalname", "") for i in request.session.items} & CASES.keys()
    return {n: write_files(tmp_path_factory.mktemp("in"), CASES[n].files, CASES[n].query.fmt)
            for n in sorted(selected)}  # fmt: skip


@pytest.fixture(scope="module")
def spark_runs(spark: Any, directories: dict[str, Path]) -> dict[str, Run]:
    """Spark's batches for those cases, its queries run concurrently."""
    return run_spark_all(spark, {n: (CASES[n].query, d) for n, d in directories.items()})


Check = Callable[[], None]


@pytest.fixture
def differential(
    request: pytest.FixtureRequest, spark_runs: dict[str, Run], directories: dict[str, Path]
) -> Check:
    """The check of the calling test's case: Spark gives its expected batches, then
    streamkit gives what Spark gives."""
    name = request.node.originalname

    def check() -> None:
        query, theirs = CASES[name].query, spark_runs[name]
        assert short(theirs) == CASES[name].expected, "Spark disagrees with the hand derivation"
        ours, _late = run_streamkit(query, directories[name])
        assert_same_as_spark(ours, theirs, query.mode)

    return check


# -- point 1: lateness is judged on the row's window, against the previous watermark -----

case(
    "test_point1_row_behind_watermark_in_open_window_counts",
    Query("tumbling", 10, "update", delay=5),
    [
        [(27, "a", 1, 1)],  # W(0) = 22
        [(19, "a", 2, 2), (20, "a", 3, 3), (35, "b", 5, 5)],  # W(1) = 30
        [(21, "a", 4, 4), (24, "b", 6, 6), (9, "a", 7, 7), (25, "c", 8, 8)],  # W(2) = 30
        [(26, "c", 9, 9), (31, "c", 10, 10)],
    ],
    {
        0: [w(20, 30, "a", 1, 1)],
        1: [w(10, 20, "a", 1, 2), w(20, 30, "a", 2, 4), w(30, 40, "b", 1, 5)],
        2: [w(20, 30, "a", 3, 8), w(20, 30, "b", 1, 6), w(20, 30, "c", 1, 8)],
        3: [w(30, 40, "c", 1, 10)],
    },
)


def test_point1_row_behind_watermark_in_open_window_counts(differential: Check) -> None:
    """Batch 1 filters with W(-1) (none): 19 counts in [10, 20), which is then evicted with
    W(0) = 22. Batch 2 filters with W(0) = 22: 21 is behind it (and 24, 25 behind the
    watermark shown for the batch, W(1) = 30), but [20, 30) ends after 22, so all three
    count; 9 is in [0, 10), closed, dropped; [20, 30) is evicted with W(1) = 30 after the
    update. Batch 3 filters with W(1) = 30: 26 is in [20, 30), closed, dropped; 31 counts."""
    differential()


case(
    "test_point1_sliding_window_lateness_is_per_window",
    Query("sliding", 10, "update", delay=5, slide=5),
    [[(25, "a", 1, 1)], [(17, "a", 2, 2)], [(18, "b", 3, 3)]],
    {
        0: [w(20, 30, "a", 1, 1), w(25, 35, "a", 1, 1)],
        1: [w(10, 20, "a", 1, 2), w(15, 25, "a", 1, 2)],
        2: [w(15, 25, "b", 1, 3)],
    },
)


def test_point1_sliding_window_lateness_is_per_window(differential: Check) -> None:
    """Sliding 10 s every 5 s. Batch 2 filters with W(0) = 20: the row at 18 belongs to
    [10, 20) (closed: dropped there) and to [15, 25) (open: it counts there)."""
    differential()


case(
    "test_point1_session_lateness_is_on_the_rows_own_session",
    Query("session", 5, "append", delay=5),
    [
        [(30, "a", 1, 1)],  # W(0) = 25
        [(32, "c", 5, 5)],  # W(1) = 27
        [(21, "a", 2, 2), (20, "a", 3, 3), (18, "b", 4, 4)],
        [(45, "z", 6, 6)],  # W(3) = 40
    ],
    {
        0: [],
        1: [],
        2: [w(21, 26, "a", 1, 2)],
        3: [],
        4: [w(30, 35, "a", 1, 1), w(32, 37, "c", 1, 5)],
    },
)


def test_point1_session_lateness_is_on_the_rows_own_session(differential: Check) -> None:
    """Gap 5. Batch 2 filters with W(0) = 25: the row at 21 has its own session [21, 26),
    open, so it counts (and is emitted at once: batch 2 evicts with W(1) = 27); the one at
    20 has [20, 25), closed, dropped. W(3) = 40 after the last file, so a batch without
    data (4) emits the sessions that ended by then."""
    differential()


# -- point 2: eviction with W(n-1), then one batch without data --------------------------

EVICTION: Files = [
    [(5, "a", 1, 1)],  # W(0) = 0
    [(16, "a", 2, 2)],  # W(1) = 11
    [(17, "b", 3, 3)],  # W(2) = 12
    [(40, "a", 4, 4)],  # W(3) = 35
]
case(
    "test_point2_append_evicts_with_previous_watermark_then_a_no_data_batch",
    Query("tumbling", 10, "append", delay=5),
    EVICTION,
    {
        0: [],
        1: [],
        2: [w(0, 10, "a", 1, 1)],
        3: [],
        4: [w(10, 20, "a", 1, 2), w(10, 20, "b", 1, 3)],
    },
)


def test_point2_append_evicts_with_previous_watermark_then_a_no_data_batch(
    differential: Check,
) -> None:
    """[0, 10) closes at W(1) = 11 but is emitted by batch 2, which evicts with W(1);
    [10, 20) closes at W(3) = 35, after the last file: batch 4 runs without input and
    emits it. [40, 50) stays open."""
    differential()


case(
    "test_point2_update_runs_the_no_data_batch_too",
    Query("tumbling", 10, "update", delay=5),
    EVICTION,
    {
        0: [w(0, 10, "a", 1, 1)],
        1: [w(10, 20, "a", 1, 2)],
        2: [w(10, 20, "b", 1, 3)],
        3: [w(40, 50, "a", 1, 4)],
        4: [],
    },
)


def test_point2_update_runs_the_no_data_batch_too(differential: Check) -> None:
    """Update mode emits each change in its own batch and still runs batch 4 (no input,
    no output) because W(3) moved past the watermark batch 3 evicted with."""
    differential()


# -- point 3: sessions merge when the next row is at or before the session's end ---------

TOUCHING: Files = [
    [(10, "a", 1, 1)],  # W(0) = 5
    [(15, "a", 2, 2)],  # 15 = 10 + gap: joins [10, 15) -> [10, 20); W(1) = 10
    [(20, "a", 3, 3), (31, "a", 4, 4), (20, "b", 5, 5), (25, "b", 6, 6)],  # W(2) = 26
    [(50, "z", 7, 7)],  # W(3) = 45
]
case(
    "test_point3_touching_sessions_merge_in_a_stream",
    Query("session", 5, "append", delay=5),
    TOUCHING,
    {
        0: [],
        1: [],
        2: [],
        3: [w(10, 25, "a", 3, 6)],
        4: [w(20, 30, "b", 2, 11), w(31, 36, "a", 1, 4)],
    },
)


def test_point3_touching_sessions_merge_in_a_stream(differential: Check) -> None:
    """a: 10, 15, 20 chain into [10, 25) (each at the previous end); 31 > 25 starts
    [31, 36). b: 20 and 25 touch within one batch: [20, 30). Batch 3 evicts with
    W(2) = 26: [10, 25); the batch without data (W(3) = 45) emits the rest."""
    differential()


def test_point3_touching_sessions_merge_in_batch_jobs(spark: Any, tmp_path: Path) -> None:
    """The batch API follows the same rule: Spark's batch job, streamkit's and the
    plain-Python definition agree on every session of the same rows."""
    query = Query("session", 5, "append", delay=5)
    directory = write_files(tmp_path / "in", TOUCHING, query.fmt)
    truth = expected(query, [row for rows in TOUCHING for row in rows])
    assert [r[:ACD] for r in spark_batch_rows(spark, query, directory)] == truth
    assert [r[:ACD] for r in streamkit_batch_rows(query, TOUCHING)] == truth


# -- point 4: an empty file is a batch -----------------------------------------------------

case(
    "test_point4_empty_files_are_batches",
    Query("tumbling", 10, "append", delay=5),
    [
        [],
        [(5, "a", 1, 1)],  # W(1) = 0
        [(16, "a", 2, 2)],  # W(2) = 11
        [],
        [],
        [(18, "b", 3, 3)],  # W(5) = 13
    ],
    {0: [], 1: [], 2: [], 3: [w(0, 10, "a", 1, 1)], 4: [], 5: [], 6: []},
)


def test_point4_empty_files_are_batches(differential: Check) -> None:
    """Six files, three of them empty (the first among them): six batches, then the one
    without data (W(5) = 13 > 11). The empty file 3 is the batch that evicts [0, 10) with
    W(2) = 11."""
    differential()


case(
    "test_point4_empty_files_in_update_mode_parquet",
    Query("tumbling", 10, "update", delay=5, fmt="parquet"),
    [[(5, "a", 1, 1)], [], [(7, "a", 2, 2)], []],
    {0: [w(0, 10, "a", 1, 1)], 1: [], 2: [w(0, 10, "a", 2, 3)], 3: []},
)


def test_point4_empty_files_in_update_mode_parquet(differential: Check) -> None:
    """Update mode over Parquet: an empty Parquet file is a batch with empty output."""
    differential()


# -- nulls ---------------------------------------------------------------------------------

case(
    "test_nulls_in_event_time_key_and_values",
    Query("tumbling", 10, "update", delay=5),
    [
        [(5, "a", 1, 1), (None, "a", 2, 2), (6, None, None, None)],
        [(None, "b", 3, 3), (12, "b", None, None), (13, None, 4, None)],
    ],
    {
        0: [w(0, 10, "a", 1, 1), w(0, 10, None, 1, None)],
        1: [w(10, 20, "b", 1, None), w(10, 20, None, 1, 4)],
        2: [],
    },
)


def test_nulls_in_event_time_key_and_values(differential: Check) -> None:
    """A null event time belongs to no window (both engines drop the row); a null key is a
    group of its own; null values count in count(*) only, and a group of only null values
    has null sum/avg/min/max. W(1) = 8 > W(0) = 1: batch 2 runs without data."""
    differential()


# -- session windows in update mode --------------------------------------------------------

BRIDGED: Files = [
    [(10, "a", 1, 1), (20, "a", 2, 2)],  # two sessions: [10, 15) and [20, 25)
    [(15, "a", 3, 3)],  # at the first one's end: one session [10, 25)
    [(40, "a", 4, 4)],
]


def test_session_update_mode_is_refused_or_leaves_no_stale_session(
    spark: Any, tmp_path: Path
) -> None:
    """Spark refuses session windows in update mode. streamkit either refuses too, or
    retracts: once a row bridges two sessions, the memory sink holds the merged session
    only, i.e. exactly Spark's complete-mode result on the same files."""
    import streamkit as sk
    from streamkit.errors import PlanError

    query = Query("session", 5, "update", delay=5)
    directory = write_files(tmp_path / "in", BRIDGED, query.fmt)
    with pytest.raises(Exception, match="not supported for session window"):
        run_spark(spark, query, directory)
    complete = run_spark(spark, query.with_(mode="complete"), directory)
    source = sk.read_stream.files(
        str(directory), format=query.fmt, schema=SCHEMA, max_files_per_trigger=1
    )
    writer = streamkit_frame(query, source).write_stream.output_mode("update")
    refused: PlanError | None = None
    try:
        handle = writer.trigger(available_now=True).memory("sessions_update").start()
        handle.await_termination(timeout=DEADLINE)
    except PlanError as error:
        refused = error
    if refused is not None:
        assert "session" in str(refused)
        return
    held = sorted(streamkit_rows(sk.memory_table("sessions_update")), key=order)
    assert [r[:ACD] for r in held] == [r[:ACD] for r in complete.final("complete")]
