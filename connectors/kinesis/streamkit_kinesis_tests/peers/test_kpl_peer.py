"""The real Java KPL (0.15.12, see streamkit.testing.peers.kpl) aggregates; streamkit reads.

Ground truth is the Java program's own account of what it was told to put (data, partition
key, explicit hash key) and what the KPL reported (shard, sequence number), in put order.
The raw stream, read with plain boto3, proves the records really were aggregated. Deadlines
are generous (2-core CI machines); nothing asserts how fast a step is.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import BaseRecordProcessor, KinesisConsumer
from streamkit_kinesis.kpl import MAGIC, KplFetchers, UserRecord, position
from streamkit_kinesis.shards import list_shards_blocking
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking, unique
from streamkit_kinesis.types import TRIM_HORIZON, ExtendedSequenceNumber, KinesisRecord

import streamkit as sk
from streamkit.streaming.query import StreamingQueryError
from streamkit.testing.peers.kcl import install_kcl, start_kcl_worker
from streamkit.testing.peers.kpl import PutRecord, install_kpl, run_kpl_producer
from streamkit_kinesis_tests.consumer.consumer_support import drop_table, fast_config, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from streamkit_kinesis.consumer import ConsumerConfig, RecordProcessor
    from streamkit_kinesis.leases import Checkpointer
    from streamkit_kinesis.types import RecordBatch

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

RECORDS, KEYS = 600, 7
DEADLINE = 180.0
KCL_START = 300.0
"""Deadline for a Java KCL worker to start, take the leases and read both shards."""
FAST = {"idle_time": 0.1, "take_interval": 0.5}
EVENT = pa.schema([("i", pa.int64()), ("pk", pa.string()), ("pad", pa.string())])

Row = tuple[str, str, str | None, bytes]
"""(sequence number, partition key, explicit hash key, data) of one user record."""


@pytest.fixture(scope="module", autouse=True)
def kpl_built(servers_cache_dir: Path) -> None:
    """Build the KPL and KCL peers before the tests (first run only), outside deadlines."""
    install_kpl(servers_cache_dir)
    install_kcl(servers_cache_dir)


def truth_by_shard(put: Sequence[PutRecord], aggregated: set[str]) -> dict[str, list[Row]]:
    """The user records each shard must yield, in Kinesis order (by the sequence number the
    KPL reported); inside one aggregate in put order, though the KPL may pack them otherwise
    (see :func:`same_records`). A record the KPL sent alone (not in ``aggregated``) keeps no
    explicit hash key: Kinesis does not return one."""
    out: dict[str, list[Row]] = defaultdict(list)
    for p in sorted(put, key=lambda p: int(p.sequence_number)):  # stable: keeps put order
        ehk = p.explicit_hash_key if p.sequence_number in aggregated else None
        out[p.shard_id].append((p.sequence_number, p.partition_key, ehk, p.data))
    return dict(out)


def same_records(got: dict[str, list[Row]], truth: dict[str, list[Row]]) -> None:
    """Each shard holds exactly the expected user records, each once, each in the Kinesis
    record the KPL reported, Kinesis records in order. The order INSIDE an aggregate is not
    compared: the KPL 0.15.12 daemon packs concurrently received records in the order its
    threads reach the aggregate, not in put order (seen: record 38 of key pk-3 packed before
    record 24), and it reports no sub-sequence numbers; the unit tests (test_kpl.py) pin
    that order on bytes whose order is known."""
    assert sorted(got) == sorted(truth)
    for shard, rows in truth.items():
        assert [r[0] for r in got[shard]] == [r[0] for r in rows], shard
        assert sorted(got[shard], key=repr) == sorted(rows, key=repr), shard


def row(r: KinesisRecord) -> Row:
    ehk = r.explicit_hash_key if isinstance(r, UserRecord) else None
    return (r.sequence_number, r.partition_key, ehk, r.data)


async def produce(ep: AwsEndpoint, stream: str, tmp: Path, start: int = 0) -> dict[str, list[Row]]:
    """Run the KPL, check with plain boto3 that it aggregated (most) records, and return
    the expected user records of each shard (:func:`truth_by_shard`)."""
    put = await asyncio.to_thread(
        run_kpl_producer, ep, stream, tmp, records=RECORDS, start=start, keys=KEYS, ehk_every=13
    )
    assert [p.index for p in put] == list(range(start, start + RECORDS))
    seqs = {p.sequence_number for p in put}
    raw = await asyncio.to_thread(read_stream_blocking, kinesis_client(ep), stream)
    kinesis_records = [r for rs in raw.values() for r in rs if r["SequenceNumber"] in seqs]
    aggregated = [r for r in kinesis_records if r["Data"].startswith(MAGIC)]
    assert len(aggregated) >= 4, "the KPL sent no aggregated records: nothing is tested"
    assert len(kinesis_records) < RECORDS // 5
    return truth_by_shard(put, {r["SequenceNumber"] for r in aggregated})


async def read_all(
    ep: AwsEndpoint, stream: str, shards: Sequence[str]
) -> dict[str, list[KinesisRecord]]:
    """Every user record of each shard via :class:`KplFetchers`, until a caught-up read."""
    client = kinesis_client(ep)
    infos = {s.shard_id: s for s in await asyncio.to_thread(list_shards_blocking, client, stream)}
    fetchers = KplFetchers(fast_config(stream).polling_fetchers(client, time.monotonic))
    out: dict[str, list[KinesisRecord]] = {}
    for shard_id in shards:
        fetcher = fetchers(infos[shard_id], TRIM_HORIZON)
        records: list[KinesisRecord] = []
        while True:
            batch = await fetcher.next_batch()
            records += batch.records
            if not batch.records and not batch.millis_behind_latest:
                break
        sub_numbers_are_positions(records)
        out[shard_id] = records
    return out


def sub_numbers_are_positions(records: Sequence[KinesisRecord]) -> None:
    """Inside one Kinesis record the sub-sequence numbers are 0, 1, 2, ..."""
    expected: dict[str, int] = defaultdict(int)
    for r in records:
        assert r.sub_sequence_number == expected[r.sequence_number], r
        expected[r.sequence_number] += 1


async def test_every_kpl_user_record_once_in_order(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 2, "kpl") as (stream, _):
        truth = await produce(ep, stream, tmp_path)
        got = await read_all(ep, stream, sorted(truth))
    same_records({s: [row(r) for r in rs] for s, rs in got.items()}, truth)


class CutProcessor(BaseRecordProcessor):
    """Processes a shard up to ``cuts[shard]`` (a user record inside an aggregate),
    checkpoints exactly there, and never takes a record past it, like a worker that died
    right after that checkpoint."""

    def __init__(self, cuts: dict[str, ExtendedSequenceNumber], seen: dict[str, list[Row]]):
        self.cuts, self.seen = cuts, seen

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        cut = self.cuts[batch.shard_id]
        limit = (cut.as_int(), cut.sub_sequence_number)
        kept = [
            r for r in batch.records if (int(r.sequence_number), r.sub_sequence_number) <= limit
        ]
        if kept:
            await checkpointer.checkpoint(position(kept[-1]))
            self.seen.setdefault(batch.shard_id, []).extend(row(r) for r in kept)

    async def shutdown_requested(self, shard_id: str, checkpointer: Checkpointer) -> None:
        """No checkpoint on the way out: the lease keeps the cut."""


class AllProcessor(BaseRecordProcessor):
    """Takes everything, checkpointing after each batch."""

    def __init__(self, seen: dict[str, list[Row]]) -> None:
        self.seen = seen

    async def process_records(self, batch: RecordBatch, checkpointer: Checkpointer) -> None:
        self.seen.setdefault(batch.shard_id, []).extend(row(r) for r in batch.records)
        if batch.records:
            await checkpointer.checkpoint(position(batch.records[-1]))


def cuts_inside_aggregates(truth: dict[str, list[Row]]) -> dict[str, ExtendedSequenceNumber]:
    """Per shard: the 2nd user record of an aggregate of >= 3, from the shard's middle on."""
    cuts = {}
    for shard, rows in truth.items():
        sizes: dict[str, int] = defaultdict(int)
        for seq, *_ in rows:
            sizes[seq] += 1
        middle = int(rows[len(rows) // 2][0])
        seq = next(s for s in sizes if sizes[s] >= 3 and int(s) >= middle)
        cuts[shard] = ExtendedSequenceNumber(seq, 1)
    return cuts


def upto(rows: list[Row], cut: ExtendedSequenceNumber) -> int:
    """How many user records of ``rows`` are at or before ``cut`` (its aggregate's earlier
    Kinesis records, and ``cut.sub_sequence_number + 1`` of its own)."""
    first = next(i for i, r in enumerate(rows) if r[0] == cut.sequence_number)
    return first + cut.sub_sequence_number + 1


async def run_consumer(
    ep: AwsEndpoint,
    config: ConsumerConfig,
    factory: Callable[[], RecordProcessor],
    done: Callable[[], bool],
) -> None:
    """Run a de-aggregating consumer until ``done()``, then stop it gracefully."""
    client = kinesis_client(ep)
    fetchers = KplFetchers(config.polling_fetchers(client, time.monotonic))
    consumer = KinesisConsumer(config, ep, kinesis=client, fetcher_factory=fetchers)
    running = asyncio.create_task(consumer.run(factory))
    try:
        await wait_until(done, DEADLINE, "the consumer to reach its target")
    finally:
        await consumer.stop()
        await running


async def test_restart_inside_an_aggregated_record_repeats_and_loses_nothing(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, 2, "kplcut") as (stream, _):
        truth = await produce(ep, stream, tmp_path)
        cuts = cuts_inside_aggregates(truth)
        ends = {s: upto(rows, cuts[s]) for s, rows in truth.items()}
        config = fast_config(stream)
        first: dict[str, list[Row]] = {}
        second: dict[str, list[Row]] = {}
        try:
            await run_consumer(
                ep, config, lambda: CutProcessor(cuts, first),
                lambda: all(len(first.get(s, [])) >= ends[s] for s in truth),
            )  # fmt: skip
            # By count, not by the last row: inside an aggregate the KPL packs records in
            # its own order, so truth's last row need not be the last one read.
            await run_consumer(
                ep, config, lambda: AllProcessor(second),
                lambda: all(len(second.get(s, [])) >= len(truth[s]) - ends[s] for s in truth),
            )  # fmt: skip
        finally:
            await drop_table(ep, config.app_name)
    # The first run stops exactly after user record 1 of the cut's aggregate; the second
    # yields the rest of that aggregate and everything after it: together each record once.
    for shard, rows in truth.items():
        assert [r[0] for r in first[shard]] == [r[0] for r in rows[: ends[shard]]], shard
        assert [r[0] for r in second[shard]] == [r[0] for r in rows[ends[shard] :]], shard
    same_records({s: first[s] + second[s] for s in truth}, truth)


async def run_query(
    ep: AwsEndpoint, stream: str, app: str, checkpoint: str, fail_at: int | None = None
) -> list[int]:
    """One available_now query over the stream with a ``foreach_batch`` sink; the ``i`` of
    every row the sink took. Batches are capped at 30 records while the KPL's aggregates
    hold up to 50, but the query never cuts an aggregate: ``ShardBuffers.take`` hands an
    aggregate's user records whole (a batch exceeds the cap by the rest of one), so this
    restart lands between Kinesis records. A restart inside an aggregate is tested at the
    consumer level (``test_restart_inside_an_aggregated_record_repeats_and_loses_nothing``).
    With ``fail_at``, the sink raises on that batch (before taking it), so the query stops
    with the earlier batches committed."""
    rows: list[int] = []

    def sink(df: sk.DataFrame, batch_id: int) -> None:
        if batch_id == fail_at:
            raise RuntimeError(f"planted failure in batch {batch_id}")
        rows.extend(int(i) for i in df.to_arrow().column("i").to_pylist())

    df = sk.read_stream.kinesis(
        stream, app, EVENT, ep, max_records_per_batch=30, consumer_options=FAST
    )
    q = df.write_stream.checkpoint(checkpoint).trigger(available_now=True).foreach_batch(sink)
    query = q.start()
    if fail_at is None:
        assert await asyncio.to_thread(query.await_termination, DEADLINE), "query did not end"
    else:
        with pytest.raises(StreamingQueryError, match="planted failure"):
            await asyncio.to_thread(query.await_termination, DEADLINE)
    return rows


async def test_streaming_query_counts_each_kpl_user_record_once_across_a_restart(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """A query fails after a few committed batches and restarts on its checkpoint; a second
    wave of records follows a clean end: every user record is taken exactly once."""
    ep = localstack_endpoint
    app, checkpoint = unique("app"), str(tmp_path / "ck")
    async with fresh_stream(ep, 2, "kplsrc") as (stream, _):
        try:
            await produce(ep, stream, tmp_path)
            failed = await run_query(ep, stream, app, checkpoint, fail_at=3)
            first = await run_query(ep, stream, app, checkpoint)
            await produce(ep, stream, tmp_path, start=RECORDS)
            second = await run_query(ep, stream, app, checkpoint)
        finally:
            await drop_table(ep, app)
    assert 0 < len(failed) < RECORDS
    assert sorted(failed + first) == list(range(RECORDS))
    assert sorted(second) == list(range(RECORDS, 2 * RECORDS))


async def test_the_java_kcl_resumes_a_streamkit_checkpoint_inside_an_aggregate(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """streamkit checkpoints user record 1 of an aggregate and stops; a Java KCL worker on
    the same lease table starts there and yields exactly the user records that streamkit's
    de-aggregation puts after it: same sequence and sub-sequence numbers, keys, payloads,
    same order inside each aggregate (the real KCL de-aggregates the real KPL's bytes)."""
    ep = localstack_endpoint
    async with fresh_stream(ep, 2, "kplkcl") as (stream, _):
        truth = await produce(ep, stream, tmp_path)
        ours = await read_all(ep, stream, sorted(truth))
        cuts = cuts_inside_aggregates(truth)
        ends = {s: upto(rows, cuts[s]) for s, rows in truth.items()}
        config = fast_config(stream)
        first: dict[str, list[Row]] = {}
        try:
            await run_consumer(
                ep, config, lambda: CutProcessor(cuts, first),
                lambda: all(len(first.get(s, [])) >= ends[s] for s in truth),
            )  # fmt: skip
            out = tmp_path / "kcl"
            with start_kcl_worker(
                ep, stream, config.app_name, "kcl-K", out, failover_time=10.0,
                checkpoint_every=10**6,
            ) as kcl:  # fmt: skip
                await wait_until(
                    lambda: len(kcl.records()) >= sum(len(ours[s]) - ends[s] for s in truth),
                    KCL_START, "the KCL worker reading to the end of both shards",
                )  # fmt: skip
                starts = {e["shard"]: (e["start"], e["sub"]) for e in kcl.events("initialize")}
                theirs = kcl.records()
        finally:
            await drop_table(ep, config.app_name)
    assert starts == {s: (c.sequence_number, c.sub_sequence_number) for s, c in cuts.items()}
    for shard, records in ours.items():
        assert first[shard] == [row(r) for r in records[: ends[shard]]], shard
        kcl_rows = [(r["seq"], r["sub"], r["pk"], r["data"]) for r in theirs if r["shard"] == shard]
        assert kcl_rows == [
            (r.sequence_number, r.sub_sequence_number, r.partition_key, r.data.decode())
            for r in records[ends[shard] :]
        ], shard
