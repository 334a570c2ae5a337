"""``transform_with_state_in_pandas`` through PySpark 4's ``transformWithStateInPandas``
(RocksDB state store, as Spark requires) and streamkit on the same files (one file per
micro-batch, ``available_now``, foreach-batch sinks): every batch id and its rows equal
Spark's. The same processor classes run in both engines (PySpark's camelCase spellings,
which streamkit also accepts).

- :class:`Counter` (``EventTime``): per key a value (rows seen), a list (event times) and
  a map (rows per user); each batch with rows re-arms one event-time timer at the key's
  latest event time + ``GAP_MS``; when the watermark reaches it, the timer emits the
  key's totals and clears its state. Every output row carries the watermark the engine
  handed the processor, so that value is compared too.
- :class:`Ledger` (time mode ``None``): list and map state without timers (``put``,
  ``appendValue``, ``removeKey``, ``containsKey``, iteration), state that lives for ever.

A hand-made case first checks Spark against the batches derived in its comment; seeded
random cases (rows out of order and behind the watermark, null keys, times and users,
empty files) then take Spark as the oracle. A batch DataFrame is compared with Spark's
batch ``transformWithStateInPandas`` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.differential.conftest import ROCKSDB
from tests.differential.inputs import Files, random_files, write_files
from tests.differential.lazy_runs import LazyRuns
from tests.differential.spark_functions import Counter, Fading, Ledger, Seeded
from tests.differential.test_stateful import (
    Batches,
    SparkRun,
    ms,
    rows_of,
    run_streamkit,
)
from tests.differential.worker_retry import retried

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

GAP_MS = 10_000
COUNTER_OUT = (
    "k string, kind string, n bigint, times bigint, tmax bigint, users bigint, "
    "ucount bigint, at bigint, wm bigint"
)
LEDGER_OUT = "k string, batches bigint, rows bigint, total bigint, users bigint, has0 boolean"
CONCURRENT = 2


@dataclass(frozen=True)
class Op:
    """One query, built for both engines (the interface of test_stateful's runners)."""

    name: str
    mode: str
    delay: int | None = 5

    def build(self, frame: Any, spark: bool) -> Any:
        if self.delay is not None:
            frame = (frame.withWatermark if spark else frame.with_watermark)(
                "ts", f"{self.delay} seconds"
            )
        grouped = frame.groupBy("k") if spark else frame.group_by("k")
        call = grouped.transformWithStateInPandas
        if self.name == "ledger":
            return call(Ledger(), LEDGER_OUT, "Append", "None")
        return call(Counter(), COUNTER_OUT, self.mode.capitalize(), "EventTime")


def data(k: str, n: int, times: int, tmax: int, *, wm: int) -> tuple[Any, ...]:
    """A data row (every row of the hand case has user 0: one user)."""
    users = 1
    return (k, "data", n, times, ms(tmax), users, n if users else 0, None, wm)


def fire(k: str, n: int, times: int, tmax: int, wm: int) -> tuple[Any, ...]:
    return (k, "fire", n, times, ms(tmax), 1, n, ms(tmax) + GAP_MS, wm)


@dataclass(frozen=True)
class Case:
    op: Op
    files: Files
    expected: Batches | None = None


CASES: dict[str, Case] = {
    # delay 5 s, timer at the key's last event time + 10 s; seconds after BASE; every row
    # has user 0. W(n): watermark in force in batch n (0 in batch 0, as in Spark).
    # Batch 0 (W 0): a@0 -> timer 10. Batch 1 (W -5): b@15 -> timer 25. Batch 2 (W 10):
    # c@16 -> timer 26; a's timer (10 <= 10) fires: timers fire AT the watermark.
    # Batch 3 (W 11, late mark 10): a@2 is late; d@30 -> timer 40. Batch 4 (W 25): c@17
    # re-arms c at 27; b's timer (25) fires. Batch 5 (empty file, W 25): nothing. W stays
    # 25 (max 30 - 5): no batch is owed; c and d stay open.
    "counter_hand": Case(
        Op("counter", "update"),
        [
            [(0, "a", 1, 0)],
            [(15, "b", 1, 0)],
            [(16, "c", 1, 0)],
            [(2, "a", 1, 0), (30, "d", 1, 0)],
            [(17, "c", 1, 0)],
            [],
        ],
        [
            (0, [data("a", 1, 1, 0, wm=0)]),
            (1, [data("b", 1, 1, 15, wm=ms(-5))]),
            (2, rows_of([fire("a", 1, 1, 0, ms(10)), data("c", 1, 1, 16, wm=ms(10))])),
            (3, [data("d", 1, 1, 30, wm=ms(11))]),
            (4, rows_of([fire("b", 1, 1, 15, ms(25)), data("c", 2, 2, 17, wm=ms(25))])),
            (5, []),
        ],
    ),
}
for _seed in (1, 2, 3):
    _files = random_files(_seed, files=8, null_rate=0.08)
    CASES[f"random{_seed}_counter_update"] = Case(Op("counter", "update"), _files)
    CASES[f"random{_seed}_counter_append"] = Case(Op("counter", "append", 8), _files)
# review finding 9: time mode EventTime without a watermark runs in Spark (the watermark
# handed to the processor stays 0, no row is late, no timer at a 2024 time fires)
CASES["random5_counter_event_time_no_watermark"] = Case(
    Op("counter", "update", None), random_files(5, files=6, null_rate=0.08)
)
CASES["random4_ledger"] = Case(
    Op("ledger", "append", None), random_files(4, files=7, null_rate=0.1)
)


@pytest.fixture(scope="module")
def runs(
    rocksdb: Any, tmp_path_factory: pytest.TempPathFactory
) -> Mapping[str, tuple[Path, Batches]]:
    """Every case's files and Spark's batches, run when a test first asks for one,
    ``CONCURRENT`` queries at a time (each task starts a Python worker, which must connect
    back to the JVM within its timeout on a busy machine; see
    :mod:`~tests.differential.lazy_runs`)."""
    dirs = {n: write_files(tmp_path_factory.mktemp(n), c.files, "json") for n, c in CASES.items()}

    def chunk(names: list[str]) -> dict[str, tuple[Path, Batches]]:
        started = {n: SparkRun(rocksdb, CASES[n].op, dirs[n]) for n in names}
        out = {}
        for n, run in started.items():
            again = partial(lambda n: SparkRun(rocksdb, CASES[n].op, dirs[n]).result(), n)
            out[n] = (dirs[n], retried(run.result, again))
        return out

    return LazyRuns(list(dirs), chunk, CONCURRENT)


@pytest.mark.parametrize("name", list(CASES))
def test_streamkit_matches_spark(name: str, runs: Mapping[str, tuple[Path, Batches]]) -> None:
    case = CASES[name]
    directory, theirs = runs[name]
    if case.expected is not None:
        assert theirs == case.expected, "Spark disagrees with the hand derivation"
    ours = run_streamkit(case.op, directory)
    assert [b for b, _ in ours] == [b for b, _ in theirs], "batch ids differ"
    for (bid, rows), (_, their_rows) in zip(ours, theirs, strict=True):
        assert rows == their_rows, f"batch {bid}: streamkit {rows} vs Spark {their_rows}"


@pytest.mark.parametrize("time_mode", ["EventTime", "ProcessingTime"])
def test_batch_dataframe_matches_spark(rocksdb: Any, time_mode: str) -> None:
    """A batch DataFrame: one batch with no state before it; watermark -1, so only
    processing-time timers fire (the 2024 timers are all past the clock)."""
    import streamkit as sk
    from tests.differential.inputs import micros, rows_table

    rows = [r for part in random_files(5, files=6, null_rate=0.08) for r in part]
    ours = (
        sk.from_arrow(rows_table(rows))
        .group_by("k")
        .transform_with_state_in_pandas(Counter(), COUNTER_OUT, "append", time_mode)
    )
    frame = rocksdb.createDataFrame(
        [(None if r[0] is None else micros(r[0]), *r[1:]) for r in rows],
        "ts_us bigint, k string, v bigint, u bigint",
    ).selectExpr("timestamp_micros(ts_us) AS ts", "k", "v", "u")
    theirs = (
        frame.groupBy("k")
        .transformWithStateInPandas(Counter(), COUNTER_OUT, "Append", time_mode)
        .collect()
    )
    got = rows_of([tuple(r.values()) for r in ours.to_arrow().to_pylist()])
    assert got == rows_of([tuple(r) for r in theirs])
    assert any(r[1] == "fire" for r in got) == (time_mode == "ProcessingTime")


# --- initial state -------------------------------------------------------------------------

SEEDED_OUT = "k string, n bigint, cols string, notes string, seeds bigint"
SEEDS = [("a", 10, "x"), ("a", 5, "y"), ("c", 30, "z"), ("x", 7, "w")]
"""Initial state grouped by ``key`` (another name than the query's ``k``): two rows for
``a``, none for ``b``, and ``x`` that no input row has."""
SEEDS_DDL = "key string, n bigint, note string"


@dataclass(frozen=True)
class SeededOp:
    """``transformWithStateInPandas`` with ``initialState`` (time mode ``None``)."""

    name: str = "seeded"
    mode: str = "append"

    def build(self, frame: Any, spark: bool) -> Any:
        if spark:
            seeds = frame.sparkSession.createDataFrame(SEEDS, SEEDS_DDL).groupBy("key")
            grouped = frame.groupBy("k")
        else:
            import pyarrow as pa

            import streamkit as sk

            names = [f.split()[0] for f in SEEDS_DDL.split(", ")]
            table = pa.table({n: [r[i] for r in SEEDS] for i, n in enumerate(names)})
            seeds = sk.from_arrow(table).group_by("key")
            grouped = frame.group_by("k")
        return grouped.transformWithStateInPandas(Seeded(), SEEDED_OUT, "Append", "None", seeds)


INITIAL_FILES = random_files(6, files=5, null_rate=0.1)


@pytest.fixture(scope="module")
def seeded_run(rocksdb: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Batches]:
    directory = write_files(tmp_path_factory.mktemp("seeded"), INITIAL_FILES, "json")
    return directory, retried(lambda: SparkRun(rocksdb, SeededOp(), directory).result())


def test_initial_state_matches_spark(seeded_run: tuple[Path, Batches]) -> None:
    """Batch 0 seeds a and c (x too, never emitted); b and null start from nothing;
    later batches never see the initial state again."""
    directory, theirs = seeded_run
    ours = run_streamkit(SeededOp(), directory)
    assert ours == theirs
    # Spark's own reading, by hand: a first has rows in batch 2 (two): 10 + 5 + 2; c in
    # batch 1 (three): 30 + 3; each frame holds every column of the initial state
    firsts: dict[Any, tuple[Any, ...]] = {}
    for _, batch in theirs:
        for r in batch:
            firsts.setdefault(r[0], r)
    assert firsts["a"] == ("a", 17, "key,n,note", "x,y", 2)
    assert firsts["c"] == ("c", 33, "key,n,note", "z", 1)
    assert firsts["b"] == ("b", 1, None, "", None)
    assert "x" not in firsts


def test_initial_state_on_a_batch_dataframe_matches_spark(rocksdb: Any) -> None:
    import streamkit as sk
    from tests.differential.inputs import micros, rows_table

    rows = [r for part in INITIAL_FILES for r in part]
    ours = SeededOp().build(sk.from_arrow(rows_table(rows)), spark=False)
    frame = rocksdb.createDataFrame(
        [(None if r[0] is None else micros(r[0]), *r[1:]) for r in rows],
        "ts_us bigint, k string, v bigint, u bigint",
    ).selectExpr("timestamp_micros(ts_us) AS ts", "k", "v", "u")
    theirs = SeededOp().build(frame, spark=True).collect()
    got = rows_of([tuple(r.values()) for r in ours.to_arrow().to_pylist()])
    assert got == rows_of([tuple(r) for r in theirs])


# --- TTL -----------------------------------------------------------------------------------

FADING_OUT = (
    "k string, last bigint, vals bigint, vsum bigint, users string, alive string, after bigint"
)
TINY_MS, HUGE_MS = 1, 10**12
"""A TTL that has passed by the next batch (batches are ms apart in both engines), and
one that never does (30 years)."""


@dataclass(frozen=True)
class FadingOp:
    """``transformWithStateInPandas`` in ``ProcessingTime`` with TTL ``ttl`` ms."""

    name: str
    ttl: int
    mode: str = "update"

    def build(self, frame: Any, spark: bool) -> Any:
        grouped = frame.groupBy("k") if spark else frame.group_by("k")
        return grouped.transformWithStateInPandas(
            Fading(self.ttl), FADING_OUT, "Update", "ProcessingTime"
        )


class Ticking:
    """The wall clock, at least 5 ms later at each reading (streamkit reads it once per
    batch and to look for due work), so consecutive batches are more than 1 ms apart."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self) -> float:
        import time

        self.last = max(time.time(), self.last + 0.005)
        return self.last


def run_streamkit_clocked(op: FadingOp, directory: Path) -> Batches:
    import streamkit as sk
    from tests.differential.engines import DEADLINE
    from tests.differential.inputs import SCHEMA

    seen: Batches = []

    def collect(frame: sk.DataFrame, batch_id: int) -> None:
        seen.append((batch_id, rows_of([tuple(r.values()) for r in frame.to_arrow().to_pylist()])))

    source = sk.read_stream.files(
        str(directory), format="json", schema=SCHEMA, max_files_per_trigger=1
    )
    handle = (
        op.build(source, spark=False).write_stream.output_mode(op.mode)
        .processing_clock(Ticking()).trigger(available_now=True).foreach_batch(collect).start()
    )  # fmt: skip
    assert handle.await_termination(timeout=DEADLINE), "streamkit did not finish"
    assert handle.exception is None, repr(handle.exception)
    return sorted(seen, key=lambda b: b[0])


def _data_batches(batches: Batches) -> Batches:
    """The batches up to the last with rows: both engines may end with no-data batches
    under ``ProcessingTime`` (Spark's run at every trigger, streamkit's when a TTL is
    due), which emit nothing."""
    while batches and not batches[-1][1]:
        batches = batches[:-1]
    return batches


TTL_CASES = {
    "tiny": FadingOp("tiny", TINY_MS),
    "huge": FadingOp("huge", HUGE_MS),
}
TTL_FILES = random_files(7, files=6, null_rate=0.1, empty_rate=0.0)


@pytest.fixture(scope="module")
def ttl_runs(
    rocksdb: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Batches]]:
    """Spark's batches, one query at a time, without no-data batches: under
    ``ProcessingTime`` Spark would run one at every trigger (``shouldRunAnotherBatch`` is
    always true there), so its ``availableNow`` query would never end. They only remove
    expired state, which no batch sees anyway."""
    session = rocksdb.newSession()
    session.conf.set("spark.sql.streaming.stateStore.providerClass", ROCKSDB)
    session.conf.set("spark.sql.streaming.noDataMicroBatches.enabled", "false")
    directory = write_files(tmp_path_factory.mktemp("ttl"), TTL_FILES, "json")
    return {n: (directory, _spark_batches(session, op, directory)) for n, op in TTL_CASES.items()}


def _spark_batches(session: Any, op: FadingOp, directory: Path) -> Batches:
    """Spark's batches (a run whose Python worker was lost runs again: worker_retry)."""
    return retried(lambda: SparkRun(session, op, directory).result())


@pytest.mark.parametrize("name", list(TTL_CASES))
def test_ttl_matches_spark(name: str, ttl_runs: dict[str, tuple[Path, Batches]]) -> None:
    """Tiny: every batch starts from nothing (each key's state of the batch before has
    expired: alive 000), yet sees its own updates (after = its rows). Huge: the state
    of every batch before is there, list elements one per row and map entries per user."""
    directory, theirs = ttl_runs[name]
    theirs = _data_batches(theirs)
    ours = _data_batches(run_streamkit_clocked(TTL_CASES[name], directory))
    assert ours == theirs
    rows = [r for _, b in theirs for r in b]
    if name == "tiny":  # Spark's own behaviour, as the docstring derives it
        assert {r[5] for r in rows} == {"000"}
        assert all(r[2] == 0 for r in rows)
    else:
        assert any(r[5] == "111" for r in rows)
