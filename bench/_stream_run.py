"""W3's measured children: one fresh process runs one reader over a directory of NDJSON files.

Readers (``--engine``):

- ``loop``: the hand-written pyarrow loop. Per file in arrival order: read the bytes,
  ``pyarrow.json.read_json`` of the columns the query reads (``event_time``, ``action``,
  ``value``; other fields ignored, as streamkit's decoder does), set rows behind the watermark
  aside as late, floor ``event_time`` to the hour, ``group_by`` partial count and sum,
  merge into a dict keyed by (window start, action), emit the touched groups (update
  mode, upserted into an output dict), advance the watermark and evict the groups whose
  window ended at or before it.
- ``streamkit``: the same query through the user API, ``sk.read_stream.files(...,
  max_files_per_trigger=1)``, ``with_watermark`` / ``group_by(window, action).agg(...)``,
  update mode, ``available_now`` trigger, memory or ``foreach_batch`` sink.

Each prints one JSON line: wall and CPU seconds of the timed region (start to the last
batch done; imports and query construction untimed), peak RSS (``VmHWM``), per-batch
latency and period in ms, late rows; and writes its final result (``start`` us,
``action``, ``n``, ``sum``, ``avg``) to ``--out`` as Arrow IPC for the parent to verify.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _stream_profile
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from _measure import _peak_rss_bytes
from _stream_gen import SCHEMA
from _verify import REL_TOL, write_ipc

HOUR_US = 3_600_000_000
DELAY_US = 600_000_000  # with_watermark("event_time", "10 minutes")
MAX_FILE_AGE = 0.5
"""Seconds of file mtime the file source remembers: the generator stamps file ``i`` at
``i`` ms (``_stream_gen.write_table``), so 500 files; a soak's offsets stay bounded."""
Key = tuple[int, str]
Report = dict[str, Any]
QUERY_COLUMNS = ("event_time", "action", "value")
LOOP_PARSE = pj.ParseOptions(
    explicit_schema=pa.schema([SCHEMA.field(c) for c in QUERY_COLUMNS]),
    unexpected_field_behavior="ignore",
)
"""The loop parses what streamkit's decoder parses for this query (issue 15 item 6: the
loop used to parse ``user_id`` too, four columns against streamkit's three)."""


def data_files(directory: Path) -> list[Path]:
    """Visible files in arrival order (mtime, then name), as the file source orders them."""
    files = [p for p in directory.iterdir() if p.is_file() and not p.name.startswith((".", "_"))]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def result_table(final: dict[Key, tuple[int, float]]) -> pa.Table:
    """``start``, ``action``, ``n``, ``sum``, ``avg`` sorted by (start, action)."""
    keys = sorted(final)
    n = [final[k][0] for k in keys]
    s = [final[k][1] for k in keys]
    return pa.table(
        {
            "start": pa.array([k[0] for k in keys], pa.int64()),
            "action": pa.array([k[1] for k in keys], pa.string()),
            "n": pa.array(n, pa.int64()),
            "sum": pa.array(s, pa.float64()),
            "avg": pa.array([b / a for a, b in zip(n, s, strict=True)], pa.float64()),
        }
    )


class PyarrowLoop:
    """The hand-written reference loop; state is a dict of (count, sum) per open group.
    Spark's rules: a row is late when its window ends at or before the watermark in force
    in the previous batch; groups leave the state once their window ends at or before the
    watermark in force in this one (the one left by the previous batch)."""

    def __init__(self) -> None:
        self.phases: dict[str, list[float]] = {"read": [], "parse": [], "aggregate": []}
        self.state: dict[Key, tuple[int, float]] = {}
        self.output: dict[Key, tuple[int, float]] = {}
        self.watermark: int | None = None
        """After the batches so far: max event time in whole ms minus the delay."""
        self.in_force: int | None = None
        """In force in the previous batch: the late-row threshold of the next."""
        self.max_event: int | None = None
        self.late_rows = 0

    def batch(self, path: Path) -> None:
        """One micro-batch: the whole file."""
        t0 = time.perf_counter()
        data = path.read_bytes()
        t1 = time.perf_counter()
        table = pj.read_json(pa.BufferReader(data), parse_options=LOOP_PARSE)
        t2 = time.perf_counter()
        late_mark, in_force = self.in_force, self.watermark
        ts = table["event_time"].cast(pa.int64())
        top = pc.max(ts).as_py()
        if top is not None and (self.max_event is None or top > self.max_event):
            self.max_event = top
        window = pc.multiply(pc.divide(ts, HOUR_US), HOUR_US)  # floor: times are > 0
        if late_mark is not None:
            keep = pc.greater(pc.add(window, HOUR_US), late_mark)
            self.late_rows += table.num_rows - int(pc.sum(keep).as_py() or 0)
            table, window = table.filter(keep), window.filter(keep)
        partial = (
            pa.table({"w": window, "action": table["action"], "value": table["value"]})
            .group_by(["w", "action"])
            .aggregate([([], "count_all"), ("value", "sum")])
        )
        self._merge(partial)
        self._advance()
        self.in_force = in_force
        if in_force is not None:
            for key in [k for k in self.state if k[0] + HOUR_US <= in_force]:
                del self.state[key]
        t3 = time.perf_counter()
        for name, seconds in (("read", t1 - t0), ("parse", t2 - t1), ("aggregate", t3 - t2)):
            self.phases[name].append(seconds)

    def _merge(self, partial: pa.Table) -> None:
        columns = (partial[c].to_pylist() for c in ("w", "action", "count_all", "value_sum"))
        for w, action, n, s in zip(*columns, strict=True):
            key = (w, action)
            old = self.state.get(key)
            merged = (n, s) if old is None else (old[0] + n, old[1] + s)
            self.state[key] = merged
            self.output[key] = merged  # update mode: touched groups, upserted

    def _advance(self) -> None:
        if self.max_event is None:
            return
        candidate = self.max_event // 1000 * 1000 - DELAY_US
        if self.watermark is None or candidate > self.watermark:
            self.watermark = candidate


