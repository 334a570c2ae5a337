"""Seeded random streams through PySpark and streamkit, compared batch by batch.

Each case is a file stream (7 files, one per micro-batch, some empty; rows out of order,
some behind the watermark with their window open, some in windows already closed;
nulls in the key, the value and the user id) run with ``available_now`` through the
same query in both engines: tumbling, sliding and session windows in append, update and
complete modes, with count(*), count, sum, avg, min, max, exact and approximate distinct
counts, over JSON and Parquet files. Spark's queries of the module run concurrently in
one session (``spark_runs``) to halve the wall time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.differential.compare import assert_same_as_spark
from tests.differential.engines import Run, run_spark_all, run_streamkit
from tests.differential.inputs import Files, random_files, write_files
from tests.differential.oracle import expected
from tests.differential.queries import ACD, Query

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.slow]

SEEDS = (11, 12, 13)
SHAPES = (
    Query("tumbling", 10, "append"),
    Query("tumbling", 10, "update"),
    Query("tumbling", 10, "complete"),
    Query("sliding", 10, "append", slide=5),
    Query("sliding", 10, "update", slide=5),
    Query("sliding", 10, "complete", slide=5),
    Query("session", 5, "append"),
    Query("session", 5, "complete"),
)


def case_query(shape: Query, seed: int) -> Query:
    """The shape with a seed-dependent watermark delay and file format."""
    return shape.with_(delay=(5, 10, 7)[seed % 3], fmt=("json", "parquet")[seed % 2])


CASES = {f"{case_query(s, seed)}-seed{seed}": (case_query(s, seed), seed) for s in SHAPES
         for seed in SEEDS}  # fmt: skip


@pytest.fixture(scope="module")
def inputs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Files, Path]]:
    """The files of every selected case, written once."""
    items = request.session.items
    selected = {i.callspec.params.get("case") for i in items if hasattr(i, "callspec")}
    out = {}
    for case in sorted(selected & CASES.keys()):
        query, seed = CASES[case]
        files = random_files(seed)
        out[case] = (files, write_files(tmp_path_factory.mktemp("in"), files, query.fmt))
    return out


@pytest.fixture(scope="module")
def spark_runs(spark: Any, inputs: dict[str, tuple[Files, Path]]) -> dict[str, Run]:
    """Spark's batches for those cases (all queries started at once, then awaited)."""
    return run_spark_all(spark, {case: (CASES[case][0], inputs[case][1]) for case in inputs})


@pytest.mark.parametrize("case", list(CASES))
def test_streamkit_matches_spark(
    case: str, inputs: dict[str, tuple[Files, Path]], spark_runs: dict[str, Run]
) -> None:
    query = CASES[case][0]
    _files, directory = inputs[case]
    ours, _late = run_streamkit(query, directory)
    assert_same_as_spark(ours, spark_runs[case], query.mode)


@pytest.mark.parametrize("case", [c for c in CASES if "complete" in c and "session" not in c])
def test_complete_mode_final_equals_plain_python(
    case: str, inputs: dict[str, tuple[Files, Path]], spark_runs: dict[str, Run]
) -> None:
    """On time windows, complete mode keeps every group and drops no late row (Spark
    filters late rows only in append and update there), so its last batch is the
    aggregation of all rows. (Session windows drop late rows in complete mode too: Spark's
    session restore filters them in every mode; the comparison above covers that.)"""
    query = CASES[case][0]
    files, _ = inputs[case]
    truth = expected(query, [row for rows in files for row in rows])
    assert spark_runs[case].without(ACD).final(query.mode) == truth
