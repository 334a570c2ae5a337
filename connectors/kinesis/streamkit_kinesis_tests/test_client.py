"""The consumer client's timestamp parser gives the instants botocore's parser gives."""

from __future__ import annotations

from datetime import UTC

import pytest
from botocore.utils import parse_timestamp as botocore_parse
from streamkit_kinesis.consumer.client import consumer_kinesis_client, parse_timestamp

from streamkit.config import AwsEndpoint


@pytest.mark.parametrize(
    "value", [1795296264.663, 1795296264, 0, "2026-01-01T00:00:00Z", "1795296264.5"]
)
def test_same_instant_as_botocore(value: float | str) -> None:
    ours, theirs = parse_timestamp(value), botocore_parse(value)  # type: ignore[arg-type]
    assert ours == theirs  # aware datetimes compare as instants
    assert ours.tzinfo is not None


def test_epoch_seconds_come_back_in_utc() -> None:
    assert parse_timestamp(1795296264.663).tzinfo is UTC


def test_client_talks_to_the_endpoint_without_botocore_retries() -> None:
    client = consumer_kinesis_client(AwsEndpoint.local("http://127.0.0.1:9"))
    meta = getattr(client, "meta")  # noqa: B009 - KinesisApi does not declare it
    assert meta.endpoint_url == "http://127.0.0.1:9"
    assert meta.config.retries == {"total_max_attempts": 1, "mode": "standard"}
