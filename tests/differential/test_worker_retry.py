"""The retry of Spark runs whose Python worker was lost (server-free)."""

from __future__ import annotations

import pytest

from tests.differential.worker_retry import retried, worker_lost

LOST = RuntimeError("org.apache.spark.SparkException: Python worker failed to connect back.")


def test_only_a_lost_worker_runs_again_and_the_last_attempt_stands() -> None:
    calls: list[str] = []

    def flaky() -> str:
        calls.append("first")
        raise LOST

    def again() -> str:
        calls.append("again")
        if len(calls) < 3:
            raise LOST
        return "batches"

    assert retried(flaky, again) == "batches"
    assert calls == ["first", "again", "again"]
    with pytest.raises(RuntimeError, match="connect back"):  # three lost: the last raises
        retried(flaky)
    other: list[int] = []

    def broken() -> str:
        other.append(1)
        raise AssertionError("batch 2 differs")

    with pytest.raises(AssertionError, match="differs"):
        retried(broken)
    assert other == [1]  # any other failure is not retried


def test_a_result_that_reports_a_lost_worker_runs_again() -> None:
    Run = tuple[list[tuple[int, list[int]]], str | None]
    runs: list[Run] = [([], str(LOST)), ([(0, [])], None)]
    results = iter(runs)
    out = retried(lambda: next(results), lost=lambda r: worker_lost(r[1]))
    assert out == ([(0, [])], None)
    assert not worker_lost(None)
    assert not worker_lost("EMITTING_ROWS_OLDER_THAN_WATERMARK_NOT_ALLOWED")
