"""A minimal protobuf writer for the KPL's ``AggregatedRecord`` (the inverse of
:mod:`.protobuf`), and the framing around it (magic, MD5 trailer).

:class:`AggregateBuilder` adds user records one at a time and knows the exact size of the
framed record before it is built, so a caller can stop before a size limit. Field order
is tables first, then records (inside a record: key index, hash key index, data); table
entries are written as keys are first seen, so partition-key and hash-key entries may
interleave. Protobuf readers accept that (a repeated field's entries need not be
contiguous; the Java KCL reads it, see the peer test), though a protobuf writer would emit
each table in one run. Tags are never written.
"""

from __future__ import annotations

import hashlib

from streamkit_kinesis.kpl.deaggregate import DIGEST_SIZE, MAGIC

PK_TABLE, EHK_TABLE, RECORD = b"\x0a", b"\x12", b"\x1a"
"""Field keys of ``AggregatedRecord``: fields 1, 2, 3, wire type 2 (length-delimited)."""
PK_INDEX, EHK_INDEX, DATA = b"\x08", b"\x10", b"\x1a"
"""Field keys of ``Record``: fields 1 and 2 as varints, field 3 length-delimited."""
FRAMING = len(MAGIC) + DIGEST_SIZE
"""Bytes the magic and the MD5 trailer add to the protobuf message."""


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf base-128 varint."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_size(value: int) -> int:
    """Length in bytes of ``varint(value)``."""
    return max(1, (value.bit_length() + 6) // 7)


def _field_size(length: int) -> int:
    """Size of a length-delimited field with a one-byte key and ``length`` bytes of value."""
    return 1 + varint_size(length) + length


class AggregateBuilder:
    """Collects user records into one ``AggregatedRecord``; :meth:`build` frames it.

    Partition keys and explicit hash keys are stored once each in their tables; records
    keep the order they were added in (their sub-sequence order once written).
    """

    __slots__ = ("_ehk_index", "_parts", "_pk_index", "_tables", "count", "size")

    def __init__(self) -> None:
        self._pk_index: dict[str, int] = {}
        self._ehk_index: dict[str, int] = {}
        self._tables: list[bytes] = []
        self._parts: list[bytes] = []
        self.count = 0
        """User records added."""
        self.size = FRAMING
        """Exact length of what :meth:`build` returns now."""

    def size_with(self, data: bytes, partition_key: str, explicit_hash_key: str | None) -> int:
        """The framed size once this record is added (nothing is added)."""
        return self.size + self._growth(len(data), partition_key, explicit_hash_key)

    def add(self, data: bytes, partition_key: str, explicit_hash_key: str | None) -> None:
        """Append one user record."""
        self.size += self._growth(len(data), partition_key, explicit_hash_key)
        pk = self._pk_index.get(partition_key)
        if pk is None:
            pk = self._pk_index[partition_key] = len(self._pk_index)
            raw = partition_key.encode()
            self._tables += (PK_TABLE, varint(len(raw)), raw)
        body = [PK_INDEX, varint(pk)]
        if explicit_hash_key is not None:
            ehk = self._ehk_index.get(explicit_hash_key)
            if ehk is None:
                ehk = self._ehk_index[explicit_hash_key] = len(self._ehk_index)
                raw = explicit_hash_key.encode()
                self._tables += (EHK_TABLE, varint(len(raw)), raw)
            body += (EHK_INDEX, varint(ehk))
        body += (DATA, varint(len(data)), data)
        inner = b"".join(body)
        self._parts += (RECORD, varint(len(inner)), inner)
        self.count += 1

    def build(self) -> bytes:
        """The aggregated record: magic, the protobuf message, its MD5."""
        message = b"".join((*self._tables, *self._parts))
        return b"".join((MAGIC, message, hashlib.md5(message, usedforsecurity=False).digest()))

    def _growth(self, length: int, partition_key: str, explicit_hash_key: str | None) -> int:
        """Bytes one more record adds: its Record field, plus new table entries."""
        pk = self._pk_index.get(partition_key)
        grow = 0
        if pk is None:
            pk = len(self._pk_index)
            grow += _field_size(len(partition_key.encode()))
        inner = 1 + varint_size(pk) + _field_size(length)
        if explicit_hash_key is not None:
            ehk = self._ehk_index.get(explicit_hash_key)
            if ehk is None:
                ehk = len(self._ehk_index)
                grow += _field_size(len(explicit_hash_key))  # decimal digits: ASCII
            inner += 1 + varint_size(ehk)
        return grow + _field_size(inner)
