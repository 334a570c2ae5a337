"""README guarantee: lease checkpoints advance only after ``commits/N``.

Observed during a run, not only at the end (where lease alignment at the next start would
hide an early checkpoint): a ``foreach_batch`` sink holds the first batch of a second wave
of records open while the test reads the lease table and the commit log. Until that batch
is committed, every lease stays exactly at the end of the first wave (read with boto3).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.leases import LeaseStoreError
from streamkit_kinesis.source import KinesisStreamSource
from streamkit_kinesis.testing.streams import fresh_stream, unique

import streamkit as sk
from streamkit.testing.events import SCHEMA, make_events
from streamkit_kinesis_tests.source.test_stream_source import (
    FAST,
    drop,
    last_sequences,
    lease_table,
    produce,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack]


async def until(predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.1)


def committed(checkpoint: Path) -> list[int]:
    return sorted(int(p.name) for p in (checkpoint / "commits").glob("*") if p.name.isdigit())


async def test_lease_checkpoints_wait_for_the_commit_of_the_batch(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    _, records = make_events(400, seed=21)
    app, ck = unique("app"), tmp_path / "ck"
    held: list[int] = []  # batch ids the sink is holding (or held)
    release = threading.Event()
    seen = 0

    async def sink(df: sk.DataFrame, batch_id: int) -> None:
        nonlocal seen
        seen += df.to_arrow().num_rows
        if seen > 200 and not held:  # the first batch with records of the second wave
            held.append(batch_id)
            await asyncio.to_thread(release.wait, 120)

    async with fresh_stream(ep, 2, "order") as (stream, _):
        await produce(ep, stream, records[:200])
        wave1 = await last_sequences(ep, stream)
        try:
            source = KinesisStreamSource(  # a lease checkpoint after every commit
                stream, app, ep, schema=SCHEMA, consumer_options=FAST, checkpoint_interval=0.0
            )
            query = (
                sk.read_stream.source(source).write_stream.trigger(processing_time=0.1)
                .checkpoint(str(ck)).foreach_batch(sink).start()
            )  # fmt: skip
            try:

                async def leases_at(tips: dict[str, str]) -> bool:
                    try:
                        table = await lease_table(ep, app)
                    except LeaseStoreError:
                        return False  # the source has not created the table yet
                    return {k: v.checkpoint.sequence_number for k, v in table.items()} == tips

                await until(lambda: leases_at(wave1), "the leases to reach the first wave's end")
                await produce(ep, stream, records[200:])
                wave2 = await last_sequences(ep, stream)

                async def holding() -> bool:
                    return bool(held)

                await until(holding, "the sink to hold a batch of the second wave")
                n = held[0]
                for _ in range(10):  # the query keeps running; nothing may move meanwhile
                    assert committed(ck)[-1] == n - 1
                    assert await leases_at(wave1), await lease_table(ep, app)
                    await asyncio.sleep(0.2)
                release.set()
                await until(lambda: leases_at(wave2), "the leases to reach the second wave's end")
                assert n in committed(ck)
                assert seen == 400
            finally:
                release.set()
                await asyncio.to_thread(query.stop)
        finally:
            await drop(ep, app)
