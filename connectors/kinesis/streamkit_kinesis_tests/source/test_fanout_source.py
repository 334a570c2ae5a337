"""The streaming source with ``retrieval="fanout"`` (Enhanced Fan-Out) on LocalStack: an
``available_now`` query reads every record once; a second run of the same query after more
records reads only those; the backlog is read once (through the subscriptions: no
GetRecords but tip probes of at most one record). The expected records are computed in
plain Python from what was put (the PutRecords answers)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.retrieval.columnar import _RAW_KEY as RAW_KEY
from streamkit_kinesis.retrieval.registration import StreamConsumer
from streamkit_kinesis.source import session
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


class CountingGetRecords:
    """A real boto3 Kinesis client counting GetRecords calls and the records they return
    (SubscribeToShard goes through it uncounted)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls = self.records = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_records(self, **kwargs: Any) -> Any:
        out = self._inner.get_records(**kwargs)
        raw = out.get(RAW_KEY)  # the columnar hook's raw answer, when it asked for one
        self.calls += 1
        self.records += len(json.loads(raw)["Records"] if raw is not None else out["Records"])
        return out


def put_log(ep: AwsEndpoint, stream: str, start: int, n: int) -> list[tuple[str, int]]:
    """Put ``{"page", "n"}`` rows start..start+n-1 with varied keys; (shard, n) acknowledged."""
    client, log = ep.client("kinesis"), []
    data = rows(start, n)
    for at in range(0, n, 100):
        entries = [
            {"Data": d, "PartitionKey": f"k{start + at + j}"}
            for j, d in enumerate(data[at : at + 100])
        ]
        out = client.put_records(StreamName=stream, Records=entries)
        for j, r in enumerate(out["Records"]):
            assert "SequenceNumber" in r, r
            log.append((r["ShardId"], start + at + j))
    return log


async def test_fanout_available_now_reads_the_backlog_once_and_exactly(
    localstack_endpoint: AwsEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three shards, a backlog of 900 records
    put before the query: the run holds exactly the records put (from the put log), and the
    source's GetRecords calls (tip probes) return at most one record each, far fewer than
    the backlog (before: each shard was read to its tip by GetRecords as well)."""
    ep, app, name = localstack_endpoint, unique("app"), unique("efo_once").replace("-", "_")
    clients: list[CountingGetRecords] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        clients.append(CountingGetRecords(kinesis_client(*args, **kwargs)))
        return clients[-1]

    monkeypatch.setattr(session, "kinesis_client", counting)
    async with fresh_stream(ep, 3, "efoonce") as (stream, _):
        log = await asyncio.to_thread(put_log, ep, stream, 0, 900)
        try:
            await asyncio.to_thread(run, stream, app, ep, name, tmp_path / "cp")
        finally:
            await DynamoDBLeaseStore(ep, app).delete_table()
    got = sorted(r["n"] for r in sk.memory_table(name).to_pylist())
    assert got == sorted(n for _, n in log)
    assert len({shard for shard, _ in log}) == 3
    assert len(clients) == 1
    probes = clients[0]
    assert probes.records <= probes.calls, (probes.records, probes.calls)
    assert probes.records < 900 // 10, f"GetRecords returned {probes.records} records"
