"""The Java KCL (2.6.1, see streamkit.testing.peers.kcl) and streamkit share one lease table.

Every test runs a real KCL application (``tests/peers/kcl``, a JVM) and streamkit worker
processes (``consumer_worker_proc.py``) with the same application name against LocalStack,
and judges them only by what they logged and by the raw DynamoDB items (plain boto3).
Deadlines are generous (shared 2-core CI machines); nothing asserts how fast a step is.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking, unique
from streamkit_kinesis.types import ExtendedSequenceNumber, HashKeyRange

from streamkit.testing.peers.kcl import install_kcl
from streamkit_kinesis_tests.consumer.consumer_support import (
    BackgroundProducer,
    drop_table,
    wait_until,
)
from streamkit_kinesis_tests.peers.kcl_support import (
    CHANGED_BY_TAKE_AND_CHECKPOINT,
    KCL_TAKE_INTERVAL,
    Fleet,
    checkpoints,
    duplicate_report,
    owner_counts,
    poll_items,
    position,
    raw_items,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

KCL, SK = "kcl-J", "sk-S"
START = 180.0
"""Deadline for a JVM or worker to start and for leases to settle."""


@pytest.fixture(scope="module", autouse=True)
def kcl_built(servers_cache_dir: Path) -> None:
    """Build the KCL peer before the tests (first run only), outside their deadlines."""
    install_kcl(servers_cache_dir)


@asynccontextmanager
async def fleet(ep: AwsEndpoint, tmp: Path, shards: int) -> AsyncIterator[Fleet]:
    """A fresh stream and application; every worker started in it is stopped by PID."""
    async with fresh_stream(ep, shards, "kclpeer") as (stream, _):
        group = Fleet(ep, stream, unique("kclapp"), tmp)
        try:
            yield group
        except BaseException:
            print(group.logs())
            raise
        finally:
            group.close()
            await drop_table(ep, group.app)


async def stable_split(group: Fleet, expected: dict[str, int]) -> None:
    """Wait for ``expected`` owners, then for two KCL take cycles and three streamkit ones,
    and check that nobody moved (the split is a fixed point of both takers)."""
    await poll_items(group.endpoint, group.app, lambda t: owner_counts(t) == expected, START,
                     f"split {expected}")  # fmt: skip
    sk = group.streamkit_workers[SK]
    cycles = sk.take_cycles()
    await asyncio.sleep(2 * KCL_TAKE_INTERVAL)
    await wait_until(lambda: sk.take_cycles() >= cycles + 3, 60, "three streamkit take cycles")
    table = await asyncio.to_thread(raw_items, group.endpoint, group.app)
    assert owner_counts(table) == expected, "the split must hold once reached"


def payloads(group: Fleet, workers: list[str] | None = None) -> set[str]:
    return {r["data"] for r in group.records(workers)}


@pytest.mark.parametrize("first", ["kcl", "streamkit"])
async def test_kcl_and_streamkit_split_eight_shards_four_each(
    localstack_endpoint: AwsEndpoint, tmp_path: Path, first: str
) -> None:
    async with fleet(localstack_endpoint, tmp_path, 8) as group:
        starters: list[Callable[[], object]] = [
            lambda: group.start_kcl(KCL),
            lambda: group.start_streamkit(SK),
        ]
        if first == "streamkit":
            starters.reverse()
        starters[0]()  # creates the table and the 8 leases, then takes them all
        only = KCL if first == "kcl" else SK
        await poll_items(group.endpoint, group.app, lambda t: owner_counts(t) == {only: 8},
                         START, f"{only} holding all 8 leases")  # fmt: skip
        starters[1]()  # must steal 4, one per take cycle, and stop there
        await stable_split(group, {KCL: 4, SK: 4})

        producer = BackgroundProducer(group.endpoint, group.stream, per_tick=20)
        producer.start()
        await asyncio.sleep(3)
        sent = set(await producer.stop())
        await wait_until(lambda: payloads(group) >= sent, 120, "every record processed")
        table = await asyncio.to_thread(raw_items, group.endpoint, group.app)
        for worker in (KCL, SK):
            shards = {r["shard"] for r in group.records([worker])}
            held = {k for k, i in table.items() if i["leaseOwner"]["S"] == worker}
            assert shards == held, f"{worker} processed exactly the 4 shards it holds"
        records = group.records()
        assert len(records) == len(sent), "a stable split re-delivers nothing"


@pytest.mark.parametrize("victim", [KCL, SK])
async def test_sigkill_either_one_the_other_resumes_from_its_checkpoints(
    localstack_endpoint: AwsEndpoint, tmp_path: Path, victim: str
) -> None:
    survivor = SK if victim == KCL else KCL
    async with fleet(localstack_endpoint, tmp_path, 8) as group:
        kcl = group.start_kcl(KCL, checkpoint_every=7)
        await poll_items(group.endpoint, group.app, lambda t: owner_counts(t) == {KCL: 8},
                         START, "the KCL worker holding all 8 leases")  # fmt: skip
        sk = group.start_streamkit(SK, checkpoint_every=7)
        await stable_split(group, {KCL: 4, SK: 4})

        producing_since = time.time()
        producer = BackgroundProducer(group.endpoint, group.stream)
        producer.start()
        try:
            before = await poll_items(
                group.endpoint, group.app,
                lambda t: all(position(i["checkpoint"]["S"]) >= 0 for i in t.values())
                and min(len(group.records([w])) for w in (KCL, SK)) >= 60,
                120, "both workers processing and every lease checkpointed",
            )  # fmt: skip
            if victim == KCL:
                kcl.kill()
            else:
                sk.signal(signal.SIGKILL)
            # The victim is dead: its leases' checkpoints are final until the survivor
            # takes them (not before one failover time), so this read is what it resumes from.
            at_kill = await asyncio.to_thread(raw_items, group.endpoint, group.app)
            victims = {k for k, i in before.items() if i["leaseOwner"]["S"] == victim}
            assert {k for k, i in at_kill.items() if i["leaseOwner"]["S"] == victim} == victims
            await poll_items(group.endpoint, group.app,
                             lambda t: owner_counts(t) == {survivor: 8}, START,
                             f"{survivor} taking the victim's leases")  # fmt: skip
            await asyncio.sleep(2)
        finally:
            sent = set(await producer.stop())
        await wait_until(lambda: payloads(group) >= sent, 180, "every record processed")

        takeovers = group.takeovers(since=producing_since)
        resumed = {t.shard: t.start for t in sorted(takeovers, key=lambda t: -t.t)}
        expected = {k: v for k, v in checkpoints(at_kill).items() if k in victims}
        assert resumed == expected, "the survivor resumes each shard at the victim's checkpoint"
        assert all(t.worker == survivor for t in takeovers)

        report = duplicate_report(group.records(), takeovers)
        after_checkpoint = {
            s: sum(1 for r in group.records([victim]) if r["shard"] == s
                   and int(r["seq"]) > expected[s])
            for s in victims
        }  # fmt: skip
        assert report.allowed == {s: after_checkpoint.get(s, 0) for s in report.allowed}
        for shard, count in report.duplicates.items():
            assert count <= report.allowed[shard], f"{shard}: {count} > {report.allowed[shard]}"
        print(f"victim {victim}: duplicates {report.duplicates}, bound {report.allowed}")


async def test_a_checkpoint_written_by_one_is_where_the_other_starts(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """KCL -> streamkit -> KCL on one lease table, each SIGKILLed while records flow: each
    successor reads exactly the records after the checkpoints its predecessor left."""
    ep = localstack_endpoint
    async with fleet(ep, tmp_path, 4) as group:
        kcl = group.start_kcl("kcl-1", checkpoint_every=5)
        left = await run_then_kill(group, "kcl-1", kcl.kill)
        sk = group.start_streamkit("sk-2", checkpoint_every=5)
        await check_starts_at(group, "sk-2", left)
        left = await run_then_kill(group, "sk-2", lambda: sk.signal(signal.SIGKILL))
        group.start_kcl("kcl-3", checkpoint_every=5)
        await check_starts_at(group, "kcl-3", left)


async def run_then_kill(group: Fleet, worker: str, kill: Callable[[], object]) -> dict[str, int]:
    """Write records until ``worker`` checkpointed past its start on every shard, SIGKILL it,
    write 40 more (one per partition key, so every shard gets records its dead reader never
    saw), stop writing; returns the checkpoints it left in the table."""
    start = checkpoints(await poll_items(group.endpoint, group.app, lambda t: True, 30, "a read"))
    producer = BackgroundProducer(group.endpoint, group.stream, per_tick=6)
    producer.start()
    try:
        await poll_items(
            group.endpoint, group.app,
            lambda t: len(t) == 4 and owner_counts(t) == {worker: 4}
            and all(c > start.get(k, -1) for k, c in checkpoints(t).items()),
            START, f"{worker} checkpointing every shard",
        )  # fmt: skip
        kill()
        at_kill = len(producer.sent)
        await wait_until(
            lambda: len(producer.sent) >= at_kill + 40, 60, "40 records after the kill"
        )
    finally:
        await producer.stop()
    return checkpoints(await asyncio.to_thread(raw_items, group.endpoint, group.app))


async def check_starts_at(group: Fleet, worker: str, left: dict[str, int]) -> None:
    """``worker`` takes every lease, resumes at ``left``, and reads each shard from the
    first record after it to the end, skipping nothing and re-reading nothing before it."""
    stream = await asyncio.to_thread(
        read_stream_blocking, group.endpoint.client("kinesis"), group.stream
    )
    wanted = {
        (shard, int(r["SequenceNumber"]))
        for shard, recs in stream.items()
        for r in recs
        if int(r["SequenceNumber"]) > left[shard]
    }
    assert wanted, "the predecessor left records after its checkpoints"

    def read() -> set[tuple[str, int]]:
        return {(r["shard"], int(r["seq"])) for r in group.records([worker])}

    await wait_until(lambda: read() >= wanted, START, f"{worker} reading past the checkpoints")
    assert read() == wanted, f"{worker} read exactly the records after the checkpoints"
    starts = {t.shard: t.start for t in group.takeovers(since=0) if t.worker == worker}
    assert starts == left, f"{worker} initialized each shard at its predecessor's checkpoint"


async def test_streamkit_keeps_attributes_it_does_not_know(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """Items written by KCL (plus what KCL 3.x and operators add) keep every attribute
    except the five a take and a checkpoint change, once streamkit has taken them over,
    renewed them and checkpointed."""
    ep = localstack_endpoint
    async with fleet(ep, tmp_path, 4) as group:
        kcl = group.start_kcl(KCL, checkpoint_every=1)
        producer = BackgroundProducer(ep, group.stream, per_tick=8)
        producer.start()
        try:
            await poll_items(
                ep,
                group.app,
                lambda t: len(t) == 4 and all(c >= 0 for c in checkpoints(t).values()),
                START,
                "KCL checkpointing",
            )
        finally:
            await producer.stop()
        assert kcl.terminate() == 0, "KCL shuts down gracefully on SIGTERM"
        assert kcl.events("stopped"), "the scheduler's graceful shutdown completed"
        client = ep.client("dynamodb")
        extra = {
            "throughputKBps": {"N": "12.5"},
            "entityType": {"S": "LEASE"},
            "teamNote": {"M": {"by": {"S": "ops"}, "ids": {"NS": ["1", "2"]}}},
        }
        for key in raw_items(ep, group.app):  # what KCL 3.x and people add to lease items
            client.update_item(
                TableName=group.app, Key={"leaseKey": {"S": key}},
                UpdateExpression="SET throughputKBps = :t, entityType = :e, teamNote = :n",
                ExpressionAttributeValues={":t": extra["throughputKBps"],
                                           ":e": extra["entityType"], ":n": extra["teamNote"]},
            )  # fmt: skip
        before = await asyncio.to_thread(raw_items, ep, group.app)
        assert all({"startingHashKey", "endingHashKey"} <= set(i) for i in before.values())

        sk = group.start_streamkit(SK, checkpoint_every=1)
        producer = BackgroundProducer(ep, group.stream, per_tick=8)
        producer.start()
        try:
            after = await poll_items(ep, group.app, lambda t: owner_counts(t) == {SK: 4} and all(
                position(t[k]["checkpoint"]["S"]) > position(before[k]["checkpoint"]["S"])
                for k in t), START, "streamkit taking over and checkpointing")  # fmt: skip
        finally:
            await producer.stop()
        await wait_until(lambda: len(sk.events("checkpoint")) >= 4, 60, "checkpoints logged")

        for key, old in before.items():
            new = after[key]
            kept = {a: v for a, v in old.items() if a not in CHANGED_BY_TAKE_AND_CHECKPOINT}
            assert {a: new.get(a) for a in kept} == kept, f"{key}: attributes lost or changed"
            assert set(new) == set(old) | {"leaseOwner"}, f"{key}: nothing added but the owner"
            assert int(new["leaseCounter"]["N"]) > int(old["leaseCounter"]["N"])
            assert new["checkpointSubSequenceNumber"] == {"N": "0"}


def kcl_attribute_names(servers_cache_dir: Path) -> set[str]:
    """The lease attribute names KCL's ``DynamoDBLeaseSerializer`` knows, read with javap from
    the string constants of the class in the KCL jar the peer runs (not from streamkit)."""
    jar = next((install_kcl(servers_cache_dir).parent / "lib").glob("amazon-kinesis-client-*.jar"))
    shown = subprocess.run(
        ["javap", "-constants", "-p", "-cp", str(jar),
         "software.amazon.kinesis.leases.dynamodb.DynamoDBLeaseSerializer"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    names = set(re.findall(r'static final java\.lang\.String \w+_KEY = "(\w+)";', shown))
    assert {"leaseKey", "checkpointSubSequenceNumber", "parentShardId"} <= names, shown
    return names


async def test_streamkit_writes_only_attributes_kcl_knows(
    localstack_endpoint: AwsEndpoint, servers_cache_dir: Path
) -> None:
    """Every write of streamkit's lease store (create with parents, children, hash range and
    a pending checkpoint; take, renew, prepare, checkpoint, add children, release) leaves
    only attribute names KCL's serializer knows: KCL never meets an attribute it did not
    write, so the reverse of ``test_streamkit_keeps_attributes_it_does_not_know`` is empty."""
    kcl_names = kcl_attribute_names(servers_cache_dir)
    store = DynamoDBLeaseStore(localstack_endpoint, unique("kclnames"))
    await store.create_table_if_not_exists()
    seen: set[str] = set()

    def scan() -> None:
        seen.update(
            *(set(item) for item in raw_items(localstack_endpoint, store.table_name).values())
        )

    try:
        child = Lease("shardId-000000000003", parent_shard_ids=("shardId-000000000001",),
                      hash_key_range=HashKeyRange(0, 2**127),
                      pending_checkpoint=ExtendedSequenceNumber("4961", 3))  # fmt: skip
        parent = Lease("shardId-000000000001", hash_key_range=HashKeyRange(0, 2**128 - 1))
        for lease in (parent, child):
            await store.create_lease_if_not_exists(lease)
        scan()
        taken = await store.take_lease(parent, "sk-1")
        taken = await store.renew_lease(taken)
        taken = await store.prepare_checkpoint(taken, ExtendedSequenceNumber("4959", 2))
        scan()
        taken = await store.update_checkpoint(taken, ExtendedSequenceNumber("4960", 1))
        await store.add_child_shard_ids(parent.lease_key, [child.lease_key])
        scan()
        await store.release_lease(await store.get_lease(parent.lease_key) or taken)
        scan()
    finally:
        await store.delete_table()
    assert seen - kcl_names == set(), "streamkit wrote attributes KCL does not know"
    assert {"parentShardId", "childShardIds", "pendingCheckpoint", "leaseOwner"} <= seen


def first_seen(group: Fleet) -> dict[str, float]:
    """Wall-clock time each payload was first processed, by any worker."""
    seen: dict[str, float] = {}
    for r in group.records():
        seen[r["data"]] = min(float(r["t"]), seen.get(r["data"], float("inf")))
    return seen


def ended(group: Fleet) -> dict[str, float]:
    """When each shard's processor reached SHARD_END (KCL: ``shard_ended``; streamkit: its
    SHARD_END checkpoint)."""
    times: dict[str, float] = {}
    for kcl in group.kcl_workers.values():
        times |= {e["shard"]: float(e["t"]) for e in kcl.events("shard_ended")}
    for sk in group.streamkit_workers.values():
        times |= {e["shard"]: float(e["t"]) for e in sk.events("checkpoint")
                  if e["seq"] == "SHARD_END"}  # fmt: skip
    return times


async def test_split_and_merge_while_both_run(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    """Split one shard and merge two while a KCL and a streamkit worker share the table:
    every record is processed, each child waits for all its parents (whoever held them),
    and the child leases carry KCL's ``parentShardId``."""
    ep = localstack_endpoint
    async with fresh_stream(ep, 4, "kclreshard") as (stream, admin):
        group = Fleet(ep, stream, unique("kclapp"), tmp_path)
        try:
            group.start_kcl(KCL)
            await poll_items(ep, group.app, lambda t: owner_counts(t) == {KCL: 4}, START,
                             "KCL holding all 4 leases")  # fmt: skip
            group.start_streamkit(SK)
            await stable_split(group, {KCL: 2, SK: 2})
            producer = BackgroundProducer(ep, stream)
            producer.start()
            try:
                await wait_until(lambda: len(group.records()) >= 100, 60, "records flowing")
                split = await admin.split_shard(stream, "shardId-000000000000")
                merged = await admin.merge_shards(
                    stream, "shardId-000000000001", "shardId-000000000002"
                )
                children = {s.shard_id: s.parent_shard_ids for s in (*split, *merged)}
                await wait_until(
                    lambda: {r["shard"] for r in group.records()} >= set(children), START,
                    "every child shard being read",
                )  # fmt: skip
            finally:
                sent = await producer.stop()
            await wait_until(lambda: payloads(group) >= set(sent), START, "every record")
            table = await asyncio.to_thread(raw_items, ep, group.app)
        except BaseException:
            print(group.logs())
            raise
        finally:
            group.close()
            await drop_table(ep, group.app)

    for child, parents in children.items():
        assert table[child]["parentShardId"] == {"SS": sorted(parents)}, child
    firsts, ends = first_seen(group), ended(group)
    for child, parents in children.items():
        began = min(float(r["t"]) for r in group.records() if r["shard"] == child)
        for parent in parents:
            assert ends[parent] <= began, f"{child} read before its parent {parent} ended"
    for key in range(40):  # BackgroundProducer: payload p<n> has key key-<n % 40>
        mine = [f"p{n}" for n in range(key, len(sent), 40)]
        times = [firsts[p] for p in mine]
        assert times == sorted(times), f"key-{key}: records processed out of order"
