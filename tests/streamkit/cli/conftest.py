"""Helpers of the CLI tests: run ``streamkit`` in-process, fresh names, boto3 reads."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from streamkit.cli import _common
from streamkit.cli.main import app

if TYPE_CHECKING:
    from typer.testing import Result

    from streamkit.config import AwsEndpoint


def unique(prefix: str) -> str:
    """A fresh resource name."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Cli:
    """``streamkit`` in-process against one endpoint (``--endpoint`` via the environment)."""

    def __init__(self, endpoint: AwsEndpoint) -> None:
        self.endpoint = endpoint
        self._runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Result:
        assert self.endpoint.url is not None
        env = {"STREAMKIT_AWS_ENDPOINT": self.endpoint.url, "COLUMNS": "200"}
        with pytest.MonkeyPatch.context() as patch:
            # rich fixes a console's width from COLUMNS when it is created (at import), so
            # a process started with COLUMNS=80 (as pytest-xdist workers can be) would wrap
            # the tables whatever COLUMNS says here
            for console in (_common.console, _common.err_console):
                patch.setattr(console, "_width", 200)
            return self._runner.invoke(app, list(args), input=input, env=env)


@pytest.fixture
def cli(moto_endpoint: AwsEndpoint) -> Cli:
    """The CLI on moto's server."""
    return Cli(moto_endpoint)


def read_all(endpoint: AwsEndpoint, stream: str) -> dict[str, list[dict[str, Any]]]:
    """Every record of every shard of ``stream`` (plain boto3 reads), by shard id."""
    client = endpoint.client("kinesis")
    out: dict[str, list[dict[str, Any]]] = {}
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        sid = shard["ShardId"]
        it = client.get_shard_iterator(
            StreamName=stream, ShardId=sid, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records: list[dict[str, Any]] = []
        while True:
            page = client.get_records(ShardIterator=it, Limit=10_000)
            records += page["Records"]
            if not page["Records"]:
                break
            it = page["NextShardIterator"]
        out[sid] = records
    return out
