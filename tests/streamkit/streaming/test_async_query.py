"""The async query handle and the micro-batch iterator on the caller's event loop (memory
source): results, errors on the next await, cancellation, a responsive loop, and the
commit-on-next rule of ``micro_batches()`` across a restart."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.owner import QueryAlreadyRunningError
from streamkit.streaming.progress import QueryProgress
from streamkit.streaming.query import StreamingQueryError
from streamkit.streaming.sources.memory import MemoryStream
from streamkit.testing.tables import assert_table_equal
from tests.oracle.events import events

DATA = events(n=900, seed=17, span_hours=4).filter(
    pa.compute.is_valid(pa.compute.field("event_time"))
)


def counts(df: sk.DataFrame) -> sk.DataFrame:
    return df.group_by(sk.window("event_time", "15 minutes"), "action").agg(
        sk.count().alias("n"), sk.sum("value").alias("s")
    )


async def collect(progress: AsyncIterator[QueryProgress]) -> list[QueryProgress]:
    return [p async for p in progress]


async def test_async_handle_result_and_progress_equal_the_batch_engine() -> None:
    df = sk.read_stream.source(MemoryStream(DATA.schema))
    async with counts(df).write_stream.output_mode("update").memory("async_upd").start_async() as q:
        assert not q.task.done()
        assert sk.streams.get(q.id) is q  # listeners see async queries too
        watched = asyncio.create_task(collect(q.progress()))  # follows the batches live
        for lo in range(0, DATA.num_rows, 300):
            df.stream.add_rows(DATA.slice(lo, 300))
            await q.process_all_available()
    assert not q.is_active
    live = await asyncio.wait_for(watched, 30)  # ended with the query
    assert sk.streams.get(q.id) is None
    assert q.exception() is None
    assert_table_equal(
        sk.memory_table("async_upd"),
        counts(sk.from_arrow(DATA)).to_arrow(),
        sort_by=["window", "action"],
    )
    assert [p.batch_id for p in live] == list(range(len(live)))
    assert sum(p.num_input_rows for p in live) == DATA.num_rows
    after = [p async for p in q.progress()]  # the query ended: every kept record, then stop
    assert after == live


async def test_an_error_in_the_loop_is_raised_on_the_next_await() -> None:
    df = sk.read_stream.source(MemoryStream(DATA.schema))

    def fail_on_second(batch: sk.DataFrame, batch_id: int) -> None:
        if batch_id == 1:
            raise ValueError("sink broke on batch 1")

    q = await df.write_stream.foreach_batch(fail_on_second).start_async()
    df.stream.add_rows(DATA.slice(0, 100))
    await q.process_all_available()
    df.stream.add_rows(DATA.slice(100, 100))
    with pytest.raises(StreamingQueryError, match="sink broke on batch 1") as err:
        await q.process_all_available()
    assert isinstance(err.value.__cause__, ValueError)
    assert isinstance(q.exception(), ValueError)
    with pytest.raises(StreamingQueryError, match="sink broke"):
        await q.await_termination(5)
    assert not q.is_active


async def test_the_callers_loop_keeps_running_while_a_slow_batch_executes() -> None:
    """A blocking sink waits until the caller's loop has ticked 5 times while it blocks:
    on the caller's loop no tick could happen, the wait would fail and so the query."""
    df = sk.read_stream.source(MemoryStream(DATA.schema))
    blocking, ticked = threading.Event(), threading.Event()

    def slow(batch: sk.DataFrame, batch_id: int) -> None:
        blocking.set()
        assert ticked.wait(60), "the caller's loop did not tick while the sink blocked"

    async def ticker() -> None:
        ticks = 0
        while True:
            await asyncio.sleep(0.01)
            if blocking.is_set():
                ticks += 1
                if ticks >= 5:
                    ticked.set()

    ticking = asyncio.create_task(ticker())
    try:
        async with df.write_stream.foreach_batch(slow).start_async() as q:
            df.stream.add_rows(DATA.slice(0, 50))
            await q.process_all_available(timeout=120)  # returns once the slow batch committed
    finally:
        ticking.cancel()
    assert ticked.is_set()


