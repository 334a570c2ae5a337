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
    for i in range(pos, min(end, pos + 10)):
        byte = buf[i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i + 1
        shift += 7
    raise ProtobufError(f"truncated or overlong varint at byte {pos}")


def _fields(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int | bytes]]:
    """The (field number, wire type, value) triples of the message in ``buf[pos:end]``:
    an int for varints and fixed fields, a slice for length-delimited ones."""
    out: list[tuple[int, int, int | bytes]] = []
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError(f"field number 0 at byte {pos}")
        if wire == VARINT:
            value, pos = _varint(buf, pos, end)
            out.append((number, wire, value))
        elif wire == LENGTH_DELIMITED:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise ProtobufError(f"field {number} runs {pos + size - end} bytes past the end")
            out.append((number, wire, buf[pos : pos + size]))
            pos += size
        elif wire in (FIXED64, FIXED32):
            width = 8 if wire == FIXED64 else 4
            if pos + width > end:
                raise ProtobufError(f"fixed field {number} is truncated")
            out.append((number, wire, int.from_bytes(buf[pos : pos + width], "little")))
            pos += width
        else:
            raise ProtobufError(f"unsupported wire type {wire} for field {number}")
    return out


def _text(value: int | bytes, what: str) -> str:
    if not isinstance(value, bytes):
        raise ProtobufError(f"{what} is not length-delimited")
    try:
        return value.decode()
    except UnicodeDecodeError as e:
        raise ProtobufError(f"{what} is not UTF-8") from e


def _uint(wire: int, value: int | bytes, what: str) -> int:
    if wire != VARINT or not isinstance(value, int):
        raise ProtobufError(f"{what} is not a varint")
    return value


def _record(body: bytes) -> SubRecord:
    pk: int | None = None
    ehk: int | None = None
    data: bytes | None = None
    for number, wire, value in _fields(body, 0, len(body)):
        if number == 1:
            pk = _uint(wire, value, "partition_key_index")
        elif number == 2:
            ehk = _uint(wire, value, "explicit_hash_key_index")
        elif number == 3:
            if not isinstance(value, bytes):
                raise ProtobufError("record data is not length-delimited")
            data = value
    if pk is None or data is None:
        raise ProtobufError("record lacks its required partition_key_index or data")
    return SubRecord(pk, ehk, data)


def parse_aggregated(buf: bytes) -> Aggregated:
    """Decode an ``AggregatedRecord`` (the bytes between the magic and the MD5 trailer).

    Raises :class:`ProtobufError` on malformed bytes, a missing required field, or a table
    index that points past its table.
    """
    keys: list[str] = []
    hashes: list[str] = []
    records: list[SubRecord] = []
    for number, _wire, value in _fields(buf, 0, len(buf)):
        if number == 1:
            keys.append(_text(value, "partition key"))
        elif number == 2:
            hashes.append(_text(value, "explicit hash key"))
        elif number == 3:
            if not isinstance(value, bytes):
                raise ProtobufError("records entry is not length-delimited")
            records.append(_record(value))
    for r in records:
        if r.partition_key_index >= len(keys):
            raise ProtobufError(f"partition key index {r.partition_key_index} out of range")
        if r.explicit_hash_key_index is not None and r.explicit_hash_key_index >= len(hashes):
            raise ProtobufError(f"explicit hash key index {r.explicit_hash_key_index} out of range")
    return Aggregated(keys, hashes, records)
