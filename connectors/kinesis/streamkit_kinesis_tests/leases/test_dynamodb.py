"""DynamoDB lease store specifics on real servers: KCL item layout, injected throttling,
unreachable endpoints. Runs once per AWS peer (``aws_endpoint``: LocalStack and moto)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, cast

import pytest
from streamkit_kinesis.leases import (
    DynamoDBLeaseStore,
    HeldLeases,
    Lease,
    LeaseCoordinator,
    LeaseRenewer,
    LeaseStoreError,
    LeaseStoreUnavailableError,
)
from streamkit_kinesis.testing.leases import ExceptionThrowingClient, FakeClock
from streamkit_kinesis.types import ExtendedSequenceNumber, HashKeyRange

from streamkit.config import AwsEndpoint
from streamkit.testing.servers import free_port
from streamkit.testing.waits import HANG

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mypy_boto3_dynamodb.client import DynamoDBClient

pytestmark = pytest.mark.integration


@pytest.fixture
async def table(aws_endpoint: AwsEndpoint) -> AsyncIterator[DynamoDBLeaseStore]:
    store = DynamoDBLeaseStore(aws_endpoint, f"ddb-{uuid.uuid4().hex[:12]}")
    await store.create_table_if_not_exists()
    yield store
    await store.delete_table()


def raw_item(store: DynamoDBLeaseStore, key: str) -> dict[str, Any]:
    client = store.endpoint.client("dynamodb")
    got = client.get_item(TableName=store.table_name, Key={"leaseKey": {"S": key}})
    item: dict[str, Any] = got["Item"]
    return item


async def test_items_use_kcl_attribute_names(table: DynamoDBLeaseStore) -> None:
    lease = Lease(
        "shardId-000000000001",
        parent_shard_ids=("shardId-000000000000",),
        hash_key_range=HashKeyRange(0, 2**128 - 1),
    )
    await table.create_lease_if_not_exists(lease)
    taken = await table.take_lease(lease, "worker-1")
    await table.update_checkpoint(taken, ExtendedSequenceNumber("4959", 2))
    item = raw_item(table, lease.lease_key)
    assert item == {
        "leaseKey": {"S": "shardId-000000000001"},
        "leaseOwner": {"S": "worker-1"},
        "leaseCounter": {"N": "2"},
        "checkpoint": {"S": "4959"},
        "checkpointSubSequenceNumber": {"N": "2"},
        "ownerSwitchesSinceCheckpoint": {"N": "0"},
        "parentShardId": {"SS": ["shardId-000000000000"]},
        "startingHashKey": {"S": "0"},
        "endingHashKey": {"S": str(2**128 - 1)},
    }
    current = await table.get_lease(lease.lease_key)
    assert current is not None
    released = await table.release_lease(current)
    assert released.lease_owner is None
    assert "leaseOwner" not in raw_item(table, lease.lease_key)


async def test_reads_and_keeps_items_written_by_other_tools(table: DynamoDBLeaseStore) -> None:
    # A KCL-style item with attributes this store does not know about.
    client = table.endpoint.client("dynamodb")
    client.put_item(
        TableName=table.table_name,
        Item={
            "leaseKey": {"S": "shardId-000000000007"},
            "leaseOwner": {"S": "kcl-worker"},
            "leaseCounter": {"N": "17"},
            "checkpoint": {"S": "TRIM_HORIZON"},
            "checkpointSubSequenceNumber": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "0"},
            "throughputKBps": {"N": "1.5"},
        },
    )
    lease = await table.get_lease("shardId-000000000007")
    assert lease == Lease("shardId-000000000007", "kcl-worker", 17)
    await table.take_lease(lease, "streamkit-worker")
    assert raw_item(table, "shardId-000000000007")["throughputKBps"] == {"N": "1.5"}


async def test_checkpoint_removes_a_kcl_pending_checkpoint_and_keeps_the_rest(
    table: DynamoDBLeaseStore,
) -> None:
    # KCL's final checkpoint deletes pendingCheckpoint* (DynamoDBLeaseSerializer.
    # getDynamoUpdateLeaseUpdate); streamkit's does the same and leaves other attributes.
    client = table.endpoint.client("dynamodb")
    client.put_item(
        TableName=table.table_name,
        Item={
            "leaseKey": {"S": "shardId-000000000003"},
            "leaseOwner": {"S": "kcl-worker"},
            "leaseCounter": {"N": "5"},
            "checkpoint": {"S": "100"},
            "checkpointSubSequenceNumber": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "0"},
            "pendingCheckpoint": {"S": "150"},
            "pendingCheckpointSubSequenceNumber": {"N": "0"},
            "pendingCheckpointState": {"B": b"state"},
            "parentShardId": {"SS": ["shardId-000000000000"]},
            "throughputKBps": {"N": "1.5"},
        },
    )
    lease = await table.get_lease("shardId-000000000003")
    assert lease is not None
    assert lease.parent_shard_ids == ("shardId-000000000000",)
    taken = await table.take_lease(lease, "streamkit-worker")
    await table.update_checkpoint(taken, ExtendedSequenceNumber("200", 0))
    item = raw_item(table, "shardId-000000000003")
    assert not {k for k in item if k.startswith("pending")}
    assert item["checkpoint"] == {"S": "200"}
    assert item["throughputKBps"] == {"N": "1.5"}
    assert item["parentShardId"] == {"SS": ["shardId-000000000000"]}


async def test_throttled_renewals_keep_the_lease_until_failover(table: DynamoDBLeaseStore) -> None:
    flaky = ExceptionThrowingClient(table.endpoint.client("dynamodb"))
    store = DynamoDBLeaseStore(
        table.endpoint, table.table_name, client=cast("DynamoDBClient", flaky)
    )
    lease = await store.create_lease_if_not_exists(Lease("s"))
    clock = FakeClock()
    held = HeldLeases(clock)
    held.gained(await store.take_lease(lease, "A"))
    renewer = LeaseRenewer(store, held, failover_time=10.0, clock=clock)

    flaky.inject("update_item", "ProvisionedThroughputExceededException", times=2)
    with pytest.raises(LeaseStoreUnavailableError, match="ProvisionedThroughputExceeded"):
        await store.renew_lease(lease.taken_by("A"))
    clock.advance(6.0)
    assert (await renewer.renew_all()).transient_errors == 1  # second injection
    assert held.shard_ids() == {"s"}
    assert (await renewer.renew_all()).renewed == ("s",)  # the real server answers again
    assert flaky.raised == {"update_item": 2}

    flaky.inject("update_item", "ThrottlingException", times=5)
    clock.advance(10.5)
    assert (await renewer.renew_all()).lost == ("s",)  # silent for more than failover


async def test_unreachable_endpoint_is_a_transient_error_with_a_clear_message() -> None:
    endpoint = AwsEndpoint.local(f"http://127.0.0.1:{free_port()}")
    store = DynamoDBLeaseStore(endpoint, "nowhere", call_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(LeaseStoreUnavailableError, match="did not answer Scan"):
        await store.list_leases()
    assert time.monotonic() - started < HANG  # bounded retries, not a hang


class RecordingClient:
    """A real boto3 client that notes the arguments of every Scan."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.scans: list[dict[str, Any]] = []

    def scan(self, **kwargs: Any) -> Any:
        self.scans.append(kwargs)
        return self.inner.scan(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_lease_table_scans_are_eventually_consistent(table: DynamoDBLeaseStore) -> None:
    """As KCL's listLeases: half the read units of a consistent scan (issue 12, item 10)."""
    recording = RecordingClient(table.endpoint.client("dynamodb"))
    store = DynamoDBLeaseStore(
        table.endpoint, table.table_name, client=cast("DynamoDBClient", recording)
    )
    for i in range(3):
        await store.create_lease_if_not_exists(Lease(f"shard-{i}"))
    assert [lease.lease_key for lease in await store.list_leases()] == [
        "shard-0",
        "shard-1",
        "shard-2",
    ]
    assert recording.scans
    assert [scan.get("ConsistentRead", False) for scan in recording.scans] == [False] * len(
        recording.scans
    )


async def test_renewals_never_wait_for_a_saturated_default_executor(
    table: DynamoDBLeaseStore,
) -> None:
    """Every thread of asyncio's default executor is blocked (as by GetRecords, decoding,
    engine and sink work); renewals still go through their own threads and connections."""
    for i in range(4):
        await table.create_lease_if_not_exists(Lease(f"shard-{i}"))
    coordinator = LeaseCoordinator(table, "A", failover_time=10.0, create_table=False)
    await coordinator.start(background=False)
    await coordinator.take_once()
    assert len(coordinator.held_shard_ids()) == 4
    loop = asyncio.get_running_loop()
    release = threading.Event()
    blockers = [loop.run_in_executor(None, release.wait, 120.0) for _ in range(64)]
    try:
        await asyncio.sleep(0.5)  # let the default executor start (and block) its threads
        probe = loop.run_in_executor(None, time.monotonic)
        done, _ = await asyncio.wait([probe], timeout=1.0)
        assert not done, "the default executor should be saturated for this test to mean much"
        result = await asyncio.wait_for(coordinator.renew_once(), 30.0)
    finally:
        release.set()
        await asyncio.gather(*blockers)
    assert result.renewed == ("shard-0", "shard-1", "shard-2", "shard-3")
    assert {lease.lease_counter for lease in await table.list_leases()} == {2}  # take, renew
    await coordinator.release_all()
    await coordinator.stop()


def count_calls(client: DynamoDBClient) -> list[str]:
    """The names of the DynamoDB operations ``client`` sends from now on, in order (a
    botocore hook on the real client)."""
    sent: list[str] = []
    client.meta.events.register(
        "before-parameter-build.dynamodb", lambda model, **_: sent.append(model.name)
    )
    return sent


async def test_the_table_is_ensured_once_per_store_and_again_after_it_was_deleted(
    aws_endpoint: AwsEndpoint,
) -> None:
    """A store that saw its table ACTIVE makes no call for the next
    ``create_table_if_not_exists`` (a coordinator starting on a table its caller ensured).
    Deleted behind its back, the table is not silently assumed: the next call fails with
    the "does not exist" error, and the next ``create_table_if_not_exists`` creates it
    again. Calls counted by a botocore hook on the store's own (real) client."""
    client = aws_endpoint.client("dynamodb")
    sent = count_calls(client)
    store = DynamoDBLeaseStore(aws_endpoint, f"ddb-{uuid.uuid4().hex[:12]}", client=client)
    try:
        assert await store.create_table_if_not_exists() is True
        assert sent == ["CreateTable", "DescribeTable"]
        assert await store.create_table_if_not_exists() is False
        coordinator = LeaseCoordinator(store, "A")
        await coordinator.start(background=False)
        assert sent == ["CreateTable", "DescribeTable"]
        other = DynamoDBLeaseStore(aws_endpoint, store.table_name)
        await other.delete_table()
        # moto and LocalStack drop it at once, AWS takes a while: poll (60 s bounds a hang)
        for _ in range(300):
            try:
                await store.list_leases()
            except LeaseStoreError as gone:
                if "does not exist" in str(gone):
                    break
            await asyncio.sleep(0.2)
        with pytest.raises(LeaseStoreError, match="does not exist"):
            await store.list_leases()
        del sent[:]
        assert await store.create_table_if_not_exists() is True
        assert sent == ["CreateTable", "DescribeTable"]
        assert await store.list_leases() == []
    finally:
        await store.delete_table()


async def test_concurrent_ensures_of_one_store_make_the_calls_once(
    aws_endpoint: AwsEndpoint,
) -> None:
    """Two ``create_table_if_not_exists`` at once (a coordinator and its caller starting
    together) send one CreateTable and one DescribeTable; the second waits and returns
    False. Calls counted by a botocore hook on the store's own (real) client."""
    client = aws_endpoint.client("dynamodb")
    sent = count_calls(client)
    store = DynamoDBLeaseStore(aws_endpoint, f"ddb-{uuid.uuid4().hex[:12]}", client=client)
    try:
        results = await asyncio.gather(
            store.create_table_if_not_exists(), store.create_table_if_not_exists()
        )
        assert sorted(results) == [False, True]
        assert sent == ["CreateTable", "DescribeTable"]
    finally:
        await store.delete_table()


async def test_an_ensure_overlapping_a_delete_does_not_record_the_table(
    aws_endpoint: AwsEndpoint,
) -> None:
    """``delete_table`` while an ensure waits on DescribeTable's answer (ACTIVE): the
    store must not believe in the deleted table afterwards, so the next ensure creates it
    again instead of returning False with no call. The DescribeTable answer is held in
    the executor thread by a botocore hook until the delete has finished."""
    client = aws_endpoint.client("dynamodb")
    answered, release = threading.Event(), threading.Event()

    def hold(**_: object) -> None:
        if not release.is_set():
            answered.set()
            release.wait(30.0)

    client.meta.events.register("after-call.dynamodb.DescribeTable", hold)
    store = DynamoDBLeaseStore(aws_endpoint, f"ddb-{uuid.uuid4().hex[:12]}", client=client)
    try:
        ensure = asyncio.ensure_future(store.create_table_if_not_exists())
        assert await asyncio.to_thread(answered.wait, 30.0)
        await store.delete_table()
        release.set()
        assert await ensure is True
        sent = count_calls(client)
        assert await store.create_table_if_not_exists() is True
        assert sent == ["CreateTable", "DescribeTable"]
        assert await store.list_leases() == []
    finally:
        release.set()
        await store.delete_table()
