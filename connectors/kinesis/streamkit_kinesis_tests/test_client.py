"""The one Kinesis client factory: its settings, and the cheap timestamp parser the
consumer passes to it gives the instants botocore's parser gives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from botocore.utils import parse_timestamp as botocore_parse
from streamkit_kinesis.client import kinesis_client, parse_timestamp

from streamkit.config import AwsEndpoint

if TYPE_CHECKING:
    from collections.abc import Callable


@pytest.mark.parametrize(
    "value", [1795296264.663, 1795296264, 0, "2026-01-01T00:00:00Z", "1795296264.5"]
)
def test_same_instant_as_botocore(value: float | str) -> None:
    ours, theirs = parse_timestamp(value), botocore_parse(value)  # type: ignore[arg-type]
    assert ours == theirs  # aware datetimes compare as instants
    assert ours.tzinfo is not None


def test_epoch_seconds_come_back_in_utc() -> None:
    assert parse_timestamp(1795296264.663).tzinfo is UTC


@pytest.mark.parametrize("parser", [None, parse_timestamp])
def test_client_talks_to_the_endpoint_without_botocore_retries(
    parser: Callable[[Any], datetime] | None,
) -> None:
    client = kinesis_client(AwsEndpoint.local("http://127.0.0.1:9"), timestamp_parser=parser)
    meta = getattr(client, "meta")  # noqa: B009 - KinesisApi does not declare it
    assert meta.endpoint_url == "http://127.0.0.1:9"
    assert meta.config.retries == {"total_max_attempts": 1, "mode": "standard"}


def test_clients_share_one_session_per_process() -> None:
    """Clients come from one session per process and kind (a fresh session re-reads
    botocore's models and endpoint data: ~70 ms of CPU per client, ~3 ms from a shared
    one): they share its loader."""
    ep = AwsEndpoint.local("http://127.0.0.1:9")
    plain_a, plain_b = kinesis_client(ep), kinesis_client(ep)
    assert getattr(plain_a, "_loader") is getattr(plain_b, "_loader")  # noqa: B009
    boto_a, boto_b = ep.client("dynamodb"), ep.client("kinesis")
    assert getattr(boto_a, "_loader") is getattr(boto_b, "_loader")  # noqa: B009
