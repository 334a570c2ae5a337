"""A PNG of windowed counts over time: one line per key (e.g. per action).

Drawn with matplotlib's object API on the Agg canvas (no display, no global pyplot state),
so it works headless and from any thread. Used by ``streamkit run job.py --plot out.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure

import streamkit as sk
from streamkit.cli._common import CliError
from streamkit.streaming.sinks import MemorySink, ParquetSink

if TYPE_CHECKING:
    from streamkit.streaming.query import StreamingQuery

SIZE = (8.0, 4.5)
"""Figure size in inches; with :data:`DPI` the PNG is 800 x 450 pixels."""
DPI = 100

SHAPE_HINT = (
    "plot a windowed aggregation: a `window` column (sk.window(...)), a string key "
    "column such as `action`, and an integer count"
)


def window_starts(table: pa.Table) -> pa.Array:
    """Start of each row's window: the ``window`` struct's ``start`` or ``window_start``."""
    if "window" in table.column_names:
        window = table["window"].combine_chunks()
        if pa.types.is_struct(window.type) and window.type.get_field_index("start") >= 0:
            return window.field("start")
    if "window_start" in table.column_names:
        return table["window_start"].combine_chunks()
    raise CliError(f"no window column in {table.column_names}", SHAPE_HINT)


def pick_columns(table: pa.Table, value: str | None) -> tuple[str, str]:
    """(key column, value column): the first string column and ``value`` or the first
    integer column."""
    types = dict(zip(table.column_names, table.schema.types, strict=True))
    keys = [c for c, t in types.items() if pa.types.is_string(t) or pa.types.is_large_string(t)]
    values = [c for c, t in types.items() if pa.types.is_integer(t)]
    chosen = value or (values[0] if values else None)
    if not keys or chosen is None or chosen not in types:
        raise CliError(f"cannot plot columns {table.column_names}", SHAPE_HINT)
    return keys[0], chosen


def plot_window_counts(
    table: pa.Table, path: Path, *, value: str | None = None, title: str = "events per window"
) -> Path:
    """Write a line chart of ``value`` (default: the first integer column) per window start,
    one line per key (the first string column), to ``path`` as PNG; returns ``path``."""
    key, value = pick_columns(table, value)
    flat = pa.table({"start": window_starts(table), "key": table[key], "value": table[value]})
    flat = flat.sort_by([("start", "ascending")])
    fig = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name in sorted(pc.unique(flat["key"]).to_pylist(), key=str):
        rows = flat.filter(pc.equal(flat["key"], name))
        ax.plot(rows["start"].to_pylist(), rows["value"].to_pylist(), marker="o", label=name)
    ax.set_title(title)
    ax.set_xlabel("window start (UTC)")
    ax.set_ylabel(value)
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S", tz="UTC"))  # type: ignore[no-untyped-call]
    ax.grid(alpha=0.3)
    if flat.num_rows:
        ax.legend(loc="upper left", fontsize="small")
    fig.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def query_result(query: StreamingQuery) -> pa.Table:
    """The result a stopped query wrote: its memory table or its Parquet files."""
    sink = query.sink
    if isinstance(sink, MemorySink):
        return sink.table()
    if isinstance(sink, ParquetSink):
        return sk.read.parquet(sink.path).to_arrow()
    raise CliError(
        f"--plot cannot read the result of a {type(sink).__name__}",
        "use a memory or Parquet sink in job()",
    )
