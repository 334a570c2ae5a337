"""A fleet task whose fence claim is refused (no server): it never sits on its lease for
ever. If the lease is still this worker's ``confirm_after`` seconds later (the fence is
ahead of the lease table: recreated under a kept checkpoint root) the worker is failed with
an error saying what to do; if the lease is reported lost first (a race with a newer owner)
nothing more happens. The fences are real (a local checkpoint root)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pyarrow as pa
import pytest
from streamkit_kinesis.consumer import InitializationInput
from streamkit_kinesis.fleet.aggregation_task import AggregationTask
from streamkit_kinesis.fleet.refusals import FenceAheadError, RefusedClaims
from streamkit_kinesis.fleet.source_task import SourceContext, SourceTask
from streamkit_kinesis.fleet.worker import KinesisFleetWorker
from streamkit_kinesis.metrics_prometheus import KinesisCollector
from streamkit_kinesis.source.stream_source import KinesisStreamSource
from streamkit_kinesis.types import TRIM_HORIZON

import streamkit as sk
from streamkit.config import AwsEndpoint
from streamkit.fleet import FleetPlan
from streamkit.fleet.direct_log import DirectTaskLog
from streamkit.fleet.member import FleetOptions, FleetSpec
from streamkit.fleet.task_log import FencedTaskLog
from streamkit.streaming.stream_scan import stream_source_of
from streamkit.testing.events import SCHEMA

SHARD = "shardId-000000000001"


def _task(root: Path, refusals: RefusedClaims) -> AggregationTask:
    """An aggregation task of worker ``w-new`` whose fence ``old`` claimed at epoch 40."""
    FencedTaskLog(str(root / "exchange" / SHARD), "old", SHARD).claim(40)
    spec = SimpleNamespace(checkpoint=str(root), worker_id="w-new")
    return AggregationTask(cast("Any", spec), cast("Any", None), lambda _: None, frozenset,
                           refusals=refusals)  # fmt: skip


def _init(counter: int) -> InitializationInput:
    return InitializationInput(SHARD, TRIM_HORIZON, None, counter)


async def test_a_refusal_while_the_lease_is_kept_fails_the_worker_naming_the_fix(
    tmp_path: Path,
) -> None:
    failed: list[Exception] = []
    refusals = RefusedClaims(failed.append, confirm_after=0.2)
    task = _task(tmp_path, refusals)
    await task.initialize_with(_init(3))  # the lease table's counter: below the fence's 40
    assert task.lost
    assert refusals.waiting == {f"exchange/{SHARD}"}
    assert refusals.refused == 1
    for _ in range(300):  # the lease is never reported lost
        if failed:
            break
        await asyncio.sleep(0.1)
    assert len(failed) == 1
    error = failed[0]
    assert isinstance(error, FenceAheadError)
    text = str(error)
    assert f"exchange/{SHARD}" in text
    assert "epoch 40 (worker 'old')" in text
    assert "Restore the lease table" in text
    assert "new checkpoint root" in text
    assert not refusals.waiting


@pytest.mark.parametrize("how", ["lease_lost", "shutdown_requested"])
async def test_a_refusal_whose_lease_goes_away_fails_nothing(tmp_path: Path, how: str) -> None:
    """A race (a newer owner took the lease and claimed first: the consumer reports the
    lease lost), or a graceful stop: the refusal is forgotten."""
    failed: list[Exception] = []
    refusals = RefusedClaims(failed.append, confirm_after=0.5)
    task = _task(tmp_path, refusals)
    await task.initialize_with(_init(3))
    assert refusals.waiting == {f"exchange/{SHARD}"}
    if how == "lease_lost":
        await task.lease_lost(SHARD)
    else:
        await task.shutdown_requested(SHARD, cast("Any", None))
    assert not refusals.waiting
    await asyncio.sleep(1.5)  # well past confirm_after: the cancelled check never fails
    assert failed == []


async def test_a_stateless_source_task_refused_while_keeping_its_lease_fails_the_worker(
    tmp_path: Path,
) -> None:
    """The same for a source task of a plan without an exchange (its fence is
    ``<root>/source/<shard id>/``, epochs from the source lease table)."""
    empty = pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.int64())})
    fleet = FleetPlan.of(sk.from_arrow(empty).filter(sk.col("v") > 1).plan, "append")
    assert fleet.stateless
    spec = FleetSpec(fleet.plan, fleet, "append", str(tmp_path), cast("Any", None),
                     FleetOptions(), "w-new", "q", 1.0)  # fmt: skip
    DirectTaskLog(str(tmp_path / "source" / SHARD), "old", SHARD).claim(40, None)
    failed: list[Exception] = []
    refusals = RefusedClaims(failed.append, confirm_after=0.2)
    ctx = SourceContext(spec, cast("Any", None), cast("Any", None), None, 0, lambda _: None,
                        refusals=refusals)  # fmt: skip
    task = SourceTask(ctx)
    await task.initialize_with(_init(3))
    assert task.lost
    assert refusals.waiting == {f"source/{SHARD}"}
    for _ in range(300):
        if failed:
            break
        await asyncio.sleep(0.1)
    assert len(failed) == 1
    assert isinstance(failed[0], FenceAheadError)
    assert f"source/{SHARD}" in str(failed[0])
    assert "Restore the lease table" in str(failed[0])


class _Checkpoints:
    def __init__(self) -> None:
        self.calls: list[str | None] = []

    async def checkpoint(self, sequence_number: str | None = None) -> None:
        self.calls.append(sequence_number)


async def test_a_refused_source_task_reaching_its_shard_end_does_not_checkpoint_it(
    tmp_path: Path,
) -> None:
    """A closed shard read to its end by a task refused while keeping its lease: the
    processor checkpoints nothing (SHARD_END would skip the shard's records
    unprocessed) and does not return, so the worker does not fail on its own (the
    refusal may be a race a newer owner won): the consumer's cancel on lease loss, or
    the worker's stop after the escalation, ends it."""
    empty = pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.int64())})
    fleet = FleetPlan.of(sk.from_arrow(empty).filter(sk.col("v") > 1).plan, "append")
    spec = FleetSpec(fleet.plan, fleet, "append", str(tmp_path), cast("Any", None),
                     FleetOptions(), "w-new", "q", 1.0)  # fmt: skip
    DirectTaskLog(str(tmp_path / "source" / SHARD), "old", SHARD).claim(40, None)
    refusals = RefusedClaims(lambda _: None, confirm_after=3600.0)
    ctx = SourceContext(spec, cast("Any", None), cast("Any", None), None, 0, lambda _: None,
                        refusals=refusals)  # fmt: skip
    task = SourceTask(ctx)
    await task.initialize_with(_init(3))
    checkpoints = _Checkpoints()
    ending = asyncio.create_task(task.shard_ended(SHARD, cast("Any", checkpoints)))
    await asyncio.sleep(0.2)
    assert not ending.done(), ending  # neither raised (failing the worker) nor returned
    assert checkpoints.calls == []
    ending.cancel()  # the lease found lost
    with pytest.raises(asyncio.CancelledError):
        await ending
    assert checkpoints.calls == []
    assert refusals.waiting == {f"source/{SHARD}"}  # still escalated
    refusals.lease_gone(f"source/{SHARD}")


