"""``examples/async_service.py`` as a user runs it: started as a process against the
suite's LocalStack, fed records over the Kinesis API while it serves, queried over HTTP,
then stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from tests.test_examples import EXAMPLES

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

START = datetime(2024, 1, 1, tzinfo=UTC)
ACTIONS = ("view", "click", "purchase")


def make_events(count: int) -> list[dict[str, Any]]:
    """``count`` events, 7 s apart (so about 9 per minute), actions in turn."""
    return [
        {
            "event_time": (START + timedelta(seconds=7 * i)).isoformat().replace("+00:00", "Z"),
            "action": ACTIONS[i % 3],
            "user_id": i % 11,
            "value": float(i),
        }
        for i in range(count)
    ]


def expected_counts(events: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """Events per (minute, action), counted here from the events themselves."""
    out: Counter[tuple[str, str]] = Counter()
    for e in events:
        t = datetime.fromisoformat(e["event_time"].replace("Z", "+00:00"))
        out[(t.replace(second=0).isoformat(), e["action"])] += 1
    return dict(out)


def put_events(endpoint: AwsEndpoint, stream: str, events: list[dict[str, Any]]) -> None:
    kinesis = endpoint.client("kinesis")
    for lo in range(0, len(events), 100):
        entries = [
            {"Data": json.dumps(e).encode(), "PartitionKey": str(e["user_id"])}
            for e in events[lo : lo + 100]
        ]
        failed = kinesis.put_records(StreamName=stream, Records=entries)["FailedRecordCount"]
        assert failed == 0


def last_sequence_numbers(endpoint: AwsEndpoint, stream: str) -> dict[str, str]:
    """Each shard's last sequence number, read from TRIM_HORIZON."""
    kinesis = endpoint.client("kinesis")
    out: dict[str, str] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            if page["Records"]:
                out[shard["ShardId"]] = page["Records"][-1]["SequenceNumber"]
            iterator = page.get("NextShardIterator") if page["Records"] else None
    return out


def shard_leases(endpoint: AwsEndpoint, app_name: str) -> dict[str, dict[str, Any]]:
    """The lease table's shard items by shard id, as DynamoDB returns them."""
    items = endpoint.client("dynamodb").scan(TableName=app_name, ConsistentRead=True)["Items"]
    return {i["leaseKey"]["S"]: i for i in items if i["leaseKey"]["S"].startswith("shardId")}


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200
        return await response.json()


async def start_service(
    endpoint: AwsEndpoint, stream: str, app_name: str
) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "async_service.py"), "--endpoint", str(endpoint.url),
        "--stream", stream, "--app-name", app_name, "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 180)).decode()
    if not line.startswith("serving "):
        proc.kill()
        err = await proc.stderr.read() if proc.stderr is not None else b""
        pytest.fail(f"the service did not start: {line!r} {err.decode()[-2000:]}")
    return proc, line.split()[1]


@pytest.mark.integration
async def test_async_service_serves_live_counts_and_progress(
    localstack_endpoint: AwsEndpoint,
) -> None:
    stream = f"async-service-{uuid.uuid4().hex[:8]}"
    kinesis = localstack_endpoint.client("kinesis")
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream)
    events = make_events(300)
    want = expected_counts(events)
    app_name = f"{stream}-app"
    proc, base = await start_service(localstack_endpoint, stream, app_name)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            assert await get_json(http, f"{base}/counts") == []  # served before any record
            await asyncio.to_thread(put_events, localstack_endpoint, stream, events[:150])
            await asyncio.to_thread(put_events, localstack_endpoint, stream, events[150:])
            got: dict[tuple[str, str], int] = {}
            for _ in range(360):  # up to ~3 minutes on a loaded machine
                rows = await get_json(http, f"{base}/counts")
                got = {(r["window_start"], r["action"]): r["events"] for r in rows}
                if sum(got.values()) >= len(events):
                    break
                await asyncio.sleep(0.5)
            assert got == want
            # batch N's progress is recorded when the service asks for batch N + 1 (its
            # commit): the last batch's may land just after its counts were applied
            for _ in range(240):
                progress = await get_json(http, f"{base}/progress")
                if progress["state_rows"] >= len(want):
                    break
                await asyncio.sleep(0.5)
            assert progress["batch_id"] >= 0
            assert progress["state_rows"] == len(want)  # every (window, action) group
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()[-3000:]
        assert out.decode().splitlines()[-1] == "stopped"
        # a clean stop: every shard lease released, its checkpoint at the shard's last record
        leases = shard_leases(localstack_endpoint, app_name)
        assert all("leaseOwner" not in item for item in leases.values())
        last = await asyncio.to_thread(last_sequence_numbers, localstack_endpoint, stream)
        assert {k: v["checkpoint"]["S"] for k, v in leases.items() if k in last} == last
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        kinesis.delete_stream(StreamName=stream)
