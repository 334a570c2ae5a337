"""Source offsets: per shard id, the sequence number of the last record included (a decimal
string) or ``"SHARD_END"`` (every record of a closed shard is included). Pure functions."""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING

from streamkit.errors import ConfigError
from streamkit_kinesis.types import Sentinel

if TYPE_CHECKING:
    from collections.abc import Sequence

    from streamkit_kinesis.types import KinesisRecord

END = Sentinel.SHARD_END.value
"""The offset of a shard whose every record is included."""


def check_position(shard_id: str, value: str) -> str:
    """``value`` if it is a valid offset (decimal sequence number or SHARD_END), in
    Kinesis's canonical form (no leading zeros): positions are compared by length, then
    text, which orders canonical decimals only."""
    if value == END:
        return value
    if not (value.isascii() and value.isdigit()):
        raise ConfigError(
            f"offset {value!r} of shard {shard_id} is neither a sequence number nor "
            f"{END}; the checkpoint does not come from a Kinesis stream source"
        )
    return str(int(value))


def at_or_past(position: str | None, target: str | None) -> bool:
    """True when ``position`` includes everything up to ``target`` (None: nothing)."""
    if target is None:
        return True
    if position is None:
        return False
    if position == END:
        return True
    return target != END and int(position) >= int(target)


def later(a: str | None, b: str | None) -> str | None:
    """The further of two positions."""
    return a if at_or_past(a, b) else b


def up_to(records: Sequence[KinesisRecord], end: str | None) -> int:
    """How many of ``records`` (in shard order) are at or before ``end`` (None: none)."""
    if end is None:
        return 0
    counted = getattr(records, "count_at_or_before", None)
    if callable(counted):  # RecordColumns: vectorised, no record object
        return int(counted(end))
    return bisect_right(records, int(end), key=lambda r: int(r.sequence_number))
