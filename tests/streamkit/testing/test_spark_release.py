"""The Spark test session frees finished queries whose callback closes over their handle."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path
from typing import Any

import pytest

from streamkit.testing.spark import release_finished_callbacks

pytestmark = pytest.mark.spark


class _Run:
    """A query whose foreachBatch callback is a bound method of the object holding it."""

    def __init__(self, spark: Any, source: Path, checkpoint: Path) -> None:
        self.seen: list[int] = []
        self.handle = (
            spark.readStream.schema("k string, v long")
            .json(str(source))
            .writeStream.trigger(availableNow=True)
            .option("checkpointLocation", str(checkpoint))
            .foreachBatch(self._collect)
            .start()
        )

    def _collect(self, batch: Any, batch_id: int) -> None:
        self.seen.append(batch.count())


def _finished_run(spark: Any, tmp_path: Path) -> weakref.ref[_Run]:
    source = tmp_path / "in"
    source.mkdir()
    (source / "a.json").write_text("".join(json.dumps({"k": "a", "v": i}) + "\n" for i in range(3)))
    run = _Run(spark, source, tmp_path / "ck")
    assert run.handle.awaitTermination(300), "Spark did not finish"
    assert run.seen == [3]
    return weakref.ref(run)


def test_a_finished_query_held_by_its_own_callback_is_freed_once_released(
    spark: Any, tmp_path: Path
) -> None:
    """Red without the release: py4j's callback pool keeps the run (and its handle) alive."""
    ref = _finished_run(spark, tmp_path)
    gc.collect()
    assert ref() is not None, "the cycle through py4j's callback pool is gone: drop the release"
    assert release_finished_callbacks(spark) >= 1
    gc.collect()
    assert ref() is None


def test_the_release_leaves_a_running_query_alone(spark: Any, tmp_path: Path) -> None:
    """While a query of the session is active nothing is cut."""
    handle = (
        spark.readStream.format("rate")
        .option("rowsPerSecond", 1)
        .load()
        .writeStream.foreachBatch(lambda batch, batch_id: None)
        .option("checkpointLocation", str(tmp_path / "ck"))
        .start()
    )
    try:
        assert release_finished_callbacks(spark) == 0
    finally:
        handle.stop()
