"""A source task's cuts of the records it is handed, on Arrow columns
(:class:`~streamkit_kinesis.retrieval.record_columns.RecordColumns`): no record object per
record (issue 15 item 1).

Records of one shard come in shard order, by (sequence number, sub-sequence number)
ascending, so every cut here is a prefix: :func:`after` drops those committed already,
:func:`through` splits off an exact re-read's range
(:class:`~streamkit_kinesis.fleet.two_phase.ReplayRange`), :func:`reached` tells whether
that range is complete."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow.compute as pc

from streamkit_kinesis.retrieval.record_columns import RecordColumns

if TYPE_CHECKING:
    from collections.abc import Sequence

    from streamkit_kinesis.fleet.two_phase import ReplayRange
    from streamkit_kinesis.types import KinesisRecord


def columns(records: Sequence[KinesisRecord]) -> RecordColumns:
    """``records`` as columns (as they are when a reader delivered them: no copy)."""
    return RecordColumns.from_records(records)


def after(records: RecordColumns, skip_to: int | None) -> RecordColumns:
    """The records whose sequence number is greater than ``skip_to`` (None: all)."""
    if skip_to is None or not len(records):
        return records
    return records.part(records.count_at_or_before(str(skip_to)))


def through(replay: ReplayRange, records: RecordColumns) -> tuple[RecordColumns, RecordColumns]:
    """``records`` (read after ``replay.after``) split into those at or before
    ``replay.through`` (by sequence and sub-sequence number) and those after it."""
    end = replay.through
    upto = records.count_at_or_before(end.sequence_number)
    head = records.part(0, upto)
    same = int(pc.sum(pc.equal(head.sequence_numbers, end.sequence_number)).as_py() or 0)
    subs = head.table.column("sub_sequence_number").slice(upto - same)
    inside = upto - same + int(pc.sum(pc.less_equal(subs, end.sub_sequence_number)).as_py() or 0)
    return records.part(0, inside), records.part(inside)


def reached(replay: ReplayRange, held: RecordColumns) -> bool:
    """True once ``held`` (read so far, in order) reaches ``replay.through``."""
    if not len(held):
        return False
    last = held.table.slice(len(held) - 1).select(["sequence_number", "sub_sequence_number"])
    (row,) = last.to_pylist()
    key = (int(row["sequence_number"]), int(row["sub_sequence_number"]))
    return key >= (replay.through.as_int(), replay.through.sub_sequence_number)
