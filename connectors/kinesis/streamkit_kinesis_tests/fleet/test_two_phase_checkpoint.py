"""Two-phase checkpoint (KCL's ``prepareCheckpoint``) on the lease stores.

Each store test runs on the in-memory store and on DynamoDB in LocalStack (real server,
real conditional writes); the Java-KCL item test writes the item with boto3 exactly as
KCL's ``DynamoDBLeaseSerializer`` names its attributes.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from streamkit_kinesis.consumer import BaseRecordProcessor, InitializationInput, ShardOutcome
from streamkit_kinesis.consumer.shard_task import ShardCheckpointer, ShardTask
from streamkit_kinesis.leases import (
    Checkpointer,
    CheckpointOrderError,
    DynamoDBLeaseStore,
    HeldLeases,
    InMemoryLeaseStore,
    Lease,
    LeaseLostError,
    LeaseStore,
)
from streamkit_kinesis.types import (
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
    RecordBatch,
)

from streamkit_kinesis_tests.consumer.test_shard_task import SHARD, Host, ReplayFetchers, batches

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from streamkit.config import AwsEndpoint

KEY = "shardId-000000000004"


def seq(n: int) -> ExtendedSequenceNumber:
    return ExtendedSequenceNumber(str(49_000_000_000_000_000_000 + n))


@pytest.fixture(params=["memory", "localstack"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LeaseStore]:
    if request.param == "memory":
        memory = InMemoryLeaseStore()
        await memory.create_table_if_not_exists()
        yield memory
        return
    endpoint: AwsEndpoint = request.getfixturevalue("localstack_endpoint")
    table = DynamoDBLeaseStore(endpoint, f"two-phase-{uuid.uuid4().hex[:12]}")
    await table.create_table_if_not_exists()
    yield table
    await table.delete_table()


@pytest.fixture
async def ddb(localstack_endpoint: AwsEndpoint) -> AsyncIterator[DynamoDBLeaseStore]:
    table = DynamoDBLeaseStore(localstack_endpoint, f"two-phase-{uuid.uuid4().hex[:12]}")
    await table.create_table_if_not_exists()
    yield table
    await table.delete_table()


def raw_item(store: DynamoDBLeaseStore, key: str) -> dict[str, Any]:
    client = store.endpoint.client("dynamodb")
    got = client.get_item(TableName=store.table_name, Key={"leaseKey": {"S": key}})
    item: dict[str, Any] = got["Item"]
    return item


async def owned(store: LeaseStore, owner: str = "worker-a", at: int = 10) -> Lease:
    created = await store.create_lease_if_not_exists(Lease(KEY, checkpoint=seq(at)))
    return await store.take_lease(created, owner)


@pytest.mark.integration
async def test_prepare_then_checkpoint_removes_the_pending_checkpoint(store: LeaseStore) -> None:
    lease = await owned(store)
    prepared = await store.prepare_checkpoint(lease, seq(20))
    stored = await store.get_lease(KEY)
    assert stored == prepared
    assert (stored.checkpoint, stored.pending_checkpoint) == (seq(10), seq(20))
    assert stored.lease_counter == lease.lease_counter + 1  # a write like any other
    assert stored.lease_owner == "worker-a"

    done = await store.update_checkpoint(prepared, seq(20))
    stored = await store.get_lease(KEY)
    assert stored == done
    assert (stored.checkpoint, stored.pending_checkpoint) == (seq(20), None)


@pytest.mark.integration
async def test_a_worker_that_lost_the_lease_cannot_prepare(store: LeaseStore) -> None:
    mine = await owned(store)
    theirs = await store.take_lease(mine, "worker-b")
    with pytest.raises(LeaseLostError, match="owned by worker-b"):
        await store.prepare_checkpoint(mine, seq(20))
    assert await store.get_lease(KEY) == theirs  # nothing written


@pytest.mark.integration
async def test_a_stale_counter_cannot_prepare(store: LeaseStore) -> None:
    first = await owned(store)
    await store.renew_lease(first)  # the table moved on (our own view is stale)
    with pytest.raises(LeaseLostError):
        await store.prepare_checkpoint(first, seq(20))
    stored = await store.get_lease(KEY)
    assert stored is not None
    assert stored.pending_checkpoint is None


@pytest.mark.integration
async def test_a_worker_taking_the_lease_sees_the_pending_checkpoint(store: LeaseStore) -> None:
    prepared = await store.prepare_checkpoint(await owned(store), seq(20))
    taken = await store.take_lease(prepared, "worker-b")  # e.g. after the owner was killed
    assert (taken.lease_owner, taken.checkpoint, taken.pending_checkpoint) == (
        "worker-b",
        seq(10),
        seq(20),
    )
    assert [x.pending_checkpoint for x in await store.list_leases()] == [seq(20)]
    renewed = await store.renew_lease(taken)
    assert renewed.pending_checkpoint == seq(20)  # renewals keep it
    again = await store.prepare_checkpoint(renewed, seq(30))  # a new owner may re-prepare
    assert (await store.update_checkpoint(again, seq(30))).pending_checkpoint is None


@pytest.mark.integration
async def test_prepare_refuses_backwards_and_sentinel_positions(store: LeaseStore) -> None:
    lease = await owned(store)
    with pytest.raises(CheckpointOrderError, match="backwards"):
        await store.prepare_checkpoint(lease, seq(5))
    with pytest.raises(CheckpointOrderError, match="sequence number"):
        await store.prepare_checkpoint(lease, SHARD_END)
    assert await store.get_lease(KEY) == lease


@pytest.mark.integration
async def test_items_carry_kcl_pending_attribute_names(ddb: DynamoDBLeaseStore) -> None:
    lease = await owned(ddb)
    await ddb.prepare_checkpoint(lease, ExtendedSequenceNumber(seq(20).sequence_number, 3))
    item = raw_item(ddb, KEY)
    assert item["pendingCheckpoint"] == {"S": seq(20).sequence_number}
    assert item["pendingCheckpointSubSequenceNumber"] == {"N": "3"}
    assert item["checkpoint"] == {"S": seq(10).sequence_number}
    current = await ddb.get_lease(KEY)
    assert current is not None
    await ddb.update_checkpoint(current, seq(20))
    assert not {k for k in raw_item(ddb, KEY) if k.startswith("pending")}


@pytest.mark.integration
async def test_reads_a_pending_checkpoint_written_by_java_kcl(ddb: DynamoDBLeaseStore) -> None:
    # Attribute names and types of KCL 2.x's DynamoDBLeaseSerializer (PENDING_CHECKPOINT_
    # SEQUENCE_KEY / PENDING_CHECKPOINT_SUBSEQUENCE_KEY), and KCL 2.5's state blob.
    client = ddb.endpoint.client("dynamodb")
    client.put_item(
        TableName=ddb.table_name,
        Item={
            "leaseKey": {"S": KEY},
            "leaseOwner": {"S": "kcl-worker"},
            "leaseCounter": {"N": "7"},
            "checkpoint": {"S": seq(10).sequence_number},
            "checkpointSubSequenceNumber": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "1"},
            "pendingCheckpoint": {"S": seq(15).sequence_number},
            "pendingCheckpointSubSequenceNumber": {"N": "2"},
            "pendingCheckpointState": {"B": b"app-state"},
        },
    )
    lease = await ddb.get_lease(KEY)
    assert lease == Lease(
        KEY,
        "kcl-worker",
        7,
        seq(10),
        1,
        pending_checkpoint=ExtendedSequenceNumber(seq(15).sequence_number, 2),
    )
    # a prepare here replaces KCL's pending checkpoint and drops its state blob
    taken = await ddb.take_lease(lease, "streamkit")
    await ddb.prepare_checkpoint(taken, seq(16))
    item = raw_item(ddb, KEY)
    assert (item["pendingCheckpoint"], item["pendingCheckpointSubSequenceNumber"]) == (
        {"S": seq(16).sequence_number},
        {"N": "0"},
    )
    assert "pendingCheckpointState" not in item


async def test_checkpointer_prepares_under_the_held_lease() -> None:
    store = InMemoryLeaseStore()
    await store.create_table_if_not_exists()
    held = HeldLeases()
    held.gained(await owned(store))
    checkpointer = Checkpointer(store, held, KEY)
    await checkpointer.prepare_checkpoint(seq(20).sequence_number)
    before = (checkpointer.last_checkpoint, checkpointer.pending_checkpoint)
    assert before == (seq(10), seq(20))
    await checkpointer.checkpoint(seq(20))
    after = (checkpointer.last_checkpoint, checkpointer.pending_checkpoint)
    assert after == (seq(20), None)

    current = await store.get_lease(KEY)
    assert current is not None
    await store.take_lease(current, "worker-b")
    with pytest.raises(LeaseLostError):
        await checkpointer.prepare_checkpoint(seq(30))
    assert KEY not in held  # dropped: the shard task stops


class Initialized(BaseRecordProcessor):
    """Records what it was initialized with; the new-style processor."""

    def __init__(self) -> None:
        self.init: InitializationInput | None = None

    async def initialize_with(self, init: InitializationInput) -> None:
        self.init = init

    async def initialize(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        raise AssertionError("initialize_with is preferred when the processor has it")

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        await checkpointer.checkpoint()


class OldStyle(BaseRecordProcessor):
    def __init__(self) -> None:
        self.init: tuple[str, ExtendedSequenceNumber] | None = None

    async def initialize(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        self.init = (shard_id, start)

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        await checkpointer.checkpoint()


async def _run_shard(processor: BaseRecordProcessor) -> ShardOutcome:
    """A shard task on a lease that worker-a prepared and worker-b then took."""
    store = InMemoryLeaseStore()
    await store.create_table_if_not_exists()
    first = await store.create_lease_if_not_exists(Lease.for_shard(SHARD, TRIM_HORIZON))
    mine = await store.take_lease(first, "worker-a")
    start = ExtendedSequenceNumber("101")
    mine = await store.update_checkpoint(mine, start)
    prepared = await store.prepare_checkpoint(mine, ExtendedSequenceNumber("103"))
    held = HeldLeases()
    held.gained(await store.take_lease(prepared, "worker-b"))
    lease = held.get(SHARD.shard_id)
    assert lease is not None
    task = ShardTask(
        Host(ReplayFetchers(batches(3, 3)), store),
        lease,
        ShardCheckpointer(store, held, SHARD.shard_id),
        lambda: processor,
    )
    return await asyncio.wait_for(task.task, 5)


async def test_the_consumer_hands_the_pending_checkpoint_to_initialize_with() -> None:
    processor = Initialized()
    assert await _run_shard(processor) is ShardOutcome.ENDED
    init = processor.init
    assert isinstance(init, InitializationInput)
    assert (init.shard_id, init.start, init.pending_checkpoint) == (
        SHARD.shard_id, ExtendedSequenceNumber("101"), ExtendedSequenceNumber("103")
    )  # fmt: skip
    assert init.lease_counter is not None
    assert init.lease_counter > 0  # the taken lease's counter (the fleet's fencing token)


async def test_processors_without_initialize_with_still_get_initialize() -> None:
    processor = OldStyle()
    assert await _run_shard(processor) is ShardOutcome.ENDED
    assert processor.init == (SHARD.shard_id, ExtendedSequenceNumber("101"))
