"""W3 drops no on-time row (issue 18), without Kinesis.

W3 is the benchmark's query: a 10-minute watermark, 1-hour tumbling windows per action,
update mode. Fed from Kinesis, shards interleave within micro-batches, so a slow shard's
rows arrive behind the watermark a fast shard pushed forward; their hour is still open,
so Spark counts them, and streamkit must too. Here each file is one micro-batch holding
a chunk of each of four "shards" read at different speeds: the same interleaving, from
files. Every row's window is open when its batch runs (checked below in plain Python:
window end > W(n-1)), and many rows are behind W(n-1) (also checked), so the final result
must be the aggregation of every row, in Spark and in streamkit.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.differential.compare import assert_same_as_spark
from tests.differential.engines import Run, run_spark_all, run_streamkit
from tests.differential.inputs import Files, Row, write_files
from tests.differential.oracle import expected
from tests.differential.queries import ACD, Query

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

HOUR, DELAY = 3600, 600
W3 = Query("tumbling", HOUR, "update", delay=DELAY)
SHARD_LAG = (0, 300, 900, 1500)
"""How far behind the fastest shard each shard is read (seconds of event time)."""


def shard_files(seed: int, files: int = 12, per_shard: int = 6) -> Files:
    """``files`` files; file i holds ``per_shard`` rows of each shard from the 10 minutes
    that shard has reached (the fast shard's clock minus its lag), actions a-d, values and
    users with some nulls. Rows whose window would be closed when their batch runs are left
    out, so that no row is late under Spark's rule."""
    rng = random.Random(seed)
    out: Files = []
    newest: int | None = None
    for index in range(files):
        clock = 2 * HOUR + index * 600
        rows = [
            _row(rng, clock - lag - rng.randint(0, 600))
            for lag in SHARD_LAG
            for _ in range(per_shard)
        ]
        watermark = None if newest is None else newest - DELAY
        kept = [r for r in rows if watermark is None or _window_end(r) > watermark]
        out.append(kept)
        newest = max([newest or 0, *(r[0] for r in kept if r[0] is not None)])
    return out


def _row(rng: random.Random, t: int) -> Row:
    v = None if rng.random() < 0.05 else rng.randint(0, 100)
    u = None if rng.random() < 0.05 else rng.randint(0, 20)
    return (t, rng.choice("abcd"), v, u)


def _window_end(row: Row) -> int:
    assert row[0] is not None
    return row[0] - row[0] % HOUR + HOUR


def behind_watermark(files: Files) -> int:
    """Rows whose event time is behind the watermark their batch runs with (plain Python)."""
    count, newest = 0, None
    for rows in files:
        if newest is not None:
            count += sum(1 for r in rows if r[0] is not None and r[0] < newest - DELAY)
        newest = max([newest or 0, *(r[0] for r in rows if r[0] is not None)])
    return count


SEEDS = (3, 4)


@pytest.fixture(scope="module")
def directories(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Each seed's files, written once."""
    return {s: write_files(tmp_path_factory.mktemp("w3"), shard_files(s), "json") for s in SEEDS}


@pytest.fixture(scope="module")
def spark_runs(spark: Any, directories: dict[int, Path]) -> dict[str, Run]:
    """Spark's batches for every seed, its queries run concurrently."""
    return run_spark_all(spark, {str(s): (W3, directories[s]) for s in SEEDS})


@pytest.mark.parametrize("seed", SEEDS)
def test_w3_counts_every_row_whose_window_is_open(
    spark_runs: dict[str, Run], directories: dict[int, Path], seed: int
) -> None:
    files = shard_files(seed)
    rows = [row for batch in files for row in batch]
    assert behind_watermark(files) >= 20, "the input must put rows behind the watermark"
    directory = directories[seed]
    truth = expected(W3, rows)
    theirs = spark_runs[str(seed)]
    assert theirs.without(ACD).final("update") == truth
    ours, late = run_streamkit(W3, directory)
    assert late is None or late.num_rows == 0, f"streamkit set {late.num_rows} rows apart as late"
    assert ours.without(ACD).final("update") == truth
    assert_same_as_spark(ours, theirs, "update")
