"""Where a shard iterator starts: checkpoints, sentinels and timestamps to iterator types
(and a SHARD_END checkpoint starts none)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.retrieval import IteratorStart, ShardReader
from streamkit_kinesis.types import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    ExtendedSequenceNumber,
    HashKeyRange,
    ShardInfo,
)

from streamkit.config import AwsEndpoint


def test_checkpoint_sequence_number_resumes_after_it() -> None:
    start = IteratorStart.of(ExtendedSequenceNumber("4967"))
    assert start == IteratorStart("AFTER_SEQUENCE_NUMBER", sequence_number="4967")


def test_sentinels() -> None:
    assert IteratorStart.of(TRIM_HORIZON).iterator_type == "TRIM_HORIZON"
    assert IteratorStart.of(LATEST).iterator_type == "LATEST"
    with pytest.raises(ValueError, match="datetime"):
        IteratorStart.of(AT_TIMESTAMP)


def test_datetime_means_at_timestamp() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert IteratorStart.of(moment) == IteratorStart("AT_TIMESTAMP", timestamp=moment)


def test_explicit_start_is_kept() -> None:
    start = IteratorStart.at_sequence("12")
    assert IteratorStart.of(start) is start


def test_shard_end_checkpoint_starts_ended() -> None:
    shard = ShardInfo("shardId-000000000000", (), HashKeyRange(0, 2**128 - 1), "0", "9")
    client = kinesis_client(AwsEndpoint.local("http://127.0.0.1:9"))  # never called
    reader = ShardReader(client, "s", shard, SHARD_END)
    assert reader.ended
    assert reader.metrics().get_records_calls == 0