def run_loop(directory: Path) -> tuple[pa.Table, Report]:
    """Timed: listing, then one batch per file. Returns the result and timing details."""
    loop = PyarrowLoop()
    latencies: list[float] = []
    for path in data_files(directory):
        t0 = time.perf_counter()
        loop.batch(path)
        latencies.append(time.perf_counter() - t0)
    report = {
        "batch_s": latencies,
        "period_s": latencies,
        "phases_s": loop.phases,
        "late_rows": loop.late_rows,
        "batches": len(latencies),
    }
    return result_table(loop.output), report


def w3_aggregate(df: Any) -> Any:
    """W3 on a streaming DataFrame: watermark, (1-hour window, action), count/sum/avg."""
    import streamkit as sk

    return (
        df.with_watermark("event_time", "10 minutes")
        .group_by(sk.window("event_time", "1 hour"), "action")
        .agg(sk.count().alias("n"), sk.sum("value").alias("sum"), sk.avg("value").alias("avg"))
    )


RETENTIONS = ("none", "default", "unbounded")
"""Input-table retention of the streamkit reader: ``Retention.rows(0)``, the default, or
``Retention.unbounded()``."""


def w3_query(directory: Path, retention: str) -> Any:
    """W3 over the files (a ``DataStreamWriter`` in update mode, no sink yet)."""
    import streamkit as sk
    from streamkit.streaming.table import Retention

    df = sk.read_stream.files(
        str(directory),
        format="json",
        schema=SCHEMA,
        max_files_per_trigger=1,
        max_file_age=MAX_FILE_AGE,
    )
    writer = w3_aggregate(df).write_stream.output_mode("update")
    if retention == "default":  # bounded by the watermark, the columns the query reads
        return writer
    if retention == "unbounded":  # the default before issue 18: every row, every column
        return writer.retention(Retention.unbounded())
    return writer.retention(Retention.rows(0))


def streamkit_query(
    directory: Path, sink: str, retention: str
) -> Callable[[], tuple[pa.Table, Report]]:
    """Build the query (untimed); the returned callable starts it and waits for the end."""
    import streamkit as sk

    writer = w3_query(directory, retention).trigger(available_now=True)
    updates: list[pa.Table] = []
    if sink == "memory":
        writer = writer.memory("w3")
    else:
        writer = writer.foreach_batch(lambda frame, _bid: updates.append(frame.to_arrow()))

    def run() -> tuple[pa.Table, Report]:
        query = writer.start()
        query.await_termination()
        output = sk.memory_table("w3") if sink == "memory" else _last_per_key(updates)
        return normalise(output), _progress_report(query.recent_progress)

    return run


