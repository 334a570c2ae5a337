"""Lease <-> DynamoDB item mapping, with KCL's lease-table attribute names.

Names and types follow KCL 2.x's ``DynamoDBLeaseSerializer`` (KCL 3.x keeps them), so a
Java KCL application and streamkit can share one lease table (proven by
``streamkit_kinesis_tests/peers/test_kcl_peer.py``).

| attribute | type | meaning |
|---|---|---|
| ``leaseKey`` | S (hash key) | shard id |
| ``leaseOwner`` | S, absent when unowned | worker id |
| ``leaseCounter`` | N | incremented by every renew / take / release / checkpoint |
| ``checkpoint`` | S | sequence number or sentinel (``TRIM_HORIZON``, ``SHARD_END``, ...) |
| ``checkpointSubSequenceNumber`` | N | sub-sequence number |
| ``ownerSwitchesSinceCheckpoint`` | N | owner changes since the last checkpoint |
| ``parentShardId`` | SS, absent when empty | parent shard ids (KCL's name: singular) |
| ``childShardIds`` | SS, absent when empty | child shard ids |
| ``startingHashKey``, ``endingHashKey`` | S (decimal) | hash key range |
| ``pendingCheckpoint`` | S, absent when none | prepared (two-phase) checkpoint |
| ``pendingCheckpointSubSequenceNumber`` | N | its sub-sequence number |
| ``pendingCheckpointState`` | B | KCL's application state of a prepare: never written, removed |

Items written by streamkit before it used KCL's ``parentShardId`` have ``parentShardIds``;
they are still read. Every other attribute is left as it is: writes are updates of named
attributes, never a put of the whole item over an existing one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamkit_kinesis.types import TRIM_HORIZON, ExtendedSequenceNumber, HashKeyRange

from .model import Lease

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

KEY = "leaseKey"
OWNER = "leaseOwner"
COUNTER = "leaseCounter"
CHECKPOINT = "checkpoint"
SUB_SEQUENCE = "checkpointSubSequenceNumber"
OWNER_SWITCHES = "ownerSwitchesSinceCheckpoint"
PARENTS = "parentShardId"
LEGACY_PARENTS = "parentShardIds"
"""What streamkit wrote before it used KCL's name; read, never written."""
CHILDREN = "childShardIds"
STARTING_HASH_KEY = "startingHashKey"
ENDING_HASH_KEY = "endingHashKey"
PENDING_CHECKPOINT = "pendingCheckpoint"
PENDING_SUB_SEQUENCE = "pendingCheckpointSubSequenceNumber"
PENDING_STATE = "pendingCheckpointState"
PENDING = (PENDING_CHECKPOINT, PENDING_SUB_SEQUENCE, PENDING_STATE)
"""KCL's prepared (two-phase) checkpoint; a final checkpoint removes it."""

NAMES: dict[str, str] = {
    f"#{name}": name
    for name in (KEY, OWNER, COUNTER, CHECKPOINT, SUB_SEQUENCE, OWNER_SWITCHES, CHILDREN, *PENDING)
}
"""Expression attribute names (``#leaseOwner`` -> ``leaseOwner``), so no attribute name can
collide with a DynamoDB reserved word."""


def s(value: str) -> AttributeValueTypeDef:
    """A string attribute value."""
    return {"S": value}


def n(value: int) -> AttributeValueTypeDef:
    """A number attribute value."""
    return {"N": str(value)}


def key_of(lease_key: str) -> dict[str, AttributeValueTypeDef]:
    """The primary key of a lease item."""
    return {KEY: s(lease_key)}


def to_item(lease: Lease) -> dict[str, AttributeValueTypeDef]:
    """The full DynamoDB item for ``lease`` (empty sets and a missing owner are omitted)."""
    item: dict[str, AttributeValueTypeDef] = {
        KEY: s(lease.lease_key),
        COUNTER: n(lease.lease_counter),
        CHECKPOINT: s(lease.checkpoint.sequence_number),
        SUB_SEQUENCE: n(lease.checkpoint.sub_sequence_number),
        OWNER_SWITCHES: n(lease.owner_switches_since_checkpoint),
    }
    if lease.lease_owner is not None:
        item[OWNER] = s(lease.lease_owner)
    if lease.parent_shard_ids:
        item[PARENTS] = {"SS": list(lease.parent_shard_ids)}
    if lease.child_shard_ids:
        item[CHILDREN] = {"SS": list(lease.child_shard_ids)}
    if lease.hash_key_range is not None:
        item[STARTING_HASH_KEY] = s(str(lease.hash_key_range.starting_hash_key))
        item[ENDING_HASH_KEY] = s(str(lease.hash_key_range.ending_hash_key))
    if lease.pending_checkpoint is not None:
        item[PENDING_CHECKPOINT] = s(lease.pending_checkpoint.sequence_number)
        item[PENDING_SUB_SEQUENCE] = n(lease.pending_checkpoint.sub_sequence_number)
    return item


def _str(item: Mapping[str, AttributeValueTypeDef], name: str) -> str | None:
    value = item.get(name)
    return None if value is None else value.get("S")


def _int(item: Mapping[str, AttributeValueTypeDef], name: str, default: int = 0) -> int:
    value = item.get(name)
    number = None if value is None else value.get("N")
    return default if number is None else int(number)


def _set(item: Mapping[str, AttributeValueTypeDef], name: str) -> tuple[str, ...]:
    value = item.get(name)
    return () if value is None else tuple(value.get("SS", ()))


def from_item(item: Mapping[str, AttributeValueTypeDef]) -> Lease:
    """Parse a lease item; attributes KCL may omit default to their empty values."""
    lease_key = _str(item, KEY)
    if lease_key is None:
        raise ValueError(f"lease item without a {KEY!r} string attribute: {dict(item)!r}")
    start, end = _str(item, STARTING_HASH_KEY), _str(item, ENDING_HASH_KEY)
    checkpoint = _str(item, CHECKPOINT)
    pending = _str(item, PENDING_CHECKPOINT)
    return Lease(
        lease_key=lease_key,
        lease_owner=_str(item, OWNER),
        lease_counter=_int(item, COUNTER),
        checkpoint=(
            TRIM_HORIZON
            if checkpoint is None
            else ExtendedSequenceNumber(checkpoint, _int(item, SUB_SEQUENCE))
        ),
        owner_switches_since_checkpoint=_int(item, OWNER_SWITCHES),
        parent_shard_ids=_set(item, PARENTS) or _set(item, LEGACY_PARENTS),
        child_shard_ids=_set(item, CHILDREN),
        hash_key_range=(
            None if start is None or end is None else HashKeyRange(int(start), int(end))
        ),
        pending_checkpoint=(
            ExtendedSequenceNumber(pending, _int(item, PENDING_SUB_SEQUENCE)) if pending else None
        ),
    )
