"""``end_offsets`` races on LocalStack, made deterministic by gating the source's own
(real) Kinesis client: its GetRecords calls wait until the test lets them through.

- A shard that ends while the target's ListShards is in flight ends at its last record,
  not at the position taken before that call (review finding 4).
- Children of a split, without a lease at the call, stay in the target for as long as
  their parent is read here, however long that takes (review finding 2).

Expected records come from the put log (PutRecords answers), never from the source."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.shards import list_shards_blocking
from streamkit_kinesis.source import KinesisStreamSource, session, tips
from streamkit_kinesis.testing.streams import fresh_stream, unique

if TYPE_CHECKING:
    from collections.abc import Mapping

    from streamkit_kinesis.admin import StreamAdmin

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

SCHEMA = pa.schema([("i", pa.int64())])
FAST = {"idle_time": 0.1, "take_interval": 0.3}
DEADLINE = 90.0


class GatedClient:
    """A real boto3 Kinesis client whose GetRecords calls wait for :attr:`gate`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.gate = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_records(self, **kwargs: Any) -> Any:
        if not self.gate.wait(DEADLINE):
            raise TimeoutError("the test never opened the gate")
        return self._inner.get_records(**kwargs)


def gate_the_source(monkeypatch: pytest.MonkeyPatch) -> list[GatedClient]:
    clients: list[GatedClient] = []

    def gated(*args: Any, **kwargs: Any) -> Any:
        clients.append(GatedClient(kinesis_client(*args, **kwargs)))
        return clients[-1]

    monkeypatch.setattr(session, "kinesis_client", gated)
    return clients


def put_log(ep: AwsEndpoint, stream: str, start: int, n: int) -> list[tuple[str, int, int]]:
    """Put ``{"i": start..start+n-1}`` with varied keys; (shard, sequence, i) acknowledged."""
    client, log = ep.client("kinesis"), []
    entries = [{"Data": b'{"i":%d}' % i, "PartitionKey": f"k{i}"} for i in range(start, start + n)]
    out = client.put_records(StreamName=stream, Records=entries)
    for i, r in zip(range(start, start + n), out["Records"], strict=True):
        assert "SequenceNumber" in r, r
        log.append((r["ShardId"], int(r["SequenceNumber"]), i))
    return log


async def split_with_records(
    ep: AwsEndpoint, admin: StreamAdmin, stream: str
) -> list[tuple[str, int, int]]:
    """40 records in the one shard, a split, then 40 more (in the children)."""
    log = await asyncio.to_thread(put_log, ep, stream, 0, 40)
    parent = (await admin.list_shards(stream))[0].shard_id
    await admin.split_shard(stream, parent)
    log += await asyncio.to_thread(put_log, ep, stream, 40, 40)
    assert {s for s, _, _ in log[40:]}.isdisjoint({parent})
    return log


async def take_all(
    source: KinesisStreamSource, target: Mapping[str, str], offsets: dict[str, str]
) -> list[int]:
    """The ``i`` of every row taken until ``target`` is reached (committing each batch)."""
    got: list[int] = []
    deadline = time.monotonic() + DEADLINE
    while not source.reached(offsets, target):
        assert time.monotonic() < deadline, f"stuck at {offsets}, target {target}"
        batch = await source.next_batch(0.2)
        if batch is not None:
            got += batch.rows.column("i").to_pylist()
            offsets.update(batch.end_offsets)
            await source.commit(offsets)
    return got


async def test_a_shard_ending_during_the_listing_ends_at_its_last_record(
    localstack_endpoint: AwsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent of a split has nothing read when ``end_offsets`` takes its position;
    while the target's ListShards is in flight, the reader reads the whole parent and
    reaches its end. The parent's end is its last record put (before: the position taken
    before the ListShards, i.e. nothing), and the run holds every record put."""
    ep, app = localstack_endpoint, unique("app")
    clients = gate_the_source(monkeypatch)
    real_listing = list_shards_blocking
    source: KinesisStreamSource | None = None

    def listing_while_the_parent_ends(client: Any, stream: str) -> Any:
        assert source is not None
        parent = source._buffers.state(parent_id)
        clients[0].gate.set()
        deadline = time.monotonic() + DEADLINE
        while not parent.ended:
            assert time.monotonic() < deadline, "the parent never ended"
            time.sleep(0.01)
        return real_listing(client, stream)

    async with fresh_stream(ep, 1, "race") as (stream, admin):
        log = await split_with_records(ep, admin, stream)
        parent_id = log[0][0]
        source = KinesisStreamSource(
            stream, app, ep, schema=SCHEMA, consumer_options=FAST, max_records_per_batch=25
        )
        try:
            await source.open(None)
            assert source._buffers.known(parent_id) is None
            monkeypatch.setattr(tips, "list_shards_blocking", listing_while_the_parent_ends)
            target = await source.end_offsets()
            monkeypatch.setattr(tips, "list_shards_blocking", real_listing)
            got = await take_all(source, target, {})
            ends = source.found_ends(target)
        finally:
            await source.close()
            await DynamoDBLeaseStore(ep, app).delete_table()
    assert len(clients) == 1
    assert ends is not None
    assert ends.get(parent_id) == str(max(seq for s, seq, _ in log if s == parent_id))
    assert sorted(got) == sorted(i for _, _, i in log)


async def test_children_of_a_split_wait_for_a_long_parent_backlog(
    localstack_endpoint: AwsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Children without a lease at the call join the target; their parent's reads are held
    back for longer than the give-up time (a short ``failover_time`` keeps it a few
    seconds), as a long parent backlog would. The run still ends with every record put
    before the call, the children's included."""
    ep, app = localstack_endpoint, unique("app")
    clients = gate_the_source(monkeypatch)
    async with fresh_stream(ep, 1, "slowparent") as (stream, admin):
        log = await split_with_records(ep, admin, stream)
        children = {s for s, _, _ in log[40:]}
        source = KinesisStreamSource(
            stream, app, ep, schema=SCHEMA, consumer_options=FAST, failover_time=2.0,
            max_records_per_batch=25,
        )  # fmt: skip
        try:
            await source.open(None)
            target = await source.end_offsets()
            assert children <= set(target), f"children {children} not in target {target}"
            assert not children & source.consumer.held_shard_ids()  # type: ignore[union-attr]
            offsets: dict[str, str] = {}
            got: list[int] = []
            past = time.monotonic() + source._unheld.give_up + 1.5
            while time.monotonic() < past:  # ticks while the parent is held but not read
                batch = await source.next_batch(0.2)
                assert batch is None
            clients[0].gate.set()
            got = await take_all(source, target, offsets)
        finally:
            clients[0].gate.set()
            await source.close()
            await DynamoDBLeaseStore(ep, app).delete_table()
    assert sorted(got) == sorted(i for _, _, i in log)
