"""An aggregation task taken over while its previous owner owed a batch without input runs
that batch before the first delivery's rows (no server; real fences, checkpoint log and
Parquet sink in a local folder).

``drop_duplicates_within_watermark(["user_id"])``, delay 10 minutes, one source shard. The
first owner applies ``u1`` at T0, then a row at T0 + 30 min: the fleet watermark moves to
T0 + 20 min, past ``u1``'s expiry (T0 + 10 min), and the batch without input that evicts
``u1`` is owed; the owner dies right after the lease checkpoint, before running it (as
``STREAMKIT_FLEET_FAULT=kill_owing_after`` does). The next owner's first delivery holds
``u1`` again at T0 + 25 min. Spark would have run the batch without input first (evicting
``u1``), then emitted the new row; a takeover must not change that: if the delivery ran
first, its rows would be admitted against the stale key before the eviction and dropped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, cast

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from streamkit_kinesis.consumer import InitializationInput
from streamkit_kinesis.fleet.aggregation_task import AggregationTask
from streamkit_kinesis.types import TRIM_HORIZON, KinesisRecord, RecordBatch

import streamkit as sk
from streamkit.fleet import FleetPlan, SourceStage
from streamkit.fleet.member import FleetOptions, FleetSpec
from streamkit.streaming.checkpoint_store import open_checkpoint_store
from streamkit.streaming.sinks import ParquetSink

if TYPE_CHECKING:
    from streamkit_kinesis.leases import Checkpointer

    from streamkit.streaming.contracts import Sink

SHARD, SOURCE = "shardId-000000000000", "src-0"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class _Checkpointer:
    async def checkpoint(self, sequence_number: str | None = None) -> None:
        """The lease checkpoint (nothing to write here)."""


def _fleet() -> FleetPlan:
    empty = pa.table({"event_time": pa.array([], pa.timestamp("us", "UTC")),
                      "user_id": pa.array([], pa.string())})  # fmt: skip
    df = sk.from_arrow(empty).with_watermark("event_time", "10 minutes")
    return FleetPlan.of(df.drop_duplicates_within_watermark(["user_id"]).plan, "append")


def _spec(tmp: Path, fleet: FleetPlan, worker: str) -> FleetSpec:
    out = str(tmp / "out")

    def sink(task: str, *, committed_only: bool = False) -> Sink:
        return ParquetSink(out).for_task(task, committed_only=committed_only)

    return FleetSpec(fleet.plan, fleet, "append", str(tmp / "ck"), sink, FleetOptions(),
                     worker, "q", 3600.0)  # fmt: skip


def _delivery(
    fleet: FleetPlan, rows: list[tuple[datetime, str]], span: tuple[str | None, str],
    top: datetime, seq: str,
) -> RecordBatch:  # fmt: skip
    """The exchange record of the source batch ``rows`` (range ``(first, last]`` = ``span``)."""
    schema = pl.Schema({"event_time": pl.Datetime("us", "UTC"), "user_id": pl.String()})
    frame = pl.DataFrame([[t for t, _ in rows], [u for _, u in rows]], schema=schema, orient="col")
    stage = SourceStage(fleet)
    out = stage.run(frame)
    top_us = int(top.timestamp()) * 1_000_000
    (parts,) = stage.chunks(out, SOURCE, *span, top_us, False, 1, "q")
    (data,) = parts
    return RecordBatch(SHARD, (KinesisRecord(data, "k", seq),))


def _task(tmp: Path, fleet: FleetPlan, worker: str) -> AggregationTask:
    root = open_checkpoint_store(str(tmp / "ck"))
    return AggregationTask(_spec(tmp, fleet, worker), root, lambda _: None, lambda: {SOURCE})


@pytest.mark.parametrize("owner_dies", [True, False])
async def test_the_batch_owed_before_a_takeover_runs_before_the_next_rows(
    tmp_path: Path, owner_dies: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet, cp = _fleet(), cast("Checkpointer", _Checkpointer())
    first = _task(tmp_path, fleet, "a")
    await first.initialize_with(InitializationInput(SHARD, TRIM_HORIZON, None, 1))
    await first.process_records(_delivery(fleet, [(T0, "u1")], (None, "10"), T0, "100"), cp)
    if owner_dies:  # killed after the lease checkpoint of the batch that moved the watermark

        async def dies() -> None:
            pass

        monkeypatch.setattr(first, "_owed", dies)
    late = T0 + timedelta(minutes=30)
    await first.process_records(_delivery(fleet, [(late, "u9")], ("10", "20"), late, "200"), cp)
    await first.lease_lost(SHARD)
    heir = _task(tmp_path, fleet, "b")
    await heir.initialize_with(InitializationInput(SHARD, TRIM_HORIZON, None, 2))
    again = T0 + timedelta(minutes=25)
    await heir.process_records(_delivery(fleet, [(again, "u1")], ("20", "30"), late, "300"), cp)
    await heir.shutdown_requested(SHARD, cp)
    table = ds.dataset(str(tmp_path / "out"), format="parquet").to_table()
    got = sorted((r["user_id"], r["event_time"]) for r in table.to_pylist())
    # Spark's rule by hand: u1 at T0 (held until the watermark reaches T0 + 10 min), u9 at
    # T0 + 30 min (watermark T0 + 20 min: u1 evicted), u1 again at T0 + 25 min (not late)
    assert got == [("u1", T0), ("u1", again), ("u9", late)], json.dumps(got, default=str)
