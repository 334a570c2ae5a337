"""One windowed aggregation, described once and built for both engines.

Output rows are compared as tuples ``(ws, we, k, n, nv, s, mean, lo, hi, cd, acd)``:
window start and end in epoch microseconds, the key, ``count(*)``, ``count(v)``,
``sum(v)``, ``avg(v)``, ``min(v)``, ``max(v)``, the exact number of distinct ``u``
(Spark: ``size(collect_set(u))``, which it allows in a stream; streamkit:
``count_distinct``) and ``approx_count_distinct(u)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from streamkit.streaming.incremental import OutputMode

WindowKind = Literal["tumbling", "sliding", "session"]
OutRow = tuple[Any, ...]
COLUMNS = ("ws", "we", "k", "n", "nv", "s", "mean", "lo", "hi", "cd", "acd")
KEY = slice(0, 3)
"""The group key of an output row: window start, window end, k."""
ACD = COLUMNS.index("acd")
CD = COLUMNS.index("cd")


@dataclass(frozen=True)
class Query:
    """``with_watermark(ts, delay).group_by(window, k).agg(...)`` in ``mode``, over files
    of ``fmt``. ``size`` is the window size (the gap for sessions), ``slide`` the slide of
    a sliding window; all in seconds."""

    window: WindowKind
    size: int
    mode: OutputMode
    delay: int = 10
    slide: int | None = None
    fmt: str = "json"

    def __str__(self) -> str:
        slide = f"/{self.slide}" if self.slide else ""
        return f"{self.window}{self.size}{slide}-{self.mode}-wm{self.delay}-{self.fmt}"

    def with_(self, **changes: Any) -> Query:
        """A copy with ``changes``."""
        return replace(self, **changes)


def streamkit_frame(query: Query, source: Any) -> Any:
    """The query on a streamkit streaming DataFrame."""
    import streamkit as sk

    if query.window == "session":
        window: Any = sk.session_window("ts", f"{query.size} seconds")
    else:
        slide = f"{query.slide} seconds" if query.slide else None
        window = sk.window("ts", f"{query.size} seconds", slide)
    return (
        source.with_watermark("ts", f"{query.delay} seconds")
        .group_by(window, "k")
        .agg(
            sk.count().alias("n"),
            sk.count("v").alias("nv"),
            sk.sum("v").alias("s"),
            sk.avg("v").alias("mean"),
            sk.min("v").alias("lo"),
            sk.max("v").alias("hi"),
            sk.count_distinct("u").alias("cd"),
            sk.approx_count_distinct("u").alias("acd"),
        )
    )


def spark_frame(query: Query, source: Any) -> Any:
    """The query on a Spark streaming (or batch) DataFrame."""
    from pyspark.sql import functions as F

    if query.window == "session":
        window = F.session_window("ts", f"{query.size} seconds")
    elif query.slide:
        window = F.window("ts", f"{query.size} seconds", f"{query.slide} seconds")
    else:
        window = F.window("ts", f"{query.size} seconds")
    return (
        source.withWatermark("ts", f"{query.delay} seconds")
        .groupBy(window.alias("window"), "k")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.count("v").alias("nv"),
            F.sum("v").alias("s"),
            F.avg("v").alias("mean"),
            F.min("v").alias("lo"),
            F.max("v").alias("hi"),
            F.collect_set("u").alias("us"),
            F.approx_count_distinct("u").alias("acd"),
        )
    )


def spark_rows(batch: Any) -> list[OutRow]:
    """A Spark output batch as comparable tuples (projection done inside Spark)."""
    from pyspark.sql import functions as F

    out = batch.select(
        F.unix_micros(F.col("window.start")).alias("ws"),
        F.unix_micros(F.col("window.end")).alias("we"),
        "k", "n", "nv", "s", "mean", "lo", "hi",
        F.size("us").alias("cd"),
        "acd",
    )  # fmt: skip
    return [normal(tuple(r)) for r in out.collect()]


def streamkit_rows(table: Any) -> list[OutRow]:
    """A streamkit output batch (an Arrow table) as comparable tuples."""
    import pyarrow.compute as pc

    window = table.column("window").combine_chunks()
    ws = pc.cast(window.field("start"), "int64").to_pylist()
    we = pc.cast(window.field("end"), "int64").to_pylist()
    rest = [table.column(c).to_pylist() for c in COLUMNS[2:]]
    return [normal(row) for row in zip(ws, we, *rest, strict=True)]


def normal(row: tuple[Any, ...]) -> OutRow:
    """Floats rounded to 9 places (avg is a division in both engines); ints as ints."""
    return tuple(round(x, 9) if isinstance(x, float) else x for x in row)
