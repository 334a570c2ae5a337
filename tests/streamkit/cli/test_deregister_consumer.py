"""``streamkit stream deregister-consumer``: the explicit way to remove the Enhanced
Fan-Out stream consumer (the consumer never deregisters it), on LocalStack."""

from __future__ import annotations

import asyncio

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.retrieval.registration import StreamConsumer

from streamkit.config import AwsEndpoint

from .conftest import Cli, unique

pytestmark = [pytest.mark.integration, pytest.mark.localstack]


def test_deregister_consumer_removes_it_and_says_when_there_is_none(
    localstack_endpoint: AwsEndpoint,
) -> None:
    cli = Cli(localstack_endpoint)
    name = unique("cli-efo")
    assert cli("stream", "create", name, "--shards", "1").exit_code == 0
    client = kinesis_client(localstack_endpoint)
    asyncio.run(StreamConsumer(client, name, "app").arn())
    result = cli("stream", "deregister-consumer", name, "--consumer", "app")
    assert result.exit_code == 0, result.output
    assert "deregistered app" in result.output
    summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    listed = client.list_stream_consumers(StreamARN=summary["StreamARN"])  # type: ignore[attr-defined]
    assert all(c["ConsumerStatus"] == "DELETING" for c in listed["Consumers"])
    again = cli("stream", "deregister-consumer", name, "--consumer", "app")
    assert again.exit_code == 0, again.output
    assert "no consumer app" in again.output
    assert cli("stream", "delete", name, "--yes").exit_code == 0
