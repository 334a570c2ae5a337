"""A source task of the fleet reduced to its exchange step, as its own process.

    python .../fleet/two_phase_proc.py --endpoint URL --stream S --app A --worker-id W \
        --exchange-shards N --events events.jsonl [--die-after-put K]

A real :class:`KinesisConsumer` on ``--stream`` (lease table ``--app``) whose processor
emits each batch with :func:`emit_exactly_once` to the exchange ``<app>-exchange``: one
chunk per partition, the JSON ``{"source", "first", "last", "partition", "records"}`` (the
source payloads), deterministic so a replayed batch is byte-identical. A lease taken with a
pending checkpoint (``initialize_with``) is replayed first: exactly (checkpoint, pending]
as one batch. ``--die-after-put K``: SIGKILL itself after the K-th put, before its
checkpoint. Events (initialize, emitted) go to ``--events`` as JSON lines. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import IO, TYPE_CHECKING, Any

from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import (
    BaseRecordProcessor,
    ConsumerConfig,
    InitialPosition,
    KinesisConsumer,
    install_signal_handlers,
)
from streamkit_kinesis.fleet import record_split as cut
from streamkit_kinesis.fleet.exchange import ensure_exchange
from streamkit_kinesis.fleet.two_phase import emit_exactly_once, replay_range
from streamkit_kinesis.fleet.writer import ExchangeWriter
from streamkit_kinesis.retrieval.record_columns import RecordColumns

from streamkit.config import AwsEndpoint

if TYPE_CHECKING:
    from streamkit_kinesis.consumer import InitializationInput
    from streamkit_kinesis.fleet.two_phase import ReplayRange
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import KinesisRecord, RecordBatch


class Events:
    def __init__(self, path: str, worker: str) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._worker = worker

    def write(self, **fields: Any) -> None:
        self._file.write(json.dumps({"worker": self._worker, **fields}) + "\n")
        self._file.flush()


class ExchangeEmitter(BaseRecordProcessor):
    """Emits every batch through the exchange, exactly once (see module docstring)."""

    def __init__(self, writer: ExchangeWriter, events: Events, die_after_put: int | None) -> None:
        self._writer = writer
        self._events = events
        self._die_after = die_after_put
        self._puts = 0
        self._replay: ReplayRange | None = None
        self._held = cut.columns(())
        self._first = ""

    async def initialize_with(self, init: InitializationInput) -> None:
        self._first = init.start.sequence_number
        self._replay = replay_range(init.start, init.pending_checkpoint)
        pending = (
            None if init.pending_checkpoint is None else init.pending_checkpoint.sequence_number
        )
        self._events.write(event="initialize", start=self._first, pending=pending)

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        records = cut.columns(batch.records)
        if self._replay is not None:  # cut as a fleet source task cuts (record_split)
            self._held = RecordColumns.concat([self._held, records])
            if not cut.reached(self._replay, self._held):
                return  # keep reading: the replay batch is (checkpoint, pending] in full
            inside, records = cut.through(self._replay, self._held)
            self._held, self._replay = cut.columns(()), None
            await self._emit(list(inside), checkpointer, replay=True)
        if len(records):
            await self._emit(list(records), checkpointer, replay=False)

    async def _emit(
        self, records: list[KinesisRecord], checkpointer: Checkpointer, *, replay: bool
    ) -> None:
        last = records[-1].sequence_number
        parts = [
            [
                json.dumps(
                    {
                        "source": checkpointer.shard_id,
                        "first": self._first,
                        "last": last,
                        "partition": p,
                        "part": 0,
                        "parts": 1,
                        "records": [r.data.decode() for r in records],
                    },
                    sort_keys=True,
                ).encode()
            ]
            for p in range(self._writer.layout.partitions)
        ]
        self._events.write(event="emitting", first=self._first, last=last, count=len(records))
        await emit_exactly_once(checkpointer, last, self._writer, parts, after_put=self._after_put)
        self._events.write(
            event="emitted", first=self._first, last=last, count=len(records), replay=replay
        )
        self._first = last

    async def _after_put(self) -> None:
        self._puts += 1
        if self._die_after is not None and self._puts >= self._die_after:
            os.kill(os.getpid(), signal.SIGKILL)

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """Everything emitted is checkpointed already; held replay records are not."""


async def main(args: argparse.Namespace) -> None:
    endpoint = AwsEndpoint.local(args.endpoint)
    client = kinesis_client(endpoint)
    layout = await ensure_exchange(client, args.app, args.exchange_shards)
    writer = ExchangeWriter(client, layout)
    events = Events(args.events, args.worker_id)
    config = ConsumerConfig(
        app_name=args.app,
        stream=args.stream,
        worker_id=args.worker_id,
        initial_position=InitialPosition.trim_horizon(),
        failover_time=3.0,
        take_interval=0.5,
        idle_time=0.2,
        shard_sync_interval=5.0,
    )
    consumer = KinesisConsumer(config, endpoint)
    install_signal_handlers(consumer)
    events.write(event="started")
    await consumer.run(lambda: ExchangeEmitter(writer, events, args.die_after_put))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--endpoint", "--stream", "--app", "--worker-id", "--events"):
        p.add_argument(name, required=True)
    p.add_argument("--exchange-shards", type=int, default=2)
    p.add_argument("--die-after-put", type=int, default=None)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