def soak(directory: Path, seconds: float, retention: str) -> Report:
    """Run W3 continuously (processing-time trigger, a foreach_batch sink that counts rows)
    for ``seconds`` over files a feeder keeps adding; report every batch's progress."""
    counted = [0]

    def count(frame: Any, _bid: int) -> None:
        counted[0] += frame.to_arrow().num_rows

    query = w3_query(directory, retention).trigger(processing_time=0.0).foreach_batch(count).start()
    batches: list[list[float]] = []
    arrow_pool: list[tuple[float, int]] = []  # Arrow's allocator only (not Polars, not Python)
    started = time.perf_counter()
    while time.perf_counter() - started < seconds and query.is_active:
        time.sleep(1.0)
        arrow_pool.append((time.perf_counter() - started, pa.total_allocated_bytes()))
        seen = int(batches[-1][0]) if batches else -1
        for p in query.recent_progress:  # the last 100 batches: enough at one read per second
            if p.batch_id > seen:
                t = time.perf_counter() - started
                batches.append([p.batch_id, t, p.num_input_rows, p.durations.total, p.state_rows])
    query.stop()
    query.await_termination()
    late, dead = query.late_rows, query.dead_letters
    commits = getattr(query.source, "commits", [])
    return {
        "retained": {  # what the engine still holds after the run, by owner
            "late_rows_table_bytes": late.nbytes if late is not None else 0,
            "source_commits_entries": len(commits),
            "source_commits_chars": sum(len(v) for c in commits for v in c.values()),
            "last_offsets_chars": sum(len(v) for v in commits[-1].values()) if commits else 0,
        },
        "batches": batches,
        "arrow_pool_samples": arrow_pool,
        "late_rows_kept": late.num_rows if late is not None else 0,
        "dead_letters": dead.num_rows if dead is not None else 0,
        "output_rows": counted[0],
        "peak_rss_bytes": _peak_rss_bytes(),
    }


def _last_per_key(updates: list[pa.Table]) -> pa.Table:
    final: dict[tuple[Any, str], dict[str, Any]] = {}
    for table in updates:
        for row in table.to_pylist():
            final[(row["window"]["start"], row["action"])] = row
    return pa.Table.from_pylist(list(final.values()))


def problems(result: pa.Table, ref: pa.Table) -> list[str]:
    """Differences of a final result from the reference (empty: correct). ``start``,
    ``action``, ``n`` exactly; ``sum`` and ``avg`` within ``REL_TOL``."""
    if result.num_rows != ref.num_rows:
        return [f"{result.num_rows} groups, expected {ref.num_rows}"]
    found = [
        f"column {name}: {int(pc.sum(pc.invert(pc.equal(result[name], ref[name]))).as_py())} "
        "groups differ"
        for name in ("start", "action", "n")
        if not result[name].equals(ref[name])
    ]
    for name in ("sum", "avg"):
        close = np.isclose(result[name].to_numpy(), ref[name].to_numpy(), rtol=REL_TOL, atol=0)
        if not close.all():
            found.append(f"column {name}: {int((~close).sum())} groups beyond rtol {REL_TOL}")
    return found


def normalise(output: pa.Table) -> pa.Table:
    start = pc.struct_field(output["window"], "start").cast(pa.timestamp("us", tz="UTC"))
    table = pa.table(
        {
            "start": start.cast(pa.int64()),
            "action": output["action"].cast(pa.string()),
            "n": output["n"].cast(pa.int64()),
            "sum": output["sum"].cast(pa.float64()),
            "avg": output["avg"].cast(pa.float64()),
        }
    )
    return table.sort_by([("start", "ascending"), ("action", "ascending")])


def _progress_report(progress: list[Any]) -> Report:
    phases = ("fetch", "decode", "execute", "state", "sink", "commit")
    return {
        "batch_s": [p.durations.total for p in progress],
        "period_s": [
            p.num_input_rows / p.input_rows_per_second
            for p in progress
            if p.input_rows_per_second > 0
        ],
        "phases_s": {k: [getattr(p.durations, k) for p in progress] for k in phases},
        "late_rows": sum(p.late_rows for p in progress),
        "batches": len(progress),
    }


def child(args: argparse.Namespace) -> Report:
    """Measure one reader in this process; write its result to ``args.out``."""
    profile = _stream_profile.install() if args.profile and args.engine == "streamkit" else None
    if args.engine == "loop":

        def runner() -> tuple[pa.Table, Report]:
            return run_loop(args.dir)

    else:
        runner = streamkit_query(args.dir, args.sink, args.retention)
    start, cpu_start = time.perf_counter(), time.process_time()
    result, report = runner()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _peak_rss_bytes()
    write_ipc(result, args.out)
    if profile is not None:
        report["profile_ms_per_batch"] = profile.per_batch_ms(len(report["batch_s"]))
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_bytes": peak, **report}


def main() -> None:
    parser = argparse.ArgumentParser(description="one W3 measurement (child process)")
    parser.add_argument("--engine", choices=("loop", "streamkit"), required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--retention", choices=RETENTIONS, default="none")
    parser.add_argument("--soak", type=float, help="run continuously this many seconds")
    parser.add_argument("--sink", choices=("memory", "foreach"), default="memory")
    parser.add_argument("--profile", action="store_true", help="time engine call sites")
    args = parser.parse_args()
    report = soak(args.dir, args.soak, args.retention) if args.soak else child(args)
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
