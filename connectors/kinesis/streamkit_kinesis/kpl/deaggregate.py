"""De-aggregation of KPL aggregated records into the user records they carry.

Format (KPL ``aggregation-format.md``): ``F3 89 9A C2`` magic, a protobuf
``AggregatedRecord`` (see :mod:`.protobuf`), then the 16-byte MD5 of those protobuf bytes.

Guarantees of :func:`deaggregate`:

- order is kept: the user records of an aggregated record come in its ``records`` order,
  with sub-sequence numbers 0, 1, ... and the Kinesis record's sequence number and arrival
  time; records around it keep their places;
- a record without the magic is handed on unchanged (the same object, sub-sequence 0);
- a record with the magic whose MD5 does not match, whose protobuf is malformed, or whose
  table indexes point past their tables is NOT de-aggregated: it is handed on as one plain
  record, exactly as read (what KCL's ``AggregatorUtil`` does for the first two), counted in
  :attr:`DeaggregationStats.malformed` and logged. A dead letter would hide from a consumer
  data that KCL delivers to the same application, so KCL's choice is kept;
- user records whose hash key falls outside the shard are still delivered (KCL drops the
  whole aggregated record then; the record exists only in this shard, so dropping loses it).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamkit_kinesis.kpl.protobuf import ProtobufError, parse_aggregated
from streamkit_kinesis.retrieval.record_columns import SCHEMA, RecordColumns
from streamkit_kinesis.types import ExtendedSequenceNumber, KinesisRecord, UserRecord

if TYPE_CHECKING:
    from collections.abc import Iterable

    from streamkit_kinesis.kpl.protobuf import Aggregated

MAGIC = b"\xf3\x89\x9a\xc2"
"""The four bytes every KPL aggregated record starts with."""
DIGEST_SIZE = 16
"""Length of the MD5 trailer."""

log = logging.getLogger(__name__)

__all__ = [
    "DIGEST_SIZE",
    "MAGIC",
    "DeaggregationStats",
    "UserRecord",
    "deaggregate",
    "deaggregate_columns",
    "is_aggregated",
    "position",
]


@dataclass
class DeaggregationStats:
    """Counters of a de-aggregator (one per fetcher)."""

    aggregated: int = 0
    """Aggregated Kinesis records de-aggregated."""
    user_records: int = 0
    """User records taken out of them."""
    malformed: int = 0
    """Records with the magic that were handed on whole (bad MD5 or protobuf)."""


def position(record: KinesisRecord) -> ExtendedSequenceNumber:
    """The checkpoint position of ``record``: its sequence and sub-sequence numbers
    (checkpointing it resumes right after it, also inside an aggregated record)."""
    return ExtendedSequenceNumber(record.sequence_number, record.sub_sequence_number)


def is_aggregated(data: bytes) -> bool:
    """True when ``data`` starts with the KPL magic and is long enough to carry a digest."""
    return len(data) >= len(MAGIC) + DIGEST_SIZE and data[:4] == MAGIC


def _unpack(data: bytes, sequence_number: str, stats: DeaggregationStats) -> Aggregated | None:
    """The aggregate in ``data`` (counted in ``stats``), or None when it is malformed."""
    body = data[len(MAGIC) : -DIGEST_SIZE]
    if hashlib.md5(body, usedforsecurity=False).digest() != data[-DIGEST_SIZE:]:
        reason = "MD5 mismatch"
    else:
        try:
            agg = parse_aggregated(body)
        except ProtobufError as e:
            reason = str(e)
        else:
            stats.aggregated += 1
            stats.user_records += len(agg.records)
            return agg
    stats.malformed += 1
    log.warning("record %s has the KPL magic but %s: handed on whole", sequence_number, reason)
    return None


def _explode(record: KinesisRecord, stats: DeaggregationStats) -> list[KinesisRecord] | None:
    """The user records of an aggregated ``record``, or None when it is malformed."""
    agg = _unpack(record.data, record.sequence_number, stats)
    if agg is None:
        return None
    keys, hashes = agg.partition_keys, agg.explicit_hash_keys
    seq, arrival = record.sequence_number, record.approximate_arrival
    return [
        UserRecord(
            r.data,
            keys[r.partition_key_index],
            seq,
            arrival,
            sub,
            None if r.explicit_hash_key_index is None else hashes[r.explicit_hash_key_index],
        )
        for sub, r in enumerate(agg.records)
    ]


def deaggregate(
    records: Iterable[KinesisRecord], stats: DeaggregationStats | None = None
) -> list[KinesisRecord]:
    """The user records of ``records`` (see the module docstring for the guarantees)."""
    counters = stats if stats is not None else DeaggregationStats()
    out: list[KinesisRecord] = []
    for record in records:
        users = _explode(record, counters) if is_aggregated(record.data) else None
        if users is None:
            out.append(record)
        else:
            out.extend(users)
    return out


def deaggregate_columns(
    records: RecordColumns, stats: DeaggregationStats | None = None
) -> RecordColumns:
    """:func:`deaggregate` on columns: the same user records, in the same order, as
    columns. The aggregates are found in one vectorised pass; plain records between them
    are sliced through (no copy, no object); only the aggregates are parsed one by one."""
    counters = stats if stats is not None else DeaggregationStats()
    if not len(records):
        return records
    data = records.data
    head = pc.binary_slice(data, 0, len(MAGIC))
    candidate = pc.and_(
        pc.equal(head, pa.scalar(MAGIC, pa.binary())),
        pc.greater_equal(pc.binary_length(data), len(MAGIC) + DIGEST_SIZE),
    )
    found = np.flatnonzero(np.asarray(candidate.to_numpy(zero_copy_only=False), bool))
    if not len(found):
        return records
    parts: list[pa.Table] = []
    done = 0
    for i in found.tolist():
        row = records.table.slice(i, 1)
        seq = records.sequence_number(i)
        agg = _unpack(data[i].as_py(), seq, counters)
        if agg is None:
            continue  # malformed: handed on whole, with the plain records around it
        parts.append(records.table.slice(done, i - done))
        parts.append(_user_rows(agg, row))
        done = i + 1
    parts.append(records.table.slice(done))
    return RecordColumns(pa.concat_tables(parts).combine_chunks())


def _user_rows(agg: Aggregated, row: pa.Table) -> pa.Table:
    """The user records of ``agg`` (carried by the one-row ``row``) in :data:`SCHEMA`."""
    n = len(agg.records)
    keys, hashes = agg.partition_keys, agg.explicit_hash_keys
    index = pa.array(np.zeros(n, np.int64))
    return pa.Table.from_arrays(
        [
            pa.array([r.data for r in agg.records], pa.binary()),
            pa.array([keys[r.partition_key_index] for r in agg.records], pa.string()),
            row.column("sequence_number").take(index),
            row.column("arrival").take(index),
            pa.array(np.arange(n, dtype=np.int64)),
            pa.array(
                [
                    None if r.explicit_hash_key_index is None else hashes[r.explicit_hash_key_index]
                    for r in agg.records
                ],
                pa.string(),
            ),
            pa.array(np.ones(n, bool)),
        ],
        schema=SCHEMA,
    )
