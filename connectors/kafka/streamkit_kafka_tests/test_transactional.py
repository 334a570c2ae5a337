"""The transactional Kafka sink on Apache Kafka: each batch is one transaction, a batch
committed before a crash is not written again, a restart fences the previous writer, and
Kafka -> streamkit -> Kafka survives kill -9 exactly-once for ``read_committed`` readers."""

from __future__ import annotations

import contextlib
import gc
import json
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from streamkit_kafka import KafkaSinkError, TransactionalKafkaSink
from streamkit_kafka.testing import create_topic, produce, unique

from streamkit.testing.events import make_events

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

pytestmark = pytest.mark.integration

JOB = Path(__file__).with_name("txn_job_proc.py")


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Collect each test's garbage at its end. A fenced aiokafka producer leaves futures
    with ``ProducerFenced`` that nobody reads; asyncio logs each with its traceback when it
    is collected, and a collection that falls inside an ``ast.parse`` (a later import)
    makes CPython 3.11.7 fail that parse with "AST constructor recursion depth mismatch"
    (gh-106905, a race on the AST recursion counter), failing the run after all passed."""
    yield
    gc.collect()


async def committed_values(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    """Every record value a ``read_committed`` reader sees, read up to the end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, "committed records not readable within 30 s"
            batch = await consumer.getmany(timeout_ms=500)
            values += [r.value for rs in batch.values() for r in rs if r.value is not None]
        return values
    finally:
        await consumer.stop()


def ids(table: pa.Table) -> list[bytes]:
    return [json.dumps(r, default=str).encode() for r in table.to_pylist()]


async def test_a_rerun_batch_is_skipped_and_each_batch_is_visible_once(
    kafka_bootstrap: str,
) -> None:
    topic, txid = unique("txn"), unique("tx")
    await create_topic(kafka_bootstrap, topic)
    truth, _ = make_events(30, seed=21)
    first = TransactionalKafkaSink(kafka_bootstrap, topic, txid)
    try:
        await first.add_batch(0, truth.slice(0, 10))
        await first.add_batch(1, truth.slice(10, 10))
    finally:
        await first.close()
    again = TransactionalKafkaSink(kafka_bootstrap, topic, txid)  # a restarted query
    try:
        assert await again.last_committed_batch() == 1
        await again.add_batch(1, truth.slice(10, 10))  # re-run of batch 1
        await again.add_batch(2, truth.slice(20, 10))
    finally:
        await again.close()
    assert again.skipped_batches == [1]
    got = [json.loads(v)["value"] for v in await committed_values(kafka_bootstrap, topic, 1)]
    assert got == truth.column("value").to_pylist()


async def test_a_restart_right_after_a_commit_finds_that_commit(kafka_bootstrap: str) -> None:
    """Each incarnation reads the marker the moment the previous one committed and closed:
    Kafka answers a commit before its markers land, so a read that does not wait for them
    (InitProducerId) finds the batch before it now and then (4 in 100 here)."""
    topic, txid = unique("txn"), unique("tx")
    await create_topic(kafka_bootstrap, topic)
    truth, _ = make_events(2, seed=24)
    writer = TransactionalKafkaSink(kafka_bootstrap, topic, txid)
    found: list[int | None] = []
    try:
        await writer.add_batch(0, truth)
        for batch_id in range(1, 61):
            await writer.close()
            writer = TransactionalKafkaSink(kafka_bootstrap, topic, txid)  # a restart
            found.append(await writer.last_committed_batch())
            await writer.add_batch(batch_id, truth)
    finally:
        await writer.close()
    assert found == list(range(60))
    assert writer.skipped_batches == []


async def test_an_open_transaction_of_a_dead_writer_is_aborted_on_restart(
    kafka_bootstrap: str,
) -> None:
    topic, txid = unique("txn"), unique("tx")
    await create_topic(kafka_bootstrap, topic)
    dead = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=txid)
    await dead.start()
    await dead.begin_transaction()
    await dead.send_and_wait(topic, b'{"half": "written"}')
    # The writer "dies" here: its transaction stays open on the broker.
    sink = TransactionalKafkaSink(kafka_bootstrap, topic, txid)
    truth, _ = make_events(5, seed=22)
    try:
        await sink.add_batch(0, truth)  # init_transactions fences and aborts the open one
    finally:
        await sink.close()
        await dead.client.close()
    values = await committed_values(kafka_bootstrap, topic, 1)
    assert [json.loads(v)["value"] for v in values] == truth.column("value").to_pylist()


async def test_the_previous_writer_is_fenced(kafka_bootstrap: str) -> None:
    topic, txid = unique("txn"), unique("tx")
    await create_topic(kafka_bootstrap, topic)
    truth, _ = make_events(10, seed=23)
    old, new = (TransactionalKafkaSink(kafka_bootstrap, topic, txid) for _ in range(2))
    try:
        await old.add_batch(0, truth.slice(0, 5))
        await new.add_batch(1, truth.slice(5, 5))  # same id: the old writer is fenced
        with pytest.raises(KafkaSinkError, match="taken over by another writer"):
            await old.add_batch(2, truth.slice(0, 5))
    finally:
        for sink in (old, new):
            with contextlib.suppress(Exception):
                await sink.close()
    values = await committed_values(kafka_bootstrap, topic, 1)
    assert [json.loads(v)["value"] for v in values] == truth.column("value").to_pylist()


