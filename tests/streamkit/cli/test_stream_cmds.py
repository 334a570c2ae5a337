"""``streamkit stream ...`` against moto's server: create, describe, split, merge, delete,
and how errors are reported (one line, hint, exit code; the trace with --debug)."""

from __future__ import annotations

import re

import pytest
from streamkit_kinesis import EndpointUnreachableError

from streamkit.cli.main import app

from .conftest import Cli, unique

pytestmark = [pytest.mark.integration, pytest.mark.moto]


def shard_states(out: str) -> dict[str, str]:
    return dict(re.findall(r"(shardId-\d+)\s*│\s*(open|closed)", out))


def test_create_describe_split_merge_delete(cli: Cli) -> None:
    name = unique("cli-stream")
    created = cli("stream", "create", name, "--shards", "2")
    assert created.exit_code == 0, created.output
    assert f"{name} ACTIVE, 2 open shard(s)" in created.output

    described = cli("stream", "describe", name)
    assert described.exit_code == 0, described.output
    assert shard_states(described.output) == {
        "shardId-000000000000": "open", "shardId-000000000001": "open",
    }  # fmt: skip

    split = cli("stream", "split", name, "shardId-000000000000")
    assert split.exit_code == 0, split.output
    assert set(shard_states(split.output)) == {"shardId-000000000002", "shardId-000000000003"}
    assert split.output.count("shardId-000000000000") == 3  # title + parent of both children

    merged = cli("stream", "merge", name, "shardId-000000000002", "shardId-000000000003")
    assert merged.exit_code == 0, merged.output
    assert shard_states(merged.output) == {"shardId-000000000004": "open"}

    after = cli("stream", "describe", name)
    assert "2 open shard(s)" in after.output
    states = shard_states(after.output)
    assert states["shardId-000000000000"] == "closed"
    assert states["shardId-000000000004"] == "open"
    assert states["shardId-000000000001"] == "open"

    deleted = cli("stream", "delete", name, "--yes")
    assert deleted.exit_code == 0, deleted.output
    gone = cli("stream", "describe", name)
    assert gone.exit_code == 3
    assert "not found" in gone.output


def test_merge_of_non_adjacent_shards_is_one_line_with_a_hint(cli: Cli) -> None:
    name = unique("cli-merge")
    assert cli("stream", "create", name, "--shards", "3").exit_code == 0
    result = cli("stream", "merge", name, "shardId-000000000000", "shardId-000000000002")
    assert result.exit_code == 1
    assert "error: shards shardId-000000000000 and shardId-000000000002 are not adjacent" in (
        result.output
    )
    assert f"hint: see the hash key ranges: streamkit stream describe {name}" in result.output
    assert "Traceback" not in result.output


def test_delete_asks_first_and_keeps_the_stream_on_no(cli: Cli) -> None:
    name = unique("cli-del")
    assert cli("stream", "create", name).exit_code == 0
    result = cli("stream", "delete", name, input="n\n")
    assert result.exit_code == 1  # aborted
    assert cli("stream", "describe", name).exit_code == 0
    assert cli("stream", "delete", name, input="y\n").exit_code == 0
    assert cli("stream", "delete", name, "--yes").exit_code == 3  # already gone


def test_unreachable_endpoint_exit_4_and_debug_shows_the_error() -> None:
    from typer.testing import CliRunner

    runner = CliRunner()
    args = ["stream", "describe", "s", "--endpoint", "http://127.0.0.1:9"]
    result = runner.invoke(app, args)
    assert result.exit_code == 4
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error: cannot reach Kinesis at http://127.0.0.1:9")
    assert lines[1].startswith("hint: ")
    assert len(lines) == 2
    debug = runner.invoke(app, ["--debug", *args])
    assert isinstance(debug.exception, EndpointUnreachableError)


def test_help_everywhere() -> None:
    from typer.testing import CliRunner

    runner = CliRunner()
    for cmd in ([], ["demo"], ["stream"], ["stream", "create"], ["stream", "describe"],
                ["stream", "split"], ["stream", "merge"], ["stream", "delete"], ["produce"],
                ["leases"], ["run"]):  # fmt: skip
        result = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (cmd, result.output)
        assert "Usage:" in result.output
    assert "def job()" in runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    assert runner.invoke(app, ["stream", "create"]).exit_code == 2  # missing argument