async def test_cancelling_the_awaiting_task_commits_the_batch_in_flight_and_releases(
    tmp_path: Path,
) -> None:
    stream = MemoryStream(DATA.schema)
    df = sk.read_stream.source(stream)
    ck = str(tmp_path / "ck")
    seen: list[int] = []
    in_batch = asyncio.Event()

    async def slow(batch: sk.DataFrame, batch_id: int) -> None:
        seen.append(batch_id)
        in_batch.set()
        await asyncio.sleep(1.0)

    q = await df.write_stream.checkpoint(ck).foreach_batch(slow).start_async()
    stream.add_rows(DATA.slice(0, 400))
    waiter = asyncio.create_task(q.await_termination())
    await asyncio.wait_for(in_batch.wait(), 30)
    waiter.cancel()  # while batch 0 is in the sink
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not q.is_active  # stopped before the cancellation reached the caller
    assert q.exception() is None
    assert seen == [0]
    assert stream.committed == {"0": "400"}  # batch 0 committed: the final checkpoint

    stream.add_rows(DATA.slice(400, 100))
    again = df.write_stream.checkpoint(ck).foreach_batch(slow).start_async()
    async with again:  # the owner lease was released: no QueryAlreadyRunningError
        await again.process_all_available()
    assert seen == [0, 1]  # batch 0 was not delivered again
    assert stream.committed == {"0": "500"}


async def test_a_second_copy_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    df = sk.read_stream.source(MemoryStream(DATA.schema))
    ck = str(tmp_path / "ck")
    async with df.write_stream.checkpoint(ck).memory("async_first").start_async():
        with pytest.raises(QueryAlreadyRunningError):
            await df.write_stream.checkpoint(ck).memory("async_second").start_async()


async def test_micro_batches_end_with_an_available_now_query() -> None:
    stream = MemoryStream(DATA.schema, max_records_per_batch=250)
    stream.add_rows(DATA)
    df = sk.read_stream.source(stream)
    writer = df.write_stream.trigger(available_now=True)
    got = [batch async for batch in writer.micro_batches()]
    assert [b.batch_id for b in got] == [0, 1, 2, 3]
    assert_table_equal(pa.concat_tables([b.table for b in got]), DATA)


class HandlerCrashedError(Exception):
    pass


@pytest.mark.parametrize("ending", ["leave the block", "handler raises"])
async def test_micro_batch_in_hand_at_a_stop_comes_again_after_a_restart(
    tmp_path: Path, ending: str
) -> None:
    stream = MemoryStream(DATA.schema)
    df = sk.read_stream.source(stream)
    ck = str(tmp_path / "ck")
    stream.add_rows(DATA.slice(0, 300))
    with contextlib.suppress(HandlerCrashedError):
        async with df.write_stream.checkpoint(ck).micro_batches() as batches:
            first = await anext(batches)
            stream.add_rows(DATA.slice(300, 300))
            second = await anext(batches)  # asking for it committed batch 0
            if ending == "handler raises":
                raise HandlerCrashedError
            # leaving the block without asking for batch 2: batch 1 is not committed
    assert not batches.query.is_active
    assert (first.batch_id, second.batch_id) == (0, 1)
    assert_table_equal(first.table, DATA.slice(0, 300))
    assert_table_equal(second.table, DATA.slice(300, 300))
    assert stream.committed == {"0": "300"}

    stream.add_rows(DATA.slice(600))  # more rows: a re-run must still hold exactly batch 1's
    async with df.write_stream.checkpoint(ck).micro_batches() as batches:
        again = await anext(batches)
        after = await anext(batches)
    assert again.batch_id == 1
    assert_table_equal(again.table, DATA.slice(300, 300))
    assert after.batch_id == 2
    assert_table_equal(after.table, DATA.slice(600))
    assert stream.committed == {"0": "600"}
