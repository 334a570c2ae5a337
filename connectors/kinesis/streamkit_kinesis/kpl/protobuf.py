"""A minimal protobuf reader for the KPL's ``AggregatedRecord`` message.

Only what the KPL format needs: varints and length-delimited fields, with unknown fields of
any valid wire type skipped (as protobuf readers do). Payloads are returned as slices of
the input, never copied byte by byte. Any malformed input raises :class:`ProtobufError`.

The message (KPL ``messages.proto``)::

    AggregatedRecord { repeated string partition_key_table = 1;
                       repeated string explicit_hash_key_table = 2;
                       repeated Record records = 3; }
    Record { required uint64 partition_key_index = 1;
             optional uint64 explicit_hash_key_index = 2;
             required bytes data = 3;
             repeated Tag tags = 4; }
"""

from __future__ import annotations

from dataclasses import dataclass

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    """The bytes are not a well-formed ``AggregatedRecord``."""


@dataclass(frozen=True, slots=True)
class SubRecord:
    """One user record inside an aggregated record, as encoded."""

    partition_key_index: int
    """Index into the partition key table."""
    explicit_hash_key_index: int | None
    """Index into the explicit hash key table, if the record has one."""
    data: bytes
    """The user payload."""


@dataclass(frozen=True, slots=True)
class Aggregated:
    """A decoded ``AggregatedRecord`` (tags are skipped: KCL does not surface them)."""

    partition_keys: list[str]
    """The partition key table."""
    explicit_hash_keys: list[str]
    """The explicit hash key table."""
    records: list[SubRecord]
    """The user records, in sub-sequence order."""


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it (at most 10 bytes)."""
    result = shift = 0
    for i in range(pos, end if end < pos + 10 else pos + 10):
        byte = buf[i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i + 1
        shift += 7
    raise ProtobufError(f"truncated or overlong varint at byte {pos}")


def _skip(buf: bytes, pos: int, end: int, number: int, wire: int) -> int:
    """The position after an unknown field's value (its wire type must be valid)."""
    if wire == VARINT:
        return _varint(buf, pos, end)[1]
    if wire == LENGTH_DELIMITED:
        size, pos = _varint(buf, pos, end)
        width = size
    elif wire in (FIXED64, FIXED32):
        width = 8 if wire == FIXED64 else 4
    else:
        raise ProtobufError(f"unsupported wire type {wire} for field {number}")
    if pos + width > end:
        raise ProtobufError(f"field {number} runs {pos + width - end} bytes past the end")
    return pos + width


def _length(buf: bytes, pos: int, end: int, number: int) -> tuple[int, int]:
    """The bounds ``(start, stop)`` of a length-delimited value at ``pos``."""
    byte = buf[pos] if pos < end else 0x80
    size, pos = (byte, pos + 1) if byte < 0x80 else _varint(buf, pos, end)
    if pos + size > end:
        raise ProtobufError(f"field {number} runs {pos + size - end} bytes past the end")
    return pos, pos + size


def _record(buf: bytes, pos: int, end: int) -> SubRecord:
    """The ``Record`` message in ``buf[pos:end]`` (single-byte varints take a fast path)."""
    pk: int | None = None
    ehk: int | None = None
    data: bytes | None = None
    while pos < end:
        key = buf[pos]
        key, pos = (key, pos + 1) if key < 0x80 else _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number in (1, 2) and wire == VARINT:
            byte = buf[pos] if pos < end else 0x80
            value, pos = (byte, pos + 1) if byte < 0x80 else _varint(buf, pos, end)
            if number == 1:
                pk = value
            else:
                ehk = value
        elif number == 3 and wire == LENGTH_DELIMITED:
            start, pos = _length(buf, pos, end, number)
            data = buf[start:pos]
        elif number in (1, 2, 3) or number == 0:
            raise ProtobufError(f"record field {number} has wire type {wire}")
        else:
            pos = _skip(buf, pos, end, number, wire)
    if pk is None or data is None:
        raise ProtobufError("record lacks its required partition_key_index or data")
    return SubRecord(pk, ehk, data)


def _text(buf: bytes, start: int, stop: int, what: str) -> str:
    try:
        return buf[start:stop].decode()
    except UnicodeDecodeError as e:
        raise ProtobufError(f"{what} is not UTF-8") from e


def parse_aggregated(buf: bytes) -> Aggregated:
    """Decode an ``AggregatedRecord`` (the bytes between the magic and the MD5 trailer).

    Raises :class:`ProtobufError` on malformed bytes, a missing required field, or a table
    index that points past its table.
    """
    keys: list[str] = []
    hashes: list[str] = []
    records: list[SubRecord] = []
    pos, end = 0, len(buf)
    while pos < end:
        key = buf[pos]
        key, pos = (key, pos + 1) if key < 0x80 else _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number in (1, 2, 3) and wire == LENGTH_DELIMITED:
            start, pos = _length(buf, pos, end, number)
            if number == 3:
                records.append(_record(buf, start, pos))
            elif number == 1:
                keys.append(_text(buf, start, pos, "partition key"))
            else:
                hashes.append(_text(buf, start, pos, "explicit hash key"))
        elif number in (1, 2, 3) or number == 0:
            raise ProtobufError(f"field {number} has wire type {wire}")
        else:
            pos = _skip(buf, pos, end, number, wire)
    _check_indexes(records, len(keys), len(hashes))
    return Aggregated(keys, hashes, records)


def _check_indexes(records: list[SubRecord], keys: int, hashes: int) -> None:
    if any(r.partition_key_index >= keys for r in records):
        raise ProtobufError(f"a partition key index is past the table of {keys}")
    if any(r.explicit_hash_key_index is not None and r.explicit_hash_key_index >= hashes
           for r in records):  # fmt: skip
        raise ProtobufError(f"an explicit hash key index is past the table of {hashes}")
