"""StreamAdmin against real servers: LocalStack first, moto second (its gaps marked)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import boto3
import pytest
from streamkit_kinesis.admin import StreamAdmin
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.errors import (
    CredentialsError,
    EndpointUnreachableError,
    StreamNotFoundError,
)
from streamkit_kinesis.shards import MAX_HASH_KEY
from streamkit_kinesis.testing.faults import ExceptionThrowingKinesisClient, InjectedError
from streamkit_kinesis.testing.streams import fresh_stream, unique
from streamkit_kinesis.types import ShardInfo

from streamkit.config import AwsEndpoint
from streamkit.testing.waits import HANG

pytestmark = pytest.mark.integration


def covers_whole_key_space(shards: list[ShardInfo]) -> bool:
    ranges = sorted(
        (s.hash_key_range.starting_hash_key, s.hash_key_range.ending_hash_key) for s in shards
    )
    if ranges[0][0] != 0 or ranges[-1][1] != MAX_HASH_KEY:
        return False
    return all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))


async def test_create_describe_list_delete(aws_endpoint: AwsEndpoint) -> None:
    admin = StreamAdmin(aws_endpoint, poll_interval=0.1)
    name = unique("adm")
    await admin.create_stream(name, 3)
    await admin.create_stream(name, 3)  # idempotent
    desc = await admin.describe(name)
    assert (desc.name, desc.status, desc.open_shard_count) == (name, "ACTIVE", 3)
    assert desc.retention_hours == 24
    shards = await admin.list_shards(name)
    assert [s.shard_id for s in shards] == sorted(s.shard_id for s in shards)
    assert len(shards) == 3
    assert not any(s.is_closed or s.parent_shard_ids for s in shards)
    assert covers_whole_key_space(shards)
    await admin.delete_stream(name)
    with pytest.raises(StreamNotFoundError, match=name):
        await admin.describe(name)
    await admin.delete_stream(name)  # deleting a missing stream is not an error


@pytest.mark.moto_gap("ListShards NextToken paging needs StreamName on moto (AWS forbids it)")
async def test_list_shards_follows_next_token_pages(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 5) as (stream, admin):
        client = ExceptionThrowingKinesisClient(kinesis_client(aws_endpoint))
        paged = StreamAdmin(aws_endpoint, client=client)
        shards = await paged.list_shards(stream, page_size=2)
        assert [s.shard_id for s in shards] == [s.shard_id for s in await admin.list_shards(stream)]
        assert len(shards) == 5
        assert client.calls["list_shards"] == 3  # pages of 2 + 2 + 1


async def test_split_at_midpoint_closes_parent(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 2) as (stream, admin):
        [first, _] = await admin.list_shards(stream)
        children = await admin.split_shard(stream, first.shard_id)
        assert len(children) == 2
        low, high = sorted(children, key=lambda s: s.hash_key_range.starting_hash_key)
        parent_range = first.hash_key_range
        mid = (
            parent_range.starting_hash_key
            + (parent_range.ending_hash_key - parent_range.starting_hash_key + 1) // 2
        )
        assert low.hash_key_range.starting_hash_key == parent_range.starting_hash_key
        assert low.hash_key_range.ending_hash_key == mid - 1
        assert high.hash_key_range.starting_hash_key == mid
        assert high.hash_key_range.ending_hash_key == parent_range.ending_hash_key
        assert low.parent_shard_ids == high.parent_shard_ids == (first.shard_id,)
        assert (await admin.shard(stream, first.shard_id)).is_closed
        open_shards = await admin.list_shards(stream, open_only=True)
        assert first.shard_id not in {s.shard_id for s in open_shards}
        assert covers_whole_key_space(open_shards)


@pytest.mark.moto_gap("DescribeStreamSummary's OpenShardCount is not updated by SplitShard")
async def test_open_shard_count_after_split(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 2) as (stream, admin):
        [first, _] = await admin.list_shards(stream)
        await admin.split_shard(stream, first.shard_id)
        assert (await admin.describe(stream)).open_shard_count == 3


async def test_merge_two_adjacent_shards(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 3) as (stream, admin):
        a, b, c = await admin.list_shards(stream)
        with pytest.raises(ValueError, match="not adjacent"):
            await admin.merge_shards(stream, a.shard_id, c.shard_id)
        [child] = await admin.merge_shards(stream, b.shard_id, c.shard_id)
        assert set(child.parent_shard_ids) == {b.shard_id, c.shard_id}
        assert child.hash_key_range.starting_hash_key == b.hash_key_range.starting_hash_key
        assert child.hash_key_range.ending_hash_key == c.hash_key_range.ending_hash_key
        open_ids = {s.shard_id for s in await admin.list_shards(stream, open_only=True)}
        assert open_ids == {a.shard_id, child.shard_id}


async def test_update_shard_count_uniform_scaling(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 2) as (stream, admin):
        desc = await admin.update_shard_count(stream, 4)
        assert desc.status == "ACTIVE"
        assert desc.open_shard_count == 4
        open_shards = await admin.list_shards(stream, open_only=True)
        assert len(open_shards) == 4
        assert covers_whole_key_space(open_shards)


async def test_list_after_shard_id_does_not_depend_on_the_server(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 4) as (stream, admin):
        ids = [s.shard_id for s in await admin.list_shards(stream)]
        after = await admin.list_shards(stream, after_shard_id=ids[1])
        assert [s.shard_id for s in after] == ids[2:]


async def test_throttled_control_plane_calls_are_retried(aws_endpoint: AwsEndpoint) -> None:
    async with fresh_stream(aws_endpoint, 1) as (stream, _):
        client = ExceptionThrowingKinesisClient(
            kinesis_client(aws_endpoint),
            [InjectedError("describe_stream_summary", "LimitExceededException", frozenset({1, 2}))],
        )
        slept: list[float] = []

        async def sleep(s: float) -> None:
            slept.append(s)

        admin = StreamAdmin(aws_endpoint, client=client, sleep=sleep)
        assert (await admin.describe(stream)).status == "ACTIVE"
        assert client.calls["describe_stream_summary"] == 3
        assert len(slept) == 2


async def test_missing_stream_names_it(aws_endpoint: AwsEndpoint) -> None:
    name = unique("nope")
    admin = StreamAdmin(aws_endpoint)
    with pytest.raises(StreamNotFoundError, match=name) as info:
        await admin.list_shards(name)
    assert info.value.stream == name
    with pytest.raises(StreamNotFoundError):
        await admin.split_shard(name, "shardId-000000000000")


async def test_unreachable_endpoint_fails_fast() -> None:
    admin = StreamAdmin(AwsEndpoint.local("http://127.0.0.1:9"))
    start = time.monotonic()
    with pytest.raises(EndpointUnreachableError, match=r"127\.0\.0\.1:9") as info:
        await admin.describe("s")
    assert time.monotonic() - start < HANG  # three quick attempts, not a hang
    assert info.value.attempts == 3


async def test_missing_credentials_raise_a_typed_error(
    aws_endpoint: AwsEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    session = boto3.session.Session()
    client = session.client("kinesis", endpoint_url=aws_endpoint.url, region_name="us-east-1")
    admin = StreamAdmin(aws_endpoint, client=client)
    with pytest.raises(CredentialsError, match="AWS_ACCESS_KEY_ID"):
        await admin.describe("any")
