"""``streamkit status APP`` shows each fleet worker's refused fence claims, on the real path:
a real :class:`~streamkit_kinesis.fleet.worker.KinesisFleetWorker`'s tasks (aggregation
tasks of a stateful plan, or source tasks of a stateless one: real fences, logs and Parquet
sink in a local checkpoint root) write their status files after each batch; a real fence
ahead refuses the claim of one of them; the CLI reads the root and a LocalStack lease table
naming the worker. Expected counts by hand: no claim refused, then exactly one. Last, the
same through a real worker process (``fleet_job.py``) on a LocalStack stream.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import polars as pl
import pyarrow as pa
import pytest
from streamkit_kinesis.consumer import InitializationInput
from streamkit_kinesis.fleet.aggregation_task import AggregationTask
from streamkit_kinesis.fleet.source_task import SourceContext, SourceTask
from streamkit_kinesis.fleet.worker import KinesisFleetWorker
from streamkit_kinesis.source.stream_source import KinesisStreamSource
from streamkit_kinesis.types import TRIM_HORIZON, KinesisRecord, RecordBatch
from streamkit_kinesis_tests.fleet.fleet_harness import (
    fleet_on_fresh_stream,
    payloads,
    put_random_keys,
    until,
)

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.fleet import FleetPlan, SourceStage
from streamkit.fleet.direct_log import DirectTaskLog
from streamkit.fleet.member import FleetOptions, FleetSpec
from streamkit.fleet.task_log import FencedTaskLog
from streamkit.streaming.checkpoint_store import open_checkpoint_store
from streamkit.streaming.sinks import ParquetSink
from streamkit.streaming.stream_scan import stream_source_of
from streamkit.testing.events import SCHEMA as EVENTS
from streamkit.testing.events import make_events

from .conftest import Cli, unique
from .test_fleet_status import lease_table, shard

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit_kinesis.leases import Checkpointer

    from streamkit.streaming.contracts import Sink

pytestmark = [pytest.mark.integration, pytest.mark.localstack]

WORKER, SOURCE = "w-refused", "src-0"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SCHEMA = pa.schema([("event_time", pa.timestamp("us", "UTC")), ("user_id", pa.string())])


@pytest.fixture
def cli(localstack_endpoint: AwsEndpoint) -> Cli:
    return Cli(localstack_endpoint)


class _Checkpointer:
    async def checkpoint(self, sequence_number: str | None = None) -> None:
        """The lease checkpoint (nothing to write here)."""


def _spec(root: Path, df: sk.DataFrame) -> FleetSpec:
    fleet = FleetPlan.of(df.plan, "append")

    def sink(task: str, *, committed_only: bool = False) -> Sink:
        return ParquetSink(str(root / "out")).for_task(task, committed_only=committed_only)

    return FleetSpec(fleet.plan, fleet, "append", str(root / "ck"), sink, FleetOptions(),
                     WORKER, "q", 3600.0)  # fmt: skip


def _deduplicated() -> sk.DataFrame:
    """A stateful plan (aggregation tasks behind an exchange)."""
    empty = pa.Table.from_pylist([], schema=SCHEMA)
    df = sk.from_arrow(empty).with_watermark("event_time", "10 minutes")
    return df.drop_duplicates_within_watermark(["user_id"])


def _delivery(fleet: FleetPlan, user: str, span: tuple[str | None, str]) -> RecordBatch:
    """One exchange record: the source batch of one row (``user`` at T0)."""
    frame = pl.from_arrow(pa.table({"event_time": [T0], "user_id": [user]}, schema=SCHEMA))
    assert isinstance(frame, pl.DataFrame)
    stage = SourceStage(fleet)
    (parts,) = stage.chunks(stage.run(frame), SOURCE, *span, int(T0.timestamp()) * 10**6,
                            False, 1, "q")  # fmt: skip
    (data,) = parts
    return RecordBatch(shard(0), (KinesisRecord(data, "k", span[1]),))


def _source(df: sk.DataFrame) -> KinesisStreamSource:
    source = stream_source_of(df.plan)
    assert isinstance(source, KinesisStreamSource)
    return source


def _kinesis(endpoint: AwsEndpoint) -> sk.DataFrame:
    """A Kinesis stream of clickstream events (never read: the tasks are handed records)."""
    return sk.read_stream.kinesis("s", "app", EVENTS, endpoint)


def _worker(spec: FleetSpec, endpoint: AwsEndpoint) -> KinesisFleetWorker:
    """The fleet worker whose refusals the tasks report to (not run: no stream needed)."""
    return KinesisFleetWorker(_source(_kinesis(endpoint)), spec)


def _refused(cli: Cli, app: str, root: Path) -> tuple[Any, str]:
    """``refused_claims`` of WORKER in ``status --json``, and the text output."""
    as_json = cli("status", app, "--checkpoint", str(root), "--json")
    assert as_json.exit_code == 0, as_json.output
    text = cli("status", app, "--checkpoint", str(root))
    assert text.exit_code == 0, text.output
    return json.loads(as_json.output)["workers"][WORKER]["refused_claims"], text.output


def _row(count: int, kind: str = "aggregation") -> str:
    """The workers-table row of WORKER holding both tasks of ``kind``, ``count`` refused."""
    both = f"{shard(0)}, {shard(1)}"
    tasks = rf"-\s*│\s*{both}" if kind == "aggregation" else rf"{both}\s*│\s*-"
    return rf"{WORKER}\s*│\s*{tasks}\s*│\s*{count}\s*│"


async def test_status_shows_a_claim_refused_by_a_real_fence(cli: Cli, tmp_path: Path) -> None:
    app = unique("fleet-refused")
    await lease_table(cli.endpoint, f"{app}-exchange", {0: WORKER, 1: WORKER})
    spec = _spec(tmp_path, _deduplicated())
    worker = _worker(spec, cli.endpoint)
    root, cp = open_checkpoint_store(spec.checkpoint), cast("Checkpointer", _Checkpointer())
    task = AggregationTask(spec, root, lambda _: None, lambda: {SOURCE},
                           refusals=worker.refusals)  # fmt: skip
    try:
        await task.initialize_with(InitializationInput(shard(0), TRIM_HORIZON, None, 1))
        await task.process_records(_delivery(spec.fleet_plan, "u1", (None, "10")), cp)
        count, text = await asyncio.to_thread(_refused, cli, app, tmp_path / "ck")
        assert count == 0, text  # no claim refused yet
        assert re.search(_row(0), text), text
        # a fence ahead of the lease table: claimed at epoch 40, the lease's counter is 3
        where = str(tmp_path / "ck" / "exchange" / shard(1))
        FencedTaskLog(where, "old", shard(1)).claim(40)
        refused = AggregationTask(spec, root, lambda _: None, lambda: {SOURCE},
                                  refusals=worker.refusals)  # fmt: skip
        await refused.initialize_with(InitializationInput(shard(1), TRIM_HORIZON, None, 3))
        assert refused.lost
        # the worker's next batch (of its other task) carries the count to its status file
        await task.process_records(_delivery(spec.fleet_plan, "u2", ("10", "20")), cp)
        count, text = await asyncio.to_thread(_refused, cli, app, tmp_path / "ck")
        assert count == 1, text  # one claim refused
        assert re.search(_row(1), text), text
    finally:
        worker.refusals.close()
        await task.shutdown_requested(shard(0), cp)


async def test_status_shows_a_source_task_claim_refused_by_a_real_fence(
    cli: Cli, tmp_path: Path
) -> None:
    """The same with source tasks of a stateless plan (fences ``<root>/source/<shard>/``,
    epochs from the source lease table), handed real clickstream records."""
    app = unique("fleet-refused-src")
    await lease_table(cli.endpoint, app, {0: WORKER, 1: WORKER})
    df = _kinesis(cli.endpoint)
    spec = _spec(tmp_path, df.filter(sk.col("value") >= 0))
    worker = _worker(spec, cli.endpoint)
    store, cp = open_checkpoint_store(spec.checkpoint), cast("Checkpointer", _Checkpointer())

    def task() -> SourceTask:
        ctx = SourceContext(spec, _source(df).decoder, store, None, 0, lambda _: None,
                            refusals=worker.refusals)  # fmt: skip
        return SourceTask(ctx)

    _, events = make_events(4, seed=3)
    batches = [
        RecordBatch(shard(0), tuple(KinesisRecord(data, key, str(10 * (i + 1)))
                                    for i, (data, key) in enumerate(events) if i // 2 == j))
        for j in (0, 1)
    ]  # fmt: skip
    running = task()
    try:
        await running.initialize_with(InitializationInput(shard(0), TRIM_HORIZON, None, 1))
        await running.process_records(batches[0], cp)
        count, text = await asyncio.to_thread(_refused, cli, app, tmp_path / "ck")
        assert count == 0, text  # no claim refused yet
        assert re.search(_row(0, "source"), text), text
        # a fence ahead of the lease table: claimed at epoch 40, the lease's counter is 3
        DirectTaskLog(str(tmp_path / "ck" / "source" / shard(1)), "old", shard(1)).claim(40, None)
        refused = task()
        await refused.initialize_with(InitializationInput(shard(1), TRIM_HORIZON, None, 3))
        assert refused.lost
        await running.process_records(batches[1], cp)
        count, text = await asyncio.to_thread(_refused, cli, app, tmp_path / "ck")
        assert count == 1, text  # one claim refused
        assert re.search(_row(1, "source"), text), text
    finally:
        worker.refusals.close()


@pytest.mark.slow
async def test_status_shows_the_claim_a_real_worker_process_was_refused(
    cli: Cli, tmp_path: Path
) -> None:
    """One worker process (``--query stateless``: source tasks only) on a 2-shard stream;
    shard 0's fence was claimed at epoch 10**6 before it started (a fence ahead of the
    fresh lease table), so its claim of shard 0 is refused, once; its task of shard 1 runs
    the records put and carries the count. ``--failover 120``: the worker fails for the
    refusal only after 240 s, so it still holds both leases when status is read. The count
    reaches status with a batch that starts after the refusal, so while status does not
    show it a few more records are put (a first batch of shard 1 may run before shard 0's
    claim is refused, and would carry 0)."""
    ep = cli.endpoint
    async with fleet_on_fresh_stream(ep, tmp_path, 2, "fsref", "--query", "stateless",
                                     "--failover", "120") as fleet:  # fmt: skip
        fence = str(fleet.root / "source" / shard(0))
        DirectTaskLog(fence, "old", shard(0)).claim(10**6, None)
        await fleet.add("solo")
        last = await asyncio.to_thread(put_random_keys, ep, fleet.stream, payloads(60, seed=4))
        assert set(last) == {shard(0), shard(1)}
        seen: list[object] = []
        more: list[int] = []

        def shown() -> bool:
            fleet.check_alive()
            out = cli("status", fleet.app, "--checkpoint", str(fleet.root), "--json")
            if out.exit_code == 3 and "shows no fleet" in out.output:
                return False  # no status file yet
            assert out.exit_code == 0, out.output
            seen[:] = [json.loads(out.output)["workers"]]
            if seen[0] == {"solo": {"source": [shard(0), shard(1)], "aggregation": [],
                                    "refused_claims": 1}}:  # fmt: skip
                return True
            more.append(len(more))  # another batch for shard 1 (random keys: both shards)
            put_random_keys(ep, fleet.stream, payloads(6, seed=100 + len(more)))
            return False

        try:
            await until("status showing solo's refused claim", lambda: asyncio.to_thread(shown),
                        300)  # fmt: skip
        except AssertionError as e:
            raise AssertionError(f"last seen: {seen}\n{fleet.tail()}") from e
        out = await asyncio.to_thread(cli, "status", fleet.app, "--checkpoint", str(fleet.root))
        text = out.output
        assert re.search(rf"solo\s*│\s*{shard(0)}, {shard(1)}\s*│\s*-\s*│\s*1\s*│", text), text
