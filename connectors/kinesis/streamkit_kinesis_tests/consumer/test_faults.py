"""Consumer test 7 and error handling: injected throttling and iterator expiry, missing
stream, unreachable endpoint, a failing processor.

Failures are injected by wrapping a real boto3 client (ExceptionThrowingKinesisClient):
the errors are the botocore exceptions boto3 raises, everything else goes to the server.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import (
    BaseRecordProcessor,
    ConsumerState,
    KinesisConsumer,
)
from streamkit_kinesis.errors import (
    CredentialsError,
    EndpointUnreachableError,
    StreamNotFoundError,
)
from streamkit_kinesis.leases import DynamoDBLeaseStore, LeaseStoreError
from streamkit_kinesis.testing.faults import ExceptionThrowingKinesisClient, InjectedError
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking, unique

from streamkit.config import AwsEndpoint
from streamkit.testing.servers import free_port
from streamkit.testing.waits import HANG
from streamkit_kinesis_tests.consumer.consumer_support import (
    Journal,
    RecordingProcessor,
    drop_table,
    fast_config,
    leases,
    produce,
    tips_of,
    wait_caught_up,
)

if TYPE_CHECKING:
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import RecordBatch

pytestmark = pytest.mark.integration

THROTTLED = frozenset({2, 3, 8})
LIMITED = frozenset({6})
EXPIRED = frozenset({4, 10, 11})


async def test_throttling_and_expired_iterators_are_recovered_with_nothing_lost(
    aws_endpoint: AwsEndpoint,
) -> None:
    ep = aws_endpoint
    async with fresh_stream(ep, 2, "faults") as (stream, _):
        sent = await produce(ep, stream, 400, keys=20)
        truth = await asyncio.to_thread(read_stream_blocking, kinesis_client(ep), stream)
        client = ExceptionThrowingKinesisClient(
            kinesis_client(ep),
            [
                InjectedError("get_records", "ProvisionedThroughputExceededException", THROTTLED),
                InjectedError("get_records", "LimitExceededException", LIMITED),
                InjectedError("get_records", "ExpiredIteratorException", EXPIRED),
                InjectedError("get_shard_iterator", "LimitExceededException", frozenset({1})),
            ],
        )
        config = fast_config(stream, max_records=40)  # ~5 reads per shard: faults hit mid-way
        journal = Journal()
        consumer = KinesisConsumer(config, ep, kinesis=client)
        running = asyncio.create_task(consumer.run(lambda: RecordingProcessor(journal)))
        try:
            await wait_caught_up(consumer, journal, tips_of(truth))
            await consumer.stop()
            await running
        finally:
            await consumer.stop()
            await drop_table(ep, config.app_name)

    injected = sorted((method, n) for method, n, _ in client.injected)
    planned = sorted(
        [("get_records", n) for n in THROTTLED | LIMITED | EXPIRED] + [("get_shard_iterator", 1)]
    )
    assert injected == planned  # every planned fault happened
    assert sorted(journal.payloads()) == sorted(sent)  # nothing lost, nothing twice
    expected = {shard: [int(r["SequenceNumber"]) for r in rs] for shard, rs in truth.items()}
    assert journal.by_shard() == expected  # in shard order
    m = consumer.metrics()
    assert m.throttles == len(THROTTLED) + len(LIMITED) + 1
    assert sum(s.expired_iterator_recoveries for s in m.shards) == len(EXPIRED)


async def test_missing_stream_is_a_typed_error_before_anything_is_created(
    aws_endpoint: AwsEndpoint,
) -> None:
    config = fast_config(unique("no-such-stream"))
    consumer = KinesisConsumer(config, aws_endpoint)
    with pytest.raises(StreamNotFoundError, match=config.stream):
        await consumer.run(lambda: RecordingProcessor(Journal()))
    assert consumer.state is ConsumerState.STOPPED
    with pytest.raises(LeaseStoreError, match="does not exist"):
        await DynamoDBLeaseStore(aws_endpoint, config.app_name).list_leases()


async def test_unreachable_endpoint_fails_fast_with_a_clear_error() -> None:
    endpoint = AwsEndpoint.local(f"http://127.0.0.1:{free_port()}")  # nothing listens
    consumer = KinesisConsumer(fast_config("stream"), endpoint)
    started = time.monotonic()
    with pytest.raises(EndpointUnreachableError, match=r"cannot reach Kinesis .* attempt"):
        await consumer.start()
    assert time.monotonic() - started < HANG  # bounded retries, not a hang


async def test_missing_credentials_are_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    consumer = KinesisConsumer(fast_config("stream"), AwsEndpoint(url=None))  # real AWS, no keys
    with pytest.raises(CredentialsError, match="AWS_ACCESS_KEY_ID"):
        await asyncio.wait_for(consumer.start(), 30)


class FailingProcessor(BaseRecordProcessor):
    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        raise ValueError(f"cannot handle {batch.records[0].data!r}")


async def test_processor_error_stops_the_worker_and_is_reraised(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 2, "faults") as (stream, _):
        await produce(ep, stream, 20, keys=4)
        config = fast_config(stream)
        consumer = KinesisConsumer(config, ep)
        try:
            with pytest.raises(ValueError, match="cannot handle") as info:
                await asyncio.wait_for(consumer.run(FailingProcessor), 30)
            assert any("while consuming shard" in note for note in info.value.__notes__)
            assert consumer.state is ConsumerState.STOPPED
            table = await leases(ep, config.app_name)
            assert [lease.lease_owner for lease in table] == [None, None]  # released
        finally:
            await drop_table(ep, config.app_name)


async def test_async_for_reraises_a_background_error(localstack_endpoint: AwsEndpoint) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 1, "faults") as (stream, _):
        await produce(ep, stream, 5, keys=1)
        config = fast_config(stream)

        async def consume_while_the_table_vanishes() -> None:
            async with KinesisConsumer(config, ep) as consumer:
                async for batch in consumer:
                    assert batch.records
                    await drop_table(ep, config.app_name)

        try:
            with pytest.raises(LeaseStoreError, match="does not exist"):
                await asyncio.wait_for(consume_while_the_table_vanishes(), 30)
        finally:
            await drop_table(ep, config.app_name)
