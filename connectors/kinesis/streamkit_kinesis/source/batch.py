"""What a micro-batch of the stream source carries besides its offsets: the decoded rows
and dead letters (one decoder call per batch), and per-shard progress records
(``last_progress``, the CLI)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

import pyarrow as pa

from streamkit.streaming.contracts import PartitionProgress
from streamkit.streaming.decode import BinaryColumn, RawRecords, decode_off_loop
from streamkit_kinesis.retrieval.record_columns import RecordColumns
from streamkit_kinesis.retry import BACKING_OFF
from streamkit_kinesis.source.positions import END

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from streamkit.streaming.decode import Decoder
    from streamkit_kinesis.consumer import KinesisConsumer
    from streamkit_kinesis.consumer.metrics import ConsumerMetrics
    from streamkit_kinesis.retry import Health
    from streamkit_kinesis.source.buffers import ShardBuffers
    from streamkit_kinesis.source.health import TrackedFetchers
    from streamkit_kinesis.types import KinesisRecord


async def decode_taken(
    decoder: Decoder, taken: Mapping[str, Sequence[KinesisRecord]]
) -> tuple[pa.Table, pa.Table]:
    """Rows and dead letters of the records taken (partition = shard id, position =
    sequence number), in one decoder call off the event loop. Columns
    (:class:`RecordColumns`) go in without a record object or a ``bytes`` per record: the
    payloads as the Arrow binary column (:class:`BinaryColumn`, which the JSON and raw
    decoders read whole and a user decoder reads as ``bytes``), the shard ids and
    positions read from Arrow columns only for dead letters."""
    columns = {shard: RecordColumns.from_records(records) for shard, records in taken.items()}
    shards = [pa.repeat(pa.scalar(s, pa.string()), len(c)) for s, c in columns.items()]
    partitions = ArrowStrings(pa.chunked_array(shards, pa.string()))
    joined = RecordColumns.concat(list(columns.values()))
    payloads = BinaryColumn(joined.data)
    positions = ArrowStrings(joined.sequence_numbers)
    decoded = await decode_off_loop(decoder, RawRecords(payloads, partitions, positions))
    return decoded.rows, decoded.dead_letters


class ArrowStrings(Sequence[str]):
    """An Arrow string column read as a sequence (an element built when read)."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        self._column = column

    def __len__(self) -> int:
        return len(self._column)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            values: list[str] = self._column.slice(start, max(0, stop - start)).to_pylist()
            return values[::step]
        value: str = self._column[i].as_py()
        return value


def batch_progress(
    consumer: KinesisConsumer,
    buffers: ShardBuffers,
    readers: TrackedFetchers,
    worker_id: str,
    taken: Mapping[str, Collection[KinesisRecord]],
) -> tuple[PartitionProgress, ...]:
    """One entry per shard held here or in the batch: rows taken, lag (the reader's, else
    the last delivery's), owner, and the reader's health."""
    held = consumer.held_shard_ids()
    metrics = consumer.metrics()
    out = []
    for shard_id in sorted(held | set(taken)):
        lag = metrics.shard(shard_id).millis_behind_latest
        if lag is None:
            lag = buffers.state(shard_id).lag_ms
        health = readers.health(shard_id)
        out.append(
            PartitionProgress(
                shard_id,
                len(taken.get(shard_id, ())),
                lag,
                worker_id if shard_id in held else None,
                health.state,
                health.consecutive_errors,
                health.last_error,
            )
        )
    return tuple(out)


def stalled(
    health: Mapping[str, Health], held: Collection[str], worker_id: str
) -> tuple[PartitionProgress, ...]:
    """The shards backing off now, as progress entries."""
    return tuple(
        PartitionProgress(
            shard_id,
            0,
            None,
            worker_id if shard_id in held else None,
            h.state,
            h.consecutive_errors,
            h.last_error,
        )
        for shard_id, h in sorted(health.items())
        if h.state == BACKING_OFF
    )


def declared_shards(
    held: Collection[str], buffers: ShardBuffers, metrics: ConsumerMetrics
) -> tuple[frozenset[str], frozenset[str]]:
    """(open, ended) for the per-partition watermarks: the shards held here whose
    SHARD_END was not handed to the engine yet, less those with nothing to deliver (read
    to the tip with no record so far: their next records are new); and the shards whose
    SHARD_END was handed over (every record of the shard is in a batch).

    O(held + shards) per call: one pass over the buffers, and for each held shard one
    lookup in the buffers' dict and one in the metrics snapshot's index
    (:attr:`~.ConsumerMetrics.by_shard`, built once per snapshot), never a scan of
    every shard per held shard."""
    ended = frozenset(s for s, state in buffers.shards.items() if state.handed == END)

    def empty(shard_id: str) -> bool:
        read = metrics.shard(shard_id)
        state = buffers.shards.get(shard_id)
        queued = state is not None and bool(state.queue)
        return read.millis_behind_latest == 0 and read.records == 0 and not queued

    return frozenset(s for s in held if s not in ended and not empty(s)), ended
