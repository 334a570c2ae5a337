"""``drop_duplicates`` under a stream-static join (issue 18): the deduplication judges late
rows on the input column carrying the watermark only when the plan above reads it, after
Spark's column pruning through the join (its using keys, its condition, and what is read
above it on the stream's side). PySpark 4.3 gives the same batches for the same shapes in
``tests/differential/test_watermark_lineage.py``. Also: chains whose operators have a
stream-static join between or above them (the static side is pinned per batch).

Times are seconds after T0; delay 5 s. DEDUP_BATCHES with ``drop_duplicates(["k"])``:
B0 emits a@10 (v 1), b@30 (v 3); W = 25. B1: c@12 (v 8) new. B2 (late: at or before 25):
a@10 a duplicate, d@11 (v 9) new but behind the watermark: late when ``ts`` reaches the
deduplication, emitted when it is pruned. B3: e@200. B4: the no-data batch (W moved to
195), nothing to emit. Keys never expire (``ts`` is no key): 2, 3, 4 (3 when d is late),
5 (4), 5 (4) held.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa
import pytest

import streamkit as sk
from streamkit.streaming.chain import ChainQuery, make_engine
from streamkit.streaming.incremental import IncrementalQuery, OutputMode
from streamkit.streaming.sources.memory import MemoryStream
from tests.streamkit.streaming.test_watermark_above import (
    AGG_BATCHES,
    DEDUP_BATCHES,
    DELAY,
    RENAMED,
    RENAMED_STATE,
    SCHEMA,
    T0,
    Out,
    counts,
    drive,
)

NAMES = {"a": "alpha", "b": "beta", "c": "gamma", "d": "delta", "e": "eps", "q": "Q", "z": "Z"}


def static() -> sk.DataFrame:
    """One row per stream key: ``k``, ``name`` and ``since`` (the epoch, before every ts)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return sk.from_arrow(
        pa.table({
            "k": list(NAMES), "name": list(NAMES.values()),
            "since": pa.array([epoch] * len(NAMES), pa.timestamp("us", "UTC")),
        })
    )  # fmt: skip


def stream() -> sk.DataFrame:
    return sk.read_stream.source(MemoryStream(SCHEMA)).with_watermark("ts", DELAY)


def dedup() -> sk.DataFrame:
    return stream().drop_duplicates(["k"])


def renamed() -> sk.DataFrame:
    return stream().select(sk.col("ts").alias("t"), "k", "v").drop_duplicates(["k"])


c = sk.col
EPOCH_S = -int(T0.timestamp())
"""``since`` as :func:`~tests.streamkit.streaming.test_watermark_above.rows_of` gives it."""
PRUNED: dict[str, tuple[Callable[[], sk.DataFrame], Out]] = {
    "select_k_v_name": (
        lambda: dedup().join(static(), "k").select("k", "v", "name"),
        ("d", 9, "delta"),
    ),
    "static_columns_only": (lambda: dedup().join(static(), "k").select("name", "v"), ("delta", 9)),
    "static_on_the_left": (lambda: static().join(dedup(), "k").select("name", "v"), ("delta", 9)),
    "semi_join_select": (
        lambda: dedup().join(static(), "k", "left_semi").select("k", "v"),
        ("d", 9),
    ),
    "left_outer_select": (lambda: dedup().join(static(), "k", "left").select("k", "v"), ("d", 9)),
    "select_static_time": (
        lambda: dedup().join(static(), "k").select("k", "v", "since"),
        ("d", 9, EPOCH_S),
    ),
    "renamed_select": (lambda: renamed().join(static(), "k").select("k", "v"), ("d", 9)),
}
"""The stream's ``ts`` (or its rename ``t``) read by nothing after the deduplication, and
the row d@11 gives in batch 2."""
KEPT: dict[str, Callable[[], sk.DataFrame]] = {
    "all_columns": lambda: dedup().join(static(), "k"),
    "condition_on_ts": lambda: (
        dedup()
        .join(
            static().select(c("k").alias("sk"), "name", "since"),
            (c("k") == c("sk")) & (c("ts") >= c("since")),
        )
        .select("k", "v", "name")
    ),
    "select_ts": lambda: dedup().join(static(), "k").select("k", "v", "ts"),
    "filter_on_ts": lambda: (
        dedup().join(static(), "k").filter(c("ts") > c("since")).select("k", "v")
    ),
    "semi_join_all_columns": lambda: dedup().join(static(), "k", "left_semi"),
    "renamed_select_t": lambda: renamed().join(static(), "k").select("k", "v", "t"),
}
"""``ts`` (or ``t``) read by the join, a filter or the output: it keeps the late-row rule."""


@pytest.mark.parametrize("name", [*PRUNED, *KEPT])
def test_drop_duplicates_under_a_stream_static_join_prunes_as_spark(name: str) -> None:
    build, row = PRUNED[name] if name in PRUNED else (KEPT[name], None)
    out, held, _ = drive(IncrementalQuery(build().plan, "append"), DEDUP_BATCHES)
    assert [len(out[b]) for b in range(5)] == [2, 1, 0 if row is None else 1, 1, 0]
    assert out[2] == ([] if row is None else [row])
    assert held == ([2, 3, 3, 4, 4] if row is None else [2, 3, 4, 5, 5])


CHAINS: dict[str, Callable[[], sk.DataFrame]] = {
    "dedup_join_window": lambda: counts(
        stream().drop_duplicates(["k", "ts"]).join(static(), "k"), "ts"
    ),
    # ts and its copy t reach the dedup; the window after the join reads t only: ts is pruned
    "copy_dedup_join_window": lambda: counts(
        stream().with_column("t", c("ts")).drop_duplicates(["k", "t"]).join(static(), "k")
    ),
    "dedup_window_join": lambda: (
        counts(stream().drop_duplicates(["k", "ts"]), "ts")
        .join(static(), "k")
        .select("window", "k", "n", "s")
    ),
}


@pytest.mark.parametrize("mode", ["update", "append"])
@pytest.mark.parametrize("name", list(CHAINS))
def test_a_chain_with_a_stream_static_join_above_its_first_operator(
    name: str, mode: OutputMode
) -> None:
    """Every stream key has one static row, so the windows are RENAMED's (the chain
    without the join, Spark-checked); state: the windows plus the deduplication's keys
    (3; 1 once W = 95 expires all but (z, 100); 1; 2 with (a, 200); 1 at W = 195)."""
    engine = make_engine(CHAINS[name]().plan, mode)
    assert isinstance(engine, ChainQuery)
    out, held, _ = drive(engine, AGG_BATCHES)
    assert out == RENAMED[mode]
    assert held == [a + d for a, d in zip(RENAMED_STATE, [3, 1, 1, 2, 1], strict=True)]
