"""A source task's cuts on record columns (:mod:`streamkit_kinesis.fleet.record_split`)
and :meth:`SourceTask.split` over them: what is dropped as committed, held for an exact
re-read and run, with KPL user records sharing a sequence number. Expected cuts are
computed here in plain Python over the (sequence, sub-sequence) pairs put in."""

from __future__ import annotations

import itertools

import pytest
from streamkit_kinesis.fleet import record_split as cut
from streamkit_kinesis.fleet.source_task import SourceTask
from streamkit_kinesis.fleet.two_phase import ReplayRange
from streamkit_kinesis.retrieval.record_columns import RecordColumns
from streamkit_kinesis.types import TRIM_HORIZON, ExtendedSequenceNumber, KinesisRecord, UserRecord

KEYS = [(9, 0), (10, 0), (20, 0), (20, 1), (20, 2), (99, 0), (100, 0), (100, 3), (1000, 0)]
"""(sequence number, sub-sequence number) of the records, in shard order: 20 and 100 are
KPL aggregates (user records share the number); 99/100/1000 cross a digit count."""


def records(keys: list[tuple[int, int]]) -> RecordColumns:
    objects: list[KinesisRecord] = [
        UserRecord(f"r{n}.{s}".encode(), "k", str(n), None, s) if n in (20, 100)
        else KinesisRecord(f"r{n}.{s}".encode(), "k", str(n), None, s)
        for n, s in keys
    ]  # fmt: skip
    return RecordColumns.from_records(objects)


def keys_of(columns: RecordColumns) -> list[tuple[int, int]]:
    return [(int(r.sequence_number), r.sub_sequence_number) for r in columns]


@pytest.mark.parametrize("skip", [None, 5, 9, 19, 20, 99, 100, 999, 1000, 5000])
def test_after_drops_what_was_committed(skip: int | None) -> None:
    expected = [k for k in KEYS if skip is None or k[0] > skip]
    assert keys_of(cut.after(records(KEYS), skip)) == expected


@pytest.mark.parametrize("end", [*KEYS, (15, 0), (20, 5), (100, 1), (5000, 0)])
def test_through_cuts_at_the_pending_checkpoint(end: tuple[int, int]) -> None:
    replay = ReplayRange(TRIM_HORIZON, ExtendedSequenceNumber(str(end[0]), end[1]))
    inside, tail = cut.through(replay, records(KEYS))
    assert keys_of(inside) == [k for k in KEYS if k <= end]
    assert keys_of(tail) == [k for k in KEYS if k > end]
    for n in range(len(KEYS) + 1):
        assert cut.reached(replay, records(KEYS[:n])) == (n > 0 and KEYS[n - 1] >= end)


class _Task(SourceTask):
    """Only the record-handling state of a source task (no context, no plan)."""

    def __init__(self) -> None:
        self.skip_to = None
        self.replay = None
        self.held = []


@pytest.mark.parametrize("size", [1, 2, 4])
@pytest.mark.parametrize("end", [(20, 1), (100, 0), (1000, 0), (20, 2)])
@pytest.mark.parametrize("skip", [None, 9])
def test_split_holds_the_re_read_then_runs_it_as_one_batch(
    size: int, end: tuple[int, int], skip: int | None
) -> None:
    """Delivered ``size`` records at a time: the records committed already are dropped,
    the re-read range is one batch, every later record is in a batch after it."""
    task = _Task()
    task.skip_to = skip
    task.replay = ReplayRange(TRIM_HORIZON, ExtendedSequenceNumber(str(end[0]), end[1]))
    batches: list[list[tuple[int, int]]] = []
    for i in range(0, len(KEYS), size):
        batches += [keys_of(b) for b in task.split(records(KEYS[i : i + size]))]
    fresh = [k for k in KEYS if skip is None or k[0] > skip]
    assert batches[0] == [k for k in fresh if k <= end]
    assert list(itertools.chain(*batches[1:])) == [k for k in fresh if k > end]
    assert not _pending(task)


def _pending(task: SourceTask) -> bool:
    """Whether a re-read is still due or records are still held."""
    return task.replay is not None or bool(task.held)
