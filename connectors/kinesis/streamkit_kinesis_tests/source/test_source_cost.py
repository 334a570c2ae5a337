"""What the stream source costs at its defaults (issue 12 item 10), on LocalStack:
GetRecords of idle shards at KCL's pace, lease checkpoints coalesced to one per shard
per ``checkpoint_interval`` with the last committed offset written at a graceful stop, and
the DynamoDB calls of an open, its commits and its close (issue 15 item 1), counted by a
botocore hook on every DynamoDB client the source makes.
The kill -9 between coalesced lease checkpoints is in ``test_stream_crash.py``."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.source import KinesisStreamSource, session
from streamkit_kinesis.testing.streams import fresh_stream, unique

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.errors import ConfigError
from streamkit.testing.events import SCHEMA, counts, make_events
from streamkit.testing.tables import assert_table_equal
from streamkit_kinesis_tests.source.test_stream_source import (
    FAST,
    KEYS,
    drop,
    expected,
    last_sequences,
    lease_table,
    produce,
)

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

WINDOW = 6.0


def test_checkpoint_interval_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="checkpoint_interval"):
        KinesisStreamSource("s", "app", sk.AwsEndpoint.local("http://127.0.0.1:9"),
                            checkpoint_interval=-1.0)  # fmt: skip


async def test_idle_shards_are_polled_at_kcl_pace_with_the_default_options(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """No consumer_options: over 6 s an idle shard gets at most 5 GetRecords (one per
    1.5 s after the previous returned; the old 0.25 s idle time made ~20)."""
    ep, app = localstack_endpoint, unique("app")
    async with fresh_stream(ep, 2, "idle") as (stream, _):
        source = KinesisStreamSource(stream, app, ep, schema=SCHEMA)
        try:
            await source.open(None)
            consumer = source.consumer
            assert consumer is not None
            await asyncio.sleep(2.0)  # past start-up, and (the event, below) both shards read
            for _ in range(600):  # a generous deadline only bounds a hung test
                shards = consumer.metrics().shards
                if len(shards) == 2 and all(s.get_records_calls >= 1 for s in shards):
                    break
                await asyncio.sleep(0.1)
            before = {s.shard_id: s.get_records_calls for s in consumer.metrics().shards}
            await asyncio.sleep(WINDOW)
            after = {s.shard_id: s.get_records_calls for s in consumer.metrics().shards}
        finally:
            await source.close()
            await drop(ep, app)
    assert len(after) == 2, after
    calls = {shard: after[shard] - before.get(shard, 0) for shard in after}
    assert all(1 <= n <= WINDOW / 1.5 + 1 for n in calls.values()), calls


async def test_lease_checkpoints_are_coalesced_and_a_graceful_stop_writes_the_last(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """checkpoint_interval=3600: no commit within the hour after a shard started writes
    its lease checkpoint (the lease stays where the shard started, the query's own
    checkpoint moves on), and stopping the query writes the last committed offset before
    the lease is released."""
    ep = localstack_endpoint
    truth, records = make_events(600, seed=31)
    app, name = unique("app"), unique("kin_coalesce")
    async with fresh_stream(ep, 2, "coalesce") as (stream, _):
        await produce(ep, stream, records[:300])
        wave1 = await last_sequences(ep, stream)
        try:
            source = KinesisStreamSource(
                stream, app, ep, schema=SCHEMA, consumer_options=FAST, checkpoint_interval=3600
            )
            q = counts(sk.read_stream.source(source)).write_stream.output_mode("update")
            query = q.trigger(processing_time=0.1).memory(name).start()
            try:
                await asyncio.to_thread(query.process_all_available, 60)
                first = await lease_table(ep, app)
                await produce(ep, stream, records[300:])
                wave2 = await last_sequences(ep, stream)
                await asyncio.to_thread(query.process_all_available, 60)
                running = await lease_table(ep, app)
                assert source.commits[-1] == wave2  # the query's checkpoint is at the end
            finally:
                await asyncio.to_thread(query.stop)
            stopped = await lease_table(ep, app)
        finally:
            await drop(ep, app)
    assert query.exception is None
    assert_table_equal(sk.memory_table(name), expected(truth), sort_by=KEYS)
    positions = {k: lease.checkpoint.sequence_number for k, lease in first.items()}
    assert set(positions) == set(wave1)
    # while running, every commit was coalesced: each lease is still at its start
    assert set(positions.values()) == {"TRIM_HORIZON"}
    assert {k: lease.checkpoint.sequence_number for k, lease in running.items()} == positions
    # the graceful stop wrote the last committed offsets and released the leases
    assert {k: lease.checkpoint.sequence_number for k, lease in stopped.items()} == wave2
    assert {lease.lease_owner for lease in stopped.values()} == {None}


def lease_write(operation: str, params: dict[str, Any]) -> str:
    """A DynamoDB call by what it does to the lease table (an ``UpdateItem`` by its
    update expression: take, renewal, checkpoint or release)."""
    if operation != "UpdateItem":
        return operation
    update = params["UpdateExpression"]
    if update.startswith("SET #leaseOwner = :owner"):
        return "take"
    if update.startswith("REMOVE #leaseOwner"):
        return "release"
    if "#checkpoint = :cp" in update:
        return "checkpoint"
    assert update == "SET #leaseCounter = :next", update
    return "renewal"


def count_dynamodb_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every DynamoDB call made from now on by a client of :meth:`AwsEndpoint.client`
    (the real client, on the real server), by :func:`lease_write` kind; and the clients
    made, as ``client:dynamodb``."""
    calls: Counter[str] = Counter()
    make = AwsEndpoint.client

    def counted(self: AwsEndpoint, service: str, **config: Any) -> Any:
        client = make(self, service, **config)
        calls[f"client:{service}"] += 1
        if service == "dynamodb":

            def seen(params: dict[str, Any], model: Any, **_: Any) -> None:
                calls[lease_write(model.name, params)] += 1

            client.meta.events.register("before-parameter-build.dynamodb", seen)
        return client

    monkeypatch.setattr(AwsEndpoint, "client", counted)
    return calls


