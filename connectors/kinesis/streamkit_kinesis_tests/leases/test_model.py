"""Lease transitions, checkpoint ordering rules and the DynamoDB item mapping (no server)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.leases import (
    CheckpointOrderError,
    Lease,
    check_checkpoint_advance,
)
from streamkit_kinesis.leases import dynamodb_items as items
from streamkit_kinesis.types import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
    HashKeyRange,
    ShardInfo,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef


def seq(n: str, sub: int = 0) -> ExtendedSequenceNumber:
    return ExtendedSequenceNumber(n, sub)


def test_transitions_increment_the_counter() -> None:
    lease = Lease("s", lease_owner="A", lease_counter=5)
    assert lease.renewed().lease_counter == 6
    assert lease.released() == Lease("s", lease_owner=None, lease_counter=6)
    taken = lease.taken_by("B")
    assert (taken.lease_owner, taken.lease_counter, taken.owner_switches_since_checkpoint) == (
        "B",
        6,
        1,
    )
    assert lease.taken_by("A").owner_switches_since_checkpoint == 0
    assert Lease("s").taken_by("A").owner_switches_since_checkpoint == 0  # unowned: no switch
    done = taken.checkpointed(seq("10"))
    assert (done.checkpoint, done.owner_switches_since_checkpoint, done.lease_counter) == (
        seq("10"),
        0,
        7,
    )


def test_id_sets_are_normalized() -> None:
    a = Lease("s", parent_shard_ids=("p2", "p1", "p1"), child_shard_ids=("c",))
    b = Lease("s", parent_shard_ids=("p1", "p2")).with_children(["c", "c"])
    assert a == b
    assert a.parent_shard_ids == ("p1", "p2")


def test_for_shard_copies_lineage_and_range() -> None:
    shard = ShardInfo("c", ("p",), HashKeyRange(0, 2**127), "49")
    lease = Lease.for_shard(shard, LATEST)
    assert lease == Lease(
        "c", checkpoint=LATEST, parent_shard_ids=("p",), hash_key_range=HashKeyRange(0, 2**127)
    )


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (TRIM_HORIZON, seq("5")),
        (LATEST, seq("5")),
        (AT_TIMESTAMP, seq("5")),
        (seq("5"), seq("5")),
        (seq("5"), seq("5", 2)),
        (seq("9"), seq("10")),  # numeric, not lexicographic
        (seq("5"), SHARD_END),
        (TRIM_HORIZON, SHARD_END),
        (SHARD_END, SHARD_END),
        (TRIM_HORIZON, TRIM_HORIZON),
    ],
)
def test_forward_checkpoints_are_allowed(
    current: ExtendedSequenceNumber, new: ExtendedSequenceNumber
) -> None:
    check_checkpoint_advance("s", current, new)


@pytest.mark.parametrize(
    ("current", "new", "words"),
    [
        (seq("10"), seq("9"), "backwards"),
        (seq("5", 3), seq("5", 2), "backwards"),
        (SHARD_END, seq("99"), "final"),
        (SHARD_END, TRIM_HORIZON, "final"),
        (seq("5"), TRIM_HORIZON, "start position"),
        (TRIM_HORIZON, LATEST, "start position"),
    ],
)
def test_backward_checkpoints_are_rejected(
    current: ExtendedSequenceNumber, new: ExtendedSequenceNumber, words: str
) -> None:
    with pytest.raises(CheckpointOrderError, match=words):
        check_checkpoint_advance("shard-7", current, new)
    with pytest.raises(CheckpointOrderError):
        Lease("shard-7", "A", 1, checkpoint=current).checkpointed(new)


def test_item_uses_kcl_attribute_names_and_round_trips() -> None:
    lease = Lease(
        "shardId-000000000003",
        lease_owner="worker-1",
        lease_counter=42,
        checkpoint=seq("49590338271490256608559692538361571095921575989136588898", 7),
        owner_switches_since_checkpoint=2,
        parent_shard_ids=("shardId-000000000000", "shardId-000000000001"),
        child_shard_ids=("shardId-000000000004",),
        hash_key_range=HashKeyRange(0, 2**128 - 1),
    )
    item = items.to_item(lease)
    assert item == {
        "leaseKey": {"S": "shardId-000000000003"},
        "leaseOwner": {"S": "worker-1"},
        "leaseCounter": {"N": "42"},
        "checkpoint": {"S": "49590338271490256608559692538361571095921575989136588898"},
        "checkpointSubSequenceNumber": {"N": "7"},
        "ownerSwitchesSinceCheckpoint": {"N": "2"},
        "parentShardId": {"SS": ["shardId-000000000000", "shardId-000000000001"]},
        "childShardIds": {"SS": ["shardId-000000000004"]},
        "startingHashKey": {"S": "0"},
        "endingHashKey": {"S": str(2**128 - 1)},
    }
    assert items.from_item(item) == lease


def test_item_omits_empty_sets_and_missing_owner() -> None:
    item = items.to_item(Lease("s"))
    assert set(item) == {
        "leaseKey",
        "leaseCounter",
        "checkpoint",
        "checkpointSubSequenceNumber",
        "ownerSwitchesSinceCheckpoint",
    }
    assert items.from_item(item) == Lease("s")


def test_parents_use_kcl_name_and_old_streamkit_items_still_read() -> None:
    # KCL's DynamoDBLeaseSerializer stores parents under "parentShardId" (singular, SS);
    # items written by streamkit before it matched that name used "parentShardIds".
    parents = ("shardId-000000000000", "shardId-000000000001")
    item = items.to_item(Lease("shardId-000000000002", parent_shard_ids=parents))
    assert item["parentShardId"] == {"SS": list(parents)}
    assert "parentShardIds" not in item
    legacy = {k: v for k, v in item.items() if k != "parentShardId"}
    legacy["parentShardIds"] = {"SS": list(parents)}
    assert items.from_item(legacy).parent_shard_ids == parents


def test_reads_an_item_as_kcl_2_writes_it() -> None:
    # The attributes KCL 2.6's serializer writes for a child lease with a pending checkpoint.
    item: dict[str, AttributeValueTypeDef] = {
        "leaseKey": {"S": "shardId-000000000004"},
        "leaseOwner": {"S": "kcl-worker"},
        "leaseCounter": {"N": "9"},
        "ownerSwitchesSinceCheckpoint": {"N": "1"},
        "checkpoint": {"S": "49590338271490256608559692538361571095921575989136588898"},
        "checkpointSubSequenceNumber": {"N": "3"},
        "pendingCheckpoint": {"S": "49590338271490256608559692538361571095921575989136589000"},
        "pendingCheckpointSubSequenceNumber": {"N": "0"},
        "parentShardId": {"SS": ["shardId-000000000001"]},
        "startingHashKey": {"S": "0"},
        "endingHashKey": {"S": "170141183460469231731687303715884105727"},
    }
    assert items.from_item(item) == Lease(
        "shardId-000000000004",
        lease_owner="kcl-worker",
        lease_counter=9,
        checkpoint=seq("49590338271490256608559692538361571095921575989136588898", 3),
        owner_switches_since_checkpoint=1,
        parent_shard_ids=("shardId-000000000001",),
        hash_key_range=HashKeyRange(0, 2**127 - 1),
        pending_checkpoint=seq("49590338271490256608559692538361571095921575989136589000", 0),
    )
