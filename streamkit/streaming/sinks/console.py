"""Console sink: prints every micro-batch as a readable table (for development)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

import pyarrow as pa

from streamkit.streaming.contracts import Guarantee

if TYPE_CHECKING:
    from rich.console import Console

RULE = "-" * 43


def format_cell(value: Any, truncate: int | None = None) -> str:
    """One value as text: ``null``; a window struct as ``start - end``; others by ``str``."""
    text = _format(value)
    if truncate is not None and len(text) > truncate:
        return text[: max(truncate - 3, 0)] + "..."
    return text


def _format(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        if set(value) >= {"start", "end"} and len(value) == 2:
            return f"{_format(value['start'])} - {_format(value['end'])}"
        return "{" + ", ".join(f"{k}: {_format(v)}" for k, v in value.items()) + "}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _numeric(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_integer(dtype) or pa.types.is_floating(dtype))


def table_lines(table: pa.Table, max_rows: int, truncate: int | None = None) -> list[str]:
    """A plain aligned text table (numbers right-aligned) of the first ``max_rows`` rows."""
    shown = table.slice(0, max_rows)
    names = shown.column_names
    columns = [[format_cell(v, truncate) for v in col.to_pylist()] for col in shown.columns]
    widths = [
        max([len(n), *(len(c) for c in cells)]) for n, cells in zip(names, columns, strict=True)
    ]
    right = [_numeric(f.type) for f in shown.schema]
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: Sequence[str], align: Sequence[bool]) -> str:
        padded = (
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, align, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    lines = [border, line(names, [False] * len(names)), border]
    lines += [line(row, right) for row in zip(*columns, strict=True)]
    lines.append(border)
    return lines


class ConsoleSink:
    """Prints ``Batch: N`` and the batch as a table (at most ``max_rows`` rows).

    Uses ``rich`` when it is installed (``use_rich=None``), else a plain aligned text table.
    ``stream=None`` writes to the current ``sys.stdout``. Window struct columns show as
    ``start - end``; cells longer than ``truncate`` characters are cut.

    Delivery: at-least-once (display only): a batch re-run after a restart prints again.
    """

    guarantee: ClassVar[Guarantee] = Guarantee.AT_LEAST_ONCE
    """Delivery guarantee (the README sink table is tested against it)."""

    def __init__(
        self,
        max_rows: int = 20,
        stream: TextIO | None = None,
        *,
        use_rich: bool | None = None,
        truncate: int | None = 80,
    ) -> None:
        if max_rows < 0:
            raise ValueError(f"max_rows must be >= 0, got {max_rows}")
        self.max_rows = max_rows
        self.stream = stream
        self.truncate = truncate
        self.use_rich = _rich_available() if use_rich is None else use_rich

    async def add_batch(self, batch_id: int, table: pa.Table) -> None:
        """Print the batch; returns when the text is flushed to the stream."""
        out = self.stream if self.stream is not None else sys.stdout
        out.write(f"{RULE}\nBatch: {batch_id}\n{RULE}\n")
        if self.use_rich:
            self._print_rich(out, table)
        else:
            out.write("\n".join(table_lines(table, self.max_rows, self.truncate)) + "\n")
        if table.num_rows > self.max_rows:
            out.write(f"only showing top {self.max_rows} of {table.num_rows} rows\n")
        out.write("\n")
        out.flush()

    def _print_rich(self, out: TextIO, table: pa.Table) -> None:
        from rich.table import Table

        shown = table.slice(0, self.max_rows)
        view = Table(show_lines=False)
        for f in shown.schema:
            view.add_column(f.name, justify="right" if _numeric(f.type) else "left")
        columns = [[format_cell(v, self.truncate) for v in c.to_pylist()] for c in shown.columns]
        for row in zip(*columns, strict=True):
            view.add_row(*row)
        _console(out).print(view)

    async def close(self) -> None:
        """Flush the stream (it is not closed: it may be stdout)."""
        (self.stream if self.stream is not None else sys.stdout).flush()


def _rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _console(out: TextIO) -> Console:
    from rich.console import Console

    terminal = bool(getattr(out, "isatty", lambda: False)())
    # Not a terminal: no colours, and wide enough that cells never wrap.
    return Console(
        file=out, width=None if terminal else 10_000, color_system=None if not terminal else "auto"
    )
