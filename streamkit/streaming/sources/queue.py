"""An in-memory acknowledging source: a message queue with visibility, like SQS."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from streamkit.errors import ConfigError, SchemaError
from streamkit.streaming.contracts import AckBatch, PartitionProgress
from streamkit.streaming.decode import (
    Decoder,
    JsonDecoder,
    RawRecords,
    conform,
    empty_dead_letters,
)
from streamkit.streaming.sources.base import SourceBase

PARTITION = "queue"
"""The partition name of the queue's messages (progress, dead letters)."""


@dataclass(frozen=True)
class Receipt:
    """The ack token of one handed-out batch (like an SQS receipt handle)."""

    session: int
    """Which ``open`` of the queue handed the batch out."""
    number: int
    """The batch's number within the queue's life."""


@dataclass(frozen=True, eq=False)
class _Message:
    id: int
    """Message number in send order (dead letters' position)."""
    row: pa.Table | None = None
    """A one-row table (``add_rows``)."""
    payload: bytes | None = None
    """Raw bytes (``add_records``), decoded when handed out."""


@dataclass
class _Lease:
    messages: list[_Message]
    deadline: float | None
    """When the messages become visible again (None: only at the next ``open``)."""


class MemoryQueue(SourceBase[Receipt]):
    """An :class:`~streamkit.streaming.contracts.AcknowledgingSource` held in memory.

    Each row (``add_rows``) or raw payload (``add_records``, decoded when handed out, JSON
    by default: bad ones become dead letters) is one message. ``next_batch`` hands out up
    to ``max_messages_per_batch`` visible messages, oldest first, with a :class:`Receipt`;
    they are then invisible (in flight) until acknowledged. Delivery, as SQS's:

    - ``ack(receipt)`` deletes the batch's messages: they never come back;
    - a message in flight becomes visible again, ahead of newer ones, when its
      ``visibility_timeout`` (seconds on ``clock``; None: no timeout) passes, or when the
      queue is opened again (the consumer that held it is gone: crashed or closed);
    - so every message is delivered at least once; one whose ack comes too late is
      delivered twice. An ack for messages already visible again is ignored (counted in
      :attr:`stale_acks`).

    :attr:`commits` keeps the last receipts acknowledged. One consumer at a time; sends
    may come from any thread.
    """

    def __init__(
        self,
        schema: pa.Schema | None = None,
        decoder: Decoder | None = None,
        *,
        max_messages_per_batch: int | None = None,
        visibility_timeout: float | None = None,
        poll_interval: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if max_messages_per_batch is not None and max_messages_per_batch < 1:
            raise ConfigError("max_messages_per_batch must be positive (or None for no cap)")
        if decoder is not None and schema is not None and decoder.schema not in (None, schema):
            raise ConfigError("schema= differs from the decoder's schema; pass only one of them")
        self._decoder: Decoder = decoder or JsonDecoder(schema, check_types=False)
        self._cap, self._visibility = max_messages_per_batch, visibility_timeout
        self._poll, self._clock = poll_interval, clock
        self._lock = threading.Lock()
        self._visible: deque[_Message] = deque()
        self._in_flight: dict[Receipt, _Lease] = {}
        self._sent = self._batches = self._session = 0
        self.acked = 0
        """Messages deleted by an ack."""
        self.redelivered = 0
        """Messages made visible again after being handed out."""
        self.stale_acks = 0
        """Acks that came after their messages were visible again (ignored)."""

    @property
    def schema(self) -> pa.Schema:
        """The declared schema, or the decoder's once it has one."""
        schema = self._decoder.schema
        if schema is None:
            raise SchemaError("this MemoryQueue has no schema yet: pass schema=...")
        return schema

    @property
    def visible(self) -> int:
        """Messages waiting to be handed out."""
        with self._lock:
            return len(self._visible)

    @property
    def in_flight(self) -> int:
        """Messages handed out and not yet acknowledged."""
        with self._lock:
            return sum(len(lease.messages) for lease in self._in_flight.values())

    def add_rows(self, rows: pa.Table | Sequence[Mapping[str, Any]]) -> None:
        """Send each row as one message; checked against the schema now (SchemaError)."""
        table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
        table = conform(table, self.schema, what="add_rows")
        self._send([{"row": table.slice(i, 1)} for i in range(table.num_rows)])

    def add_records(self, payloads: Sequence[bytes]) -> None:
        """Send each payload as one message; decoded when handed out. :class:`ConfigError`
        when the schema has a field JSON cannot produce (map, duration, ...: fine for
        :meth:`add_rows`)."""
        if isinstance(self._decoder, JsonDecoder):
            self._decoder.require_json_types()
        self._send([{"payload": p} for p in payloads])

    def _send(self, messages: list[dict[str, Any]]) -> None:
        with self._lock:
            for fields in messages:
                self._visible.append(_Message(self._sent, **fields))
                self._sent += 1

    async def open(self) -> None:
        """Start a session: messages in flight from an earlier one are visible again."""
        self.clear_failure()
        with self._lock:
            self._session += 1
            self._requeue(list(self._in_flight))

    async def next_batch(self, max_wait: float) -> AckBatch[Receipt] | None:
        """Up to ``max_messages_per_batch`` visible messages (waiting up to ``max_wait`` s
        for one), now in flight under the returned receipt; None if none came."""
        self.raise_if_failed()
        deadline = self._clock() + max_wait
        while True:
            taken = self._take()
            remaining = deadline - self._clock()
            if taken is not None or remaining <= 0:
                break
            await asyncio.sleep(min(self._poll, remaining))
        if taken is None:
            return None
        receipt, messages = taken
        t0 = time.perf_counter()
        rows, dead = self._decode(messages)
        return AckBatch(
            rows=rows,
            dead_letters=dead,
            token=receipt,
            partitions=(PartitionProgress(PARTITION, records=len(messages)),),
            decode_seconds=time.perf_counter() - t0,
        )

    def _take(self) -> tuple[Receipt, list[_Message]] | None:
        with self._lock:
            now = self._clock()
            self._requeue([r for r, lease in self._in_flight.items() if _due(lease, now)])
            n = len(self._visible) if self._cap is None else min(self._cap, len(self._visible))
            if n == 0:
                return None
            messages = [self._visible.popleft() for _ in range(n)]
            receipt = Receipt(self._session, self._batches)
            self._batches += 1
            deadline = None if self._visibility is None else now + self._visibility
            self._in_flight[receipt] = _Lease(messages, deadline)
            return receipt, messages

    def _requeue(self, receipts: list[Receipt]) -> None:
        """Make the messages of ``receipts`` visible again, ahead of newer ones (locked)."""
        back = [m for r in receipts for m in self._in_flight.pop(r).messages]
        if back:
            self.redelivered += len(back)
            self._visible = deque(sorted([*back, *self._visible], key=lambda m: m.id))

    def _decode(self, messages: list[_Message]) -> tuple[pa.Table, pa.Table]:
        rows = [m.row for m in messages if m.row is not None]
        raw = [m for m in messages if m.payload is not None]
        dead = empty_dead_letters()
        if raw:
            payloads = [m.payload or b"" for m in raw]
            positions = [str(m.id) for m in raw]
            decoded = self._decoder.decode(
                RawRecords.from_partition(payloads, PARTITION, positions)
            )
            rows.append(decoded.rows)
            dead = decoded.dead_letters
        table = pa.concat_tables(rows).combine_chunks() if rows else self.schema.empty_table()
        return table, dead

    async def ack(self, token: Receipt) -> None:
        """Delete the messages handed out under ``token`` (durable on return: they never
        come back). Ordering: the engine calls this after the batch's sink write and
        ``commits/N``. A receipt whose messages are visible again (visibility timeout,
        reopen) is ignored and counted in :attr:`stale_acks`: they will be delivered again."""
        self.raise_if_failed()
        with self._lock:
            lease = self._in_flight.pop(token, None)
            if lease is None:
                self.stale_acks += 1
                return
            self.acked += len(lease.messages)
        self.record_commit(token)

    async def close(self) -> None:
        """End the session. Messages in flight stay invisible until the next ``open`` or
        their visibility timeout, as when a consumer dies."""


def _due(lease: _Lease, now: float) -> bool:
    return lease.deadline is not None and now >= lease.deadline
