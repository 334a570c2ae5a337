"""Records as Arrow columns, read as a sequence of record objects only when asked.

:class:`RecordColumns` is what polling and fan-out readers put in
:attr:`~streamkit_kinesis.types.RecordBatch.records`: one Arrow table (payload, partition
key, sequence number, arrival time, sub-sequence number, explicit hash key, whether the
row came out of a KPL aggregate). The stream source queues, cuts, counts and decodes
these columns without a Python object per record; the record-processor API still sees a
``Sequence[KinesisRecord]``: ``records[i]`` builds one object, iteration builds them all
(column by column, once, then cached).

Guarantees: the objects built are equal to those the columns were made from
(:meth:`RecordColumns.from_records` round-trips, de-aggregated rows come back as
:class:`~streamkit_kinesis.types.UserRecord`); sequence numbers compare as
integers (decimal strings without leading zeros compare by length, then text).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamkit_kinesis.types import KinesisRecord, UserRecord

if TYPE_CHECKING:
    from streamkit_kinesis.retrieval.columnar import ColumnarRecords

SCHEMA = pa.schema(
    [
        ("data", pa.binary()),
        ("partition_key", pa.string()),
        ("sequence_number", pa.string()),
        ("arrival", pa.timestamp("us", "UTC")),
        ("sub_sequence_number", pa.int64()),
        ("explicit_hash_key", pa.string()),
        ("user_record", pa.bool_()),
    ]
)
"""The columns of :class:`RecordColumns` (``user_record``: taken out of a KPL aggregate)."""


class RecordColumns(Sequence[KinesisRecord]):
    """Records of one shard in shard order, as columns (see the module docstring)."""

    __slots__ = ("_objects", "table")

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        """The columns, in :data:`SCHEMA`."""
        self._objects: tuple[KinesisRecord, ...] | None = None

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_answer(cls, answer: ColumnarRecords) -> RecordColumns:
        """The records of a GetRecords answer / fan-out event (plain: sub-sequence 0)."""
        n = len(answer)
        return cls.from_arrays(
            answer.data, answer.partition_keys, answer.sequence_numbers, answer.arrival,
            pa.array(np.zeros(n, np.int64)), pa.nulls(n, pa.string()),
            pa.array(np.zeros(n, bool)),
        )  # fmt: skip

    @classmethod
    def from_arrays(cls, *arrays: pa.Array | pa.ChunkedArray) -> RecordColumns:
        """Columns in :data:`SCHEMA` order."""
        return cls(pa.Table.from_arrays(list(arrays), schema=SCHEMA))

    @classmethod
    def from_records(cls, records: Iterable[KinesisRecord]) -> RecordColumns:
        """Columns of record objects (one Python pass; for callers that hold objects)."""
        if isinstance(records, RecordColumns):
            return records
        rows = list(records)
        hashes = [getattr(r, "explicit_hash_key", None) for r in rows]
        return cls.from_arrays(
            pa.array([r.data for r in rows], pa.binary()),
            pa.array([r.partition_key for r in rows], pa.string()),
            pa.array([r.sequence_number for r in rows], pa.string()),
            pa.array([r.approximate_arrival for r in rows], pa.timestamp("us", "UTC")),
            pa.array([r.sub_sequence_number for r in rows], pa.int64()),
            pa.array(hashes, pa.string()),
            pa.array([_is_user(r) for r in rows], pa.bool_()),
        )

    @classmethod
    def concat(cls, parts: Sequence[RecordColumns]) -> RecordColumns:
        """``parts`` one after the other (no copy of the columns)."""
        if len(parts) == 1:
            return parts[0]
        return cls(pa.concat_tables([p.table for p in parts]) if parts else SCHEMA.empty_table())

    # -- columns -------------------------------------------------------------------------

    @property
    def data(self) -> pa.ChunkedArray:
        """The payloads."""
        return self.table.column(0)

    @property
    def sequence_numbers(self) -> pa.ChunkedArray:
        """The sequence numbers (decimal strings)."""
        return self.table.column(2)

    def sequence_number(self, i: int) -> str:
        """The sequence number of record ``i`` (no record object built)."""
        value: str = self.table.column(2)[i].as_py()
        return value

    def payload_bytes(self) -> int:
        """Total payload size."""
        return int(pc.sum(pc.binary_length(self.data)).as_py() or 0)

    def count_at_or_before(self, sequence_number: str) -> int:
        """How many records have a sequence number at or before ``sequence_number``."""
        if not len(self):
            return 0
        seqs = self.sequence_numbers
        size = pc.utf8_length(seqs)
        n = len(sequence_number)
        shorter = pc.less(size, n)
        same = pc.and_(pc.equal(size, n), pc.less_equal(seqs, sequence_number))
        return int(pc.sum(pc.or_(shorter, same).cast(pa.int64())).as_py() or 0)

    def same_as_first(self, sequence_number: str) -> int:
        """How many leading records have exactly ``sequence_number`` (a KPL aggregate's).
        Compared in Arrow over windows that double from 64 records: O(answer) work, no
        Python value per record."""
        seqs, n, size = self.sequence_numbers, 0, 64
        while n < len(self):
            window = seqs.slice(n, size)
            same = pc.equal(window, sequence_number).fill_null(False)
            differs = np.flatnonzero(~np.asarray(same.to_numpy(), dtype=bool))
            if len(differs):
                return n + int(differs[0])
            n, size = n + len(window), size * 2
        return n

    def first_arrived_after(self, cut: datetime) -> int:
        """How many leading records arrived at or before ``cut`` (arrival times are
        non-decreasing in shard order; a record without one counts as arrived before):
        a ``searchsorted`` over the arrival column."""
        micros = pa.scalar(cut, pa.timestamp("us", "UTC")).cast(pa.int64()).as_py()
        arrival = self.table.column("arrival").cast(pa.int64()).fill_null(micros)
        return int(np.searchsorted(np.asarray(arrival.to_numpy()), micros, side="right"))

    def part(self, start: int, stop: int | None = None) -> RecordColumns:
        """Records ``start:stop`` (no copy)."""
        stop = len(self) if stop is None else stop
        return RecordColumns(self.table.slice(start, max(0, stop - start)))

    # -- Sequence[KinesisRecord] ---------------------------------------------------------

    def __len__(self) -> int:
        rows: int = self.table.num_rows
        return rows

    @overload
    def __getitem__(self, i: int) -> KinesisRecord: ...
    @overload
    def __getitem__(self, i: slice) -> RecordColumns: ...
    def __getitem__(self, i: int | slice) -> KinesisRecord | RecordColumns:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return RecordColumns.from_records(self.objects()[start:stop:step])
            return self.part(start, stop)
        if self._objects is not None:
            return self._objects[i]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        return _record(self.table.slice(i % n, 1).to_pylist()[0])

    def __iter__(self) -> Iterator[KinesisRecord]:
        return iter(self.objects())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordColumns):
            return bool(self.table.equals(other.table))
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return self.objects() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RecordColumns({len(self)} records)"

    def objects(self) -> tuple[KinesisRecord, ...]:
        """Every record as an object, built column by column once (then cached)."""
        if self._objects is None:
            self._objects = _build(self.table)
        return self._objects


def _is_user(record: KinesisRecord) -> bool:
    return isinstance(record, UserRecord)


def _record(row: dict[str, Any]) -> KinesisRecord:
    args = (row["data"], row["partition_key"], row["sequence_number"], row["arrival"])
    if row["user_record"]:
        return UserRecord(*args, row["sub_sequence_number"], row["explicit_hash_key"])
    return KinesisRecord(*args, row["sub_sequence_number"])


def _build(table: pa.Table) -> tuple[KinesisRecord, ...]:
    if not table.num_rows:
        return ()
    users = table.column("user_record")
    if pc.any(users).as_py():
        return tuple(_record(row) for row in table.to_pylist())
    subs = table.column("sub_sequence_number").to_pylist()
    return tuple(
        map(
            KinesisRecord,
            table.column("data").to_pylist(),
            table.column("partition_key").to_pylist(),
            table.column("sequence_number").to_pylist(),
            _datetimes(table.column("arrival")),
            subs,
        )
    )


def _datetimes(arrival: pa.ChunkedArray) -> list[datetime | None]:
    """Aware UTC datetimes (pyarrow's own conversion costs ~3 µs each; this ~0.4 µs, exact:
    a µs count below 2**53 divides by 1e6 within a tenth of a µs, rounded back)."""
    if arrival.null_count:
        return list(arrival.to_pylist())
    micros = arrival.cast(pa.int64()).to_numpy()
    seconds = np.asarray(micros, np.float64) / 1e6
    return list(map(partial(datetime.fromtimestamp, tz=UTC), seconds.tolist()))
