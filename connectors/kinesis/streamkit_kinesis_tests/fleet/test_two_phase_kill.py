"""Issue 14 test 4 (exchange side), as separate OS processes on LocalStack.

Worker 1 emits one batch through the exchange, then prepares, puts and is SIGKILLed before
its checkpoint. Worker 2 (a real KinesisConsumer) takes the expired lease, learns the
pending checkpoint through ``initialize_with``, re-reads exactly (checkpoint, pending] as
one batch and re-emits it, then goes on. Read back with plain GetRecords, the exchange holds
that (source, last, part) chunk twice, byte-identical, and every source record exactly once
otherwise. (Dropping the duplicate is the aggregation task's job, tested there.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.fleet.exchange import ensure_exchange, exchange_stream_name
from streamkit_kinesis.fleet.reader import read_exchange_shard
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.testing.streams import fresh_stream, put_blocking, unique
from streamkit_kinesis.types import ExtendedSequenceNumber

from streamkit_kinesis_tests.consumer.consumer_support import _json_lines, wait_until

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("two_phase_proc.py")


class Worker:
    """One ``two_phase_proc.py`` process (killed by its own PID in ``close``)."""

    def __init__(self, endpoint: AwsEndpoint, stream: str, app: str, name: str, tmp: Path,
                 *extra: str) -> None:  # fmt: skip
        assert endpoint.url is not None
        self.events_path = tmp / f"{name}.events.jsonl"
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("w")
        cmd = [
            sys.executable, str(SCRIPT), "--endpoint", endpoint.url, "--stream", stream,
            "--app", app, "--worker-id", name, "--events", str(self.events_path),
            "--exchange-shards", "2", *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in _json_lines(self.events_path) if e["event"] == kind]

    async def wait_exit(self, timeout: float) -> int:
        await wait_until(lambda: self.proc.poll() is not None, timeout, "worker exit")
        code = self.proc.returncode
        assert code is not None
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def esn(value: str) -> ExtendedSequenceNumber:
    return ExtendedSequenceNumber(value)


async def check_exchange(
    endpoint: AwsEndpoint, app: str, shard: str, replayed_last: str, payloads: list[bytes]
) -> None:
    """Every exchange shard holds the (source, replayed_last, 0) chunk exactly twice,
    byte-identical, and every source record once in the other chunks, contiguous."""
    client = kinesis_client(endpoint)
    layout = await ensure_exchange(client, app, 2)
    for p, exchange_shard in enumerate(layout.shard_ids):
        read = await read_exchange_shard(client, layout.stream, exchange_shard)
        assert {r.source_shard for r in read} == {shard}
        chunks = [json.loads(r.data) for r in read]
        assert {c["partition"] for c in chunks} == {p}
        ids = [(c["source"], c["last"], c["part"]) for c in chunks]
        twice = [k for k in ids if ids.count(k) > 1]
        assert twice == [(shard, replayed_last, 0)] * 2
        first, second = (r.data for r in read if json.loads(r.data)["last"] == replayed_last)
        assert first == second  # the re-emitted chunk is identical
        once = [c for i, c in enumerate(chunks) if ids.index(ids[i]) == i]
        assert [x.encode() for c in once for x in c["records"]] == payloads
        assert [c["first"] for c in once[1:]] == [c["last"] for c in once[:-1]]


async def test_a_worker_killed_between_put_and_checkpoint_is_replayed_exactly(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    endpoint = localstack_endpoint
    client = kinesis_client(endpoint)
    app = unique("fx2p")
    payloads = [f"r{i}".encode() for i in range(13)]
    workers: list[Worker] = []
    async with fresh_stream(endpoint, 1, "fx2p-src") as (stream, admin):
        try:
            [shard] = [s["ShardId"] for s in client.list_shards(StreamName=stream)["Shards"]]
            put_blocking(client, stream, payloads[:5], key="a")
            w1 = Worker(endpoint, stream, app, "worker-1", tmp_path, "--die-after-put", "2")
            workers.append(w1)
            await wait_until(lambda: len(w1.events("emitted")) >= 1, 120, "worker-1's 1st batch")
            put_blocking(client, stream, payloads[5:10], key="a")
            assert await w1.wait_exit(120) == -signal.SIGKILL, w1.log_path.read_text()

            [done] = w1.events("emitted")
            [_, killed] = w1.events("emitting")  # prepared and put, never checkpointed
            assert killed["first"] == done["last"]
            lease = await DynamoDBLeaseStore(endpoint, app).get_lease(shard)
            assert lease is not None
            assert lease.checkpoint == esn(done["last"])
            assert lease.pending_checkpoint == esn(killed["last"])

            tail = put_blocking(client, stream, payloads[10:], key="a")  # beyond the pending
            w2 = Worker(endpoint, stream, app, "worker-2", tmp_path)
            workers.append(w2)
            await wait_until(
                lambda: any(e["last"] == tail[-1] for e in w2.events("emitted")),
                180,
                "worker-2 to emit up to the tail",
            )
            # The first start of the shard on worker-2 (a loaded machine may starve its
            # renewals past the 3 s failover: it then loses the lease and starts again).
            init = w2.events("initialize")[0]
            assert (init["start"], init["pending"]) == (done["last"], killed["last"])
            replayed = w2.events("emitted")[0]
            assert replayed["replay"] is True
            assert (replayed["first"], replayed["last"], replayed["count"]) == (
                killed["first"],
                killed["last"],
                killed["count"],
            )
            w2.proc.send_signal(signal.SIGTERM)
            assert await w2.wait_exit(60) == 0, w2.log_path.read_text()

            final = await DynamoDBLeaseStore(endpoint, app).get_lease(shard)
            assert final is not None
            assert (final.checkpoint, final.pending_checkpoint) == (esn(tail[-1]), None)

            await check_exchange(endpoint, app, shard, killed["last"], payloads)
        finally:
            for w in workers:
                w.close()
            await DynamoDBLeaseStore(endpoint, app).delete_table()
            await admin.delete_stream(exchange_stream_name(app), wait=False)
