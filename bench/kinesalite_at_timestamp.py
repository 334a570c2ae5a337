"""What an ``AT_TIMESTAMP`` GetShardIterator costs on kinesalite, and what it does when the
window holds no record (issue 15 item 3: why reading the newest records by timestamp
timed out under load).

Usage:
    nice -n 10 .venv/bin/python bench/kinesalite_at_timestamp.py

One shard; at 1,000, 10,000 and 50,000 records (~80 bytes), after 1.5 s of quiet: an
``AT_TIMESTAMP`` iterator 3 s back (a window holding the newest records), one 1 s back
(an empty window), each with a 5 s client read timeout, and a ``TRIM_HORIZON`` iterator.
Prints the time of each call and whether the server answered.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

from streamkit_kinesis.admin import StreamAdmin
from streamkit_kinesis.client import kinesis_client

from streamkit.testing.servers import start_kinesalite

SHARD = "shardId-000000000000"


def main() -> None:
    with start_kinesalite() as kinesalite:
        endpoint = kinesalite.endpoint
        asyncio.run(StreamAdmin(endpoint, poll_interval=0.1).create_stream("s", 1))
        client, put = endpoint.client("kinesis"), 0
        for target in (1_000, 10_000, 50_000):
            while put < target:
                records = [
                    {
                        "Data": json.dumps({"i": put + j, "pad": "x" * 60}).encode(),
                        "PartitionKey": "k",
                    }
                    for j in range(500)
                ]
                client.put_records(StreamName="s", Records=records)
                put += 500
            time.sleep(1.5)
            for label, back in (
                ("window 3 s back (newest records)", 3),
                ("window 1 s back (empty)", 1),
            ):
                timed = kinesis_client(endpoint, read_timeout=5.0)
                started = time.perf_counter()
                try:
                    timed.get_shard_iterator(
                        StreamName="s", ShardId=SHARD, ShardIteratorType="AT_TIMESTAMP",
                        Timestamp=datetime.now(UTC) - timedelta(seconds=back),
                    )  # fmt: skip
                    outcome = "answered"
                except Exception as e:  # the read timeout
                    outcome = f"{type(e).__name__}"
                print(f"{put:>6} records, AT_TIMESTAMP {label}: "
                      f"{time.perf_counter() - started:.3f} s, {outcome}", flush=True)  # fmt: skip
            started = time.perf_counter()
            client.get_shard_iterator(
                StreamName="s", ShardId=SHARD, ShardIteratorType="TRIM_HORIZON"
            )
            print(f"{put:>6} records, TRIM_HORIZON: {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main()
