"""``streamkit produce`` against moto's server: synthetic clickstream, NDJSON file, rate."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest

from streamkit.cli.clickstream import ACTIONS, SCHEMA
from streamkit.streaming.decode import JsonDecoder, RawRecords

from .conftest import Cli, read_all, unique

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.moto]


def test_synthetic_clickstream_lands_in_the_stream_and_decodes(cli: Cli) -> None:
    name = unique("cli-produce")
    assert cli("stream", "create", name, "--shards", "2").exit_code == 0
    result = cli("produce", name, "--count", "300", "--seed", "7")
    assert result.exit_code == 0, result.output
    assert f"sent 300 record(s) to {name}" in result.output
    records = [r for rs in read_all(cli.endpoint, name).values() for r in rs]
    assert len(records) == 300
    decoded = JsonDecoder(SCHEMA).decode(
        RawRecords([r["Data"] for r in records], ["s"] * 300, [str(i) for i in range(300)])
    )
    assert decoded.dead_letters.num_rows == 0
    assert set(decoded.rows["action"].to_pylist()) <= set(ACTIONS)
    users = decoded.rows["user_id"].to_pylist()
    assert [r["PartitionKey"] for r in records] != []
    assert {r["PartitionKey"] for r in records} == {f"u{u}" for u in users}


def test_ndjson_file_records_are_sent_as_they_are_keyed_by_a_field(
    cli: Cli, tmp_path: Path
) -> None:
    name = unique("cli-file")
    assert cli("stream", "create", name).exit_code == 0
    lines = [json.dumps({"user": f"k{i % 3}", "n": i}) for i in range(7)]
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines[:4]) + "\n\n" + "\n".join(lines[4:]) + "\n")
    result = cli("produce", name, "--file", str(path), "--key-field", "user")
    assert result.exit_code == 0, result.output
    assert "sent 7 record(s)" in result.output
    (records,) = read_all(cli.endpoint, name).values()
    assert [r["Data"].decode() for r in records] == lines  # one shard: order kept
    assert [r["PartitionKey"] for r in records] == [f"k{i % 3}" for i in range(7)]
    limited = cli("produce", name, "--file", str(path), "--count", "2")
    assert "sent 2 record(s)" in limited.output


def test_rate_limits_the_throughput(cli: Cli) -> None:
    name = unique("cli-rate")
    assert cli("stream", "create", name).exit_code == 0
    t0 = time.monotonic()
    result = cli("produce", name, "--count", "100", "--rate", "200")
    elapsed = time.monotonic() - t0
    assert result.exit_code == 0, result.output
    assert elapsed >= 0.45  # 100 records at 200/s: at least half a second


def test_missing_stream_or_file_is_reported(cli: Cli, tmp_path: Path) -> None:
    missing = cli("produce", unique("nope"), "--count", "5")
    assert missing.exit_code == 3
    assert "not found" in missing.output
    assert "streamkit stream create" in missing.output
    nofile = cli("produce", "whatever", "--file", str(tmp_path / "none.ndjson"))
    assert nofile.exit_code == 1
    assert "error: no such file" in nofile.output
