"""Run a streaming query over a memory stream in slices, restarting it from its checkpoint
midway, and rebuild the final result from the batches its sink received."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa

import streamkit as sk
from streamkit.streaming.sources.memory import MemoryStream


def run_with_restart(
    data: pa.Table,
    query: Callable[[sk.DataFrame], sk.DataFrame],
    mode: str,
    checkpoint: Path,
    *,
    keys: list[str],
    rows_per_batch: int = 400,
) -> pl.DataFrame:
    """The final result: the last batch (complete), the last row per key (update) or all
    rows (append); batches re-sent after the restart replace their first delivery."""
    stream = MemoryStream(data.schema)
    df = sk.read_stream.source(stream)
    received: dict[int, pl.DataFrame] = {}

    def sink(batch: sk.DataFrame, batch_id: int) -> None:
        received[batch_id] = batch.to_polars()

    starts = list(range(0, data.num_rows, rows_per_batch))
    for half in (starts[: len(starts) // 2], starts[len(starts) // 2 :]):
        writer = query(df).write_stream.output_mode(mode).checkpoint(str(checkpoint))  # type: ignore[arg-type]
        q = writer.foreach_batch(sink).start()
        try:
            for lo in half:
                stream.add_rows(data.slice(lo, rows_per_batch))
                q.process_all_available()
        finally:
            q.stop()
            q.await_termination()
    frames = [received[b] for b in sorted(received)]
    if mode == "complete":
        return frames[-1]
    whole = pl.concat(frames, how="vertical_relaxed")
    if mode == "update":
        return whole.unique(subset=keys, keep="last", maintain_order=True)
    return whole
