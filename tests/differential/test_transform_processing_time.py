"""Processing-time timers of ``transform_with_state_in_pandas`` against PySpark 4.3's
``transformWithStateInPandas`` (time mode ``ProcessingTime``).

Spark's processing time is the wall clock when a batch is planned, which a test cannot
set, and under ``ProcessingTime`` Spark runs a batch at every trigger (its
``shouldRunAnotherBatch`` is always true), so ``availableNow`` never ends. What is
deterministic is a timer's position against the clock, not the clock: timers registered
at the rows' 2024 event times are always due (the clock is later), timers in 2100 never
are. And each batch is one ``trigger(once=True)`` run restarted from the checkpoint after
one more file is written, so the batches are exactly the files.

:class:`Wall`, per key: ``handleInputRows`` counts rows, registers a timer at the
latest event time (due at once: it fires in the same batch, after the rows) and, for key
``b``, one in 2100 (never due), and emits the count and the key's timers; each fired timer
emits its expiry and the count, and a timer at a whole second registers one a millisecond
later (due too, but registered while timers fire: it fires in the next batch). The
output omits the processing time itself, so both engines' batches must be equal.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.differential.conftest import ROCKSDB
from tests.differential.engines import DEADLINE
from tests.differential.inputs import SCHEMA, SPARK_SCHEMA, Files, write_files
from tests.differential.spark_functions import Wall
from tests.differential.test_stateful import Batches, ms, rows_of
from tests.differential.worker_retry import retried

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

OUT = "kind string, k string, at bigint, n bigint, timers bigint"


FILES: Files = [
    [(0, "a", 1, 0), (3, "b", 2, 0)],
    [(12, "a", 3, 0)],
    [],
    [(20, "c", 4, 0)],
]


def data(k: str, n: int, timers: int) -> tuple[Any, ...]:
    return ("data", k, None, n, timers)


def fire(k: str, at: int, n: int) -> tuple[Any, ...]:
    return ("fire", k, at, n, None)


# Batch 0: a (timer 0 s), b (timers 3 s and 2100) -> data rows; then a@0 s and b@3 s fire
# (earliest first), registering a@0.001 and b@3.001. Batch 1: a@12 s (timers 0.001 and
# 12 s); fires a@0.001, b@3.001, a@12 s (registers a@12.001). Batch 2 (empty file): fires
# a@12.001. Batch 3: c@20 s; fires c@20 s (registers c@20.001, left for a later batch).
EXPECTED: Batches = [
    (0, rows_of([data("a", 1, 1), data("b", 1, 2), fire("a", ms(0), 1), fire("b", ms(3), 1)])),
    (1, rows_of([data("a", 2, 2), fire("a", ms(0) + 1, 2), fire("b", ms(3) + 1, 1),
                 fire("a", ms(12), 2)])),
    (2, [fire("a", ms(12) + 1, 2)]),
    (3, rows_of([data("c", 1, 1), fire("c", ms(20), 1)])),
]  # fmt: skip


def spark_batches(spark: Any, directory: Path, files: Files) -> Batches:
    seen: dict[int, list[tuple[Any, ...]]] = {}  # by batch id: a retried step replaces

    def step(ck: str) -> None:
        stream = spark.readStream.schema(SPARK_SCHEMA).json(str(directory))
        query = (
            stream.groupBy("k").transformWithStateInPandas(Wall(), OUT, "Update",
                                                           "ProcessingTime")
            .writeStream.outputMode("update").trigger(once=True)
            .option("checkpointLocation", ck)
            .foreachBatch(lambda b, i: seen.update({i: rows_of(list(map(tuple, b.collect())))}))
            .start()
        )  # fmt: skip
        assert query.awaitTermination(DEADLINE), "Spark did not finish"
        assert query.exception() is None, str(query.exception())

    with tempfile.TemporaryDirectory(prefix="spark-ck-") as ck:
        for i in range(len(files)):
            write_files(directory, files[: i + 1], "json")
            retried(lambda: step(ck))  # a lost worker fails before the batch commits
    return sorted(seen.items())


def streamkit_batches(directory: Path, files: Files) -> Batches:
    import streamkit as sk

    seen: Batches = []
    with tempfile.TemporaryDirectory(prefix="sk-ck-") as ck:
        for i in range(len(files)):
            write_files(directory, files[: i + 1], "json")
            stream = sk.read_stream.files(str(directory), format="json", schema=SCHEMA)
            handle = (
                stream.group_by("k").transformWithStateInPandas(Wall(), OUT, "Update",
                                                                "ProcessingTime")
                .write_stream.output_mode("update").trigger(once=True).checkpoint(ck)
                .foreach_batch(lambda f, bid: seen.append(
                    (bid, rows_of([tuple(r.values()) for r in f.to_arrow().to_pylist()]))))
                .start()
            )  # fmt: skip
            assert handle.await_termination(timeout=DEADLINE), "streamkit did not finish"
            assert handle.exception is None, repr(handle.exception)
    return sorted(seen, key=lambda b: b[0])


def test_processing_time_timers_match_spark(spark: Any, tmp_path: Path) -> None:
    session = spark.newSession()
    session.conf.set("spark.sql.streaming.stateStore.providerClass", ROCKSDB)
    theirs = spark_batches(session, tmp_path / "spark", FILES)
    assert theirs == EXPECTED, "Spark disagrees with the hand derivation"
    ours = streamkit_batches(tmp_path / "streamkit", FILES)
    assert ours == theirs
