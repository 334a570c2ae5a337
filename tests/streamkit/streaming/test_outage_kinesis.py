"""An endpoint outage never ends a running Kinesis query (issue 12, item 1).

Kinesis, the DynamoDB lease table AND the S3 checkpoint (all LocalStack) are reached
through a TCP proxy that is cut twice for 30 s while the query runs and records keep
arriving (put directly, past the proxy). The query must stall, say so (``last_progress``
partitions "backing off", errors in a row, last error), never fail, resume by itself, and
end with per-key counts and sums equal to the ground truth computed in plain Python from
the records put: nothing lost, nothing counted twice (the rows read over all batches also
equal the records put). Then the checkpoint written through the outages is restarted from
(no proxy) with one more wave: the result is again the ground truth (nothing corrupted).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from dataclasses import replace
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.source import KinesisStreamSource
from streamkit_kinesis.testing.streams import fresh_stream, unique

import streamkit as sk
from streamkit.testing.proxy import TcpProxy

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_kinesis.type_defs import PutRecordsRequestEntryTypeDef
    from streamkit_kinesis.client import KinesisApi

    from streamkit.config import AwsEndpoint
    from streamkit.streaming.query import StreamingQuery

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("value", pa.int64(), nullable=False),
    ]
)
CUT_SECONDS = 30.0
WAVE = 250


def record(i: int) -> dict[str, object]:
    return {"id": i, "key": f"k{i % 7}", "value": (i * 37) % 1000}


def put(client: KinesisApi, stream: str, ids: range) -> None:
    """PutRecords straight to the server (not through the proxy); every record accepted."""
    entries: list[PutRecordsRequestEntryTypeDef] = [
        {"Data": json.dumps(record(i)).encode(), "PartitionKey": f"p{i}"} for i in ids
    ]
    for start in range(0, len(entries), 500):
        out = client.put_records(StreamName=stream, Records=entries[start : start + 500])
        assert out["FailedRecordCount"] == 0


def truth(ids: range) -> dict[str, tuple[int, int]]:
    """Per key: (count, sum of value), in plain Python."""
    n: Counter[str] = Counter()
    total: defaultdict[str, int] = defaultdict(int)
    for i in ids:
        r = record(i)
        n[str(r["key"])] += 1
        total[str(r["key"])] += int(str(r["value"]))
    return {k: (n[k], total[k]) for k in n}


def result(name: str) -> dict[str, tuple[int, int]]:
    rows = sk.memory_table(name).to_pylist()
    return {str(r["key"]): (int(r["n"]), int(r["total"])) for r in rows}


async def wait_until(
    check: Callable[[], bool], query: StreamingQuery, what: str, limit: float
) -> None:
    """Poll ``check`` until true; the query must stay alive meanwhile."""
    end = time.monotonic() + limit
    while not check():
        assert query.exception is None, (
            f"query failed while waiting for {what}: {query.exception!r}"
        )
        assert query.is_active, f"query stopped while waiting for {what}"
        assert time.monotonic() < end, f"timed out after {limit} s waiting for {what}"
        await asyncio.sleep(0.2)


def held_for(since: float, seconds: float) -> Callable[[], bool]:
    return lambda: time.monotonic() - since >= seconds


def matches(query: StreamingQuery, name: str, ids: range) -> Callable[[], bool]:
    """The sink holds the truth of ``ids`` and their batches are committed (a batch's
    progress is recorded after its commit), so no checkpoint write is in flight."""
    return lambda: (
        result(name) == truth(ids)
        and sum(p.num_input_rows for p in query.recent_progress) == len(ids)
    )


def stalled(query: StreamingQuery) -> bool:
    p = query.last_progress
    return p is not None and any(x.state == "backing off" for x in p.partitions)


def counts_query(
    source: KinesisStreamSource, checkpoint: str, name: str, *, now: bool
) -> StreamingQuery:
    counts = (
        sk.read_stream.source(source)
        .group_by("key")
        .agg(sk.count().alias("n"), sk.sum("value").alias("total"))
    )
    writer = counts.write_stream.output_mode("complete").checkpoint(checkpoint)
    writer = writer.trigger(available_now=True) if now else writer.trigger(processing_time=0.5)
    return writer.memory(name).start()


async def cut_once(
    proxy: TcpProxy, query: StreamingQuery, put_wave: Callable[[], range], name: str, cut: int
) -> None:
    """Cut for CUT_SECONDS while a wave arrives: the stall is reported, nothing new is
    counted, the query stays alive; then restore, another wave, and catch up exactly."""
    proxy.cut()
    cut_at = time.monotonic()
    before = range(put_wave().start)
    await wait_until(lambda: stalled(query), query, f"stall {cut} reported", 60)
    progress = query.last_progress
    assert progress is not None
    assert progress.num_input_rows == 0
    backing = [x for x in progress.partitions if x.state == "backing off"]
    assert all(x.consecutive_errors >= 1 for x in backing)
    assert all(x.last_error for x in backing)
    # process_all_available asked mid-outage waits for the endpoint, it does not fail
    asked = asyncio.create_task(asyncio.to_thread(query.process_all_available, 180))
    await wait_until(held_for(cut_at, CUT_SECONDS), query, f"cut {cut}", CUT_SECONDS + 10)
    assert result(name) == truth(before)  # nothing counted while cut off
    assert not asked.done()
    proxy.restore()
    ids = range(put_wave().stop)
    await wait_until(matches(query, name, ids), query, f"catch-up {cut}", 120)
    await asyncio.wait_for(asked, 120)


async def test_two_30s_cuts_stall_and_resume_with_exact_counts(
    localstack_endpoint: AwsEndpoint, bucket: str
) -> None:
    ep = localstack_endpoint
    direct = kinesis_client(ep)
    app, name, name2 = unique("outage"), unique("outage_counts"), unique("outage_again")
    waves: list[range] = []
    checkpoint = f"s3://{bucket}/outage-ck"
    async with fresh_stream(ep, 2, "outage") as (stream, _):

        def put_wave() -> range:
            ids = range(len(waves) * WAVE, (len(waves) + 1) * WAVE)
            put(direct, stream, ids)
            waves.append(ids)
            return ids

        with TcpProxy.to_url(str(ep.url)) as proxy:
            proxied = replace(ep, url=proxy.url)
            source = KinesisStreamSource(
                stream, app, proxied, schema=SCHEMA, worker_id=unique("w"),
                failover_time=10.0, consumer_options={"idle_time": 0.2, "take_interval": 1.0},
            )  # fmt: skip
            sk.configure(proxied)  # the checkpoint's S3 goes through the proxy too
            try:
                query = counts_query(source, checkpoint, name, now=False)
            finally:
                sk.configure(None)
            try:
                put_wave()
                await wait_until(matches(query, name, range(WAVE)), query, "wave 1", 120)
                for cut in (1, 2):
                    await cut_once(proxy, query, put_wave, name, cut)
                assert not stalled(query)
            finally:
                await asyncio.to_thread(query.stop)
            assert query.exception is None
        assert result(name) == truth(range(5 * WAVE))
        assert sum(p.num_input_rows for p in query.recent_progress) == 5 * WAVE  # each once
        assert proxy.cuts == 2
        # restart from the checkpoint written through the outages, with one more wave
        put_wave()
        again = KinesisStreamSource(stream, app, ep, schema=SCHEMA, worker_id=unique("w"))
        sk.configure(ep)
        try:
            restarted = counts_query(again, checkpoint, name2, now=True)
        finally:
            sk.configure(None)
        assert await asyncio.to_thread(restarted.await_termination, 120)
        await DynamoDBLeaseStore(ep, app).delete_table()
    assert result(name2) == truth(range(6 * WAVE))
    assert sum(p.num_input_rows for p in restarted.recent_progress) == WAVE
