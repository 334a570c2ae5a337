"""ConsumerConfig and InitialPosition: KCL defaults, validation, the default fetchers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.consumer import ConsumerConfig, InitialPosition
from streamkit_kinesis.retrieval import PollingFetchers, ShardReader
from streamkit_kinesis.types import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    HashKeyRange,
    ShardInfo,
)

from streamkit.config import AwsEndpoint
from streamkit.errors import ConfigError


def test_defaults_follow_kcl() -> None:
    config = ConsumerConfig(app_name="app", stream="s")
    assert config.failover_time == 10.0
    assert config.effective_renew_interval == pytest.approx(10.0 / 3)
    assert config.effective_take_interval == 20.0
    assert config.max_steal == 1
    assert config.idle_time == 1.5  # KCL 2.x/3.x SimpleRecordsFetcherFactory
    assert config.max_records == 10_000
    assert config.shard_sync_interval == 120.0  # KCL's leader audit, every 2 minutes
    assert config.shard_refresh_interval is None  # KCL lists no shards per idle reader
    assert config.initial_position == InitialPosition.latest()


def test_worker_ids_are_unique_per_config() -> None:
    a, b = ConsumerConfig(app_name="app", stream="s"), ConsumerConfig(app_name="app", stream="s")
    assert a.worker_id != b.worker_id


def test_initial_positions_map_to_lease_sentinels() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    assert InitialPosition.trim_horizon().checkpoint == TRIM_HORIZON
    assert InitialPosition.latest().checkpoint == LATEST
    at = InitialPosition.at_timestamp(when)
    assert (at.checkpoint, at.timestamp) == (AT_TIMESTAMP, when)


@pytest.mark.parametrize(
    ("kind", "timestamp", "message"),
    [
        ("AT_TIMESTAMP", None, "needs a timestamp"),
        ("LATEST", datetime(2026, 1, 1, tzinfo=UTC), "needs a timestamp"),
        ("AT_TIMESTAMP", datetime(2026, 1, 1), "timezone-aware"),
    ],
)
def test_bad_initial_positions(kind: str, timestamp: datetime | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        InitialPosition(kind, timestamp)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"app_name": ""}, "non-empty"),
        ({"max_records": 0}, "max_records"),
        ({"max_records": 10_001}, "max_records"),
        ({"failover_time": 0.0}, "failover_time"),
        ({"renew_interval": 10.0}, "renew_interval"),
        ({"renew_interval": 0.0}, "renew_interval"),
        ({"take_interval": -1.0}, "take_interval"),
        ({"idle_time": -0.1}, "idle_time"),
        ({"shutdown_grace": 0.0}, "shutdown_grace"),
        ({"max_leases": 0}, "max_leases"),
    ],
)
def test_invalid_values_are_config_errors(overrides: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"app_name": "app", "stream": "s", **overrides}
    with pytest.raises(ConfigError, match=message):
        ConsumerConfig(**values)  # type: ignore[arg-type]


def test_idle_time_zero_is_allowed() -> None:
    assert ConsumerConfig(app_name="app", stream="s", idle_time=0.0).idle_time == 0.0


def test_the_default_fetchers_poll_with_the_config_settings() -> None:
    config = ConsumerConfig(
        app_name="app", stream="s", max_records=500, idle_time=0.2, shard_refresh_interval=None
    )
    client = kinesis_client(AwsEndpoint.local("http://127.0.0.1:9"))  # never called

    def clock() -> float:
        return 0.0

    fetchers = config.polling_fetchers(client, clock)
    assert fetchers == PollingFetchers(
        client, "s", limit=500, idle_time=0.2, shard_refresh_interval=None, clock=clock
    )
    shard = ShardInfo("shardId-000000000000", (), HashKeyRange(0, 2**128 - 1), "0", "9")
    reader = fetchers(shard, SHARD_END)
    assert isinstance(reader, ShardReader)
    assert reader.ended  # built from the start it was given


async def test_leader_election_is_on_by_default_and_reaches_the_coordinator() -> None:
    from streamkit_kinesis.consumer.worker import _coordinator
    from streamkit_kinesis.leases import Lease
    from streamkit_kinesis.leases.memory import InMemoryLeaseStore

    on = ConsumerConfig(app_name="app", stream="s", worker_id="me")
    assert on.elect_leader
    assert on.audit_confidence == 3
    store = InMemoryLeaseStore()
    await store.create_table_if_not_exists()
    await store.create_lease_if_not_exists(Lease("shard-0", lease_owner="other"))
    coordinator = _coordinator(on, store, lambda: 0.0)
    await coordinator.start(background=False)
    seen = [coordinator.is_leader]  # decided only by a take cycle
    await coordinator.take_once()  # "other" owns the only (live) lease: it leads
    seen.append(coordinator.is_leader)
    assert seen == [False, False]
    off = ConsumerConfig(app_name="app", stream="s", elect_leader=False)
    assert _coordinator(off, InMemoryLeaseStore(), lambda: 0.0).is_leader  # no election
    with pytest.raises(ConfigError, match="audit_confidence"):
        ConsumerConfig(app_name="app", stream="s", audit_confidence=0)


def test_retrieval_is_polling_or_fanout_with_a_lifetime_under_five_minutes() -> None:
    from streamkit_kinesis.source.options import with_retrieval

    with pytest.raises(ConfigError, match="retrieval must be 'polling' or 'fanout'"):
        ConsumerConfig(app_name="a", stream="s", retrieval="push")  # type: ignore[arg-type]
    for lifetime in (0.0, 301.0):
        with pytest.raises(ConfigError, match="subscription_lifetime"):
            ConsumerConfig(app_name="a", stream="s", subscription_lifetime=lifetime)
    with pytest.raises(ConfigError, match="pass only one"):
        with_retrieval({"retrieval": "polling"}, "fanout")
    assert with_retrieval(None, "fanout") == {"retrieval": "fanout"}
