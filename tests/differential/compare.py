"""Assertions of the differential tests, with diffs a reader can act on."""

from __future__ import annotations

import math

from tests.differential.engines import Run
from tests.differential.queries import ACD, CD, COLUMNS, OutRow

ACD_RSD = 0.05
"""The larger of the two engines' default relative standard errors (Spark's HLL++)."""


def assert_approx_distinct(run: Run, engine: str) -> None:
    """Every ``approx_count_distinct`` is within 3 standard errors (and at least 1) of the
    exact distinct count of the same output row."""
    for batch_id, rows in run.batches:
        for row in rows:
            allowed = max(1, math.ceil(3 * ACD_RSD * row[CD]))
            assert abs(row[ACD] - row[CD]) <= allowed, (
                f"{engine} batch {batch_id}: approx_count_distinct {row[ACD]} vs exact "
                f"{row[CD]} in {row}"
            )


def assert_same_as_spark(streamkit: Run, spark: Run, mode: str) -> None:
    """The final result, then every batch (id and rows), equal Spark's (``acd`` apart,
    which :func:`assert_approx_distinct` checks in each engine)."""
    assert_approx_distinct(spark, "Spark")
    assert_approx_distinct(streamkit, "streamkit")
    ours, theirs = streamkit.without(ACD), spark.without(ACD)
    final_ours, final_theirs = ours.final(mode), theirs.final(mode)
    assert final_ours == final_theirs, "final results differ\n" + diff(final_ours, final_theirs)
    assert ours.batches == theirs.batches, "batches differ\n" + batch_diff(ours, theirs)


def diff(ours: list[OutRow], theirs: list[OutRow]) -> str:
    """Rows only streamkit has, rows only Spark has."""
    head = f"columns {[c for c in COLUMNS if c != 'acd']}"
    only_ours = [r for r in ours if r not in theirs]
    only_theirs = [r for r in theirs if r not in ours]
    return f"{head}\n  streamkit only: {only_ours}\n  Spark only:     {only_theirs}"


def batch_diff(ours: Run, theirs: Run) -> str:
    """Batch ids of each engine, and the first batch that differs."""
    ours_ids, their_ids = [b for b, _ in ours.batches], [b for b, _ in theirs.batches]
    ids = f"streamkit ids {ours_ids}, Spark ids {their_ids}"
    for (bid, rows), (tid, their_rows) in zip(ours.batches, theirs.batches, strict=False):
        if (bid, rows) != (tid, their_rows):
            return f"{ids}\nfirst difference at streamkit batch {bid} / Spark batch {tid}:\n" + (
                diff(rows, their_rows)
            )
    return ids
