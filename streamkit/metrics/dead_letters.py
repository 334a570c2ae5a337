"""A batch's dead letters by reason, shared by the metrics exporters."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from streamkit.streaming.listeners import streams

if TYPE_CHECKING:
    from streamkit.streaming.progress import QueryProgress


def dead_letters_by_reason(query_id: str, p: QueryProgress) -> dict[str, int]:
    """The batch's dead letters by reason, from the query's dead-letter table; those no
    longer there (the table was trimmed) count as ``unknown``. The counts sum to
    ``p.dead_letters``."""
    query = streams.get(query_id)
    table = query.dead_letters if query is not None else None
    out: dict[str, int] = {}
    if table is not None:
        mine = table.filter(pc.equal(table["batch_id"], pa.scalar(p.batch_id, pa.int64())))
        by_reason = mine.group_by("reason").aggregate([("reason", "count")])
        reasons, counts = by_reason["reason"].to_pylist(), by_reason["reason_count"].to_pylist()
        out = {str(r): int(n) for r, n in zip(reasons, counts, strict=True)}
    if (missing := p.dead_letters - sum(out.values())) > 0:
        out["unknown"] = out.get("unknown", 0) + missing
    return out
