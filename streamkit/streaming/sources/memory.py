"""An in-memory, replayable stream for tests and examples."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from streamkit.errors import ConfigError, SchemaError
from streamkit.streaming.contracts import Offsets, PartitionProgress, SourceBatch
from streamkit.streaming.decode import (
    Decoded,
    Decoder,
    JsonDecoder,
    Positions,
    RawRecords,
    conform,
    empty_dead_letters,
)
from streamkit.streaming.sources.base import SourceBase


@dataclass(frozen=True, eq=False)
class _Segment:
    """What one ``add_rows`` / ``add_records`` call appended to a partition."""

    start: int
    """Record number of the segment's first record in its partition."""
    rows: pa.Table | None = None
    """Decoded rows (``add_rows``)."""
    payloads: Sequence[bytes] | None = None
    """Raw payloads (``add_records``), decoded when read."""

    @property
    def end(self) -> int:
        return self.start + (
            self.rows.num_rows if self.rows is not None else len(self.payloads or ())
        )


class MemoryStream(SourceBase[dict[str, str]]):
    """A replayable source held in memory: partitions ``"0"``, ``"1"``, ... of appended records.

    ``add_rows`` appends decoded rows; ``add_records`` appends raw payloads that go through
    the decoder when read (JSON by default), so bad records reach the dead-letter path.
    Offsets are, per partition, the number of the next record to read (a decimal string).
    By default all data is kept, so ``open(offsets)`` replays exactly the records after
    ``offsets``, in partition order, and memory grows with everything ever added. With
    ``keep_committed=False`` a commit drops the appends wholly at or before the committed
    offsets (a query commits after its checkpoint holds the batch), so memory is bounded
    by what is not committed yet; such a stream feeds one query at a time, and opening it
    before its first kept record raises :class:`ConfigError`. Appends may come from any
    thread. :attr:`commits` holds the last 16
    offsets mappings passed to :meth:`commit` (:class:`SourceBase`).

    Every query started on the stream reads it through :meth:`reader`, with a position of its
    own: two queries each see every record, as with Spark's ``MemoryStream``.
    """

    _shared_decoder: Decoder

    def __init__(
        self,
        schema: pa.Schema | None = None,
        partitions: int = 1,
        decoder: Decoder | None = None,
        *,
        max_records_per_batch: int | None = None,
        poll_interval: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
        keep_committed: bool = True,
    ) -> None:
        super().__init__()
        self._root = self
        """The stream that holds the data (``self``, or the stream a reader was made from)."""
        if partitions < 1:
            raise ConfigError(f"a MemoryStream needs at least one partition, got {partitions}")
        if max_records_per_batch is not None and max_records_per_batch < 1:
            raise ConfigError("max_records_per_batch must be positive (or None for no cap)")
        if decoder is not None and schema is not None and decoder.schema not in (None, schema):
            raise ConfigError("schema= differs from the decoder's schema; pass only one of them")
        self._decoder: Decoder = decoder or JsonDecoder(schema, check_types=False)
        self._default_decoder = decoder is None
        self._cap = max_records_per_batch
        self._poll = poll_interval
        self._clock = clock
        self._keep_committed = keep_committed
        self._lock = threading.Lock()
        self._segments: list[list[_Segment]] = [[] for _ in range(partitions)]
        self._sizes = [0] * partitions
        self._first = [0] * partitions
        """Record number of each partition's first kept record (above 0 once commits drop)."""
        self._next = [0] * partitions
        self._bound: dict[str, str] | None = None
        """While set (exact replay after a restart), no batch reads past these offsets."""
        self.closed = False
        self._held = False
        """Whether a query reads this stream itself (the next one gets a twin reader)."""

    def reader(self) -> MemoryStream:
        """What one more query reads: the stream itself while no query holds it (released
        by :meth:`close`), else a twin over the same records with a position of its own;
        appends to either are seen by both, and a twin's commits and close are also
        recorded on the stream."""
        root = self._root
        if not root._held:
            root._held = True
            return root
        if not root._keep_committed:
            raise ConfigError(
                "a MemoryStream with keep_committed=False feeds one query at a time "
                "(its commits drop records another query may not have read)"
            )
        twin = copy.copy(root)
        SourceBase.__init__(twin)
        twin._next = [0] * len(root._sizes)
        twin._bound = None
        twin.closed = False
        return twin

    @property
    def _decoder(self) -> Decoder:
        """The stream's decoder (set on the stream that holds the data, seen by its readers)."""
        return self._root._shared_decoder

    @_decoder.setter
    def _decoder(self, decoder: Decoder) -> None:
        self._root._shared_decoder = decoder

    @property
    def partition_ids(self) -> list[str]:
        """``["0", "1", ...]``."""
        return [str(i) for i in range(len(self._sizes))]

    @property
    def schema(self) -> pa.Schema:
        """The declared schema, the first added table's, or one inferred from added JSON."""
        schema = self._decoder.schema
        if schema is None and isinstance(self._decoder, JsonDecoder):
            schema = self._decoder.infer_schema(self._first_payloads())
        if schema is None:
            raise SchemaError(
                "this MemoryStream has no schema yet: pass schema=..., or add rows/records "
                "before the schema is needed (building a query reads it)"
            )
        return schema

    def add_rows(
        self, rows: pa.Table | pa.RecordBatch | Sequence[Mapping[str, Any]], partition: int = 0
    ) -> None:
        """Append decoded rows to ``partition``; checked against the schema now (SchemaError)."""
        known = self._decoder.schema
        if not isinstance(rows, pa.Table | pa.RecordBatch):
            rows = pa.Table.from_pylist(list(rows), schema=known)
        if known is None and self._default_decoder:
            table = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
            decoder = JsonDecoder(table.schema, check_types=False)
            if self._first_payloads():  # records added before: decoded under this schema
                decoder.require_json_types()
            self._decoder = decoder
            known = table.schema
        if known is None:
            raise SchemaError("the decoder has no schema yet; add records first or pass schema=")
        self._append(partition, rows=conform(rows, known, what="add_rows"))

    def add_records(self, payloads: Sequence[bytes], partition: int = 0) -> None:
        """Append raw payloads to ``partition``; they are decoded when a batch is read.
        :class:`ConfigError` when the schema has a field JSON cannot produce (map, duration,
        ...: fine for :meth:`add_rows`)."""
        if isinstance(self._decoder, JsonDecoder):
            self._decoder.require_json_types()
        self._append(partition, payloads=list(payloads))

    def _append(self, partition: int, **data: Any) -> None:
        if not 0 <= partition < len(self._sizes):
            raise ConfigError(f"partition {partition} does not exist (0..{len(self._sizes) - 1})")
        with self._lock:
            segment = _Segment(self._sizes[partition], **data)
            if segment.end > segment.start:
                self._segments[partition].append(segment)
                self._sizes[partition] = segment.end

    def _first_payloads(self) -> Sequence[bytes]:
        with self._lock:
            for segments in self._segments:
                for segment in segments:
                    if segment.payloads:
                        return segment.payloads
        return []

    async def open(self, offsets: Offsets | None) -> None:
        """Read after ``offsets`` (None: from the first record of every partition)."""
        offsets = offsets or {}
        unknown = set(offsets) - set(self.partition_ids)
        if unknown:
            raise ConfigError(f"offsets name partitions this stream lacks: {sorted(unknown)}")
        with self._lock:
            for i, pid in enumerate(self.partition_ids):
                position = int(offsets.get(pid, "0"))
                if not 0 <= position <= self._sizes[i]:
                    raise ConfigError(f"offset {position} is past the end of partition {pid}")
                if position < self._first[i]:
                    raise ConfigError(
                        f"partition {pid}'s records before {self._first[i]} were dropped when "
                        f"committed (keep_committed=False); cannot read from {position}"
                    )
                self._next[i] = position

    async def next_batch(self, max_wait: float) -> SourceBatch | None:
        """Everything after the last batch (at most ``max_records_per_batch`` per partition),
        waiting up to ``max_wait`` s for data; None if nothing arrived."""
        self.raise_if_failed()
        deadline = self._clock() + max_wait
        while True:
            batch = self._take()
            remaining = deadline - self._clock()
            if batch is not None or remaining <= 0:
                return batch
            await asyncio.sleep(min(self._poll, remaining))

    def _take(self) -> SourceBatch | None:
        t0 = time.perf_counter()
        with self._lock:
            ranges = []
            for i, size in enumerate(self._sizes):
                end = size if self._cap is None else min(size, self._next[i] + self._cap)
                if self._bound is not None:
                    end = max(self._next[i], min(end, int(self._bound.get(str(i), "0"))))
                ranges.append((i, self._next[i], end, list(self._segments[i])))
        if all(start == end for _, start, end, _ in ranges):
            return None
        t1 = time.perf_counter()
        rows: list[pa.Table] = []
        dead: list[pa.Table] = []
        progress = []
        for i, start, end, segments in ranges:
            for segment in segments:
                lo, hi = max(start, segment.start), min(end, segment.end)
                if lo < hi:
                    decoded = self._read(str(i), segment, lo, hi)
                    rows += [decoded.rows] if decoded.rows.num_rows else []
                    dead += [decoded.dead_letters] if decoded.dead_letters.num_rows else []
            progress.append(PartitionProgress(str(i), records=end - start))
        with self._lock:
            for i, _, end, _ in ranges:
                self._next[i] = end
            offsets = {str(i): str(n) for i, n in enumerate(self._next)}
        return SourceBatch(
            rows=pa.concat_tables(rows) if rows else self._empty_rows(),
            dead_letters=pa.concat_tables(dead) if dead else empty_dead_letters(),
            end_offsets=offsets,
            partitions=tuple(progress),
            fetch_seconds=t1 - t0,
            decode_seconds=time.perf_counter() - t1,
        )

    def _read(self, pid: str, segment: _Segment, lo: int, hi: int) -> Decoded:
        first = lo - segment.start
        if segment.rows is not None:
            return Decoded(segment.rows.slice(first, hi - lo), empty_dead_letters())
        assert segment.payloads is not None
        payloads = segment.payloads[first : first + hi - lo]
        records = RawRecords.from_partition(payloads, pid, Positions(range(lo, hi)))
        return self._decoder.decode(records)

    def _empty_rows(self) -> pa.Table:
        return (self._decoder.schema or pa.schema([])).empty_table()

    def bound(self, target: Offsets | None) -> None:
        """No batch reads past ``target`` until ``bound(None)`` (exact replay)."""
        self._bound = dict(target) if target is not None else None

    async def end_offsets(self) -> Offsets:
        """The number of records in every partition now."""
        with self._lock:
            return {str(i): str(n) for i, n in enumerate(self._sizes)}

    def reached(self, offsets: Offsets, target: Offsets) -> bool:
        """True when every partition of ``offsets`` is at or past ``target`` (numerically)."""
        return all(int(offsets.get(p, "0")) >= int(v) for p, v in target.items())

    async def commit(self, offsets: Offsets) -> None:
        """Record ``offsets`` in :attr:`commits`; with ``keep_committed=False``, drop the
        appends that end at or before them."""
        self.record_commit(dict(offsets))
        if self._root is not self:
            self._root.record_commit(dict(offsets))
        if not self._keep_committed:
            self._drop_committed(offsets)

    def _drop_committed(self, offsets: Offsets) -> None:
        with self._lock:
            for i, segments in enumerate(self._segments):
                done = int(offsets.get(str(i), "0"))
                drop = 0
                while drop < len(segments) and segments[drop].end <= done:
                    drop += 1
                if drop:
                    self._first[i] = segments[drop - 1].end
                    del segments[:drop]

    async def close(self) -> None:
        """Nothing to release; the data stays readable."""
        self.closed = True
        self._root.closed = True
        if self._root is self:
            self._held = False
