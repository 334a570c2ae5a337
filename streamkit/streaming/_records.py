"""The decoder contract: raw records in, rows plus dead letters out (see
:mod:`streamkit.streaming.decode`, which re-exports every public name here)."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol, overload

import numpy as np
import pyarrow as pa

from streamkit.errors import ConfigError, StreamkitError

if TYPE_CHECKING:
    import numpy.typing as npt

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("raw", pa.binary()),
        pa.field("partition", pa.string()),
        pa.field("position", pa.string()),
        pa.field("reason", pa.string()),
    ]
)
"""Dead letters as decoders return them (the engine appends ``batch_id``)."""

OnBadRecord = Literal["dead_letter", "fail"]


class BadRecordError(StreamkitError):
    """A record could not be decoded and ``on_bad_record="fail"`` was chosen."""

    def __init__(self, partition: str, position: str, reason: str) -> None:
        self.partition = partition
        self.position = position
        self.reason = reason
        super().__init__(
            f"bad record in partition {partition!r} at position {position!r}: {reason}. "
            "To keep the stream running and collect bad records in the dead-letter table, "
            "use on_bad_record='dead_letter' (the default)."
        )


class Positions(Sequence[str]):
    """Lazy position strings ``f"{prefix}{number}"`` (built only for dead letters)."""

    def __init__(self, numbers: Sequence[int] | npt.NDArray[np.int64], prefix: str = "") -> None:
        self._numbers = numbers
        self._prefix = prefix

    def __len__(self) -> int:
        return len(self._numbers)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):
            return [f"{self._prefix}{n}" for n in self._numbers[i]]
        return f"{self._prefix}{self._numbers[i]}"


class Repeat(Sequence[str]):
    """The same string ``n`` times (the partition of a single-partition batch)."""

    def __init__(self, value: str, n: int) -> None:
        self._value = value
        self._n = n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):
            return [self._value] * len(range(*i.indices(self._n)))
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._value


class BinaryColumn(Sequence[bytes]):
    """Payloads held as one Arrow binary column, read as a sequence of ``bytes`` (an
    element built when read). Decoders that read Arrow take :attr:`array` whole (no
    Python object per record); others see an ordinary ``Sequence[bytes]``."""

    def __init__(self, column: pa.Array | pa.ChunkedArray) -> None:
        if isinstance(column, pa.ChunkedArray):
            chunks = column.chunks
            column = chunks[0] if len(chunks) == 1 else column.combine_chunks()
        if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
            raise TypeError(f"BinaryColumn needs a binary column, got {column.type}")
        self.array: pa.Array = column
        """The payloads, one binary array (``binary`` or ``large_binary``)."""

    def __len__(self) -> int:
        return len(self.array)

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step < 0:  # a reversed slice: a list's own slicing of every value
                values: list[bytes] = self.array.to_pylist()
                return values[i]
            values = self.array.slice(start, max(0, stop - start)).to_pylist()
            return values[::step]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        value: bytes = self.array[i].as_py()
        return value

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.array.to_pylist())


@dataclass(frozen=True)
class RawRecords:
    """One micro-batch of raw records; the three sequences are parallel.

    ``partitions`` and ``positions`` are only read for dead letters, so they may be lazy
    (:class:`Repeat`, :class:`Positions`).
    """

    payloads: Sequence[bytes]
    """Raw record bytes (one JSON object per record for :class:`JsonDecoder`); may be a
    :class:`BinaryColumn` (an Arrow column, read as ``bytes`` only when indexed)."""
    partitions: Sequence[str]
    """Partition of each record (shard id, topic-partition, file)."""
    positions: Sequence[str]
    """Position of each record (sequence number, offset, ``file:line``)."""

    def __post_init__(self) -> None:
        n = len(self.payloads)
        if len(self.partitions) != n or len(self.positions) != n:
            raise ValueError(
                f"RawRecords needs parallel sequences; got {n} payloads, "
                f"{len(self.partitions)} partitions, {len(self.positions)} positions"
            )

    @classmethod
    def from_partition(
        cls, payloads: Sequence[bytes], partition: str, positions: Sequence[str]
    ) -> RawRecords:
        """Records that all come from one partition."""
        return cls(payloads, Repeat(partition, len(payloads)), positions)

    def __len__(self) -> int:
        return len(self.payloads)


class Decoded(NamedTuple):
    """What a decoder returns: rows in the decoder's schema, and the dead letters."""

    rows: pa.Table
    dead_letters: pa.Table


class Decoder(Protocol):
    """Turns raw records into rows and dead letters (see the module docstring)."""

    @property
    def schema(self) -> pa.Schema | None:
        """Schema of the rows; None until a schema-inferring decoder has seen data."""
        ...

    def decode(self, records: RawRecords) -> Decoded:
        """Decode one micro-batch."""
        ...


def keep_fields(schema: pa.Schema, names: Collection[str] | None) -> pa.Schema:
    """``schema`` with only the fields in ``names``, in schema order (None: all of them)."""
    if names is None:
        return schema
    return pa.schema([f for f in schema if f.name in names])


def empty_dead_letters() -> pa.Table:
    """A dead-letter table with no rows."""
    return DEAD_LETTER_SCHEMA.empty_table()


def dead_letters(records: RawRecords, rejects: Sequence[tuple[int, str]]) -> pa.Table:
    """Dead letters for ``(record number, reason)`` pairs, in record order."""
    ordered = sorted(rejects)
    idx = [i for i, _ in ordered]
    return pa.Table.from_arrays(
        [
            pa.array([records.payloads[i] for i in idx], pa.binary()),
            pa.array([records.partitions[i] for i in idx], pa.string()),
            pa.array([records.positions[i] for i in idx], pa.string()),
            pa.array([reason for _, reason in ordered], pa.string()),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )


def check_mode(on_bad_record: str) -> None:
    if on_bad_record not in ("dead_letter", "fail"):
        raise ConfigError(f"on_bad_record must be 'dead_letter' or 'fail', got {on_bad_record!r}")


def finish(
    records: RawRecords, rows: pa.Table, rejects: list[tuple[int, str]], mode: OnBadRecord
) -> Decoded:
    if rejects and mode == "fail":
        i, reason = min(rejects)
        raise BadRecordError(records.partitions[i], records.positions[i], reason)
    return Decoded(rows, dead_letters(records, rejects) if rejects else empty_dead_letters())
