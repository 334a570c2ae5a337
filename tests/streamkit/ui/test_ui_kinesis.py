"""The UI page of a Kinesis query on LocalStack, in headless Chromium: per-shard lag and
owner, and every worker the lease table names. A second worker of the same application
(a plain consumer limited to one lease) holds one shard; the query's worker the other two.
Expected owners come from a plain boto3 scan of the lease table, lags from the stream
(caught up: MillisBehindLatest 0) and ``last_progress``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import ConsumerConfig, InitialPosition, KinesisConsumer
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking, unique

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.testing.events import SCHEMA, make_events

from .browser import chromium_page, field, number, table, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.browser,
              pytest.mark.timeout(300)]

FAST = {"idle_time": 0.1, "take_interval": 0.5}


def put_all(client: Any, stream: str, records: list[tuple[bytes, str]]) -> None:
    for start in range(0, len(records), 500):
        chunk = records[start : start + 500]
        reply = client.put_records(
            StreamName=stream, Records=[{"Data": d, "PartitionKey": k} for d, k in chunk]
        )
        assert reply["FailedRecordCount"] == 0


def owners_by_scan(ep: AwsEndpoint, app: str) -> dict[str, str]:
    """shard -> leaseOwner, read with a plain boto3 scan of the lease table."""
    items = ep.client("dynamodb").scan(TableName=app, ConsistentRead=True)["Items"]
    return {i["leaseKey"]["S"]: i["leaseOwner"]["S"] for i in items
            if "leaseOwner" in i and i["leaseKey"]["S"].startswith("shardId")}  # fmt: skip


def look(url: str, q: Any, ep: AwsEndpoint, app: str, workers: dict[str, int]) -> None:
    """Open the query's page and check it against the lease table and last_progress."""
    with chromium_page() as page:
        page.goto(f"{url}query/{q.id}")
        expected = {w: str(n) for w, n in workers.items()}
        wait_for("both workers on the page", lambda: {
            r[0]: r[1] for r in table(page, "workers")} == expected)  # fmt: skip
        last = q.last_progress
        wait_for("the last batch", lambda: number(field(page, "batch_id")) == last.batch_id)
        by_owner = owners_by_scan(ep, app)
        shown = {r[0]: r[1] for r in table(page, "leases")}
        assert shown == by_owner
        worker_rows = {r[0]: r[2].split(", ") for r in table(page, "workers")}
        for worker, shards in worker_rows.items():
            assert sorted(shards) == sorted(s for s, o in by_owner.items() if o == worker)
        parts = {r[0]: r for r in table(page, "partitions")}
        assert set(parts) == {x.partition for x in last.partitions}
        for x in last.partitions:
            row = parts[x.partition]
            assert row[1] == x.owner
            assert number(row[2]) == x.records
            assert row[3] == ("-" if x.lag_ms is None else f"{x.lag_ms:,}")
        lags = {r[0]: r[4] for r in table(page, "leases") if r[1] == q.source.worker_id}
        assert lags == dict.fromkeys(lags, "0")  # caught up
        assert len(lags) == workers[q.source.worker_id]


async def test_kinesis_page_shows_every_worker_and_shard_lag(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    _, records = make_events(300, seed=21)
    app, me, other = unique("uiapp"), unique("worker"), unique("other")
    server = sk.ui.serve(0)
    async with fresh_stream(ep, 3, "ui") as (stream, _):
        kinesis = kinesis_client(ep)
        await asyncio.to_thread(put_all, kinesis, stream, records)
        truth = await asyncio.to_thread(read_stream_blocking, kinesis, stream)
        config = ConsumerConfig(
            app_name=app, stream=stream, worker_id=other, max_leases=1, take_interval=0.5,
            idle_time=0.2, initial_position=InitialPosition.trim_horizon(),
        )  # fmt: skip
        try:
            async with KinesisConsumer(config, ep) as consumer:
                await wait_async("the other worker's lease", lambda: consumer.metrics().leases.held)
                df = sk.read_stream.kinesis(stream, app, SCHEMA, ep, worker_id=me,
                                            consumer_options=FAST)  # fmt: skip
                q = df.write_stream.query_name(unique("ui_kin")).memory(unique("ui_kin")).start()
                try:
                    await asyncio.to_thread(q.process_all_available, 120)
                    await asyncio.to_thread(look, server.url, q, ep, app, {me: 2, other: 1})
                finally:
                    await asyncio.to_thread(q.stop)
        finally:
            server.stop()
            sk.ui.stop_serving()
            await DynamoDBLeaseStore(ep, app).delete_table()
    assert len(truth) == 3


async def wait_async(what: str, check: Any, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)
