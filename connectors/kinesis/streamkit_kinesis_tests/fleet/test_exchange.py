"""The exchange stream and its writer on LocalStack (real Kinesis protocol, real routing).

Expected shard routing comes from Kinesis itself (the ShardId PutRecords answers for an
ExplicitHashKey), and what was written is read back with plain GetRecords calls
(``read_shard_blocking``), never through the code under test. Failures are injected with
``ExceptionThrowingKinesisClient``, which wraps the real client.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest
from streamkit_kinesis.admin import StreamAdmin
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.errors import EndpointUnreachableError
from streamkit_kinesis.fleet.exchange import (
    ExchangeLayout,
    ExchangeMismatchError,
    ensure_exchange,
    exchange_stream_name,
)
from streamkit_kinesis.fleet.writer import (
    ExchangePutError,
    ExchangeRecordTooLargeError,
    ExchangeWriter,
)
from streamkit_kinesis.testing.faults import ExceptionThrowingKinesisClient, InjectedError
from streamkit_kinesis.testing.streams import read_shard_blocking

from streamkit.config import AwsEndpoint
from streamkit.errors import ConfigError
from streamkit.testing.servers import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mypy_boto3_kinesis.type_defs import PutRecordsRequestEntryTypeDef
    from streamkit_kinesis.client import KinesisApi

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

SOURCE = "shardId-000000000007"


@pytest.fixture
async def app(localstack_endpoint: AwsEndpoint) -> AsyncIterator[str]:
    name = f"fx-{uuid.uuid4().hex[:10]}"
    yield name
    admin = StreamAdmin(localstack_endpoint)
    await admin.delete_stream(exchange_stream_name(name), wait=False)
    admin.close()


@pytest.fixture
def client(localstack_endpoint: AwsEndpoint) -> KinesisApi:
    return kinesis_client(localstack_endpoint)


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def test_ensure_exchange_creates_the_stream_and_routes_partitions_to_shards(
    client: KinesisApi, app: str
) -> None:
    layout = await ensure_exchange(client, app, 4)
    assert layout.stream == f"{app}-exchange"
    listed = client.list_shards(StreamName=layout.stream)["Shards"]
    assert len(listed) == 4
    # Kinesis itself says where each partition's explicit hash key lands
    landed = []
    for p in range(4):
        out = client.put_records(
            StreamName=layout.stream,
            Records=[{"Data": b"x", "PartitionKey": SOURCE, "ExplicitHashKey": str(p * 2**126)}],
        )
        landed.append(out["Records"][0]["ShardId"])
    assert list(layout.shard_ids) == landed
    assert len(set(landed)) == 4
    assert await ensure_exchange(client, app, 4) == layout  # exists: same layout


async def test_workers_racing_to_create_the_exchange_agree(
    localstack_endpoint: AwsEndpoint, app: str
) -> None:
    clients = [kinesis_client(localstack_endpoint) for _ in range(3)]
    layouts = await asyncio.gather(*(ensure_exchange(c, app, 3) for c in clients))
    assert layouts[0] == layouts[1] == layouts[2]
    assert layouts[0].partitions == 3


async def test_a_mismatched_shard_count_is_refused_with_the_fix(
    client: KinesisApi, app: str
) -> None:
    await ensure_exchange(client, app, 2)
    with pytest.raises(ExchangeMismatchError, match=r"exchange_shards=2\)") as err:
        await ensure_exchange(client, app, 4)
    assert isinstance(err.value, ConfigError)
    with pytest.raises(ConfigError, match="positive integer"):
        await ensure_exchange(client, app, 0)


async def test_throttled_setup_calls_are_retried(client: KinesisApi, app: str) -> None:
    flaky = ExceptionThrowingKinesisClient(
        client,
        [
            InjectedError("create_stream", "LimitExceededException", frozenset({1, 2})),
            InjectedError("list_shards", "InternalFailure", frozenset({1})),
        ],
    )
    layout = await ensure_exchange(flaky, app, 2, sleep=no_sleep)
    assert layout.partitions == 2
    assert [i[0] for i in flaky.injected] == ["create_stream", "create_stream", "list_shards"]


async def test_an_unreachable_endpoint_fails_fast() -> None:
    dead = kinesis_client(AwsEndpoint.local(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(EndpointUnreachableError, match="cannot reach Kinesis"):
        await asyncio.wait_for(ensure_exchange(dead, "nobody", 2), 30)


def by_call_shards(requests: list[list[PutRecordsRequestEntryTypeDef]]) -> list[list[str]]:
    return [[e.get("ExplicitHashKey", "") for e in call] for call in requests]


def read_back(client: KinesisApi, layout: ExchangeLayout) -> dict[int, list[bytes]]:
    out = {}
    for p, shard in enumerate(layout.shard_ids):
        records = read_shard_blocking(client, layout.stream, shard)
        assert {r["PartitionKey"] for r in records} <= {SOURCE}
        out[p] = [r["Data"] for r in records]
    return out


PARTS = [
    [b"p0-part0", b"p0-part1", b"p0-part2"],
    [b"p1-part0"],
    [],
    [b"p3-part0", b"p3-part1"],
]


async def test_put_batch_writes_each_partition_in_order_one_record_per_shard_per_call(
    client: KinesisApi, app: str
) -> None:
    layout = await ensure_exchange(client, app, 4)
    recorded = ExceptionThrowingKinesisClient(client)
    writer = ExchangeWriter(recorded, layout)
    seqs = await writer.put_batch(PARTS, SOURCE)
    seqs2 = await writer.put_batch([[b"p0-next"], [], [], [b"p3-next"]], SOURCE)

    assert read_back(client, layout) == {
        0: [*PARTS[0], b"p0-next"],
        1: PARTS[1],
        2: [],
        3: [*PARTS[3], b"p3-next"],
    }
    assert [len(s) for s in seqs] == [3, 1, 0, 2]
    assert [len(s) for s in seqs2] == [1, 0, 0, 1]
    for call in by_call_shards(recorded.put_records_requests):
        assert len(call) == len(set(call))  # never two records for one exchange shard
    # partitions share calls: 3 calls for the first batch (p0 has three parts), 1 for the next
    assert len(recorded.put_records_requests) == 4
    metrics = writer.metrics()
    assert (metrics.records_sent, metrics.calls, metrics.entry_retries) == (8, 4, 0)


async def test_failed_entries_and_calls_are_retried_until_written_in_order(
    client: KinesisApi, app: str
) -> None:
    layout = await ensure_exchange(client, app, 4)
    failures = {b"p0-part0": 12, b"p3-part1": 2, b"p1-part0": 1}  # more than any bound

    def fail(_call: int, _index: int, entry: PutRecordsRequestEntryTypeDef) -> str | None:
        data = entry["Data"]
        assert isinstance(data, bytes)
        if failures.get(data, 0) > 0:
            failures[data] -= 1
            return (
                "InternalFailure"
                if data == b"p1-part0"
                else ("ProvisionedThroughputExceededException")
            )
        return None

    flaky = ExceptionThrowingKinesisClient(
        client,
        [InjectedError("put_records", "ServiceUnavailable", frozenset({2}))],
        fail_entries=fail,
    )
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    writer = ExchangeWriter(flaky, layout, sleep=sleep)
    await writer.put_batch(PARTS, SOURCE)

    assert read_back(client, layout) == dict(enumerate(PARTS))  # each once, in order
    for call in by_call_shards(flaky.put_records_requests):
        assert len(call) == len(set(call))
    assert writer.metrics().throttles == 14
    assert len(slept) >= 13  # a backoff after each failed round


async def test_a_non_retryable_entry_error_is_typed(client: KinesisApi, app: str) -> None:
    layout = await ensure_exchange(client, app, 2)

    def deny(_call: int, _index: int, entry: PutRecordsRequestEntryTypeDef) -> str | None:
        return "KMSAccessDeniedException" if entry["Data"] == b"b" else None

    writer = ExchangeWriter(ExceptionThrowingKinesisClient(client, fail_entries=deny), layout)
    with pytest.raises(ExchangePutError, match="KMSAccessDeniedException") as err:
        await writer.put_batch([[b"a"], [b"b"]], SOURCE)
    assert (err.value.partition, err.value.part) == (1, 0)


async def test_a_part_over_one_mib_is_refused_before_anything_is_sent(
    client: KinesisApi, app: str
) -> None:
    layout = await ensure_exchange(client, app, 2)
    recorded = ExceptionThrowingKinesisClient(client)
    writer = ExchangeWriter(recorded, layout)
    big = b"x" * (1024 * 1024 - len(SOURCE) + 1)
    with pytest.raises(ExchangeRecordTooLargeError, match="split chunks into more parts") as err:
        await writer.put_batch([[b"small"], [b"ok", big]], SOURCE)
    assert (err.value.partition, err.value.part) == (1, 1)
    assert recorded.put_records_requests == []
    await writer.put_batch([[b"small"], [big[:-1]]], SOURCE)  # exactly at the limit: sent
    with pytest.raises(ValueError, match="one chunk list per partition"):
        await writer.put_batch([[b"a"]], SOURCE)


async def test_two_puts_for_one_source_shard_may_not_overlap(client: KinesisApi, app: str) -> None:
    layout = await ensure_exchange(client, app, 2)
    once = {b"a"}

    def fail(_call: int, _index: int, entry: PutRecordsRequestEntryTypeDef) -> str | None:
        data = entry["Data"]
        assert isinstance(data, bytes)
        if data in once:
            once.discard(data)
            return "ProvisionedThroughputExceededException"
        return None

    gate, waiting = asyncio.Event(), asyncio.Event()

    async def sleep(_: float) -> None:
        waiting.set()
        await gate.wait()

    writer = ExchangeWriter(
        ExceptionThrowingKinesisClient(client, fail_entries=fail), layout, sleep=sleep
    )
    first = asyncio.create_task(writer.put_batch([[b"a"], [b"b"]], SOURCE))
    await asyncio.wait_for(waiting.wait(), 10)  # first is backing off, in flight
    with pytest.raises(RuntimeError, match="already in flight"):
        await writer.put_batch([[b"c"], [b"d"]], SOURCE)
    other = await writer.put_batch([[b"c"], [b"d"]], "shardId-000000000008")  # another source
    assert [len(s) for s in other] == [1, 1]
    gate.set()
    await asyncio.wait_for(first, 10)
