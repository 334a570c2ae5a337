"""``apply_in_pandas_with_state`` through PySpark's ``applyInPandasWithState`` and
streamkit on the same files (one file per micro-batch, ``available_now``, foreach-batch
sinks): every batch id and its rows equal Spark's. The same Python functions run in both
engines (they use PySpark's camelCase spellings, which streamkit also accepts).

- ``sessions``: a session per key with ``EventTimeTimeout``: each call adds the key's rows
  to (count, first, last) and sets the timeout to ``last + GAP`` (not before the
  watermark); the timeout call emits the closed session and removes the state.
- ``capped``: ``NoTimeout``, a running count that emits and removes the state once it
  reaches 3 (state removal without timeouts).

A hand-made case first checks Spark against the batches derived in its comment; seeded
random cases (out-of-order rows, rows behind the watermark, null keys and times) then use
Spark as the oracle. The batch API is compared with Spark's ``applyInPandas`` (PySpark
refuses ``applyInPandasWithState`` on a batch DataFrame; streamkit runs each key once).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pytest

from tests.differential.engines import DEADLINE, order
from tests.differential.inputs import BASE, SCHEMA, SPARK_SCHEMA, Files, random_files, write_files
from tests.differential.spark_functions import capped, closed_sessions, sessions, summary
from tests.differential.worker_retry import retried

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

Batches = list[tuple[int, list[tuple[Any, ...]]]]
BASE_MS = int(BASE.timestamp() * 1000)
SESSION_OUT = "k string, n bigint, first bigint, last bigint, closed boolean"
SESSION_STATE = "n bigint, first bigint, last bigint"


@dataclass(frozen=True)
class Op:
    """One stateful query, built for both engines."""

    name: str
    mode: str
    delay: int | None = 5

    @property
    def parts(self) -> tuple[Any, str, str, str]:
        """(function, output schema, state schema, timeout)."""
        if self.name == "capped":
            return capped, "k string, n bigint", "n bigint", "NoTimeout"
        func = sessions if self.mode == "update" else closed_sessions
        return func, SESSION_OUT, SESSION_STATE, "EventTimeTimeout"

    def build(self, frame: Any, spark: bool) -> Any:
        func, out, state, timeout = self.parts
        if self.delay is not None:
            frame = (frame.withWatermark if spark else frame.with_watermark)(
                "ts", f"{self.delay} seconds"
            )
        grouped = frame.groupBy("k") if spark else frame.group_by("k")
        return grouped.applyInPandasWithState(func, out, state, self.mode, timeout)


class Query(Protocol):
    """What the runners need of a query: its output mode and a builder for either engine."""

    @property
    def mode(self) -> str: ...

    def build(self, frame: Any, spark: bool) -> Any: ...


def rows_of(records: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(records, key=order)


class SparkRun:
    """A Spark streaming query over one directory, collecting every batch."""

    def __init__(self, spark: Any, op: Query, directory: Path) -> None:
        self.seen: Batches = []
        self._ck = tempfile.TemporaryDirectory(prefix="spark-ck-")
        stream = (
            spark.readStream.schema(SPARK_SCHEMA).option("maxFilesPerTrigger", 1)
            .json(str(directory))
        )  # fmt: skip
        self._handle = (
            op.build(stream, spark=True).writeStream.outputMode(op.mode)
            .trigger(availableNow=True).option("checkpointLocation", self._ck.name)
            .foreachBatch(self._collect).start()
        )  # fmt: skip

    def _collect(self, batch: Any, batch_id: int) -> None:
        self.seen.append((batch_id, rows_of([tuple(r) for r in batch.collect()])))

    def result(self) -> Batches:
        try:
            assert self._handle.awaitTermination(DEADLINE), "Spark did not finish"
            assert self._handle.exception() is None, str(self._handle.exception())
        finally:
            self._ck.cleanup()
        return sorted(self.seen, key=lambda b: b[0])


def run_streamkit(op: Query, directory: Path) -> Batches:
    import streamkit as sk

    seen: Batches = []

    def collect(frame: sk.DataFrame, batch_id: int) -> None:
        seen.append((batch_id, rows_of([tuple(r.values()) for r in frame.to_arrow().to_pylist()])))

    source = sk.read_stream.files(
        str(directory), format="json", schema=SCHEMA, max_files_per_trigger=1
    )
    handle = (
        op.build(source, spark=False).write_stream.output_mode(op.mode)
        .trigger(available_now=True).foreach_batch(collect).start()
    )  # fmt: skip
    assert handle.await_termination(timeout=DEADLINE), "streamkit did not finish"
    assert handle.exception is None, repr(handle.exception)
    return sorted(seen, key=lambda b: b[0])


def ms(second: int) -> int:
    return BASE_MS + second * 1000


@dataclass(frozen=True)
class Case:
    op: Op
    files: Files
    expected: Batches | None = None


CASES: dict[str, Case] = {
    # sessions, delay 5 s, gap 10 s; times in seconds after BASE. Files are waiting, so no
    # no-data batch runs between them (each data batch carries the new watermark).
    # Batch 0 (W = 0, Spark's start): a@0,2 -> (2, 0, 2) timeout 12; b@1 -> (1, 1, 1)
    # timeout 11; W becomes 2-5 = -3. Batch 1 (W -3): a@20 -> (3, 0, 20) timeout 30; W
    # becomes 15. Batch 2 (W 15): c@40 -> timeout 50, then b (11 < 15) closes; W becomes
    # 35. Batch 3 (late mark 15, W 35): a@3 is late (3 <= 15), then a (30 < 35) closes.
    # W stays 35: no batch is owed, c stays open.
    "sessions_hand": Case(
        Op("sessions", "update"),
        [[(0, "a", 1, 0), (2, "a", 2, 0), (1, "b", 3, 0)], [(20, "a", 4, 1)],
         [(40, "c", 5, 2)], [(3, "a", 6, 3)]],
        [
            (0, rows_of([("a", 2, ms(0), ms(2), False), ("b", 1, ms(1), ms(1), False)])),
            (1, [("a", 3, ms(0), ms(20), False)]),
            (2, rows_of([("b", 1, ms(1), ms(1), True), ("c", 1, ms(40), ms(40), False)])),
            (3, [("a", 3, ms(0), ms(20), True)]),
        ],
    ),
}
for _seed in (1, 2, 3):
    _files = random_files(_seed, files=8, null_rate=0.08)
    CASES[f"random{_seed}_sessions_update"] = Case(Op("sessions", "update"), _files)
    CASES[f"random{_seed}_sessions_append"] = Case(Op("sessions", "append", 8), _files)
CASES["random4_capped_no_timeout"] = Case(
    Op("capped", "append", None), random_files(4, files=6, null_rate=0.08)
)


@pytest.fixture(scope="module")
def runs(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Batches]]:
    """Every case's files and Spark's batches (Spark's queries run concurrently)."""
    dirs = {n: write_files(tmp_path_factory.mktemp(n), c.files, "json") for n, c in CASES.items()}
    started = {n: SparkRun(spark, CASES[n].op, d) for n, d in dirs.items()}
    return {
        n: (dirs[n], retried(run.result, partial(lambda n: SparkRun(spark, CASES[n].op,
                                                                    dirs[n]).result(), n)))
        for n, run in started.items()
    }  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_streamkit_matches_spark(name: str, runs: dict[str, tuple[Path, Batches]]) -> None:
    case = CASES[name]
    directory, theirs = runs[name]
    if case.expected is not None:
        assert theirs == case.expected, "Spark disagrees with the hand derivation"
    ours = run_streamkit(case.op, directory)
    assert [b for b, _ in ours] == [b for b, _ in theirs], "batch ids differ"
    for (bid, rows), (_, their_rows) in zip(ours, theirs, strict=True):
        assert rows == their_rows, f"batch {bid}: streamkit {rows} vs Spark {their_rows}"
    final = [r for _, rows in ours for r in rows]
    assert rows_of(final) == rows_of([r for _, rows in theirs for r in rows])


def test_batch_run_matches_spark_apply_in_pandas(spark: Any) -> None:
    """Batch: each key once with no state; Spark's ``applyInPandas`` with the same body."""
    import streamkit as sk
    from tests.differential.inputs import micros, rows_table

    rows = [r for part in random_files(9, files=6, null_rate=0.08) for r in part]
    ours = (
        sk.from_arrow(rows_table(rows)).group_by("k")
        .apply_in_pandas_with_state(summary, SESSION_OUT, SESSION_STATE, "append", "NoTimeout")
    )  # fmt: skip

    def stateless(key: tuple[Any, ...], pdf: pd.DataFrame) -> pd.DataFrame:
        class Fresh:  # a state that never existed
            exists = False

            def update(self, value: Any) -> None: ...

        out: pd.DataFrame = pd.concat(list(summary(key, iter([pdf]), Fresh())))
        return out.astype({"k": object})  # PySpark 4.3's applyInPandas and pandas 3 strings

    frame = spark.createDataFrame(
        [(None if r[0] is None else micros(r[0]), *r[1:]) for r in rows],
        "ts_us bigint, k string, v bigint, u bigint",
    ).selectExpr("timestamp_micros(ts_us) AS ts", "k", "v", "u")
    theirs = frame.groupBy("k").applyInPandas(stateless, SESSION_OUT).collect()
    got = [tuple(r.values()) for r in ours.to_arrow().to_pylist()]
    assert rows_of(got) == rows_of([tuple(r) for r in theirs])
