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


def test_timestamp_parser_stays_with_its_client() -> None:
    """Clients share the process's loader with every other client, never their parser."""
    ep = AwsEndpoint.local("http://127.0.0.1:9")
    fast, plain = kinesis_client(ep, timestamp_parser=parse_timestamp), kinesis_client(ep)
    assert _timestamp_parser(fast) is parse_timestamp
    assert _timestamp_parser(plain) is botocore_parse
    assert getattr(fast, "_loader") is getattr(ep.client("dynamodb"), "_loader")  # noqa: B009


def _timestamp_parser(client: object) -> object:
    """The timestamp parser of the parser the client's endpoint reads responses with."""
    factory = getattr(client, "_endpoint")._response_parser_factory  # noqa: B009
    return factory.create_parser("json")._timestamp_parser
