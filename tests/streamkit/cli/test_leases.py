"""``streamkit leases`` against moto's server: the lease table after a real streaming
query, and how far behind each shard is after more records arrive."""

from __future__ import annotations

import re

import pytest

import streamkit as sk
from streamkit.cli.clickstream import SCHEMA

from .conftest import Cli, read_all, unique

pytestmark = [pytest.mark.integration, pytest.mark.moto]


def rows(out: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if cells and cells[0].startswith("shardId-"):
            found[cells[0]] = cells
    return found


def test_lease_table_after_a_query_and_records_behind(cli: Cli) -> None:
    name, app = unique("cli-leases"), unique("cli-app")
    assert cli("stream", "create", name, "--shards", "2").exit_code == 0
    assert cli("produce", name, "--count", "200").exit_code == 0
    df = sk.read_stream.kinesis(
        name, app, schema=SCHEMA, endpoint=cli.endpoint, worker_id="w-test",
        consumer_options={"idle_time": 0.1, "take_interval": 0.5},
    )  # fmt: skip
    query = df.write_stream.trigger(available_now=True).memory(unique("m")).start()
    assert query.await_termination(60)
    last = {sid: rs[-1]["SequenceNumber"] for sid, rs in read_all(cli.endpoint, name).items()}

    result = cli("leases", app, "--stream", name)
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert set(table) == set(last)
    for sid, (_, owner, counter, checkpoint, parents, lag) in table.items():
        assert owner == "(free)"  # released when the query stopped
        assert int(counter) > 0
        assert checkpoint == last[sid]
        assert parents == "-"
        assert lag.startswith("0 rec")
    assert "2 lease(s), 0 worker(s)" in result.output

    assert cli("produce", name, "--count", "50").exit_code == 0
    after = cli("leases", app, "--stream", name)
    counts = [re.match(r"(\d+) rec", r[5]) for r in rows(after.output).values()]
    assert sum(int(m.group(1)) for m in counts if m) == 50
    assert all(counts)


def test_missing_lease_table_exit_3(cli: Cli) -> None:
    result = cli("leases", unique("no-such-app"))
    assert result.exit_code == 3
    assert "no lease table" in result.output
    assert "hint:" in result.output
