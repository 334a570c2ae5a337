"""Spark results run a chunk at a time, when first asked for (server-free)."""

from __future__ import annotations

from tests.differential.lazy_runs import LazyRuns


def test_a_case_runs_only_its_chunk_and_only_once() -> None:
    chunks: list[list[str]] = []

    def run(names: list[str]) -> dict[str, int]:
        chunks.append(names)
        return {n: len(n) for n in names}

    runs = LazyRuns(["a", "bb", "ccc", "dddd", "eeeee"], run, 2)
    assert chunks == []  # nothing runs before a test asks
    assert runs["ccc"] == 3
    assert chunks == [["ccc", "dddd"]]
    assert runs["dddd"] == 4
    assert runs["ccc"] == 3
    assert runs["eeeee"] == 5
    assert runs["a"] == 1
    assert chunks == [["ccc", "dddd"], ["eeeee"], ["a", "bb"]]
    assert list(runs) == ["a", "bb", "ccc", "dddd", "eeeee"]
    assert len(runs) == 5
