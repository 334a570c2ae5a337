"""Kafka -> streamkit -> Kafka with the transactional sink, run as a subprocess by the
kill -9 test (``test_transactional.py``).

Reads ``--input`` in group ``--group`` (events of :mod:`streamkit.testing.events`, JSON),
keeps every row (``event_time, action, user_id, value``) and writes it to ``--output``
through :class:`~streamkit_kafka.TransactionalKafkaSink` (``--txid``), checkpointing to
``--checkpoint``. ``--trigger available_now`` reads to the end offsets seen at start and
exits 0; ``processing`` runs until killed. Lines on stdout: ``committed <batch>`` as soon
as the sink's transaction for that batch committed (the engine's ``commits/N`` follows only
after ``--hold`` seconds, so a kill on that line lands between the two), ``skipped
<batch>`` for a batch found already committed by an earlier run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

import streamkit as sk
from streamkit.testing.events import SCHEMA

if TYPE_CHECKING:
    import pyarrow as pa


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    for name in ("bootstrap", "input", "output", "group", "txid", "checkpoint"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--trigger", choices=("processing", "available_now"), default="processing")
    p.add_argument("--hold", type=float, default=0.0)
    p.add_argument("--max-records", type=int, default=60)
    args = p.parse_args(argv)

    from streamkit_kafka import TransactionalKafkaSink

    class ReportingSink(TransactionalKafkaSink):
        async def add_batch(self, batch_id: int, table: pa.Table) -> None:
            skipped = len(self.skipped_batches)
            await super().add_batch(batch_id, table)
            word = "skipped" if len(self.skipped_batches) > skipped else "committed"
            print(f"{word} {batch_id}", flush=True)
            await asyncio.sleep(args.hold)

    df = sk.read_stream.kafka(args.bootstrap, args.input, args.group, SCHEMA,
                              max_records_per_batch=args.max_records)  # fmt: skip
    sink = ReportingSink(args.bootstrap, args.output, args.txid, key_column="user_id")
    writer = df.write_stream.checkpoint(args.checkpoint)
    if args.trigger == "available_now":
        writer = writer.trigger(available_now=True)
    else:
        writer = writer.trigger(processing_time=0.05)
    query = writer.to(sink).start()
    query.await_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
