"""Generated event tables for oracle tests: nulls, duplicates, out-of-order and late rows."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

BASE_US = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1_000_000)


def events(n: int = 3000, seed: int = 7, span_hours: float = 6.0) -> pa.Table:
    """Rows in arrival order: ~10% out of order by up to 10 min, ~3% later by up to 2 h,
    ~5% exact duplicates, nulls in every column (2-5%)."""
    rng = np.random.default_rng(seed)
    t = BASE_US + np.sort(rng.integers(0, int(span_hours * 3600e6), n))
    jitter = rng.random(n) < 0.10
    t[jitter] -= rng.integers(0, 600_000_000, jitter.sum())
    late = rng.random(n) < 0.03
    t[late] -= rng.integers(0, 7200_000_000, late.sum())
    dup = rng.random(n) < 0.05
    idx = np.where(dup, np.maximum(np.arange(n) - 1, 0), np.arange(n))
    actions = np.array(["click", "view", "buy", "share", "like"])
    return pa.table(
        {
            "event_time": pa.array(
                t[idx], type=pa.timestamp("us", tz="UTC"), mask=rng.random(n) < 0.02
            ),
            "action": pa.array(actions[rng.integers(0, 5, n)][idx], mask=rng.random(n) < 0.03),
            "user_id": pa.array(rng.integers(0, 400, n)[idx], mask=rng.random(n) < 0.03),
            "value": pa.array(np.round(rng.normal(10, 5, n), 3)[idx], mask=rng.random(n) < 0.05),
        }
    )