def count_kinesis_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every call of the Kinesis clients the source's consumer makes from now on (the real
    clients, on the real server), by operation name."""
    calls: Counter[str] = Counter()

    def counted(*args: Any, **kwargs: Any) -> Any:
        client: Any = kinesis_client(*args, **kwargs)

        def seen(model: Any, **_: Any) -> None:
            calls[model.name] += 1

        client.meta.events.register("before-parameter-build.kinesis", seen)
        return client

    monkeypatch.setattr(session, "kinesis_client", counted)
    return calls


def without(calls: Counter[str], *kinds: str) -> Counter[str]:
    return Counter({k: n for k, n in calls.items() if k not in kinds})


async def test_open_commits_and_close_make_the_lease_protocols_dynamodb_calls(
    localstack_endpoint: AwsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new application on S = 2 shards, from TRIM_HORIZON, default options but
    ``checkpoint_interval=3600`` (no commit falls due while it runs). Derived
    from the protocol, per call:

    - ``open``: the lease table ensured once (``CreateTable``, ``DescribeTable`` answering
      ACTIVE); a ``Scan`` to align the (empty) table with the query's (no) offsets; the
      consumer's shard sync, a ``Scan`` and a ``PutItem`` per new lease (S); its first take
      cycle, a ``Scan`` and a take (``UpdateItem`` on the counter) per free lease (S);
    - commits within ``checkpoint_interval`` of the shards' start: no call (the leases
      are where the shards started);
    - ``close``: a checkpoint of the last committed offset, then a release, per held lease.

    One DynamoDB client serves the lease store and its renewal lane, and one ListShards
    the alignment, the stream check and the first shard sync of ``open``.

    Renewals (every ``failover_time / 3``) and later take cycles depend on the wall time
    and are left out; nothing else may happen."""
    ep, app, s = localstack_endpoint, unique("app"), 2
    _, records = make_events(40, seed=41)
    async with fresh_stream(ep, s, "calls") as (stream, _):
        await produce(ep, stream, records)
        calls = count_dynamodb_calls(monkeypatch)
        kinesis = count_kinesis_calls(monkeypatch)
        source = KinesisStreamSource(stream, app, ep, schema=SCHEMA, checkpoint_interval=3600)
        try:
            await source.open(None)
            opened = without(calls, "renewal")
            listed = kinesis["ListShards"]
            rows = 0
            while rows < len(records):
                batch = await source.next_batch(1.0)
                if batch is not None:
                    rows += batch.rows.num_rows
                    await source.commit(batch.end_offsets)
            committed = without(calls, "renewal", "Scan") - opened
            await source.close()
            closed = without(calls, "renewal", "Scan") - opened - committed
        finally:
            monkeypatch.undo()
            await drop(ep, app)
    assert opened == Counter(
        {"client:dynamodb": 1, "CreateTable": 1, "DescribeTable": 1, "Scan": 3, "PutItem": s,
         "take": s}
    )  # fmt: skip
    assert listed == 1
    assert committed == Counter()
    assert closed == Counter(checkpoint=s, release=s)
