"""A deterministic clickstream for the streaming tests of the engine and the connectors.

:data:`SCHEMA` is the event schema, :func:`make_events` the events as an Arrow table and as
``(JSON payload, partition key)`` records for a producer, and :func:`counts` the query the
tests run over them (events and value sum per 1-minute window and action).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa

import streamkit as sk

SCHEMA = pa.schema(
    [
        pa.field("event_time", pa.timestamp("us", "UTC"), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("value", pa.int64()),
    ]
)
ACTIONS = ("view", "click", "cart", "buy", "share")
EPOCH = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_events(n: int, seed: int, start: int = 0) -> tuple[pa.Table, list[tuple[bytes, str]]]:
    """``n`` events over 30 minutes: the Arrow table and ``(JSON payload, partition key)``.

    ``event_time`` is an ISO-8601 string in the payload (microseconds, ``Z``); values are
    integers, so sums are exact in any order. Event ``i`` is the same for a given seed.
    """
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    records: list[tuple[bytes, str]] = []
    for i in range(start + n):
        t = EPOCH + timedelta(microseconds=rng.randrange(30 * 60 * 1_000_000))
        row = {
            "event_time": t,
            "action": rng.choice(ACTIONS),
            "user_id": f"u{rng.randrange(50)}",
            "value": rng.randrange(1, 1000),
        }
        if i < start:
            continue
        rows.append(row)
        wire = {**row, "event_time": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        records.append((json.dumps(wire).encode(), str(row["user_id"])))
    return pa.Table.from_pylist(rows, schema=SCHEMA), records


def counts(df: sk.DataFrame) -> sk.DataFrame:
    """Events and value sum per (1-minute window, action)."""
    return df.group_by(sk.window("event_time", "1 minute"), "action").agg(
        sk.count().alias("n"), sk.sum("value").alias("total")
    )
