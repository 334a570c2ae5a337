"""A server-free fleet: S simulated source shards feed N aggregation stages through
in-memory exchange partitions, with the orderings and re-emissions Kinesis allows.

- each source shard's rows are read in random-size batches (in shard order), reduced by a
  :class:`SourceStage` and put to every partition, parts in order;
- a re-emission (a takeover after a put and before the checkpoint) puts the same batch
  again (same range end) to every partition, possibly after a put that reached only some
  partitions;
- each partition's stage polls random-size batches from an interleaving of the shards'
  queues that keeps each shard's order;
- the oracle is DuckDB over all rows (:func:`oracle`), not the engine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

import streamkit as sk
from streamkit.fleet import AggregationStage, FleetPlan, SourceStage
from streamkit.fleet.chunk import DEFAULT_BUDGET
from streamkit.fleet.exchange_task import ExchangeTask
from streamkit.fleet.join_source import SideStage
from streamkit.fleet.join_stage import JoinStage
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.checkpoint_store import LocalCheckpointStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_US = int(T0.timestamp()) * 1_000_000
MIN_US = 60_000_000
SCHEMA = pl.Schema([("k", pl.String()), ("v", pl.Int64()), ("t", pl.Datetime("us", "UTC"))])


def table(seed: int, n: int, span_min: int = 120, keys: int = 7) -> pl.DataFrame:
    """Rows with keys (some null), values and event times over ``span_min`` minutes."""
    rng = random.Random(seed)
    names = [f"k{i}" for i in range(keys)] + [None]
    rows = {
        "k": [rng.choice(names) for _ in range(n)],
        "v": [rng.randint(-50, 100) for _ in range(n)],
        "t": [T0 + timedelta(seconds=rng.randint(0, span_min * 60)) for _ in range(n)],
    }
    return pl.DataFrame(rows, schema=SCHEMA)


def plan(window: str, mode: str, delay: str = "200 minutes") -> FleetPlan:
    """count/sum/avg/min/max of v by ``window`` and k (watermark on t)."""
    empty = pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.int64()),
                      "t": pa.array([], pa.timestamp("us", "UTC"))})  # fmt: skip
    df = sk.from_arrow(empty).with_watermark("t", delay)
    windows: dict[str, Any] = {
        "tumbling": sk.window("t", "10 minutes"),
        "sliding": sk.window("t", "10 minutes", "5 minutes"),
        "session": sk.session_window("t", "4 minutes"),
    }
    aggs = [sk.count().alias("n"), sk.sum("v").alias("s"), sk.avg("v").alias("a"),
            sk.min("v").alias("lo"), sk.max("v").alias("hi")]  # fmt: skip
    grouped = df.group_by(windows[window], "k") if window != "none" else df.group_by("k")
    return FleetPlan.of(grouped.agg(*aggs).plan, mode)  # type: ignore[arg-type]


def oracle(rows: pl.DataFrame, window: str) -> pl.DataFrame:
    """The aggregation over all rows, by DuckDB: (start_us, end_us, k, n, s, a, lo, hi)."""
    con = duckdb.connect()
    con.register("r", rows.with_columns(pl.col("t").dt.epoch("us").alias("u")).to_arrow())
    m = MIN_US
    stats = "count(*) AS n, sum(v) AS s, avg(v) AS a, min(v) AS lo, max(v) AS hi"
    if window == "none":
        return _frame(con.sql(f"SELECT k, {stats} FROM r GROUP BY k")).sort("k", nulls_last=True)
    if window == "tumbling":
        src = f"SELECT u // {10 * m} * {10 * m} AS ws, k, v FROM r"
        size = 10 * m
    elif window == "sliding":
        src = (f"SELECT b.ws, k, v FROM r, (SELECT unnest([u // {5 * m} * {5 * m}, "
               f"u // {5 * m} * {5 * m} - {5 * m}]) AS ws) b")  # fmt: skip
        size = 10 * m
    else:
        gap = 4 * m
        sql = f"""
        WITH o AS (SELECT k, v, u, CASE WHEN u - lag(u) OVER (PARTITION BY k ORDER BY u)
                   <= {gap} THEN 0 ELSE 1 END AS brk FROM r),
        s AS (SELECT k, v, u, sum(brk) OVER (PARTITION BY k ORDER BY u ROWS UNBOUNDED
              PRECEDING) AS sid FROM o)
        SELECT min(u) AS ws, max(u) + {gap} AS we, k, count(*) AS n, sum(v) AS s,
               avg(v) AS a, min(v) AS lo, max(v) AS hi FROM s GROUP BY k, sid"""
        return _frame(con.sql(sql)).sort("ws", "k", nulls_last=True)
    sql = f"""SELECT ws, ws + {size} AS we, k, count(*) AS n, sum(v) AS s, avg(v) AS a,
              min(v) AS lo, max(v) AS hi FROM ({src}) GROUP BY ws, k"""
    return _frame(con.sql(sql)).sort("ws", "k", nulls_last=True)


def _frame(relation: duckdb.DuckDBPyRelation) -> pl.DataFrame:
    frame = pl.from_arrow(relation.to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def flat(result: pl.DataFrame) -> pl.DataFrame:
    """An engine result in the oracle's shape."""
    if "window" not in result.columns:
        return result
    return result.select(
        pl.col("window").struct.field("start").dt.epoch("us").alias("ws"),
        pl.col("window").struct.field("end").dt.epoch("us").alias("we"),
        "k", "n", "s", "a", "lo", "hi",
    ).sort("ws", "k", nulls_last=True)


