"""The JSON the UI's page polls: one query's progress, history, side tables, checkpoint and
its source's own panel (the Kinesis lease table), built when asked.

Times are ISO strings (UTC) and Unix milliseconds; durations are milliseconds; rates rows/s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from streamkit.ui.history import QueryRecord, UiListener

if TYPE_CHECKING:
    from streamkit.streaming.progress import QueryProgress
    from streamkit.streaming.view import QueryView

log = logging.getLogger(__name__)

PHASES = ("fetch", "decode", "execute", "state", "sink", "commit")
SAMPLE_ROWS = 5
"""Dead letters and late rows shown as a sample (the most recent)."""

SourcePanel = Callable[[], Awaitable[dict[str, Any]]]
"""Reads what a source adds to its query's page (called on the UI's loop, at most once per
poll; it caches or bounds its own reads)."""
SourcePanelFactory = Callable[["QueryView"], "SourcePanel | None"]
_factories: list[SourcePanelFactory] = []


def register_source_panel(factory: SourcePanelFactory) -> None:
    """Let ``factory`` add a panel to the page of every query it recognises (the Kinesis
    connector shows the lease table: every worker and its shards)."""
    if factory not in _factories:
        _factories.append(factory)


_panels: dict[str, SourcePanel | None] = {}


def panel_for(view: QueryView) -> SourcePanel | None:
    """The first registered panel for ``view``'s source, if any (one per query, kept while
    it runs, so a panel can cache its reads)."""
    if view.id not in _panels:
        _panels[view.id] = next(
            (panel for factory in _factories if (panel := factory(view)) is not None), None
        )
    return _panels[view.id]


def _time(t: datetime | None) -> dict[str, Any] | None:
    return None if t is None else {"iso": t.isoformat(), "ms": round(t.timestamp() * 1000)}


def progress_json(p: QueryProgress) -> dict[str, Any]:
    """Every field of a progress record (durations in ms)."""
    d = p.durations
    return {
        "batch_id": p.batch_id,
        "timestamp": _time(p.timestamp),
        "num_input_rows": p.num_input_rows,
        "input_rows_per_second": p.input_rows_per_second,
        "processed_rows_per_second": p.processed_rows_per_second,
        "durations_ms": {**{k: getattr(d, k) * 1000 for k in PHASES}, "total": d.total * 1000},
        "watermark": _time(p.watermark),
        "state_rows": p.state_rows,
        "late_rows": p.late_rows,
        "dead_letters": p.dead_letters,
        "output_rows": p.output_rows,
        "partitions": [
            {"partition": x.partition, "records": x.records, "lag_ms": x.lag_ms,
             "owner": x.owner, "state": x.state, "consecutive_errors": x.consecutive_errors,
             "last_error": x.last_error}
            for x in p.partitions
        ],
    }


def history_json(listener: UiListener, record: QueryRecord) -> dict[str, list[Any]]:
    """Column-wise chart data, one entry per batch kept (oldest first)."""
    points = listener.points(record)
    ps = [x.progress for x in points]

    def ms(t: datetime | None) -> int | None:
        return None if t is None else round(t.timestamp() * 1000)

    lags = [{x.partition: x.lag_ms for x in p.partitions} for p in ps]
    parts = sorted({k for d in lags for k, v in d.items() if v is not None})
    lag = {k: [d.get(k) for d in lags] for k in parts}
    return {
        "batch_id": [p.batch_id for p in ps],
        "time": [ms(p.timestamp) for p in ps],
        "input_rate": [p.input_rows_per_second for p in ps],
        "processed_rate": [p.processed_rows_per_second for p in ps],
        **{f"phase_{k}": [getattr(p.durations, k) * 1000 for p in ps] for k in PHASES},
        "watermark": [ms(p.watermark) for p in ps],
        "newest_event": [ms(x.newest_event) for x in points],
        "late_rows": [p.late_rows for p in ps],
        "dead_letters": [p.dead_letters for p in ps],
        "lag_partitions": parts,
        "lag_ms": [lag[k] for k in parts],
    }


def _sample(table: pa.Table | None, columns: list[str]) -> list[dict[str, Any]]:
    if table is None or table.num_rows == 0:
        return []
    tail = table.slice(max(0, table.num_rows - SAMPLE_ROWS))
    keep = [c for c in columns if c in tail.column_names]
    rows: list[dict[str, Any]] = tail.select(keep).to_pylist()
    for row in rows:
        for k, v in row.items():
            if isinstance(v, bytes):
                row[k] = v[:200].decode("utf-8", "replace")
            elif isinstance(v, datetime):
                row[k] = v.isoformat()
    return rows[::-1]


def side_tables_json(view: QueryView | None) -> dict[str, Any]:
    """Dead letters kept, by reason, with the newest few; the newest late rows."""
    dead = view.dead_letters if view is not None else None
    by_reason: dict[str, int] = {}
    if dead is not None and dead.num_rows:
        counts = dead.group_by("reason").aggregate([("reason", "count")])
        reasons, ns = counts["reason"].to_pylist(), counts["reason_count"].to_pylist()
        by_reason = {str(r): int(n) for r, n in zip(reasons, ns, strict=True)}
    late = view.late_rows if view is not None else None
    late_columns = late.column_names[:6] if late is not None else []
    return {
        "dead_letters_by_reason": by_reason,
        "dead_letter_sample": _sample(
            dead, ["batch_id", "partition", "position", "reason", "raw"]
        ),
        "late_row_sample": _sample(late, late_columns),
        "late_rows_kept": 0 if late is None else late.num_rows,
    }


def checkpoint_json(view: QueryView | None) -> dict[str, Any]:
    """The checkpoint folder, the last committed batch and the positions it ends at."""
    if view is None:
        return {"location": None, "committed_batch": None, "offsets": {}}
    bid, offsets = view.committed
    return {"location": view.checkpoint_location, "committed_batch": bid, "offsets": offsets}


async def query_json(listener: UiListener, record: QueryRecord) -> dict[str, Any]:
    """Everything the page of one query shows."""
    view = record.view
    last = view.last_progress if view is not None else None
    if last is None and record.points:
        last = listener.points(record)[-1].progress
    source: dict[str, Any] | None = None
    if record.ended:
        _panels.pop(record.id, None)
    elif view is not None and (panel := panel_for(view)) is not None:
        try:
            source = await asyncio.wait_for(panel(), timeout=5)
        except Exception as exc:  # the page shows it; the UI keeps serving
            log.warning("source panel of %s failed: %s", record.name, exc)
            source = {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "id": record.id,
        "name": record.name,
        "status": "failed" if record.error else ("stopped" if record.ended else "active"),
        "error": record.error,
        "started": _time(record.started),
        "totals": {"batches": record.batches, "input_rows": record.input_rows,
                   "late_rows": record.late_rows, "dead_letters": record.dead_letters},
        "last_progress": progress_json(last) if last is not None else None,
        "history": history_json(listener, record),
        "side": side_tables_json(view),
        "checkpoint": checkpoint_json(view),
        "source": source,
    }  # fmt: skip


def queries_json(listener: UiListener) -> list[dict[str, Any]]:
    """The list on the index page."""
    out = []
    for r in listener.records():
        last = r.view.last_progress if r.view is not None else None
        out.append({
            "id": r.id, "name": r.name, "started": _time(r.started),
            "status": "failed" if r.error else ("stopped" if r.ended else "active"),
            "batches": r.batches, "input_rows": r.input_rows,
            "last_batch": last.batch_id if last is not None else None,
        })  # fmt: skip
    return out


__all__ = ["SourcePanel", "queries_json", "query_json", "register_source_panel"]