async def test_a_stopping_worker_forgets_its_refusals(tmp_path: Path) -> None:
    """The worker's stop released every lease: no refusal is confirmed afterwards."""
    failed: list[Exception] = []
    refusals = RefusedClaims(failed.append, confirm_after=0.5)
    await _task(tmp_path, refusals).initialize_with(_init(3))
    assert refusals.waiting
    refusals.close()
    assert not refusals.waiting
    await asyncio.sleep(1.5)  # well past confirm_after
    assert failed == []


def _refused_samples() -> dict[tuple[str, str], float]:
    """``streamkit_fleet_refused_claims`` as scraped: (query, worker) -> value."""
    families = {f.name: f for f in KinesisCollector(lambda: []).collect()}
    family = families["streamkit_fleet_refused_claims"]
    return {(s.labels["query"], s.labels["worker"]): s.value for s in family.samples}


async def test_a_refused_claim_raises_the_workers_prometheus_counter(tmp_path: Path) -> None:
    """A fleet worker's refused claims reach its Prometheus metrics (through
    :func:`~streamkit_kinesis.fleet.metrics.fleet_refusals`): 0 before, 1 after a claim
    of its aggregation task is refused by the task's real fence."""
    df = sk.read_stream.kinesis("s", "app-refused", SCHEMA, AwsEndpoint.local("http://127.0.0.1:9"))
    source = stream_source_of(df.plan)
    assert isinstance(source, KinesisStreamSource)
    fleet = FleetPlan.of(df.filter(sk.col("value") > 1).plan, "append")
    spec = FleetSpec(fleet.plan, fleet, "append", str(tmp_path), cast("Any", None),
                     FleetOptions(), "w-metrics", "q", 1.0)  # fmt: skip
    worker = KinesisFleetWorker(source, spec)
    assert _refused_samples()[("app-refused", "w-metrics")] == 0
    task = _task(tmp_path, worker.refusals)
    await task.initialize_with(_init(3))  # below the fence's epoch 40: refused
    assert task.lost
    assert _refused_samples()[("app-refused", "w-metrics")] == 1
    worker.refusals.close()