@dataclass
class Source:
    """One simulated source shard: its rows, cursor and cumulative max event time."""

    name: str
    rows: pl.DataFrame
    at: int = 0
    seq: int = 0
    max_event: int | None = None
    stream: str = ""
    """The stream of a join of two streams (``left``/``right``; empty: one stream)."""

    @property
    def key(self) -> str:
        """The shard as an aggregation task knows it (``stream/name``)."""
        return f"{self.stream}/{self.name}" if self.stream else self.name


@dataclass
class Fleet:
    """S sources, N partitions (stages), the queues between them and what was emitted."""

    fleet: FleetPlan
    sources: list[Source]
    n: int
    seed: int
    budget: int = 0
    """Bytes per exchange record (0: the size of a chunk of 2 rows, so batches split)."""
    dup_rate: float = 0.3
    expect: bool = True
    """Tell the stages which source shards exist (as the runtime does from the leases)."""
    crash_rate: float = 0.0
    """Chance that a stage's process dies after a batch (before or after its commit)."""
    checkpoints: Path | None = None
    stages: list[ExchangeTask] = field(default_factory=list)
    queues: list[dict[str, list[bytes]]] = field(default_factory=list)
    outputs: list[dict[int, pl.DataFrame]] = field(default_factory=list)
    """Per stage, the sink: batch id -> output (a re-run batch replaces its output)."""
    now: float = 0.0
    restarts: int = 0
    split_batches: int = 0
    """Source batches whose chunk for some partition came in several parts."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        streams = {s.stream for s in self.sources}
        if not self.budget:  # room for longer keys (a join's rows: for their null masks)
            room = 64 if streams == {""} else 256
            self.budget = max(self._probe(stream) for stream in streams) + room
        self.source_stages = {name: self._source_stage(name, self.budget) for name in streams}
        self.stages = [self.new_stage() for _ in range(self.n)]
        self.queues = [{s.key: [] for s in self.sources} for _ in range(self.n)]
        self.outputs = [{} for _ in range(self.n)]
        self.next_id = [0] * self.n
        self.logs = [self._log(p) for p in range(self.n)]

    def _probe(self, stream: str) -> int:
        """Bytes of a chunk of the first 2 rows of ``stream``'s first shard."""
        probe = self._source_stage(stream, DEFAULT_BUDGET)
        rows = next(s.rows for s in self.sources if s.stream == stream)
        ((chunk,),) = probe.chunks(probe.run(rows.head(2)), "p", None, "0", None, False, 1, "q")
        return len(chunk)

    def _source_stage(self, stream: str, budget: int) -> SourceStage | SideStage:
        if stream:
            return SideStage(self.fleet, stream, budget=budget)
        return SourceStage(self.fleet, budget=budget)

    def new_stage(self) -> ExchangeTask:
        kind = JoinStage if self.fleet.joined is not None else AggregationStage
        stage = kind(self.fleet, query="q")
        if self.expect:
            stage.expect_sources(s.key for s in self.sources)
        return stage

    # -- source side -------------------------------------------------------------------
    def read(self, src: Source, size: int, extra: pl.DataFrame | None = None) -> None:
        """Source ``src`` reads its next ``size`` rows (plus ``extra``) as one batch and
        puts it to every partition, maybe twice (a re-emission after a takeover)."""
        rows = src.rows.slice(src.at, size)
        if extra is not None:
            rows = pl.concat([rows, extra])
        src.at += size
        first = str(src.seq) if src.seq else None
        src.seq += 1 + self.rng.randint(0, 5)
        stage = self.source_stages[src.stream]
        out = stage.run(rows)
        if out.max_event is not None:
            src.max_event = max(out.max_event, src.max_event or out.max_event)
        ended = src.at >= src.rows.height and extra is not None
        parts = stage.chunks(out, src.name, first, str(src.seq), src.max_event, ended, self.n, "q")
        self.split_batches += any(len(chunk) > 1 for chunk in parts)
        if self.rng.random() < self.dup_rate:  # a put that reached only some partitions
            for p, chunk in enumerate(parts):
                if self.rng.random() < 0.5:
                    self.queues[p][src.key] += chunk[: self.rng.randint(1, len(chunk))]
        for p, chunk in enumerate(parts):
            self.queues[p][src.key] += chunk

    def done(self) -> bool:
        return all(s.at >= s.rows.height for s in self.sources)

    # -- aggregation side ----------------------------------------------------------------
    def poll(self, p: int, most: int) -> list[bytes]:
        """Up to ``most`` records of partition ``p``, interleaving shards in their order."""
        out: list[bytes] = []
        queues = self.queues[p]
        while len(out) < most:
            ready = [name for name, q in queues.items() if q]
            if not ready:
                break
            name = self.rng.choice(ready)
            out.append(queues[name].pop(0))
        return out

    def _log(self, p: int) -> CheckpointLog | None:
        if self.checkpoints is None:
            return None
        return CheckpointLog(LocalCheckpointStore(self.checkpoints / f"exchange-{p}"))

    def step(self, p: int, most: int) -> None:
        self.now += self.rng.random()
        self._batch(p, self.poll(p, most))
        while self.stages[p].owes_batch:
            self._batch(p, [])

    def _batch(self, p: int, records: list[bytes]) -> None:
        """One batch of stage ``p``: apply, sink, checkpoint (the commit); maybe a crash
        before the checkpoint (the batch then runs again, same id and records, on the
        restored stage) or after it."""
        bid = self.next_id[p]
        self.outputs[p][bid] = self.stages[p].apply(records, self.now).output
        if self.rng.random() < self.crash_rate:  # dies before its commit
            self._restart(p, bid - 1)
            self.outputs[p][bid] = self.stages[p].apply(records, self.now).output
        self.stages[p].checkpoint_state(self.logs[p], bid)
        self.next_id[p] = bid + 1
        if self.rng.random() < self.crash_rate:  # dies right after its commit
            self._restart(p, bid)

    def _restart(self, p: int, committed: int) -> None:
        """Stage ``p``'s process is replaced; the new one restores batch ``committed``."""
        self.restarts += 1
        self.logs[p] = self._log(p)
        self.stages[p] = self.new_stage()
        log = self.logs[p]
        if committed >= 0 and log is not None:
            self.stages[p].restore(log, committed)

    def drain(self) -> None:
        for p in range(self.n):
            while any(self.queues[p].values()):
                self.step(p, self.rng.randint(1, 6))
            self.step(p, 1)

    def run(self, flush: pl.DataFrame | dict[str, pl.DataFrame] | None = None) -> None:
        """Read every source to its end in random batches while the stages poll; then
        each reads ``flush`` (per stream: a dict) as its last batch."""
        while not self.done():
            src = self.rng.choice([s for s in self.sources if s.at < s.rows.height])
            self.read(src, self.rng.randint(1, 40))
            if self.rng.random() < 0.5:
                p = self.rng.randrange(self.n)
                self.step(p, self.rng.randint(1, 8))
        if flush is not None:
            for src in self.sources:
                self.read(src, 0, flush[src.stream] if isinstance(flush, dict) else flush)
        self.drain()


def shards(
    rows: pl.DataFrame, s: int, seed: int, stream: str = "", time: str = "t"
) -> list[Source]:
    """``rows`` dealt at random to ``s`` shards (of ``stream``: their ids repeat across
    the streams of a join), each shard in event-time order (on ``time``)."""
    rng = random.Random(seed)
    ids = pl.Series([rng.randrange(s) for _ in range(rows.height)])
    tagged = rows.with_columns(ids.alias("__s"))
    return [
        Source(
            f"shard-{i:03d}",
            tagged.filter(pl.col("__s") == i).drop("__s").sort(time),
            stream=stream,
        )
        for i in range(s)
    ]
