"""Streaming queries over Kinesis on LocalStack: end to end equals the batch result, bad
records, restarts whose lease table disagrees with the checkpoint, and a reshard."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease
from streamkit_kinesis.producer.producer import KinesisProducer
from streamkit_kinesis.retrieval.columnar import _RAW_KEY as RAW_KEY
from streamkit_kinesis.source import KinesisStreamSource
from streamkit_kinesis.source.alignment import Alignment
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking, unique

import streamkit as sk
from streamkit.streaming.decode import BadRecordError
from streamkit.streaming.query import StreamingQueryError
from streamkit.testing.events import SCHEMA, counts, make_events
from streamkit.testing.tables import assert_table_equal

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from streamkit.config import AwsEndpoint
    from streamkit.streaming.query import StreamingQuery

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

FAST = {"idle_time": 0.1, "take_interval": 0.5}
KEYS = ["window", "action"]


async def produce(endpoint: AwsEndpoint, stream: str, records: list[tuple[bytes, str]]) -> None:
    async with KinesisProducer(endpoint, stream, linger_ms=20) as producer:
        for data, key in records:
            await producer.put(data, key)


async def lease_table(endpoint: AwsEndpoint, app: str) -> dict[str, Lease]:
    return {x.lease_key: x for x in await DynamoDBLeaseStore(endpoint, app).list_leases()}


async def drop(endpoint: AwsEndpoint, *apps: str) -> None:
    for app in apps:
        await DynamoDBLeaseStore(endpoint, app).delete_table()


async def last_sequences(endpoint: AwsEndpoint, stream: str) -> dict[str, str]:
    """The last sequence number of every non-empty shard (plain boto3 reads)."""
    truth = await asyncio.to_thread(read_stream_blocking, kinesis_client(endpoint), stream)
    return {shard: rs[-1]["SequenceNumber"] for shard, rs in truth.items() if rs}


async def finish(query: StreamingQuery, timeout: float = 90) -> None:
    assert await asyncio.to_thread(query.await_termination, timeout), "query did not finish"


def expected(table: pa.Table) -> pa.Table:
    return counts(sk.from_arrow(table)).to_arrow()


async def test_available_now_counts_per_action_window_equal_the_batch_result(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    truth, records = make_events(2000, seed=1)
    app, worker, name = unique("app"), unique("worker"), unique("kin_e2e")
    async with fresh_stream(ep, 4, "e2e") as (stream, _):
        await produce(ep, stream, records)
        try:
            df = sk.read_stream.kinesis(
                stream, app, SCHEMA, ep, worker_id=worker, max_records_per_batch=500,
                consumer_options=FAST,
            )  # fmt: skip
            q = (
                counts(df).write_stream.output_mode("complete")
                .trigger(available_now=True).memory(name).start()
            )  # fmt: skip
            await finish(q)
            ends = await last_sequences(ep, stream)
            table = await lease_table(ep, app)
        finally:
            await drop(ep, app)
    assert_table_equal(sk.memory_table(name), expected(truth), sort_by=KEYS)
    progress = q.recent_progress
    assert sum(p.num_input_rows for p in progress) == 2000
    assert all(p.num_input_rows <= 500 for p in progress)
    assert len(ends) == 4
    assert {p.partition for b in progress for p in b.partitions} == set(ends)
    assert {p.owner for b in progress for p in b.partitions} == {worker}
    assert {p.lag_ms for p in progress[-1].partitions} == {0}
    # the lease checkpoints follow the committed offsets; leases released at the end
    assert {k: lease.checkpoint.sequence_number for k, lease in table.items()} == ends
    assert {lease.lease_owner for lease in table.values()} == {None}


async def test_process_all_available_update_mode_follows_new_records(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    truth, records = make_events(900, seed=2)
    app, name = unique("app"), unique("kin_upd")
    async with fresh_stream(ep, 2, "upd") as (stream, _):
        await produce(ep, stream, records[:500])
        try:
            source = KinesisStreamSource(
                stream, app, ep, schema=SCHEMA, max_records_per_batch=200, consumer_options=FAST
            )
            df = sk.read_stream.source(source)
            q = counts(df).write_stream.output_mode("update").trigger(processing_time=0.1)
            query = q.memory(name).start()
            try:
                await asyncio.to_thread(query.process_all_available, 60)
                assert_table_equal(sk.memory_table(name), expected(truth[:500]), sort_by=KEYS)
                await produce(ep, stream, records[500:])
                await asyncio.to_thread(query.process_all_available, 60)
                assert_table_equal(sk.memory_table(name), expected(truth), sort_by=KEYS)
            finally:
                await asyncio.to_thread(query.stop)
            ends = await last_sequences(ep, stream)
            table = await lease_table(ep, app)
        finally:
            await drop(ep, app)
    assert source.commits[-1] == ends
    assert {k: lease.checkpoint.sequence_number for k, lease in table.items()} == ends


async def test_bad_records_land_in_dead_letters_with_shard_and_sequence_number(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    truth, records = make_events(300, seed=3)
    bad = [
        (b"{not json", "u1"),
        (b"[1, 2, 3]", "u2"),
        (json.dumps({"action": "view", "user_id": "u3", "value": 1}).encode(), "u3"),
        (json.dumps({"event_time": "2024-05-01T12:00:00Z", "action": "x", "value": "many"})
         .encode(), "u4"),
    ]  # fmt: skip
    mixed = records[:100] + bad[:2] + records[100:200] + bad[2:] + records[200:]
    app, app_fail, name = unique("app"), unique("app"), unique("kin_bad")
    async with fresh_stream(ep, 2, "bad") as (stream, _):
        await produce(ep, stream, mixed)
        try:
            df = sk.read_stream.kinesis(stream, app, SCHEMA, ep, consumer_options=FAST)
            q = (
                counts(df).write_stream.output_mode("complete")
                .trigger(available_now=True).memory(name).start()
            )  # fmt: skip
            await finish(q)
            wire = await asyncio.to_thread(read_stream_blocking, kinesis_client(ep), stream)
            strict = sk.read_stream.kinesis(stream, app_fail, SCHEMA, ep, on_bad_record="fail")
            failing = strict.write_stream.trigger(available_now=True).memory(unique("f")).start()
            with pytest.raises(StreamingQueryError) as failed:
                await finish(failing)
        finally:
            await drop(ep, app, app_fail)
    where = {r["Data"]: (shard, r["SequenceNumber"]) for shard, rs in wire.items() for r in rs}
    cause = failed.value.__cause__
    assert isinstance(cause, BadRecordError)  # on_bad_record="fail" stops at a bad record
    assert (cause.partition, cause.position) in {where[data] for data, _ in bad}
    assert_table_equal(sk.memory_table(name), expected(truth), sort_by=KEYS)
    dead = q.dead_letters
    assert dead is not None
    got = {row["raw"]: (row["partition"], row["position"]) for row in dead.to_pylist()}
    assert got == {data: where[data] for data, _ in bad}
    reasons = {row["raw"]: row["reason"] for row in dead.to_pylist()}
    assert "missing required field 'event_time'" in reasons[bad[2][0]]
    assert "value" in reasons[bad[3][0]]
    assert all(reasons.values())
    assert sum(p.dead_letters for p in q.recent_progress) == len(bad)
    assert sum(p.num_input_rows for p in q.recent_progress) == truth.num_rows


async def test_the_query_checkpoint_wins_over_missing_lagging_and_leading_leases(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """Restarts on one checkpoint with a fresh lease table (leases created at the offsets),
    a lagging one (moved forward) and, from an older copy of the checkpoint, a leading one
    (re-created at the offsets): each run counts every event exactly once."""
    ep = localstack_endpoint
    truth, records = make_events(900, seed=4)
    ck, old_ck = str(tmp_path / "ck"), str(tmp_path / "ck-old")
    app_a, app_b = unique("app"), unique("app")

    sources: dict[str, KinesisStreamSource] = {}

    async def run(app: str, checkpoint: str, rows: int) -> Alignment | None:
        """One available_now query; a source is re-opened by each query on its app."""
        source = sources.setdefault(
            app, KinesisStreamSource(stream, app, ep, schema=SCHEMA, consumer_options=FAST)
        )
        name = unique("kin_ck")
        q = (
            counts(sk.read_stream.source(source)).write_stream.output_mode("complete")
            .checkpoint(checkpoint).trigger(available_now=True).memory(name).start()
        )  # fmt: skip
        await finish(q)
        assert_table_equal(sk.memory_table(name), expected(truth[:rows]), sort_by=KEYS)
        return source.alignment

    async with fresh_stream(ep, 2, "ck") as (stream, _):
        try:
            await produce(ep, stream, records[:300])
            await run(app_a, ck, 300)
            shutil.copytree(ck, old_ck)
            await produce(ep, stream, records[300:600])
            fresh = await run(app_b, ck, 600)  # app B has no leases yet
            await produce(ep, stream, records[600:])
            lagging = await run(app_a, ck, 900)  # app A's leases stopped at 300
            leading = await run(app_a, old_ck, 900)  # app A's leases are past this checkpoint
        finally:
            await drop(ep, app_a, app_b)
    assert fresh is not None
    assert fresh.created
    assert lagging is not None
    assert lagging.forwarded
    assert leading is not None
    assert leading.rewound


async def test_split_while_consuming_parents_before_children_each_event_once(
    localstack_endpoint: AwsEndpoint,
) -> None:
    ep = localstack_endpoint
    truth, records = make_events(600, seed=5)
    app, name = unique("app"), unique("kin_split")
    async with fresh_stream(ep, 2, "split") as (stream, admin):
        await produce(ep, stream, records[:300])
        try:
            source = KinesisStreamSource(
                stream, app, ep, schema=SCHEMA, max_records_per_batch=100,
                consumer_options={**FAST, "parent_poll_interval": 0.5, "shard_sync_interval": 1.0},
            )  # fmt: skip
            df = sk.read_stream.source(source)
            q = counts(df).write_stream.output_mode("complete").trigger(processing_time=0.1)
            query = q.memory(name).start()
            try:
                await asyncio.to_thread(query.process_all_available, 60)
                parent = (await admin.list_shards(stream))[0].shard_id
                await admin.split_shard(stream, parent)
                await produce(ep, stream, records[300:])
                # Wait for the event, not for a shard sync to have run: every record read.
                deadline = time.monotonic() + 120
                while sum(b.num_input_rows for b in query.recent_progress) < 600:
                    assert time.monotonic() < deadline, query.recent_progress[-1:]
                    await asyncio.sleep(0.1)
                await asyncio.to_thread(query.process_all_available, 90)
                assert_table_equal(sk.memory_table(name), expected(truth), sort_by=KEYS)
            finally:
                await asyncio.to_thread(query.stop)
            table = await lease_table(ep, app)
            put = await asyncio.to_thread(read_stream_blocking, kinesis_client(ep), stream)
        finally:
            await drop(ep, app)
    children = [k for k, lease in table.items() if parent in lease.parent_shard_ids]
    assert len(children) == 2
    assert table[parent].is_finished  # SHARD_END, written after its records were committed
    progress = query.recent_progress
    assert sum(b.num_input_rows for b in progress) == 600  # every batch is in the window
    # Arrival order per batch: every record of the parent (counted with plain boto3)
    # arrived in batches strictly before the first batch holding any child record.
    per_batch = [(b.batch_id, p.partition, p.records) for b in progress for p in b.partitions]
    parent_batches = [bid for bid, shard, n in per_batch if shard == parent and n]
    child_batches = [bid for bid, shard, n in per_batch if shard in children and n]
    assert sum(n for _, shard, n in per_batch if shard == parent) == len(put[parent])
    assert sum(n for _, shard, n in per_batch if shard in children) == sum(
        len(put[c]) for c in children
    )
    assert child_batches, "the children were never read"
    assert max(parent_batches) < min(child_batches), per_batch
    total = pc.sum(sk.memory_table(name).column("n")).as_py()
    assert total == 600


async def test_schema_inferred_from_the_oldest_records_and_latest_start(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """``schema=None`` samples the stream; ``initial_position="LATEST"`` skips what was put
    before the query started and reads everything put after (LATEST is pinned to
    AT_TIMESTAMP of the source's open, whole seconds on LocalStack: hence the pause)."""
    ep = localstack_endpoint
    truth, records = make_events(300, seed=6)
    app, name = unique("app"), unique("kin_latest")
    async with fresh_stream(ep, 2, "latest") as (stream, _):
        await produce(ep, stream, records[:100])
        await asyncio.sleep(1.2)
        try:
            df = sk.read_stream.kinesis(
                stream, app, endpoint=ep, initial_position="LATEST", consumer_options=FAST
            )
            assert df.schema.field("action").type in (pa.string(), pa.large_string())
            assert pa.types.is_integer(df.schema.field("value").type)
            by_action = df.group_by("action").agg(sk.count().alias("n"), sk.sum("value"))
            q = by_action.write_stream.output_mode("complete").trigger(processing_time=0.1)
            query = q.memory(name).start()
            try:
                await asyncio.to_thread(query.process_all_available, 60)  # readers started
                await produce(ep, stream, records[100:])
                await asyncio.to_thread(query.process_all_available, 60)
            finally:
                await asyncio.to_thread(query.stop)
        finally:
            await drop(ep, app)
    later_rows = sk.from_arrow(truth.slice(100).drop_columns(["event_time"]))
    want = later_rows.group_by("action").agg(sk.count().alias("n"), sk.sum("value")).to_arrow()
    assert_table_equal(sk.memory_table(name), want, sort_by=["action"])


# -- the end of every shard (available_now, process_all_available), on LocalStack and moto --

PAGED = {**FAST, "max_records": 100}
"""Several GetRecords pages per shard for the consumer."""


async def test_end_offsets_are_the_last_sequence_numbers_put_before_the_call(
    aws_endpoint: AwsEndpoint,
) -> None:
    """Right after open (nothing consumed yet) the target's ends, once found by the
    consumer's readers, are each non-empty shard's last sequence number; after more puts,
    the new last ones; reading until ``reached`` hands over exactly the records put before
    the call."""
    await check_end_offsets(aws_endpoint, aws_endpoint)


async def test_end_offsets_are_exact_on_kinesalite(
    kinesalite_endpoint: AwsEndpoint, localstack_endpoint: AwsEndpoint
) -> None:
    """The same on kinesalite (leases on LocalStack), which reports ``MillisBehindLatest``
    0 on every read, backlog or not: only an empty read marks the tip."""
    await check_end_offsets(kinesalite_endpoint, localstack_endpoint)


async def check_end_offsets(ep: AwsEndpoint, leases: AwsEndpoint) -> None:
    _, records = make_events(1500, seed=7)
    app = unique("app")
    async with fresh_stream(ep, 4, "tips") as (stream, _):
        await produce(ep, stream, records[:1000])
        source = KinesisStreamSource(
            stream, app, ep, schema=SCHEMA, max_records_per_batch=300, consumer_options=PAGED,
            lease_endpoint=leases,
        )  # fmt: skip
        try:
            await source.open(None)
            first = await source.end_offsets()
            rows, offsets = await drain(source, first)
            assert rows == 1000
            assert source.found_ends(first) == await last_sequences(ep, stream)
            await produce(ep, stream, records[1000:])
            second = await source.end_offsets()
            assert not source.reached(offsets, second)
            more, offsets = await drain(source, second, offsets)
            assert more == 500
            assert source.found_ends(second) == await last_sequences(ep, stream)
        finally:
            await source.close()
            await drop(leases, app)


async def test_ends_cover_every_record_acknowledged_before_the_call(
    aws_endpoint: AwsEndpoint,
) -> None:
    """While a producer puts records without pause, each target's ends, once found, are at
    or past every sequence number PutRecords acknowledged before ``end_offsets`` was called."""
    await check_ends_while_producing(aws_endpoint, aws_endpoint)


async def test_ends_cover_every_record_acknowledged_before_the_call_on_kinesalite(
    kinesalite_endpoint: AwsEndpoint, localstack_endpoint: AwsEndpoint
) -> None:
    await check_ends_while_producing(kinesalite_endpoint, localstack_endpoint)


async def check_ends_while_producing(ep: AwsEndpoint, leases: AwsEndpoint) -> None:
    app, acked = unique("app"), dict[str, int]()
    stop = asyncio.Event()

    def put_until_stopped(stream: str) -> None:
        client, i = ep.client("kinesis"), 0
        while not stop.is_set():
            entries = [
                {"Data": b'{"i":%d}' % (i + j), "PartitionKey": str(i + j)} for j in range(20)
            ]
            out = client.put_records(StreamName=stream, Records=entries)
            for r in out["Records"]:
                if "SequenceNumber" in r:
                    acked[r["ShardId"]] = max(acked.get(r["ShardId"], 0), int(r["SequenceNumber"]))
            i += 20

    async with fresh_stream(ep, 2, "live") as (stream, _):
        source = KinesisStreamSource(
            stream, app, ep, schema=pa.schema([("i", pa.int64())]), consumer_options=FAST,
            lease_endpoint=leases,
        )  # fmt: skip
        producer = asyncio.create_task(asyncio.to_thread(put_until_stopped, stream))
        try:
            await source.open(None)
            offsets: dict[str, str] = {}
            for _ in range(4):
                await asyncio.sleep(0.3)
                before = dict(acked)
                target = await source.end_offsets()
                _, offsets = await drain(source, target, offsets)
                ends = source.found_ends(target)
                assert ends is not None
                missed = {k: v for k, v in before.items() if int(ends.get(k, "0")) < v}
                assert not missed, f"ends {ends} miss records acknowledged before: {missed}"
        finally:
            stop.set()
            await producer
            await source.close()
            await drop(leases, app)


class Producing:
    """A thread putting ``{"i": n}`` records without pause (20 per PutRecords) until
    stopped, keeping the largest sequence number acknowledged per shard."""

    def __init__(self, ep: AwsEndpoint, stream: str) -> None:
        self.ep, self.stream = ep, stream
        self.acked: dict[str, int] = {}
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(asyncio.to_thread(self._run))

    def _run(self) -> None:
        client, i = self.ep.client("kinesis"), 0
        while not self.stop.is_set():
            entries = [
                {"Data": b'{"i":%d}' % (i + j), "PartitionKey": str(i + j)} for j in range(20)
            ]
            out = client.put_records(StreamName=self.stream, Records=entries)
            for r in out["Records"]:
                if "SequenceNumber" in r:
                    seq = int(r["SequenceNumber"])
                    self.acked[r["ShardId"]] = max(self.acked.get(r["ShardId"], 0), seq)
            i += 20

    async def wait_for(self, records_per_shard: int, shards: int) -> None:
        """Until every shard has something (at least the ``acked`` map is filled)."""
        deadline = time.monotonic() + 60
        while len(self.acked) < shards:
            assert time.monotonic() < deadline, "the producer acknowledged nothing"
            await asyncio.sleep(0.05)
        await asyncio.sleep(records_per_shard / 1000)

    async def close(self) -> None:
        self.stop.set()
        await self.task


SLOW_READS = {**FAST, "max_records": 10}
"""Fewer records per GetRecords than the producer puts per PutRecords, so the readers stay
behind the producer: no read comes back empty, and only the cut time can end a shard."""


class EndsSeen(KinesisStreamSource):
    """The real source, remembering its targets and their ends as found before closing."""

    targets: list[dict[str, str]]
    found: list[dict[str, str] | None]

    async def end_offsets(self) -> Mapping[str, str]:
        target = await super().end_offsets()
        self.targets.append(dict(target))
        return target

    async def close(self) -> None:
        self.found.extend(self.found_ends(t) for t in self.targets)
        await super().close()


async def test_available_now_ends_on_a_busy_stream_exactly_at_the_ends_found(
    aws_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """With a producer writing throughout, ``available_now`` ends by itself; its rows are
    exactly the stream's records up to the ends it found (read back with plain boto3),
    which cover every record acknowledged before the query started; the lease
    checkpoints are those ends (nothing past them consumed); a second run from the same
    checkpoint holds exactly the rest."""
    await check_busy_available_now(aws_endpoint, aws_endpoint, tmp_path)


async def test_available_now_ends_on_a_busy_stream_exactly_on_kinesalite(
    kinesalite_endpoint: AwsEndpoint, localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    await check_busy_available_now(kinesalite_endpoint, localstack_endpoint, tmp_path)


async def test_available_now_after_a_split_under_load_ends_exactly(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """The same, with one of the two shards split while the producer runs, before the
    query starts: the closed parent ends at its last record (checkpointed SHARD_END), the
    children at the ends found."""
    await check_busy_available_now(localstack_endpoint, localstack_endpoint, tmp_path, split=True)


async def test_fanout_available_now_ends_on_a_busy_stream_exactly(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """The same with Enhanced Fan-Out: the subscriptions' records end each shard at the
    cut time (no separate read to the tip)."""
    ep = localstack_endpoint
    await check_busy_available_now(ep, ep, tmp_path, retrieval="fanout")


async def check_busy_available_now(
    ep: AwsEndpoint, leases: AwsEndpoint, tmp_path: Path, *, split: bool = False,
    retrieval: str = "polling",
) -> None:  # fmt: skip
    app, schema = unique("app"), pa.schema([("i", pa.int64())])
    names = [unique("busy"), unique("busy")]

    async def run(name: str) -> EndsSeen:
        source = EndsSeen(
            stream, app, ep, schema=schema, consumer_options=SLOW_READS, lease_endpoint=leases,
            max_records_per_batch=300, retrieval=retrieval,
        )  # fmt: skip
        source.targets, source.found = [], []
        q = (
            sk.read_stream.source(source).write_stream.output_mode("append")
            .checkpoint(str(tmp_path / "ck"))
            .trigger(available_now=True).memory(name).start()
        )  # fmt: skip
        await finish(q, timeout=120)
        return source

    async with fresh_stream(ep, 2, "busy") as (stream, admin):
        producer = Producing(ep, stream)
        try:
            await producer.wait_for(200, 2)
            if split:
                parent = (await admin.list_shards(stream))[0].shard_id
                await admin.split_shard(stream, parent)
                await producer.wait_for(200, 4)  # both children acknowledged records
            before = dict(producer.acked)
            first = await run(names[0])
            checkpoints = await lease_table(leases, app)
        finally:
            await producer.close()
        try:
            second = await run(names[1])
            put = await asyncio.to_thread(read_stream_blocking, kinesis_client(ep), stream)
            last = await last_sequences(ep, stream)
        finally:
            await drop(leases, app)
    assert len(first.targets) == 1
    ends = first.found[0]
    assert ends is not None
    missed = {k: v for k, v in before.items() if int(ends.get(k, "0")) < v}
    assert not missed, f"ends {ends} miss records acknowledged before the start: {missed}"
    finished = {k for k, lease in checkpoints.items() if lease.is_finished}
    assert {k: lease.checkpoint.sequence_number for k, lease in checkpoints.items()} == {
        k: "SHARD_END" if k in finished else v for k, v in ends.items()
    }
    assert all(ends[k] == last[k] for k in finished)  # a closed shard: all of it
    assert bool(finished) == split
    records = [
        (shard, int(r["SequenceNumber"]), json.loads(r["Data"])["i"])
        for shard, rs in put.items()
        for r in rs
    ]
    upto = sorted(i for shard, seq, i in records if seq <= int(ends[shard]))
    assert sorted(sk.memory_table(names[0]).column("i").to_pylist()) == upto
    rest = sorted(i for shard, seq, i in records if seq > int(ends[shard]))
    assert rest, "the producer wrote nothing after the first run's ends"
    assert sorted(sk.memory_table(names[1]).column("i").to_pylist()) == rest
    assert second.found[0] == {k: v for k, v in last.items() if k not in finished}


async def drain(
    source: KinesisStreamSource, target: Mapping[str, str], offsets: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    """Take batches until ``target`` is reached; rows taken and the offsets reached."""
    offsets, rows, deadline = dict(offsets or {}), 0, time.monotonic() + 60
    while not source.reached(offsets, target):
        assert time.monotonic() < deadline, f"stuck at {offsets}, target {target}"
        batch = await source.next_batch(0.2)
        if batch is not None:
            rows += batch.rows.num_rows
            offsets.update(batch.end_offsets)
            await source.commit(offsets)
    return rows, offsets


async def test_available_now_counts_every_record_of_a_paged_backlog(
    aws_endpoint: AwsEndpoint,
) -> None:
    ep = aws_endpoint
    truth, records = make_events(3000, seed=8)
    app, name = unique("app"), unique("kin_paged")
    async with fresh_stream(ep, 3, "paged") as (stream, _):
        await produce(ep, stream, records)
        try:
            df = sk.read_stream.kinesis(
                stream, app, schema=SCHEMA, endpoint=ep, max_records_per_batch=400,
                consumer_options=PAGED,
            )  # fmt: skip
            q = (
                counts(df).write_stream.output_mode("complete")
                .trigger(available_now=True).memory(name).start()
            )  # fmt: skip
            await finish(q)
        finally:
            await drop(ep, app)
    assert_table_equal(sk.memory_table(name), expected(truth), sort_by=KEYS)
    assert sum(p.num_input_rows for p in q.recent_progress) == 3000


class CountingClient:
    """A real boto3 Kinesis client that counts the records its GetRecords answers hold
    (from the raw body when the columnar hook asked for it, else from the parsed answer)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.records = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_records(self, **kwargs: Any) -> Any:
        out = self._inner.get_records(**kwargs)
        raw = out.get(RAW_KEY)
        self.records += len(json.loads(raw)["Records"] if raw is not None else out["Records"])
        return out


async def test_available_now_reads_the_backlog_once(
    aws_endpoint: AwsEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source's GetRecords answers hold each record once (up to one repeat per shard,
    kinesis-mock's, see ``ColumnarRecords.after``), not twice (a separate read to the
    tip), and the result is exact."""
    from streamkit_kinesis.source import session

    ep = aws_endpoint
    truth, records = make_events(3000, seed=11)
    app, name = unique("app"), unique("kin_once")
    clients: list[CountingClient] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        clients.append(CountingClient(kinesis_client(*args, **kwargs)))
        return clients[-1]

    monkeypatch.setattr(session, "kinesis_client", counting)
    async with fresh_stream(ep, 3, "once") as (stream, _):
        await produce(ep, stream, records)
        try:
            df = sk.read_stream.kinesis(
                stream, app, schema=SCHEMA, endpoint=ep, max_records_per_batch=400,
                consumer_options=PAGED,
            )  # fmt: skip
            q = (
                counts(df).write_stream.output_mode("complete")
                .trigger(available_now=True).memory(name).start()
            )  # fmt: skip
            await finish(q)
        finally:
            await drop(ep, app)
    assert_table_equal(sk.memory_table(name), expected(truth), sort_by=KEYS)
    read = sum(c.records for c in clients)
    assert 3000 <= read <= 3000 + 3, f"GetRecords answers held {read} records for 3000"


async def test_process_all_available_counts_every_record_put_while_running(
    aws_endpoint: AwsEndpoint,
) -> None:
    ep = aws_endpoint
    truth, records = make_events(2400, seed=9)
    app, name = unique("app"), unique("kin_paa")
    async with fresh_stream(ep, 3, "paa") as (stream, _):
        await produce(ep, stream, records[:1200])
        try:
            df = sk.read_stream.kinesis(
                stream, app, schema=SCHEMA, endpoint=ep, max_records_per_batch=400,
                consumer_options=PAGED,
            )  # fmt: skip
            q = counts(df).write_stream.output_mode("complete").trigger(processing_time=0.1)
            query = q.memory(name).start()
            try:
                await asyncio.to_thread(query.process_all_available, 60)
                assert_table_equal(sk.memory_table(name), expected(truth[:1200]), sort_by=KEYS)
                await produce(ep, stream, records[1200:])
                await asyncio.to_thread(query.process_all_available, 60)
                assert_table_equal(sk.memory_table(name), expected(truth), sort_by=KEYS)
            finally:
                await asyncio.to_thread(query.stop)
        finally:
            await drop(ep, app)


async def test_latest_target_holds_the_records_put_after_open(
    aws_endpoint: AwsEndpoint,
) -> None:
    """LATEST = put after open began: those records are in the target, older ones not
    (put > 1 s earlier: LocalStack's AT_TIMESTAMP has whole-second resolution)."""
    ep = aws_endpoint
    _, records = make_events(400, seed=10)
    app = unique("app")
    async with fresh_stream(ep, 2, "tiplatest") as (stream, _):
        await produce(ep, stream, records[:200])
        await asyncio.sleep(1.2)
        source = KinesisStreamSource(
            stream, app, ep, schema=SCHEMA, initial_position="LATEST", consumer_options=PAGED
        )
        try:
            await source.open(None)
            empty = await source.end_offsets()
            assert (await drain(source, empty))[0] == 0
            assert source.found_ends(empty) == {}
            await produce(ep, stream, records[200:])
            target = await source.end_offsets()
            rows, _ = await drain(source, target)
            assert rows == 200
            assert source.found_ends(target) == await last_sequences(ep, stream)
        finally:
            await source.close()
            await drop(ep, app)


async def test_projection_pushdown_skips_the_fields_a_query_does_not_read(
    localstack_endpoint: AwsEndpoint,
) -> None:
    """With an input table that keeps no rows, only event_time and action are decoded: a
    mistyped user_id is counted, a mistyped action is still a dead letter."""
    from streamkit.streaming.table import Retention

    ep = localstack_endpoint
    truth, records = make_events(200, seed=8)
    odd = json.loads(records[5][0])
    records[5] = (json.dumps({**odd, "user_id": 12345, "value": "n/a"}).encode(), records[5][1])
    bad = json.dumps({**odd, "action": 7}).encode()
    app, name = unique("app"), unique("kin_pd")
    async with fresh_stream(ep, 2, "pd") as (stream, _):
        await produce(ep, stream, [*records, (bad, "k")])
        try:
            df = sk.read_stream.kinesis(stream, app, SCHEMA, ep, consumer_options=FAST)
            q = (
                df.group_by(sk.window("event_time", "1 minute"), "action")
                .agg(sk.count().alias("n")).write_stream.output_mode("complete")
                .retention(Retention.rows(0)).trigger(available_now=True).memory(name).start()
            )  # fmt: skip
            await finish(q)
        finally:
            await drop(ep, app)
    assert q.table.schema.names == ["event_time", "action"]
    want = sk.from_arrow(truth).group_by(sk.window("event_time", "1 minute"), "action")
    assert_table_equal(
        sk.memory_table(name), want.agg(sk.count().alias("n")).to_arrow(), sort_by=KEYS
    )
    dead = q.dead_letters
    assert dead is not None
    assert dead["raw"].to_pylist() == [bad]
