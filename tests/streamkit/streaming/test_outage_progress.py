"""How a stall is reported (issue 12, item 1): while the source says partitions are backing
off, ``last_progress`` is one idle record naming them (replaced, not piled up), dropped
when the stall ends; ``streamkit run`` prints it once and says when it resumed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pyarrow as pa

import streamkit as sk
from streamkit.cli.run_cmd import stall_line
from streamkit.streaming.contracts import PartitionProgress
from streamkit.streaming.sources.memory import MemoryStream

SCHEMA = pa.schema([pa.field("k", pa.string()), pa.field("v", pa.int64())])


class StallingStream(MemoryStream):
    """A memory stream whose partition 0 reports a stall while ``stalled`` is set."""

    def __init__(self) -> None:
        super().__init__(SCHEMA)
        self.stalled = threading.Event()
        self.errors = 0

    def stalled_partitions(self) -> tuple[PartitionProgress, ...]:
        if not self.stalled.is_set():
            return ()
        self.errors += 1
        return (PartitionProgress("0", 0, None, None, "backing off", self.errors, "cut"),)


def wait_for(check: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    end = time.monotonic() + limit
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_stall_is_one_idle_record_replaced_while_it_lasts_and_dropped_after() -> None:
    source = StallingStream()
    query = (
        sk.read_stream.source(source).write_stream.output_mode("append")
        .trigger(processing_time=0.05).memory("outage_progress").start()
    )  # fmt: skip
    try:
        source.add_rows(pa.table({"k": ["a", "b"], "v": [1, 2]}, schema=SCHEMA))
        wait_for(lambda: query.last_progress is not None, "batch 0")
        first = query.last_progress
        assert first is not None
        assert first.num_input_rows == 2
        source.stalled.set()
        wait_for(lambda: source.errors >= 5, "several stalled triggers")
        idle = query.last_progress
        assert idle is not None
        assert idle.batch_id == first.batch_id  # the last batch's id, as Spark's idle records
        assert idle.num_input_rows == 0
        (part,) = idle.partitions
        assert (part.partition, part.state, part.last_error) == ("0", "backing off", "cut")
        assert part.consecutive_errors >= 5 - 1
        assert len(query.recent_progress) == 2  # replaced, not one per trigger
        line = stall_line(idle)
        assert line is not None
        assert "0 backing off" in line
        assert "last: cut" in line
        source.stalled.clear()
        wait_for(lambda: query.last_progress is first, "the stall record dropped")
        assert stall_line(first) is None
        source.add_rows(pa.table({"k": ["c"], "v": [3]}, schema=SCHEMA))
        wait_for(lambda: len(query.recent_progress) == 2, "batch 1")
        last = query.last_progress
        assert last is not None
        assert (last.batch_id, last.num_input_rows) == (1, 1)
    finally:
        query.stop()
    assert query.exception is None
