"""A consumer worker as its own process, for the multi-worker tests.

    python connectors/kinesis/streamkit_kinesis_tests/consumer/consumer_worker_proc.py \
        --endpoint URL --stream S --app A --worker-id W \
        --out records.jsonl --events events.jsonl [options]

Every processed record is appended to ``--out`` as one JSON line (shard, sequence number,
partition key, data, worker), flushed after each batch, *before* any checkpoint of that
batch: a line means "processed". ``--events`` gets one JSON line per consumer event (lease
gained / lost / released, take cycles, ...), per checkpoint written, per ListShards
request sent (``list_shards_call``, from the real client's botocore hook) and per lease
write that DynamoDB accepted (``lease_written``: an UpdateItem of the lease table, a
renewal, take or checkpoint, with ``sent``, the wall-clock time before it was sent), each
with a wall clock ``t`` (the tests compare times across processes on one machine). SIGTERM stops the
worker gracefully (exit 0); any error exits 1 with the traceback on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any

from streamkit_kinesis.consumer import (
    ConsumerConfig,
    ConsumerEvent,
    InitialPosition,
    KinesisConsumer,
    install_signal_handlers,
)

from streamkit.config import AwsEndpoint

if TYPE_CHECKING:
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import ExtendedSequenceNumber, RecordBatch


class JsonLines:
    """Appends JSON lines to a file, flushing on demand."""

    def __init__(self, path: str, worker_id: str) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._worker = worker_id
        self._lock = threading.Lock()  # botocore's hooks write from the client's threads

    def write(self, flush: bool = True, **fields: Any) -> None:
        line = json.dumps({"worker": self._worker, "t": time.time(), **fields}) + "\n"
        with self._lock:
            self._file.write(line)
            if flush:
                self._file.flush()

    def flush(self) -> None:
        self._file.flush()


class LoggingProcessor:
    """Logs each record, then checkpoints once ``every`` records of the shard are unsaved."""

    def __init__(self, out: JsonLines, events: JsonLines, every: int) -> None:
        self._out = out
        self._events = events
        self._every = every
        self._unsaved = 0

    async def initialize(self, shard_id: str, start: ExtendedSequenceNumber) -> None:
        self._events.write(event="initialize", shard=shard_id, start=start.sequence_number)

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        for r in batch.records:
            self._out.write(
                flush=False,
                shard=batch.shard_id,
                seq=r.sequence_number,
                pk=r.partition_key,
                data=r.data.decode(),
            )
        self._out.flush()
        self._unsaved += len(batch.records)
        if self._unsaved >= self._every:
            await self._checkpoint(batch.shard_id, checkpointer)

    async def _checkpoint(self, shard_id: str, checkpointer: Checkpointer) -> None:
        lease = await checkpointer.checkpoint()
        self._unsaved = 0
        self._events.write(event="checkpoint", shard=shard_id, seq=lease.checkpoint.sequence_number)

    async def lease_lost(self, shard_id: str) -> None:
        self._events.write(event="processor_lease_lost", shard=shard_id)

    async def shard_ended(self, shard_id: str, checkpointer: Checkpointer) -> None:
        await self._checkpoint(shard_id, checkpointer)

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        await self._checkpoint(shard_id, checkpointer)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--endpoint", "--stream", "--app", "--worker-id", "--out", "--events"):
        p.add_argument(name, required=True)
    p.add_argument("--failover", type=float, default=3.0)
    p.add_argument("--take-interval", type=float, default=0.5)
    p.add_argument("--renew-interval", type=float, default=None)
    p.add_argument("--max-steal", type=int, default=1)
    p.add_argument("--idle-time", type=float, default=0.2)
    p.add_argument("--checkpoint-every", type=int, default=1, help="records (1: every batch)")
    p.add_argument("--max-leases", type=int, default=None)
    p.add_argument("--cleanup-interval", type=float, default=60.0)
    p.add_argument("--elect-leader", choices=("on", "off"), default="on")
    p.add_argument("--shard-sync-interval", type=float, default=5.0)
    p.add_argument("--audit-confidence", type=int, default=3)
    p.add_argument("--shard-refresh-interval", default="2.0", help="seconds, or 'off'")
    return p.parse_args(argv)


def log_lease_writes(consumer: KinesisConsumer, events: JsonLines) -> None:
    """Log each lease UpdateItem DynamoDB accepted, with the time before it was sent, from
    the botocore hooks of both lease-table clients (the store's and its renewal lane's)."""

    def sending(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["lease_sent"] = (time.time(), params["Key"]["leaseKey"]["S"])

    def answered(http_response: Any, context: dict[str, Any], **_: Any) -> None:
        sent = context.get("lease_sent")
        if sent is not None and http_response.status_code == 200:
            events.write(event="lease_written", shard=sent[1], sent=sent[0])

    store: Any = consumer.store  # (private attributes: a test's observer, nothing changed)
    lane: Any = consumer.coordinator._lane
    for lease_store in (store, lane):
        dynamodb: Any = lease_store._client
        dynamodb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", sending)
        dynamodb.meta.events.register("after-call.dynamodb.UpdateItem", answered)


async def main(args: argparse.Namespace) -> None:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32))
    config = ConsumerConfig(
        app_name=args.app,
        stream=args.stream,
        worker_id=args.worker_id,
        initial_position=InitialPosition.trim_horizon(),
        failover_time=args.failover,
        renew_interval=args.renew_interval,
        take_interval=args.take_interval,
        max_steal=args.max_steal,
        max_leases=args.max_leases,
        lease_cleanup_interval=args.cleanup_interval,
        idle_time=args.idle_time,
        parent_poll_interval=0.5,
        shard_sync_interval=args.shard_sync_interval,
        elect_leader=args.elect_leader == "on",
        audit_confidence=args.audit_confidence,
        shard_refresh_interval=(
            None if args.shard_refresh_interval == "off" else float(args.shard_refresh_interval)
        ),
    )
    out = JsonLines(args.out, args.worker_id)
    events = JsonLines(args.events, args.worker_id)
    consumer = KinesisConsumer(config, AwsEndpoint.local(args.endpoint))

    def log_event(e: ConsumerEvent) -> None:
        events.write(event=e.kind.value, shard=e.shard_id, detail=e.detail, held=e.held)

    consumer.add_listener(log_event)

    def log_list_shards(**_: Any) -> None:  # counted on the wire (botocore), retries too
        events.write(event="list_shards_call")

    client: Any = consumer.client
    client.meta.events.register("before-send.kinesis.ListShards", log_list_shards)
    log_lease_writes(consumer, events)
    install_signal_handlers(consumer)
    await consumer.run(lambda: LoggingProcessor(out, events, args.checkpoint_every))


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
