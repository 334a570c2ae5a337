"""PutRecords batching limits, the one-record-per-key rule, and per-entry settlement."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.errors import InvalidRecordError, RecordTooLargeError
from streamkit_kinesis.producer.batching import (
    MAX_BYTES_PER_CALL,
    MAX_RECORD_BYTES,
    MAX_RECORDS_PER_CALL,
    Entry,
    settle,
    take_batch,
)
from streamkit_kinesis.producer.producer import KinesisProducer, record_size, validate
from streamkit_kinesis.retry import THROTTLING_CODES

from streamkit.config import AwsEndpoint

if TYPE_CHECKING:
    from mypy_boto3_kinesis.type_defs import PutRecordsResultEntryTypeDef


def entry(key: str, size: int = 10) -> Entry:
    return Entry(b"x" * (size - len(key)), key, None, size, 0.0)


def keys(entries: list[Entry] | deque[Entry]) -> list[str]:
    return [e.partition_key for e in entries]


def test_at_most_500_records_per_call() -> None:
    buf = deque(entry(f"k{i}") for i in range(1200))
    sizes = []
    while buf:
        sizes.append(len(take_batch(buf)))
    assert sizes == [500, 500, 200]


def test_at_most_5_mib_per_call() -> None:
    # 12 records of 1 MiB (the largest allowed): 5 fit in a call, then 5, then 2.
    buf = deque(entry(f"k{i}", MAX_RECORD_BYTES) for i in range(12))
    batches = []
    while buf:
        batch = take_batch(buf)
        assert sum(e.size for e in batch) <= MAX_BYTES_PER_CALL
        batches.append(len(batch))
    assert batches == [5, 5, 2]


def test_bytes_limit_counts_partition_keys() -> None:
    key = "p" * 200
    size = record_size(b"d" * (MAX_RECORD_BYTES - 200), key)
    assert size == MAX_RECORD_BYTES
    buf = deque(Entry(b"", f"{i}{key}"[:200], None, size, 0.0) for i in range(6))
    assert len(take_batch(buf)) == 5


def test_one_record_per_key_per_call_keeps_skipped_records_in_order() -> None:
    buf = deque([entry("a"), entry("b"), entry("a"), entry("c"), entry("b"), entry("a")])
    first = take_batch(buf)
    assert keys(first) == ["a", "b", "c"]
    assert keys(buf) == ["a", "b", "a"]
    assert keys(take_batch(buf)) == ["a", "b"]
    assert keys(take_batch(buf)) == ["a"]


def test_without_key_order_a_call_takes_records_in_buffer_order() -> None:
    buf = deque([entry("a"), entry("a"), entry("b")])
    assert keys(take_batch(buf, one_per_key=False)) == ["a", "a", "b"]


def test_scan_limit_bounds_work_on_a_buffer_of_one_key() -> None:
    buf = deque(entry("same") for _ in range(10_000))
    batch = take_batch(buf, scan_limit=100)
    assert len(batch) == 1
    assert len(buf) == 9_999


def result(code: str | None = None) -> PutRecordsResultEntryTypeDef:
    if code is None:
        return {"SequenceNumber": "1", "ShardId": "shardId-0"}
    return {"ErrorCode": code, "ErrorMessage": "m"}


def test_settle_retries_only_failed_retryable_entries() -> None:
    batch = [entry("a"), entry("b"), entry("c"), entry("d")]
    out = settle(
        batch,
        [
            result(),
            result("ProvisionedThroughputExceededException"),
            result(),
            result("InternalFailure"),
        ],
        max_attempts=3,
        throttling_codes=THROTTLING_CODES,
    )
    assert keys(list(out.succeeded)) == ["a", "c"]
    assert keys(list(out.retry)) == ["b", "d"]
    assert out.failed == ()
    assert out.throttled == 1
    assert all(e.attempts == 1 for e in batch)


def test_settle_gives_up_after_max_attempts_and_on_fatal_codes() -> None:
    tired = entry("a")
    tired.attempts = 2
    fatal = entry("b")
    out = settle(
        [tired, fatal],
        [result("ProvisionedThroughputExceededException"), result("KMSAccessDeniedException")],
        max_attempts=3,
        throttling_codes=THROTTLING_CODES,
    )
    assert out.retry == ()
    assert [(f.partition_key, f.error_code, f.attempts) for f in out.failed] == [
        ("a", "ProvisionedThroughputExceededException", 3),
        ("b", "KMSAccessDeniedException", 1),
    ]


def test_settle_rejects_mismatched_results() -> None:
    with pytest.raises(ValueError, match="2 records"):
        settle([entry("a"), entry("b")], [result()], max_attempts=3, throttling_codes=frozenset())


def test_validate_keys() -> None:
    validate("k", None)
    validate("k", str(2**128 - 1))
    with pytest.raises(InvalidRecordError):
        validate("", None)
    with pytest.raises(InvalidRecordError):
        validate("k" * 257, None)
    with pytest.raises(InvalidRecordError):
        validate("k", str(2**128))
    with pytest.raises(InvalidRecordError):
        validate("k", "-1")
    for digits in ("\u0661\u0662\u0663", "\u00b2"):  # Arabic-Indic 123, superscript 2
        with pytest.raises(InvalidRecordError):
            validate("k", digits)


async def test_oversize_record_is_rejected_before_any_call() -> None:
    # The endpoint is a closed port: the record must be refused by put() itself.
    producer = KinesisProducer(AwsEndpoint.local("http://127.0.0.1:9"), "s")
    with pytest.raises(RecordTooLargeError) as info:
        await producer.put(b"x" * MAX_RECORD_BYTES, "k")
    assert info.value.size == MAX_RECORD_BYTES + 1
    assert producer.metrics().records_put == 0
    assert producer.metrics().calls == 0
    await producer.close()


def test_limits_are_the_kinesis_ones() -> None:
    assert MAX_RECORDS_PER_CALL == 500
    assert MAX_BYTES_PER_CALL == 5 * 1024 * 1024
    assert MAX_RECORD_BYTES == 1024 * 1024
