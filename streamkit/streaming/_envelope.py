"""Checksums for checkpoint files (private).

- A JSON file (offsets, commits) stays a plain JSON object, readable by any tool, with one
  more key: ``"checksum": "crc32:<hex>"`` over the object's canonical form (sorted keys, no
  spaces) without that key. A cut file is no longer JSON; a garbled one that still parses
  has other values, so its checksum no longer matches.
- A binary file (state, Arrow IPC) is one header line ``SKCK1 <crc32 hex> <length>\\n``
  then the body; the length catches a cut or extended file, the checksum garbling.

Files written before checksums (a JSON object without the key; IPC without the header,
which starts with ``ARROW1``) are returned as they are, for their parser to judge.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

MAGIC = b"SKCK1 "
KEY = "checksum"


def _canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def seal_json(value: dict[str, Any]) -> bytes:
    """``value`` as JSON with its checksum key."""
    return json.dumps({**value, KEY: f"crc32:{zlib.crc32(_canonical(value)):08x}"}).encode()


def open_json(data: bytes, where: str, error: type[Exception]) -> dict[str, Any]:
    """The verified JSON object of a file (without the checksum key); raises ``error``
    naming ``where`` when it is not a JSON object or its checksum does not match."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise error(f"{where} is damaged (not JSON: {exc})") from None
    if not isinstance(value, dict):
        raise error(f"{where} is damaged (not a JSON object)")
    stored = value.pop(KEY, None)
    if stored is not None and stored != f"crc32:{zlib.crc32(_canonical(value)):08x}":
        raise error(f"{where} is damaged (checksum mismatch)")
    return value


def seal(body: bytes) -> bytes:
    """``body`` behind its checksum header."""
    return b"%s%08x %d\n%s" % (MAGIC, zlib.crc32(body), len(body), body)


def open_(data: bytes, where: str, error: type[Exception]) -> bytes:
    """The verified body of a sealed binary file (or a legacy file as it is); raises
    ``error`` naming ``where`` when the header, length or checksum does not match."""
    if not data.startswith(MAGIC):
        return data
    header, newline, body = data.partition(b"\n")
    fields = header[len(MAGIC) :].split(b" ")
    try:
        crc, length = int(fields[0], 16), int(fields[1])
    except (IndexError, ValueError):
        raise error(f"{where} is damaged (bad checksum header)") from None
    if not newline or len(body) != length:
        raise error(f"{where} is damaged (cut or extended: {len(body)} bytes, not {length})")
    if zlib.crc32(body) != crc:
        raise error(f"{where} is damaged (checksum mismatch)")
    return body
