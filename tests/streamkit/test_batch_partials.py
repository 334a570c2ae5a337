"""Batch aggregation reduces chunks to partial states on a few threads: the states come
back in chunk order, chunks really overlap, and no more than ``PARTIAL_WORKERS`` chunks are
taken from the reader before a state is collected: none waits in hand for a worker (memory
stays bounded)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import polars as pl
import pytest

from streamkit import aggregate as K


def test_states_come_back_in_chunk_order_with_bounded_chunks_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(K, "PARTIAL_WORKERS", 2)
    second_done = threading.Event()
    lock = threading.Lock()
    taken, done = [0], [0]
    most_ahead = [0]

    def fake_partial(rows: pl.LazyFrame, spec: object) -> pl.DataFrame:
        frame = rows.collect()
        if frame["i"][0] == 0:  # the first chunk ends only after the second one
            assert second_done.wait(timeout=60), "the chunks did not run at once"
        if frame["i"][0] == 1:
            second_done.set()
        with lock:
            done[0] += 1
        return frame

    def chunks() -> Iterator[pl.LazyFrame]:
        for i in range(7):
            with lock:
                taken[0] += 1
                most_ahead[0] = max(most_ahead[0], taken[0] - done[0])
            yield pl.DataFrame({"i": [i]}).lazy()

    monkeypatch.setattr(K, "partial", fake_partial)
    parts = K._partials(chunks(), spec=None)  # type: ignore[arg-type]
    assert [p["i"][0] for p in parts] == list(range(7))
    assert most_ahead[0] <= 2  # two in the workers, none taken while both are busy
