"""What one micro-batch of a stateful engine produced (the single-process
:class:`~streamkit.streaming.incremental.IncrementalQuery`, a chain, a stream-stream join,
the fleet's aggregation stage): one immutable value, handed to the sink as is."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class BatchResult:
    """What one micro-batch produced."""

    output: pl.DataFrame
    """Rows to hand to the sink under the output mode."""
    late_rows: pl.DataFrame
    """Input rows older than the watermark (not aggregated), as read from the source: judged
    on the event time as it reaches ``with_watermark``, with the source's own columns; only
    rows that reach the stateful operator (past its filters and joins), each once."""
    watermark: int | None
    """Watermark after this batch, in ticks of the event-time column (None: no watermark)."""
