"""emit_exactly_once's order of writes (DynamoDB and Kinesis in LocalStack), the replay
range a taking worker computes, and the exchange reader helpers."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.admin import StreamAdmin
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.fleet.exchange import ensure_exchange, exchange_stream_name
from streamkit_kinesis.fleet.reader import (
    ExchangeOrderError,
    from_batch,
    read_exchange_shard,
)
from streamkit_kinesis.fleet.two_phase import (
    ReplayRange,
    emit_exactly_once,
    lease_replay_range,
    replay_range,
)
from streamkit_kinesis.fleet.writer import ExchangePutError, ExchangeWriter
from streamkit_kinesis.leases import (
    Checkpointer,
    DynamoDBLeaseStore,
    HeldLeases,
    Lease,
    LeaseLostError,
    LeaseStoreUnavailableError,
)
from streamkit_kinesis.testing.faults import ExceptionThrowingKinesisClient
from streamkit_kinesis.testing.leases import ExceptionThrowingLeaseStore
from streamkit_kinesis.types import (
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
    KinesisRecord,
    RecordBatch,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mypy_boto3_kinesis.type_defs import PutRecordsRequestEntryTypeDef
    from streamkit_kinesis.fleet.exchange import ExchangeLayout

    from streamkit.config import AwsEndpoint

SOURCE = "shardId-000000000003"


def esn(n: int, sub: int = 0) -> ExtendedSequenceNumber:
    return ExtendedSequenceNumber(str(n), sub)


def rec(n: int, sub: int = 0) -> KinesisRecord:
    return KinesisRecord(f"r{n}".encode(), "k", str(n), sub_sequence_number=sub)


def test_replay_range_of_a_lease() -> None:
    assert replay_range(esn(10), None) is None
    assert replay_range(esn(10), esn(10)) is None  # nothing between them
    assert replay_range(SHARD_END, esn(10)) is None
    assert replay_range(esn(10), esn(20)) == ReplayRange(esn(10), esn(20))
    assert replay_range(TRIM_HORIZON, esn(20)) == ReplayRange(TRIM_HORIZON, esn(20))
    lease = Lease(SOURCE, "w", 3, esn(10), pending_checkpoint=esn(20))
    assert lease_replay_range(lease) == ReplayRange(esn(10), esn(20))


def test_reader_turns_a_batch_into_chunks_in_order() -> None:
    batch = RecordBatch("shardId-x", (rec(5), rec(7)))
    read = from_batch(batch, after="4")
    assert [(r.sequence_number, r.source_shard, r.data) for r in read] == [
        ("5", "k", b"r5"),
        ("7", "k", b"r7"),
    ]
    with pytest.raises(ExchangeOrderError, match="does not follow"):
        from_batch(batch, after="6")
    with pytest.raises(ExchangeOrderError, match="KPL-aggregated"):
        from_batch(RecordBatch("shardId-x", (rec(5, 1),)))


@pytest.fixture
async def app(localstack_endpoint: AwsEndpoint) -> AsyncIterator[str]:
    name = f"fx-{uuid.uuid4().hex[:10]}"
    store = DynamoDBLeaseStore(localstack_endpoint, name)
    await store.create_table_if_not_exists()
    yield name
    await store.delete_table()
    admin = StreamAdmin(localstack_endpoint)
    await admin.delete_stream(exchange_stream_name(name), wait=False)
    admin.close()


async def owned_checkpointer(
    endpoint: AwsEndpoint, app: str, store: DynamoDBLeaseStore | ExceptionThrowingLeaseStore
) -> Checkpointer:
    raw = DynamoDBLeaseStore(endpoint, app)
    created = await raw.create_lease_if_not_exists(Lease(SOURCE, checkpoint=esn(100)))
    held = HeldLeases()
    held.gained(await raw.take_lease(created, "worker-a"))
    return Checkpointer(store, held, SOURCE)


async def exchange_data(endpoint: AwsEndpoint, layout: ExchangeLayout) -> list[list[bytes]]:
    client = kinesis_client(endpoint)
    return [
        [r.data for r in await read_exchange_shard(client, layout.stream, shard)]
        for shard in layout.shard_ids
    ]


async def no_sleep(_: float) -> None:
    return None


@pytest.mark.integration
async def test_emit_prepares_puts_then_checkpoints(
    localstack_endpoint: AwsEndpoint, app: str
) -> None:
    client = kinesis_client(localstack_endpoint)
    layout = await ensure_exchange(client, app, 2)
    store = ExceptionThrowingLeaseStore(DynamoDBLeaseStore(localstack_endpoint, app))
    checkpointer = await owned_checkpointer(localstack_endpoint, app, store)
    seen: list[tuple[ExtendedSequenceNumber, ExtendedSequenceNumber | None, list[list[bytes]]]] = []

    async def between() -> None:  # after the put, before the checkpoint: as stored
        lease = await DynamoDBLeaseStore(localstack_endpoint, app).get_lease(SOURCE)
        assert lease is not None
        seen.append(
            (
                lease.checkpoint,
                lease.pending_checkpoint,
                await exchange_data(localstack_endpoint, layout),
            )
        )

    store.inject("prepare_checkpoint", lambda: LeaseStoreUnavailableError("throttled"), times=2)
    store.inject("update_checkpoint", lambda: LeaseStoreUnavailableError("throttled"), times=1)
    writer = ExchangeWriter(client, layout)
    await emit_exactly_once(
        checkpointer, "150", writer, [[b"a0"], [b"b0", b"b1"]], after_put=between, sleep=no_sleep
    )
    assert seen == [(esn(100), esn(150), [[b"a0"], [b"b0", b"b1"]])]
    lease = await DynamoDBLeaseStore(localstack_endpoint, app).get_lease(SOURCE)
    assert lease is not None
    assert (lease.checkpoint, lease.pending_checkpoint) == (esn(150), None)
    assert store.raised == {"prepare_checkpoint": 2, "update_checkpoint": 1}


@pytest.mark.integration
async def test_a_lost_lease_puts_nothing(localstack_endpoint: AwsEndpoint, app: str) -> None:
    client = kinesis_client(localstack_endpoint)
    layout = await ensure_exchange(client, app, 2)
    store = DynamoDBLeaseStore(localstack_endpoint, app)
    checkpointer = await owned_checkpointer(localstack_endpoint, app, store)
    current = await store.get_lease(SOURCE)
    assert current is not None
    await store.take_lease(current, "worker-b")
    with pytest.raises(LeaseLostError):
        await emit_exactly_once(
            checkpointer, "150", ExchangeWriter(client, layout), [[b"a"], [b"b"]]
        )
    assert await exchange_data(localstack_endpoint, layout) == [[], []]


@pytest.mark.integration
async def test_a_failed_put_leaves_the_pending_checkpoint(
    localstack_endpoint: AwsEndpoint, app: str
) -> None:
    client = kinesis_client(localstack_endpoint)
    layout = await ensure_exchange(client, app, 2)
    checkpointer = await owned_checkpointer(
        localstack_endpoint, app, DynamoDBLeaseStore(localstack_endpoint, app)
    )

    def deny(_call: int, _index: int, entry: PutRecordsRequestEntryTypeDef) -> str | None:
        return "KMSAccessDeniedException" if entry["Data"] == b"b" else None

    writer = ExchangeWriter(ExceptionThrowingKinesisClient(client, fail_entries=deny), layout)
    with pytest.raises(ExchangePutError):
        await emit_exactly_once(checkpointer, "150", writer, [[b"a"], [b"b"]])
    lease = await DynamoDBLeaseStore(localstack_endpoint, app).get_lease(SOURCE)
    assert lease is not None
    assert (lease.checkpoint, lease.pending_checkpoint) == (esn(100), esn(150))
