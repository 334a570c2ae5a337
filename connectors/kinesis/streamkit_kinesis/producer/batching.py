"""Pure batching rules of the producer: what goes into one PutRecords call, and what is
retried after it. No I/O here, so the limits and the ordering rule are unit-tested directly.

Ordering rule (``one_per_key=True``): a call carries at most one record per partition key,
and only one call is in flight at a time. A failed record goes back to the FRONT of the
buffer, ahead of every later record of its key, which has not been sent yet. So records of
one key reach the stream in the order they were put, whatever fails and is retried.
(Two records of one key in the same call could not keep that promise: Kinesis may write
the second while rejecting the first.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streamkit_kinesis.errors import FailedRecord
from streamkit_kinesis.retry import RETRYABLE_ENTRY_CODES

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Sequence

    from mypy_boto3_kinesis.type_defs import PutRecordsResultEntryTypeDef

MAX_RECORDS_PER_CALL = 500
"""PutRecords: at most 500 records per call."""
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
"""PutRecords: at most 5 MiB per call, partition keys included."""
MAX_RECORD_BYTES = 1024 * 1024
"""A record (data + partition key) is at most 1 MiB."""


@dataclass(slots=True)
class Entry:
    """A buffered record (mutable: the producer counts attempts on it)."""

    data: bytes
    partition_key: str
    explicit_hash_key: str | None
    size: int
    enqueued_at: float
    attempts: int = 0
    last_error: tuple[str, str] = field(default=("", ""))
    hash_key: int = -1
    """The 128-bit hash key, once computed (aggregation only; -1 before)."""


def take_batch(
    buffer: deque[Entry],
    *,
    max_records: int = MAX_RECORDS_PER_CALL,
    max_bytes: int = MAX_BYTES_PER_CALL,
    one_per_key: bool = True,
    scan_limit: int | None = None,
) -> list[Entry]:
    """Remove and return the next call's entries from the front of ``buffer``.

    Takes entries in buffer order while the call stays within ``max_records`` and
    ``max_bytes``; stops at the first entry that does not fit. With ``one_per_key``, an
    entry whose key is already in the call is skipped and stays in the buffer, in order,
    ahead of everything not scanned. At most ``scan_limit`` entries are examined (default
    four times ``max_records``), so a buffer of few keys is not rescanned end to end. The
    first entry is always taken (a single entry never exceeds the per-call limits).
    """
    limit = scan_limit if scan_limit is not None else 4 * max_records
    batch: list[Entry] = []
    skipped: list[Entry] = []
    keys: set[str] = set()
    used = 0
    scanned = 0
    while buffer and len(batch) < max_records and scanned < limit:
        entry = buffer[0]
        if one_per_key and entry.partition_key in keys:
            skipped.append(buffer.popleft())
            scanned += 1
            continue
        if batch and used + entry.size > max_bytes:
            break
        buffer.popleft()
        scanned += 1
        batch.append(entry)
        used += entry.size
        if one_per_key:
            keys.add(entry.partition_key)
    buffer.extendleft(reversed(skipped))
    return batch


@dataclass(frozen=True)
class Settlement:
    """The outcome of one PutRecords call, entry by entry."""

    succeeded: tuple[Entry, ...]
    """Entries written."""
    retry: tuple[Entry, ...]
    """Entries to resend, in their original order."""
    failed: tuple[FailedRecord, ...]
    """Entries given up on (non-retryable code, or attempts used up)."""
    throttled: int
    """Entries rejected with a throttling code."""


def settle(
    batch: Sequence[Entry],
    results: Sequence[PutRecordsResultEntryTypeDef],
    *,
    max_attempts: int,
    throttling_codes: frozenset[str],
) -> Settlement:
    """Split a call's entries by their per-entry result (``results[i]`` is ``batch[i]``).

    Each entry's ``attempts`` is incremented. A failed entry is retried when its code is
    retryable and it has been attempted fewer than ``max_attempts`` times.
    """
    if len(results) != len(batch):
        raise ValueError(f"PutRecords returned {len(results)} results for {len(batch)} records")
    ok: list[Entry] = []
    retry: list[Entry] = []
    failed: list[FailedRecord] = []
    throttled = 0
    for entry, result in zip(batch, results, strict=True):
        entry.attempts += 1
        code = result.get("ErrorCode")
        if not code:
            ok.append(entry)
            continue
        entry.last_error = (code, result.get("ErrorMessage", ""))
        throttled += code in throttling_codes
        if code in RETRYABLE_ENTRY_CODES and entry.attempts < max_attempts:
            retry.append(entry)
        else:
            failed.append(as_failure(entry))
    return Settlement(tuple(ok), tuple(retry), tuple(failed), throttled)


def as_failure(entry: Entry) -> FailedRecord:
    """The report of an entry given up on."""
    code, message = entry.last_error
    return FailedRecord(entry.partition_key, entry.size, code, message, entry.attempts)
