"""A minimal amazon-kclpy record processor for ``bench/kcl_peers.py``.

Runs under the kclpy virtualenv (``.cache/servers/kclpy/venv``), one process per shard,
started by the MultiLangDaemon. It decodes each record's payload (so the work matches
streamkit's processor, which receives bytes), counts records, checkpoints after every
``KCLPY_BENCH_CHECKPOINT_EVERY`` records (at the last record of the batch that crosses
the mark, and at shard end), and after every batch overwrites
``$KCLPY_BENCH_OUT/<shard id>.count`` with ``<records> <payload bytes>`` so the parent
can tell when the stream has been read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from amazon_kclpy import kcl  # type: ignore[import-not-found]
from amazon_kclpy.v3 import processor  # type: ignore[import-not-found]

OUT = Path(os.environ.get("KCLPY_BENCH_OUT", "."))
EVERY = int(os.environ.get("KCLPY_BENCH_CHECKPOINT_EVERY", "10000"))


class CountingProcessor(processor.RecordProcessorBase):  # type: ignore[misc]
    """Counts records and payload bytes of one shard; checkpoints every ``EVERY`` records."""

    def __init__(self) -> None:
        self.shard_id = "unknown"
        self.records = 0
        self.payload_bytes = 0
        self.since_checkpoint = 0

    def initialize(self, initialize_input: Any) -> None:
        self.shard_id = initialize_input.shard_id

    def process_records(self, process_records_input: Any) -> None:
        records = process_records_input.records
        if not records:
            return
        self.records += len(records)
        self.payload_bytes += sum(len(r.binary_data) for r in records)
        self.since_checkpoint += len(records)
        if self.since_checkpoint >= EVERY:
            process_records_input.checkpointer.checkpoint(records[-1].sequence_number)
            self.since_checkpoint = 0
        (OUT / f"{self.shard_id}.count").write_text(f"{self.records} {self.payload_bytes}")

    def lease_lost(self, lease_lost_input: Any) -> None:
        return None

    def shard_ended(self, shard_ended_input: Any) -> None:
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        shutdown_requested_input.checkpointer.checkpoint()


if __name__ == "__main__":
    kcl.KCLProcess(CountingProcessor()).run()
