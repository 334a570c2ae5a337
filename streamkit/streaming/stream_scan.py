"""The scan of a stream: the plan leaf of a streaming DataFrame.

:class:`StreamScanSource` gives a stream a schema and no batch read (running it as a batch
job raises with what to do instead); :func:`stream_source_of` finds the stream a plan
reads, so a plan is streaming exactly when it returns one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import polars as pl

from streamkit.errors import StreamkitError
from streamkit.plan import Plan, Scan

if TYPE_CHECKING:
    from streamkit.streaming.contracts import StreamSource


@dataclass(frozen=True, eq=False)
class StreamScanSource:
    """Adapts a StreamSource to a plan's Source: it has a schema but no batch read."""

    is_stream: ClassVar[bool] = True
    """Marks the scan of a stream (:func:`streamkit.stream_static.is_streaming`)."""
    stream: StreamSource
    schema: pl.Schema = field(init=False)

    def __post_init__(self) -> None:
        frame = pl.from_arrow(self.stream.schema.empty_table())
        assert isinstance(frame, pl.DataFrame)
        object.__setattr__(self, "schema", frame.schema)

    def batches(self, columns: list[str], dictionary: list[str]) -> Iterator[pl.DataFrame]:
        """Streams have no batch read; raises with what to do instead."""
        raise StreamkitError(
            "this DataFrame reads a stream: run it with df.write_stream...start(), or query "
            "the rows received so far through query.table.to_frame()"
        )

    def describe(self) -> str:
        return f"stream {type(self.stream).__name__}"


def stream_source_of(plan: Plan) -> StreamSource | None:
    """The stream at the leaf of ``plan``, or None for a batch plan; for a join of two
    streams, both read as one (:mod:`streamkit.streaming.sources.joined`)."""
    from streamkit.streaming.sources.joined import joined_streams

    both = joined_streams(plan, stream_source_of)
    if both is not None:
        return both
    node = plan.chain()[-1]
    if isinstance(node, Scan) and isinstance(node.source, StreamScanSource):
        return node.source.stream
    return None
