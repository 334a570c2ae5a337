"""align_leases on DynamoDB: the lease table follows the query's checkpoint."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease
from streamkit_kinesis.source.alignment import align_leases
from streamkit_kinesis.testing.streams import unique
from streamkit_kinesis.types import ExtendedSequenceNumber, HashKeyRange, ShardInfo

from streamkit.testing.waits import HANG

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]


async def test_align_leases_follows_the_offsets_and_reclaims_own_leases(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """Lease-table repair on DynamoDB: missing -> created, behind (and owned by a worker
    that stopped renewing) -> forwarded after expiry, ahead -> re-created, start sentinel
    -> forwarded, SHARD_END kept, leases of this worker id released (also one already at
    its offset, which needs no other change)."""
    store = DynamoDBLeaseStore(localstack_endpoint, unique("app"))
    await store.create_table_if_not_exists()

    def shard(n: int) -> ShardInfo:
        return ShardInfo(f"shard-{n}", (), HashKeyRange(n, n), "1")

    async def put(
        n: int, checkpoint: str, owner: str | None = None, kids: tuple[str, ...] = ()
    ) -> None:
        lease = Lease.for_shard(shard(n), ExtendedSequenceNumber(checkpoint))
        lease = await store.create_lease_if_not_exists(lease.with_children(kids))
        if owner is not None:
            await store.take_lease(lease, owner)

    try:
        await put(1, "100", owner="dead-worker")
        await put(2, "300", kids=("shard-9",))
        await put(3, "TRIM_HORIZON")
        await put(4, "SHARD_END")
        await put(5, "500", owner="me")
        await put(6, "600", owner="me")
        offsets = {"shard-0": "7", "shard-1": "200", "shard-2": "200", "shard-3": "50",
                   "shard-4": "10", "shard-6": "600"}  # fmt: skip
        started = time.monotonic()
        done = await align_leases(
            store, [shard(n) for n in range(7)], offsets, "me", failover_time=0.6, poll=0.1
        )
        took = time.monotonic() - started
        table = {x.lease_key: x for x in await store.list_leases()}
    finally:
        await store.delete_table()
    assert done.created == ("shard-0",)
    assert done.forwarded == ("shard-1", "shard-3")
    assert done.rewound == ("shard-2",)
    assert done.reclaimed == ("shard-5", "shard-6")
    assert 0.6 < took < HANG  # shard-1 was taken only once its owner's lease expired
    got = {k: (x.checkpoint.sequence_number, x.lease_owner) for k, x in table.items()}
    assert got == {
        "shard-0": ("7", None), "shard-1": ("200", None), "shard-2": ("200", None),
        "shard-3": ("50", None), "shard-4": ("SHARD_END", None), "shard-5": ("500", None),
        "shard-6": ("600", None),
    }  # fmt: skip
    assert table["shard-2"].child_shard_ids == ("shard-9",)
