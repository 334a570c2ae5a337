"""The two workloads and each engine's query for them.

Every runner returns the same Arrow shape, the one streamkit's API produces:
``window`` (struct<start, end> of ``timestamp[us, UTC]``), ``action``, ``n``,
``sum(value)``, ``avg(value)``, ``approx_count_distinct(user_id)``.

``prepare`` does untimed setup (imports, connection, thread settings) and returns a
zero-argument callable that does the timed work: read the Parquet file, compute,
and materialise the result as a ``pyarrow.Table``. Engine libraries are imported
lazily so a measuring process loads only the engine it measures.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa

MINUTE_US = 60 * 1_000_000
HOUR_US = 60 * MINUTE_US
ENGINES = ("duckdb", "polars", "streamkit")
BASELINES = ("duckdb", "polars")
OUTPUT_COLUMNS = (
    "window", "action", "n", "sum(value)", "avg(value)", "approx_count_distinct(user_id)",
)  # fmt: skip
Runner = Callable[[], "pa.Table"]


@dataclass(frozen=True)
class Workload:
    """A window spec: a row belongs to ``size_us // slide_us`` windows.

    Window starts are ``floor(t / slide) * slide - k * slide`` for
    ``k = 0 .. size/slide - 1``, and each window is ``[start, start + size)``.
    """

    name: str
    size: str
    slide: str | None
    size_us: int
    slide_us: int

    @property
    def windows_per_row(self) -> int:
        return self.size_us // self.slide_us


WORKLOADS = {
    "W1": Workload("W1", "1 hour", None, HOUR_US, HOUR_US),
    "W2": Workload("W2", "1 hour", "15 minutes", HOUR_US, 15 * MINUTE_US),
}


def thread_count() -> int:
    """Cores this process may run on (what every engine is told to use)."""
    return len(os.sched_getaffinity(0))


LAZY_IMPORTS = {"streamkit": ("pyarrow.fs", "pyarrow.parquet", "numpy.ma")}
"""Library modules an engine imports on its first query rather than when it is imported:
streamkit defers pyarrow's file system and Parquet modules (``import streamkit`` stays
light), and Polars imports ``numpy.ma`` when streamkit hands it a numpy array. DuckDB and
Polars load their readers with the engine, so without these the first timed query of
streamkit alone would pay imports (~20 ms of CPU)."""


def import_engine(engine: str, *, lazy: bool = True) -> None:
    """Import what measuring ``engine`` imports, and nothing else: pyarrow, the engine and
    (``lazy``) the modules it would import during its first query (:data:`LAZY_IMPORTS`)."""
    importlib.import_module("pyarrow")
    importlib.import_module(engine)
    for module in LAZY_IMPORTS.get(engine, ()) if lazy else ():
        importlib.import_module(module)


def streamkit_missing() -> str | None:
    """None when streamkit's query API is importable, else why not."""
    try:
        sk = importlib.import_module("streamkit")
    except ImportError as exc:
        return f"cannot import streamkit: {exc}"
    needed = ("read", "window", "count", "sum", "avg", "approx_count_distinct")
    missing = [name for name in needed if not hasattr(sk, name)]
    return f"streamkit lacks {', '.join(missing)}" if missing else None


def prepare(engine: str, workload: Workload, path: Path) -> Runner:
    """Untimed setup for ``engine``; returns the timed read+compute+materialise step."""
    builders: dict[str, Callable[[Workload, Path], Runner]] = {
        "duckdb": _duckdb,
        "polars": _polars,
        "streamkit": _streamkit,
    }
    return builders[engine](workload, path)


def duckdb_sql(workload: Workload, path: Path) -> str:
    """DuckDB query: integer bucket arithmetic on epoch micros, then a tiny outer select.

    ``epoch_us(t) // slide`` was about 2x faster than ``time_bucket`` on a
    TIMESTAMPTZ column (which goes through ICU); for sliding windows, unnesting a
    4-element list of bucket numbers was the fastest correct expansion (tied with
    a UNION ALL of four projections, ahead of a CROSS JOIN with ``range(4)`` and
    well ahead of ``unnest(generate_series(...))``). See bench/README.md.
    """
    k = workload.windows_per_row
    literal = "'" + str(path).replace("'", "''") + "'"
    bucket = f"epoch_us(event_time) // {workload.slide_us}"
    keyed = (
        f"SELECT {bucket} AS w, action, value, user_id FROM read_parquet({literal})"
        if k == 1
        else "SELECT unnest(["
        + ", ".join(["b"] + [f"b - {j}" for j in range(1, k)])
        + f"]) AS w, action, value, user_id FROM "
        f"(SELECT {bucket} AS b, action, value, user_id FROM read_parquet({literal}))"
    )
    start = f"make_timestamptz(w * {workload.slide_us})"
    return (
        f"SELECT {{'start': {start}, 'end': {start} + INTERVAL {workload.size_us} MICROSECONDS}}"
        ' AS "window", action, n, s AS "sum(value)", a AS "avg(value)",'
        ' d AS "approx_count_distinct(user_id)" FROM ('
        "SELECT w, action, count(*) AS n, sum(value) AS s, avg(value) AS a,"
        f" approx_count_distinct(user_id) AS d FROM ({keyed}) GROUP BY w, action)"
    )


def _duckdb(workload: Workload, path: Path) -> Runner:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {thread_count()}")
    con.execute("SET TimeZone = 'UTC'")
    sql = duckdb_sql(workload, path)

    def run() -> pa.Table:
        return con.sql(sql).to_arrow_table()

    return run


def _polars(workload: Workload, path: Path) -> Runner:
    """Polars lazy query on the streaming engine (its default ``auto`` in 2.x picks it too).

    Sliding windows: one scan, ``concat`` of k shifted projections of the truncated
    time, then one group_by. Faster than ``explode`` of a list column (~9x) and
    ``group_by_dynamic`` (needs a sort; ~5x), see bench/README.md.
    """
    import polars as pl

    def run() -> pa.Table:
        lf = pl.scan_parquet(path)
        bucket = pl.col("event_time").dt.truncate(f"{workload.slide_us}us")
        keyed = pl.concat(
            [
                lf.select(
                    (bucket - pl.duration(microseconds=j * workload.slide_us)).alias("start"),
                    "action",
                    "value",
                    "user_id",
                )
                for j in range(workload.windows_per_row)
            ]
        )
        window = pl.struct(
            "start", (pl.col("start") + pl.duration(microseconds=workload.size_us)).alias("end")
        ).alias("window")
        query = (
            keyed.group_by("start", "action")
            .agg(
                pl.len().alias("n"),
                pl.col("value").sum().alias("sum(value)"),
                pl.col("value").mean().alias("avg(value)"),
                pl.col("user_id").approx_n_unique().alias("approx_count_distinct(user_id)"),
            )
            .select(window, pl.exclude("start"))
        )
        return query.collect(engine="streaming").to_arrow()

    return run


def _streamkit(workload: Workload, path: Path) -> Runner:
    import streamkit as sk

    def run() -> pa.Table:
        window = (
            sk.window("event_time", workload.size)
            if workload.slide is None
            else sk.window("event_time", workload.size, workload.slide)
        )
        query = (
            sk.read.parquet(str(path))
            .group_by(window, "action")
            .agg(
                sk.count().alias("n"),
                sk.sum("value"),
                sk.avg("value"),
                sk.approx_count_distinct("user_id"),
            )
        )
        return query.to_arrow()

    return run
