"""What the demo shows: the live table of counts per window and action, the status line,
plain progress lines when stdout is not a terminal, and the summary."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl
import pyarrow.compute as pc
from rich.console import Group
from rich.table import Table
from rich.text import Text

from streamkit.cli.clickstream import ACTIONS

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa

    from streamkit.streaming.progress import QueryProgress


@dataclass(frozen=True)
class Snapshot:
    """The demo's state at one moment."""

    elapsed: float
    """Seconds since the producer started."""
    duration: float
    """Planned run time in seconds."""
    produced: int
    """Events put by the producer so far."""
    counts: pa.Table | None
    """The memory sink's table (window, action, events), None before the first batch."""
    recent: list[QueryProgress]
    """Recent progress records, oldest first."""


@dataclass(frozen=True)
class Summary:
    """What the demo did, printed at the end."""

    produced: int
    """Events acknowledged by Kinesis."""
    counted: int
    """Events counted by the query (sum over windows and actions)."""
    windows: int
    """Distinct 1-minute windows in the result."""
    rows: int
    """Result rows (window x action)."""
    seconds: float
    """Time the producer ran."""
    late: int
    """Rows behind the watermark (not counted)."""
    dead_letters: int
    """Undecodable records."""
    leases_released: int
    """Leases without owner after the query stopped."""
    leases: int
    """Leases in the lease table."""
    output: Path
    """Parquet file written."""


def counted(counts: pa.Table | None) -> int:
    """Sum of the ``events`` column."""
    if counts is None or counts.num_rows == 0:
        return 0
    return int(pc.sum(counts["events"]).as_py() or 0)


def pivot(counts: pa.Table | None, last: int = 5) -> pl.DataFrame:
    """Counts per window start (rows, newest first, ``last`` windows) and action (columns)."""
    frame = pl.from_arrow(counts) if counts is not None and counts.num_rows else None
    if not isinstance(frame, pl.DataFrame):
        return pl.DataFrame({"window": []}, schema={"window": pl.Datetime("us", "UTC")})
    flat = frame.select(pl.col("window").struct.field("start").alias("window"), "action", "events")
    wide = flat.pivot(on="action", index="window", values="events", aggregate_function="sum")
    for action in ACTIONS:
        if action not in wide.columns:
            wide = wide.with_columns(pl.lit(0, pl.Int64).alias(action))
    wide = wide.fill_null(0).select("window", *ACTIONS)
    return wide.sort("window", descending=True).head(last)


def _rate(recent: list[QueryProgress], span: float = 5.0) -> float:
    if not recent:
        return 0.0
    end = recent[-1].timestamp.timestamp()
    rows = sum(p.num_input_rows for p in recent if end - p.timestamp.timestamp() < span)
    first = min(p.timestamp.timestamp() for p in recent if end - p.timestamp.timestamp() < span)
    return rows / max(end - first + 1.0, 1.0)


def _short(shard_id: str) -> str:
    return f"#{int(shard_id.rsplit('-', 1)[-1])}" if shard_id[-1:].isdigit() else shard_id


def _hms(t: datetime | None) -> str:
    return t.strftime("%H:%M:%S") if t is not None else "-"


def status_fields(snap: Snapshot) -> dict[str, str]:
    """The status line's fields: rows/s, watermark, leases held, lag per shard."""
    last = snap.recent[-1] if snap.recent else None
    parts = last.partitions if last else ()
    held = sum(1 for p in parts if p.owner)
    lag = " ".join(
        f"{_short(p.partition)}={p.lag_ms if p.lag_ms is not None else '?'}ms" for p in parts
    )
    return {
        "rows/s": f"{_rate(snap.recent):,.0f}",
        "watermark": _hms(last.watermark if last else None),
        "leases held": str(held),
        "lag": lag or "-",
    }


def render(snap: Snapshot, title: str) -> Group:
    """The live screen: a title, the counts table and the status line."""
    table = Table(title="events per action per 1-minute window (newest first)", expand=False)
    table.add_column("window", style="cyan")
    for action in ACTIONS:
        table.add_column(action, justify="right")
    table.add_column("total", justify="right", style="bold")
    for row in pivot(snap.counts).iter_rows(named=True):
        values = [int(row[a]) for a in ACTIONS]
        start = row["window"]
        table.add_row(
            f"{start:%H:%M}-{start + timedelta(minutes=1):%H:%M}",
            *(f"{v:,}" for v in values),
            f"{sum(values):,}",
        )
    fields = status_fields(snap)
    status = Text.assemble(
        ("rows/s ", "dim"), fields["rows/s"], ("  watermark ", "dim"), fields["watermark"],
        ("  leases held ", "dim"), fields["leases held"], ("  lag ", "dim"), fields["lag"],
    )  # fmt: skip
    head = Text.assemble(
        (title, "bold"),
        f"  {snap.elapsed:4.0f}s / {snap.duration:.0f}s",
        ("  produced ", "dim"), f"{snap.produced:,}",
        ("  counted ", "dim"), f"{counted(snap.counts):,}",
        ("  (Ctrl-C stops)", "dim"),
    )  # fmt: skip
    return Group(head, table, status)


def plain_line(snap: Snapshot) -> str:
    """One progress line for logs (no terminal)."""
    f = status_fields(snap)
    return (
        f"[{snap.elapsed:5.1f}s] produced={snap.produced} counted={counted(snap.counts)} "
        f"rows/s={f['rows/s']} watermark={f['watermark']} leases={f['leases held']} "
        f"lag={f['lag'].replace(' ', ',')}"
    )


def summary_lines(s: Summary) -> list[str]:
    """The summary as ``label: value`` lines (stable, for people and scripts)."""
    return [
        f"events produced: {s.produced}",
        f"events counted: {s.counted}",
        f"windows: {s.windows} ({s.rows} window x action rows)",
        f"duration: {s.seconds:.1f} s ({s.produced / max(s.seconds, 1e-9):,.0f} events/s)",
        f"late rows: {s.late}, dead letters: {s.dead_letters}",
        f"leases released: {s.leases_released}/{s.leases}",
        f"results: {s.output}",
    ]
