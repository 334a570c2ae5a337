"""The job file of ``fleet_throughput.py``: one query, run by ``streamkit run`` (one process)
and by ``streamkit worker`` (fleet members) unchanged.

Per (1-minute tumbling window of ``event_time``, ``key``): ``count`` and ``sum(value)``,
watermark 10 minutes behind (the data span 10 minutes: no row is late and no window
is evicted), update mode, into Parquet at ``$FB_OUT/out`` with the
checkpoint root ``$FB_OUT/checkpoint``. The stream (``$FB_STREAM``) is on kinesalite
(``$FB_KINESIS``), the lease tables on ``$FB_LEASES`` (kinesalite has no DynamoDB).
Every mode gets the same consumer settings: ``failover_time`` 6 s and ``take_interval`` 1 s
(as the fleet's own tests use), so a second worker gets its share of the shards within
seconds rather than after the default 20 s take cycle; ``idle_time`` (the pause after a read
that reached a shard's tip) ``$FB_IDLE_TIME``, default 1.5 s, the consumer's default.

When ``job()`` is called (after the CLI imported streamkit) it writes this process's CPU
seconds so far to ``$FB_OUT/startup-<pid>.json``: the interpreter + import cost the bench
reports beside the total. With ``$FB_PROFILE`` set to a folder, ``_sampler.py`` writes where
this process's CPU went to ``$FB_PROFILE/<pid>.txt`` at exit; with ``$FB_STACKS`` set to a
folder, SIGUSR1 writes every thread's stack and every pending asyncio task's to
``$FB_STACKS/<pid>-stacks.txt`` (to see where a stalled worker waits; costs nothing until
signalled). The sampler is not used for the figures. ``$FB_GATHER`` sets the consumer's
``gather_records`` (``1``: a source batch per GetRecords read, as before the fleet gathered
reads behind the tip; unset: the fleet's default, 50,000).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pyarrow as pa

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.streaming.api import DataStreamWriter

SCHEMA = pa.schema(
    [
        pa.field("event_time", pa.timestamp("us", "UTC"), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("value", pa.int64(), nullable=False),
    ]
)
IDLE_TIME = float(os.environ.get("FB_IDLE_TIME", "1.5"))
OPTIONS: dict[str, object] = {
    "failover_time": 6.0,
    "consumer_options": {"idle_time": IDLE_TIME, "take_interval": 1.0}
    | ({"gather_records": int(os.environ["FB_GATHER"])} if os.environ.get("FB_GATHER") else {}),
}


def job() -> DataStreamWriter:
    """The writer, not started (``streamkit run`` / ``worker`` start it)."""
    out = Path(os.environ["FB_OUT"])
    startup = {"pid": os.getpid(), "cpu_s": time.process_time()}
    (out / f"startup-{os.getpid()}.json").write_text(json.dumps(startup))
    if profile := os.environ.get("FB_PROFILE"):
        sys.path.insert(0, str(Path(__file__).parent))
        import _sampler

        _sampler.start(Path(profile) / f"{os.getpid()}.txt")
    if stacks := os.environ.get("FB_STACKS"):
        sys.path.insert(0, str(Path(__file__).parent))
        import _sampler

        _sampler.stacks_on_sigusr1(Path(stacks) / f"{os.getpid()}-stacks.txt")
    events = sk.read_stream.kinesis(
        os.environ["FB_STREAM"], os.environ["FB_APP"], SCHEMA,
        AwsEndpoint.local(os.environ["FB_KINESIS"]),
        lease_endpoint=AwsEndpoint.local(os.environ["FB_LEASES"]), **OPTIONS,
    )  # fmt: skip
    counts = (
        events.with_watermark("event_time", "10 minutes")
        .group_by(sk.window("event_time", "1 minute"), "key")
        .agg(sk.count().alias("n"), sk.sum("value").alias("total"))
    )
    return (
        counts.write_stream.output_mode("update")
        .checkpoint(str(out / "checkpoint"))
        .parquet(str(out / "out"))
    )
