"""The streaming source with ``retrieval="fanout"`` (Enhanced Fan-Out) on LocalStack: an
``available_now`` query reads every record once; a second run of the same query after more
records reads only those. The expected counts are computed in plain Python from what was put."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.retrieval.registration import StreamConsumer
from streamkit_kinesis.testing.streams import fresh_stream, put_blocking, unique

import streamkit as sk

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

FAST = {"idle_time": 0.1, "take_interval": 0.5}


def rows(start: int, n: int) -> list[bytes]:
    return [json.dumps({"page": f"p{i % 7}", "n": i}).encode() for i in range(start, start + n)]


def run(stream: str, app: str, ep: AwsEndpoint, name: str, checkpoint: Path) -> None:
    df = sk.read_stream.kinesis(
        stream, app, None, ep, consumer_options=FAST, retrieval="fanout", checkpoint_interval=0
    )
    q = (df.write_stream.output_mode("append").checkpoint(str(checkpoint))
         .trigger(available_now=True).memory(name).start())  # fmt: skip
    assert q.await_termination(120)


async def test_fanout_source_reads_each_record_once_across_a_restart(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep, app = localstack_endpoint, unique("app")
    first, second = unique("efo_a").replace("-", "_"), unique("efo_b").replace("-", "_")
    async with fresh_stream(ep, 2, "efosrc") as (stream, _):
        client = kinesis_client(ep)
        put_keys = [("a", rows(0, 60)), ("b", rows(60, 60))]
        for key, batch in put_keys:
            await asyncio.to_thread(put_blocking, client, stream, batch, key)
        try:
            await asyncio.to_thread(run, stream, app, ep, first, tmp_path / "cp")
            await asyncio.to_thread(put_blocking, client, stream, rows(120, 40), "c")
            await asyncio.to_thread(run, stream, app, ep, second, tmp_path / "cp")
            registered = StreamConsumer(client, stream, app)  # the source's, reused
            await registered.arn()
            assert registered.registrations == 0
        finally:
            await DynamoDBLeaseStore(ep, app).delete_table()
    got_first = sorted(r["n"] for r in sk.memory_table(first).to_pylist())
    got_second = sorted(r["n"] for r in sk.memory_table(second).to_pylist())
    assert got_first == list(range(120))
    assert got_second == list(range(120, 160))
    assert Counter(got_first + got_second) == Counter(range(160))