async def test_two_writers_on_distinct_ids_are_fenced_and_resumed_on_their_own(
    kafka_bootstrap: str,
) -> None:
    """Two queries writing one topic, each under its own transactional id: restarting one
    fences only its own earlier incarnation, and each resumes from its own last batch."""
    topic = unique("txn")
    await create_topic(kafka_bootstrap, topic)
    ours, theirs = make_events(40, seed=25)[0], make_events(30, seed=26)[0]
    a, b = unique("tx-a"), unique("tx-b")
    a1 = TransactionalKafkaSink(kafka_bootstrap, topic, a)
    b1 = TransactionalKafkaSink(kafka_bootstrap, topic, b)
    a2 = b2 = None
    try:
        for batch_id in range(3):
            await a1.add_batch(batch_id, ours.slice(batch_id * 10, 10))
        await b1.add_batch(0, theirs.slice(0, 10))
        a2 = TransactionalKafkaSink(kafka_bootstrap, topic, a)  # query A restarts
        assert await a2.last_committed_batch() == 2
        with pytest.raises(KafkaSinkError, match="taken over by another writer"):
            await a1.add_batch(3, ours.slice(0, 1))  # A's old incarnation is fenced ...
        await b1.add_batch(1, theirs.slice(10, 10))  # ... B's writer is not
        b2 = TransactionalKafkaSink(kafka_bootstrap, topic, b)  # query B restarts
        assert await b2.last_committed_batch() == 1
        await b2.add_batch(1, theirs.slice(10, 10))  # re-runs, skipped
        await a2.add_batch(2, ours.slice(20, 10))
        await a2.add_batch(3, ours.slice(30, 10))  # each resumes after its own last batch
        await b2.add_batch(2, theirs.slice(20, 10))
        assert (a2.skipped_batches, b2.skipped_batches) == ([2], [1])
    finally:
        for sink in (a1, b1, a2, b2):
            if sink is not None:
                with contextlib.suppress(Exception):
                    await sink.close()
    values = await committed_values(kafka_bootstrap, topic, 1)
    got = Counter(json.loads(v)["value"] for v in values)
    assert got == Counter(ours.column("value").to_pylist() + theirs.column("value").to_pylist())


def _job(bootstrap: str, names: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    args = [f"--{k}={v}" for k, v in names.items()]
    return subprocess.Popen([sys.executable, str(JOB), f"--bootstrap={bootstrap}", *args, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _kill_on(proc: subprocess.Popen[str], wanted: str, timeout: float = 90) -> list[str]:
    """Read the job's lines until one starts with ``wanted`` (or it exits), then SIGKILL."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith(wanted) or time.monotonic() > deadline:
            break
    proc.kill()
    proc.wait(30)
    return lines


def _outcomes(lines: Sequence[str], word: str) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith(word)]


async def test_kill_9_kafka_to_kafka_is_exactly_once_for_read_committed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    names = {"input": unique("in"), "output": unique("out"), "group": unique("g"),
             "txid": unique("tx"), "checkpoint": str(tmp_path / "ck")}  # fmt: skip
    await create_topic(kafka_bootstrap, names["input"], partitions=3)
    await create_topic(kafka_bootstrap, names["output"], partitions=3)
    _, records = make_events(1200, seed=24)
    await produce(kafka_bootstrap, names["input"], [v for v, _ in records], partitions=3)
    rng = random.Random(24)
    skipped: list[int] = []
    for round_ in range(4):
        proc = _job(kafka_bootstrap, names, "--hold=0.5")
        # Even rounds: kill right after a sink commit, before the engine's commits/N.
        # Odd rounds: kill at a random moment (often inside a transaction).
        if round_ % 2 == 0:
            lines = _kill_on(proc, "committed")
        else:
            time.sleep(rng.uniform(0.5, 2.5))
            proc.kill()
            out, _ = proc.communicate(timeout=30)
            lines = out.splitlines()
        skipped += _outcomes(lines, "skipped")
    final = _job(kafka_bootstrap, names, "--trigger=available_now")
    out, err = final.communicate(timeout=180)
    assert final.returncode == 0, err[-3000:]
    skipped += _outcomes(out.splitlines(), "skipped")
    assert skipped, "no restart re-ran a batch the sink had committed: the kill missed"
    values = await committed_values(kafka_bootstrap, names["output"], 3)
    got = Counter(_identity(v) for v in values)
    expected = Counter(_identity(v) for v, _ in records)
    assert len(expected) == 1200, "the generator must give every event a distinct identity"
    extra, lost = got - expected, expected - got
    assert not extra, f"{extra.total()} records extra (duplicates), e.g. {list(extra)[:3]}"
    assert not lost, f"{lost.total()} records lost, e.g. {list(lost)[:3]}"


def _identity(value: bytes) -> tuple[str, ...]:
    """An event as (instant, action, user, value), whatever the timestamp's spelling."""
    row = json.loads(value)
    instant = datetime.fromisoformat(row["event_time"].replace("Z", "+00:00"))
    return (instant.isoformat(), row["action"], row["user_id"], str(row["value"]))
