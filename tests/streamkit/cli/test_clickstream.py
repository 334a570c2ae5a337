"""The synthetic clickstream and the demo's view helpers (no server)."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from streamkit.cli.clickstream import ACTIONS, SCHEMA, Clickstream
from streamkit.cli.demo_view import Snapshot, counted, pivot, plain_line
from streamkit.streaming.contracts import PartitionProgress
from streamkit.streaming.decode import JsonDecoder, RawRecords
from streamkit.streaming.progress import PhaseDurations, QueryProgress

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


def test_payloads_decode_back_to_the_same_rows_and_keys_follow_users() -> None:
    batch = Clickstream(seed=3, jitter=2.0, clock=lambda: NOW).batch(500)
    assert batch.table.schema == SCHEMA
    decoded = JsonDecoder(SCHEMA).decode(
        RawRecords([d for d, _ in batch.records], ["s"] * 500, [str(i) for i in range(500)])
    )
    assert decoded.dead_letters.num_rows == 0
    assert decoded.rows.equals(batch.table)
    assert [k for _, k in batch.records] == [f"u{u}" for u in batch.table["user_id"].to_pylist()]
    times = [t.timestamp() for t in batch.table["event_time"].to_pylist()]
    assert all(NOW - 2.0 <= t <= NOW for t in times)
    assert set(batch.table["action"].to_pylist()) == set(ACTIONS)


def test_same_seed_same_events() -> None:
    a = Clickstream(seed=9, clock=lambda: NOW).batch(50)
    b = Clickstream(seed=9, clock=lambda: NOW).batch(50)
    assert a.records == b.records


def _counts() -> pa.Table:
    window = pa.struct([("start", pa.timestamp("us", "UTC")), ("end", pa.timestamp("us", "UTC"))])
    w1 = {
        "start": datetime(2026, 1, 1, 10, 0, tzinfo=UTC),
        "end": datetime(2026, 1, 1, 10, 1, tzinfo=UTC),
    }
    w2 = {
        "start": datetime(2026, 1, 1, 10, 1, tzinfo=UTC),
        "end": datetime(2026, 1, 1, 10, 2, tzinfo=UTC),
    }
    return pa.table(
        {
            "window": pa.array([w1, w1, w2], window),
            "action": ["view", "click", "view"],
            "events": pa.array([5, 2, 7], pa.int64()),
        }
    )


def test_pivot_newest_window_first_with_every_action() -> None:
    wide = pivot(_counts())
    assert wide.columns == ["window", *ACTIONS]
    assert wide["view"].to_list() == [7, 5]
    assert wide["click"].to_list() == [0, 2]
    assert counted(_counts()) == 14
    assert counted(None) == 0
    assert pivot(None).height == 0


def test_plain_line_has_rate_watermark_leases_and_lag() -> None:
    progress = QueryProgress(
        batch_id=0, timestamp=datetime(2026, 1, 1, tzinfo=UTC), num_input_rows=100,
        input_rows_per_second=100.0, processed_rows_per_second=1000.0,
        durations=PhaseDurations(), watermark=datetime(2026, 1, 1, 10, 0, 30, tzinfo=UTC),
        state_rows=3, late_rows=0, dead_letters=0, output_rows=3,
        partitions=(PartitionProgress("shardId-000000000000", 60, 0, "w"),
                    PartitionProgress("shardId-000000000001", 40, 250, "w")),
    )  # fmt: skip
    line = plain_line(Snapshot(5.0, 60.0, 120, _counts(), [progress]))
    assert "produced=120 counted=14" in line
    assert "watermark=10:00:30 leases=2 lag=#0=0ms,#1=250ms" in line
