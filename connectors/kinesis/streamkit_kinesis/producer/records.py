"""What the producer reports and checks per record: :class:`ProducerMetrics`, the size a
record counts against the Kinesis limits, and the key rules Kinesis enforces."""

from __future__ import annotations

from dataclasses import dataclass

from streamkit_kinesis.errors import InvalidRecordError

MAX_HASH_KEY = 2**128 - 1


@dataclass(frozen=True)
class ProducerMetrics:
    """A snapshot of a producer's counters."""

    records_put: int
    """Records accepted by ``put``."""
    records_sent: int
    """Records acknowledged by Kinesis."""
    bytes_sent: int
    """Data plus partition key bytes of the acknowledged records."""
    calls: int
    """PutRecords calls made."""
    retries: int
    """Records sent again after a failure."""
    throttles: int
    """Records (or whole calls) rejected with a throttling error."""
    records_failed: int
    """Records given up on."""
    buffered: int
    """Records waiting to be sent now."""
    kinesis_records: int = 0
    """Kinesis records acknowledged (aggregates count once; without aggregation, the same
    as ``records_sent``)."""
    shard_map_refreshes: int = 0
    """ListShards calls made for aggregation."""


def record_size(data: bytes, partition_key: str) -> int:
    """Bytes a record counts against the Kinesis limits: data plus UTF-8 partition key."""
    if partition_key.isascii():  # the common case, without encoding the key
        return len(data) + len(partition_key)
    return len(data) + len(partition_key.encode("utf-8"))


def validate(partition_key: str, explicit_hash_key: str | None) -> None:
    """Raise :class:`InvalidRecordError` for keys Kinesis would reject."""
    if not 1 <= len(partition_key) <= 256:
        raise InvalidRecordError(
            f"partition key must be 1 to 256 characters, got {len(partition_key)}"
        )
    if explicit_hash_key is not None and not (
        explicit_hash_key.isascii()
        and explicit_hash_key.isdigit()
        and 0 <= int(explicit_hash_key) <= MAX_HASH_KEY
    ):
        raise InvalidRecordError(
            f"explicit hash key must be a decimal integer in [0, 2**128 - 1], "
            f"got {explicit_hash_key!r}"
        )
