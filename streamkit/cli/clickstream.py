"""A synthetic clickstream: vectorised batches of JSON events with "now-ish" event times.

Each event is ``{"event_time": ISO-8601 UTC, "action": str, "user_id": int, "value": float}``;
records are keyed by user (``u<id>``), so one user's events stay in order on one shard.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ACTIONS = ("view", "click", "add_to_cart", "purchase", "share", "search")
"""The actions the generator draws from."""
WEIGHTS = (0.45, 0.25, 0.1, 0.05, 0.05, 0.1)

SCHEMA = pa.schema(
    [
        pa.field("event_time", pa.timestamp("us", "UTC")),
        pa.field("action", pa.string()),
        pa.field("user_id", pa.int64()),
        pa.field("value", pa.float64()),
    ]
)
"""Schema of the generated events (and of the demo's stream)."""


@dataclass(frozen=True)
class EventBatch:
    """A batch of events: the rows, and the Kinesis records (payload, partition key)."""

    table: pa.Table
    """The events as Arrow rows under :data:`SCHEMA`."""
    records: list[tuple[bytes, str]]
    """One ``(JSON payload, partition key)`` per row, in row order."""


class Clickstream:
    """Seeded generator of event batches; ``jitter`` seconds of event-time disorder.

    Event times are ``clock() - U(0, jitter)``, so with a watermark delay larger than
    ``jitter`` no event of a live run is late.
    """

    def __init__(
        self,
        seed: int = 0,
        users: int = 1_000,
        jitter: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rng = np.random.default_rng(seed)
        self._users, self._jitter, self._clock = users, jitter, clock

    def batch(self, n: int) -> EventBatch:
        """``n`` events (no Python loop over rows except the final bytes conversion)."""
        rng = self._rng
        now_us = int(self._clock() * 1_000_000)
        times = now_us - rng.integers(0, max(1, int(self._jitter * 1e6)), n)
        actions = np.asarray(ACTIONS, dtype=object)[rng.choice(len(ACTIONS), n, p=WEIGHTS)]
        table = pa.table(
            {
                "event_time": pa.array(times, pa.timestamp("us", "UTC")),
                "action": pa.array(actions, pa.string()),
                "user_id": pa.array(rng.integers(0, self._users, n), pa.int64()),
                "value": pa.array(np.round(rng.gamma(2.0, 10.0, n), 2), pa.float64()),
            },
            schema=SCHEMA,
        )
        return EventBatch(table, list(zip(to_json(table), keys(table), strict=True)))


def to_json(table: pa.Table) -> list[bytes]:
    """One compact JSON object per row of a :data:`SCHEMA` table (vectorised string joins)."""
    micros = table["event_time"].to_numpy().astype("datetime64[us]")
    iso = pa.array(np.datetime_as_string(micros, unit="us"), pa.string())
    parts = [
        '{"event_time":"', iso, 'Z","action":"', table["action"],
        '","user_id":', pc.cast(table["user_id"], pa.string()),
        ',"value":', pc.cast(table["value"], pa.string()), "}",
    ]  # fmt: skip
    joined = pc.binary_join_element_wise(*parts, "")
    out: list[bytes] = pc.cast(joined, pa.binary()).to_pylist()
    return out


def keys(table: pa.Table) -> list[str]:
    """Partition keys ``u<user_id>``."""
    out: list[str] = pc.binary_join_element_wise(
        "u", pc.cast(table["user_id"], pa.string()), ""
    ).to_pylist()
    return out
