"""``streamkit status APP --stream S`` against moto's server: workers, per-shard backlog,
the number of workers the figures call for, and the stream-is-the-bottleneck verdict with
its ``update-shard-count`` (incoming rates put into CloudWatch's ``AWS/Kinesis`` here, so
they are known). The backlog is known too: records put after a run that checkpointed
everything before them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from streamkit.cli.capacity import ShardLoad, plan, update_shard_count_command
from streamkit.cli.status_cmd import cloudwatch_incoming, cloudwatch_window

from .conftest import Cli, read_all, unique

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.moto]

JOB = """
import streamkit as sk
from streamkit.cli.clickstream import SCHEMA

def job():
    df = sk.read_stream.kinesis({stream!r}, {app!r}, schema=SCHEMA,
                                consumer_options={{"idle_time": 0.1, "take_interval": 0.5}})
    return df.write_stream.checkpoint({ck!r}).parquet({out!r})
"""


def put(endpoint: AwsEndpoint, stream: str, n: int, start: int = 0) -> None:
    """``n`` plain records (no aggregation: one Kinesis record each)."""
    if not n:
        return
    client = endpoint.client("kinesis")
    records = [
        {"Data": json.dumps({"event_time": "2026-01-01T00:00:00Z", "action": "view",
                             "user_id": i, "value": 1.0}).encode(),
         "PartitionKey": f"user-{i}"}
        for i in range(start, start + n)
    ]  # fmt: skip
    assert client.put_records(StreamName=stream, Records=records)["FailedRecordCount"] == 0


def app_with_backlog(cli: Cli, tmp_path: Path, shards: int, done: int, backlog: int) -> tuple[
    str, str]:  # fmt: skip
    """A stream whose application checkpointed ``done`` records, then ``backlog`` more."""
    stream, app = unique("status"), unique("app")
    assert cli("stream", "create", stream, "--shards", str(shards)).exit_code == 0
    put(cli.endpoint, stream, done)
    job = tmp_path / "job.py"
    job.write_text(JOB.format(stream=stream, app=app, ck=str(tmp_path / "ck"),
                              out=str(tmp_path / "out")))  # fmt: skip
    ran = cli("run", str(job), "--available-now")
    assert ran.exit_code == 0, ran.output
    assert f"{done} input row(s)" in ran.output
    put(cli.endpoint, stream, backlog, start=done)
    assert sum(len(rs) for rs in read_all(cli.endpoint, stream).values()) == done + backlog
    return stream, app


def test_status_counts_the_backlog_and_sizes_the_fleet(cli: Cli, tmp_path: Path) -> None:
    stream, app = app_with_backlog(cli, tmp_path, shards=2, done=50, backlog=120)
    # demand 120 records / 10 s = 12/s; at 12/s per worker: 1 worker
    one = cli("status", app, "--stream", stream, "--sample", "0.5", "--per-worker-rate", "12",
              "--catch-up", "10")  # fmt: skip
    assert one.exit_code == 0, one.output
    assert "backlog 120 record(s), 0.0 record(s)/s coming in, 0 worker(s)" in one.output
    assert "scale: 1 worker(s) needed" in one.output
    assert "bottleneck" not in one.output
    # at 4/s per worker 3 would be needed, but 2 shards hold 2 workers at most
    two = cli("status", app, "--stream", stream, "--sample", "0.5", "--per-worker-rate", "4",
              "--catch-up", "10")  # fmt: skip
    assert "scale: 2 worker(s) needed" in two.output
    assert "one per open shard" in two.output
    unknown = cli("status", app, "--stream", stream, "--sample", "0.5")
    assert "pass --per-worker-rate" in unknown.output  # no worker ran while sampling


def put_incoming(
    endpoint: AwsEndpoint, stream: str, records_per_minute: float, at: datetime | None = None
) -> None:
    """What Kinesis itself publishes: the stream's IncomingRecords/Bytes for the minute of
    ``at`` (default now)."""
    dims = [{"Name": "StreamName", "Value": stream}]
    now = at or datetime.now(UTC)
    endpoint.client("cloudwatch").put_metric_data(Namespace="AWS/Kinesis", MetricData=[
        {"MetricName": "IncomingRecords", "Dimensions": dims, "Timestamp": now,
         "Value": records_per_minute, "Unit": "Count"},
        {"MetricName": "IncomingBytes", "Dimensions": dims, "Timestamp": now,
         "Value": records_per_minute * 100, "Unit": "Bytes"},
    ])  # fmt: skip


@pytest.mark.parametrize(("per_minute", "bottleneck"), [(120_000.0, True), (60_000.0, False)])
def test_stream_at_its_write_limit_is_the_bottleneck(
    cli: Cli, tmp_path: Path, per_minute: float, bottleneck: bool
) -> None:
    stream, app = app_with_backlog(cli, tmp_path, shards=2, done=5, backlog=0)
    put_incoming(cli.endpoint, stream, per_minute)  # 2,000/s = 1,000/s per shard, or half
    out = cli("status", app, "--stream", stream, "--sample", "0.5", "--cloudwatch", "10",
              "--per-worker-rate", "500")  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "incoming rates: CloudWatch" in out.output
    shown = re.search(r"([\d,.]+) record\(s\)/s coming in", out.output)
    assert shown is not None, out.output
    # what was put here, plus the few records the test wrote (moto counts them too)
    assert float(shown.group(1).replace(",", "")) == pytest.approx(per_minute / 60, abs=1)
    command = (f"aws kinesis update-shard-count --stream-name {stream} --target-shard-count 4 "
               "--scaling-type UNIFORM_SCALING")  # fmt: skip
    assert ("the stream is the bottleneck" in out.output) is bottleneck
    assert (command in out.output) is bottleneck


def test_cloudwatch_window_ends_at_the_next_whole_minute() -> None:
    at = datetime(2026, 1, 1, 12, 30, 59, 900_000, tzinfo=UTC)
    assert cloudwatch_window(at, 10) == (datetime(2026, 1, 1, 12, 21, tzinfo=UTC),
                                         datetime(2026, 1, 1, 12, 31, tzinfo=UTC))  # fmt: skip


def test_cloudwatch_counts_a_datapoint_put_in_the_same_second(cli: Cli) -> None:
    """moto truncates EndTime to the second: with "now" as EndTime, a datapoint put earlier
    in the same second was missed (test_stream_at_its_write_limit_is_the_bottleneck failed
    whenever status reached CloudWatch less than a second after the put, within it)."""
    stream = unique("cw")
    at = datetime.now(UTC).replace(microsecond=200_000)
    put_incoming(cli.endpoint, stream, 600.0, at=at)  # 10 records/s, 1,000 bytes/s
    got = cloudwatch_incoming(cli.endpoint, stream, ["s0", "s1"], 10,
                              now=at + timedelta(milliseconds=500))  # fmt: skip
    assert got == {"s0": (5.0, 500.0), "s1": (5.0, 500.0)}  # the stream's, split evenly


def load(shard: str, records: float, nbytes: float = 0.0, behind: int = 0) -> ShardLoad:
    return ShardLoad(shard, behind, False, records, nbytes)


def test_plan_arithmetic() -> None:
    # 600/s in + 3,000 behind over 60 s = 650/s; 200/s per worker -> 4 (ceil 3.25)
    v = plan([load(f"s{i}", 150, behind=750) for i in range(4)], 1, 200, 60)
    assert (v.workers_needed, v.shard_bound, v.backlog, v.incoming) == (4, False, 3000, 600)
    assert plan([load("s0", 0)], 3, 100, 60).workers_needed == 1  # never below one
    assert plan([load("s0", 10)], 1, None, 60).workers_needed is None


def test_bottleneck_needs_every_open_shard_at_a_limit() -> None:
    mib = 1024 * 1024
    assert plan([load("a", 950), load("b", 10, nbytes=0.95 * mib)], 1, 1, 60).stream_bottleneck
    assert not plan([load("a", 950), load("b", 800)], 1, 1, 60).stream_bottleneck
    assert not plan([], 0, 1, 60).stream_bottleneck
    assert update_shard_count_command("s", 3).endswith("--target-shard-count 6 "
                                                       "--scaling-type UNIFORM_SCALING")
