"""Pure rules of KPL aggregation in the producer: which user records share one Kinesis
record. No I/O here.

Records are packed together only when they map to the same open shard: the shard whose
hash key range holds the record's hash key (its explicit hash key, else the MD5 of its
partition key as a 128-bit integer), looked up in a :class:`ShardMap` built from
ListShards. An aggregate is sent with the first user record's partition key and, as
explicit hash key, that record's hash key, so Kinesis routes it to the shard the map
predicted. After a reshard the map is stale; the producer sees it in the ``ShardId`` that
PutRecords returns, refreshes the map and re-sends what landed on the wrong shard.

Ordering rule (``one_per_shard=True``): a call carries at most one Kinesis record per
shard, and the user records of one partition key in one Kinesis record only (a key whose
explicit hash keys point to several shards waits for the next call). So the batching rule
of :mod:`.batching` (failed records re-queued at the front, one call in flight) keeps
each key's order. An entry that cannot join its shard's record stays in the buffer, and
so does every later entry of its partition key.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamkit_kinesis.kpl.encoder import AggregateBuilder
from streamkit_kinesis.producer.batching import MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Sequence

    from mypy_boto3_kinesis.type_defs import PutRecordsResultEntryTypeDef

    from streamkit_kinesis.producer.batching import Entry
    from streamkit_kinesis.types import ShardInfo

DEFAULT_AGGREGATE_BYTES = 50 * 1024
"""Default size limit of an aggregated record (the KPL's ``AggregationMaxSize``)."""


def hash_key(partition_key: str, explicit_hash_key: str | None) -> int:
    """The 128-bit hash key Kinesis routes a record by."""
    if explicit_hash_key is not None:
        return int(explicit_hash_key)
    return int.from_bytes(hashlib.md5(partition_key.encode(), usedforsecurity=False).digest())


@dataclass(frozen=True)
class ShardMap:
    """The open shards of a stream by hash key range (from ListShards)."""

    starts: tuple[int, ...]
    """Starting hash keys, ascending."""
    ends: tuple[int, ...]
    """Ending hash keys (inclusive), in the same order."""
    shard_ids: tuple[str, ...]
    """Shard ids, in the same order."""

    @classmethod
    def of(cls, shards: Sequence[ShardInfo]) -> ShardMap:
        """The map of the open shards among ``shards``."""
        open_ = sorted(
            (s for s in shards if s.ending_sequence_number is None),
            key=lambda s: s.hash_key_range.starting_hash_key,
        )
        return cls(
            tuple(s.hash_key_range.starting_hash_key for s in open_),
            tuple(s.hash_key_range.ending_hash_key for s in open_),
            tuple(s.shard_id for s in open_),
        )

    def index(self, key: int) -> int:
        """Position of the shard holding hash key ``key`` (-1 when no open shard does)."""
        i = bisect.bisect_right(self.starts, key) - 1
        return i if i >= 0 and key <= self.ends[i] else -1

    def holds(self, shard_id: str, keys: Sequence[int]) -> bool:
        """True when ``shard_id`` is an open shard whose range holds every key in ``keys``."""
        if shard_id not in self.shard_ids:
            return False
        i = self.shard_ids.index(shard_id)
        return all(self.starts[i] <= k <= self.ends[i] for k in keys)


@dataclass(slots=True)
class Aggregate:
    """One Kinesis record of a call: one user record as is, or several aggregated."""

    entries: list[Entry]
    """The user records it carries, in order."""
    data: bytes
    partition_key: str
    explicit_hash_key: str | None
    shard_id: str | None
    """The shard the map predicted (None: sent as is, routed by Kinesis alone)."""

    @property
    def size(self) -> int:
        """Data plus UTF-8 partition key, as Kinesis counts it."""
        return len(self.data) + len(self.partition_key.encode())


class _Open:
    """An aggregate being filled for one shard."""

    __slots__ = ("builder", "entries", "pk_bytes")

    def __init__(self, entry: Entry) -> None:
        self.builder = AggregateBuilder()
        self.entries: list[Entry] = []
        self.pk_bytes = len(entry.partition_key.encode())

    def fits(self, entry: Entry, limit: int) -> bool:
        size = self.builder.size_with(entry.data, entry.partition_key, entry.explicit_hash_key)
        return size + self.pk_bytes <= limit

    def add(self, entry: Entry) -> None:
        self.builder.add(entry.data, entry.partition_key, entry.explicit_hash_key)
        self.entries.append(entry)

    def seal(self, shard_id: str) -> Aggregate:
        first = self.entries[0]
        if len(self.entries) == 1:  # as the KPL does: one record is sent as itself
            return Aggregate(self.entries, first.data, first.partition_key,
                             first.explicit_hash_key, None)  # fmt: skip
        ehk = str(hash_key(first.partition_key, first.explicit_hash_key))
        return Aggregate(self.entries, self.builder.build(), first.partition_key, ehk, shard_id)


def take_aggregates(
    buffer: deque[Entry],
    shards: ShardMap,
    *,
    max_aggregate_bytes: int = DEFAULT_AGGREGATE_BYTES,
    max_records: int = MAX_RECORDS_PER_CALL,
    max_bytes: int = MAX_BYTES_PER_CALL,
    one_per_shard: bool = True,
    scan_limit: int = 50_000,
) -> list[Aggregate]:
    """Remove the next call's user records from the front of ``buffer``, packed by shard.

    Entries are taken in buffer order into their shard's open aggregate. When an aggregate
    cannot take the next entry within ``max_aggregate_bytes`` (partition key included), it
    is sealed and a new one started (``one_per_shard=False``), or the shard is closed
    (``True``: the entry and every later entry of its key stay in the buffer, in order).
    An entry too large to be aggregated even alone, or whose hash key no shard of the map
    holds, goes as itself. The call stays within ``max_records`` Kinesis records and
    ``max_bytes`` (estimated with a margin for the framing); at most ``scan_limit``
    entries are examined. The first entry is always taken.
    """
    opened: dict[int, _Open] = {}
    sealed: list[Aggregate] = []
    alone: set[int] = set()
    keys: dict[str, int] = {}
    closed: set[int] = set()
    held: set[str] = set()
    skipped: list[Entry] = []
    used = scanned = 0
    while buffer and scanned < scan_limit and len(closed) < len(shards.starts):
        entry = buffer[0]
        scanned += 1
        if entry.partition_key in held:
            skipped.append(buffer.popleft())
            continue
        if entry.hash_key < 0:
            entry.hash_key = hash_key(entry.partition_key, entry.explicit_hash_key)
        shard = shards.index(entry.hash_key)
        agg = opened.get(shard) if shard >= 0 else None
        elsewhere = one_per_shard and keys.get(entry.partition_key, shard) != shard
        if not elsewhere and agg is not None and agg.fits(entry, max_aggregate_bytes):
            agg.add(buffer.popleft())
            used += _reserve(entry)
            keys.setdefault(entry.partition_key, shard)  # the key is in this shard's record
            continue
        if one_per_shard and (elsewhere or (shard < 0 and entry.partition_key in keys)):
            held.add(entry.partition_key)  # its key is in another Kinesis record of the call
            skipped.append(buffer.popleft())
            continue
        if one_per_shard and (agg is not None or shard in alone):
            closed.add(shard)  # the shard's Kinesis record of this call is full
            held.add(entry.partition_key)
            skipped.append(buffer.popleft())
            continue
        if agg is not None:
            sealed.append(opened.pop(shard).seal(shards.shard_ids[shard]))
        if (sealed or opened) and (
            len(sealed) + len(opened) >= max_records or used + _reserve(entry) > max_bytes
        ):
            break  # one more Kinesis record would not fit the call
        fresh = _Open(buffer.popleft())
        used += _reserve(entry)
        keys[entry.partition_key] = shard
        if shard >= 0 and fresh.fits(entry, max_aggregate_bytes):
            fresh.add(entry)
            opened[shard] = fresh
        else:
            sealed.append(Aggregate([entry], entry.data, entry.partition_key,
                                    entry.explicit_hash_key, None))  # fmt: skip
            if shard >= 0:
                alone.add(shard)
    buffer.extendleft(reversed(skipped))
    return sealed + [agg.seal(shards.shard_ids[shard]) for shard, agg in opened.items()]


def _reserve(entry: Entry) -> int:
    """Bytes an entry may take in a call, framing included (an upper bound)."""
    return 2 * entry.size + 64


def misrouted(
    aggs: Sequence[Aggregate], results: Sequence[PutRecordsResultEntryTypeDef]
) -> list[int]:
    """Positions of the aggregates written to a shard other than the one predicted."""
    return [
        i for i, (a, r) in enumerate(zip(aggs, results, strict=True))
        if a.shard_id is not None and not r.get("ErrorCode") and r["ShardId"] != a.shard_id
    ]  # fmt: skip


def per_user_record(
    aggs: Sequence[Aggregate], results: Sequence[PutRecordsResultEntryTypeDef], skip: set[int]
) -> tuple[list[Entry], list[PutRecordsResultEntryTypeDef]]:
    """The user records of the aggregates not in ``skip``, each with its aggregate's result."""
    batch = [e for i, a in enumerate(aggs) if i not in skip for e in a.entries]
    per_user = [r for i, (a, r) in enumerate(zip(aggs, results, strict=True))
                if i not in skip for _ in a.entries]  # fmt: skip
    return batch, per_user
