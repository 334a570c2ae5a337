"""``df.write_stream``: output mode, trigger, checkpoint and sink of a streaming query.

Its reading half, ``sk.read_stream``, is :mod:`~streamkit.streaming.reader`: a streaming
DataFrame is an ordinary DataFrame whose scan is a stream, and the same plan object runs as
a batch job (over a table) or, through ``write_stream``, incrementally.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from streamkit.durations import parse_duration_ns
from streamkit.errors import PlanError
from streamkit.execute import scan_columns
from streamkit.frame import DataFrame
from streamkit.plan import Aggregate, Plan
from streamkit.streaming.contracts import ProjectingSource
from streamkit.streaming.decode import keep_fields
from streamkit.streaming.incremental import OutputMode
from streamkit.streaming.output_modes import OUTPUT_MODES
from streamkit.streaming.registry import registry
from streamkit.streaming.stream_scan import stream_source_of
from streamkit.streaming.trigger import Trigger, make_trigger
from streamkit.streaming.watermarks import PartitionWatermarks, WatermarkPolicy

if TYPE_CHECKING:
    import pyarrow as pa

    from streamkit.config import AwsEndpoint
    from streamkit.fleet.member import FleetOptions
    from streamkit.streaming.async_query import AsyncStreamingQuery
    from streamkit.streaming.contracts import Sink, StreamSource
    from streamkit.streaming.micro_batches import MicroBatches
    from streamkit.streaming.query import StreamingQuery
    from streamkit.streaming.runner import QueryParts
    from streamkit.streaming.table import Retention


@dataclass(frozen=True)
class FleetParts:
    """A writer's query as a fleet member runs it."""

    plan: Plan
    mode: OutputMode
    source: StreamSource
    checkpoint: str | None
    sink_factory: Callable[[], Sink]
    options: FleetOptions
    name: str
    interval: float


class DataStreamWriter:
    """``df.write_stream``: output mode, trigger, checkpoint, sink; ``start()`` runs it."""

    def __init__(self, df: DataFrame) -> None:
        self._df = df
        self._stream = stream_source_of(df.plan)
        if self._stream is None:
            raise PlanError("write_stream needs a streaming DataFrame (sk.read_stream...)")
        self._mode: OutputMode = "append"
        self._trigger = Trigger.processing_time(0.0)
        self._checkpoint: str | None = None
        self._snapshot_every = 10
        self._name: str | None = None
        self._sink_factory: Callable[[], Sink] | None = None
        self._retention: Retention | None = None
        self._same_batch = False
        self._watermark_policy: tuple[WatermarkPolicy, float] = ("min", 60.0)
        self._processing_clock: Callable[[], float] | None = None
        self._multiple_policy = "min"
        self._fleet: FleetOptions | None = None

    def output_mode(self, mode: OutputMode) -> DataStreamWriter:
        """``append`` (default), ``update`` or ``complete``."""
        if mode not in OUTPUT_MODES:
            raise PlanError(f"output mode must be one of {OUTPUT_MODES}, got {mode!r}")
        self._mode = mode
        return self

    def emit_on_same_batch(self, enabled: bool = True) -> DataStreamWriter:
        """Not Spark's rule, off by default: evict and emit (append mode) the windows that
        batch N's own rows closed inside batch N, with no extra no-data batch. Spark (the
        default) evicts in batch N with the watermark of the rows before it and then runs
        a batch without input to emit what the new watermark closed."""
        self._same_batch = enabled
        return self

    def watermark_policy(
        self, policy: WatermarkPolicy = "min", idle_timeout: str | timedelta | float = 60.0
    ) -> DataStreamWriter:
        """How the watermark follows a partitioned source (Kinesis shards, Kafka
        partitions): ``"min"`` (default) the slowest partition that delivered a row within
        ``idle_timeout``, so a fast shard cannot make a slow shard's rows late; ``"global"``
        Spark's rule, the largest event time over all partitions. Single-partition
        sources (files, memory) behave the same under both."""
        if isinstance(idle_timeout, int | float):
            seconds = float(idle_timeout)
        else:
            seconds = parse_duration_ns(idle_timeout) / 1e9
        PartitionWatermarks(policy, float(seconds))  # validates both, fails fast
        self._watermark_policy = (policy, float(seconds))
        return self

    def processing_clock(self, clock: Callable[[], float]) -> DataStreamWriter:
        """The clock of processing time (seconds since the epoch, like ``time.time``,
        the default), read once per batch: ``apply_in_pandas_with_state``'s processing
        time and processing-time timeouts. Tests inject a manual clock here."""
        self._processing_clock = clock
        return self

    def multiple_watermark_policy(self, policy: str) -> DataStreamWriter:
        """Spark's ``spark.sql.streaming.multipleWatermarkPolicy`` for a query with a
        watermark on several inputs (a stream-stream join): ``"min"`` (default) follows
        the slowest input, ``"max"`` the fastest (the slower input's rows may then be
        dropped as late)."""
        if policy not in ("min", "max"):
            raise PlanError(f"multiple_watermark_policy must be 'min' or 'max', got {policy!r}")
        self._multiple_policy = policy
        return self

    def fleet(
        self, exchange_shards: int = 4, idle_timeout: str | timedelta | float = "60 seconds"
    ) -> DataStreamWriter:
        """Options of the query when it runs on a fleet of workers (``streamkit worker``,
        ``STREAMKIT_FLEET=1``; see README "Running on many machines"); ignored in one
        process. ``exchange_shards``: shards of the exchange stream ``<app_name>-exchange``
        (= aggregation tasks), fixed for the query's life. ``idle_timeout``: a source shard
        that sent nothing for this long stops holding the fleet watermark back (keep it above
        the lease takeover time, ``failover_time`` + a take interval: 30 s by default)."""
        from streamkit.fleet.member import FleetOptions, seconds

        self._fleet = FleetOptions(exchange_shards, seconds(idle_timeout, "idle_timeout"))
        return self

    def fleet_parts(self) -> FleetParts:
        """What a fleet member needs of this writer (:mod:`streamkit.fleet.member`)."""
        from streamkit.fleet.member import FleetOptions

        assert self._stream is not None
        if self._trigger.stops_by_itself:
            raise PlanError(
                "a fleet runs until its workers are stopped: use a processing-time trigger "
                "(the default), not once or available_now"
            )
        return FleetParts(
            plan=self._df.plan,
            mode=self._mode,
            source=self._stream,
            checkpoint=self._checkpoint,
            sink_factory=self._need_sink,
            options=self._fleet or FleetOptions(),
            name=self._name or "fleet",
            interval=self._trigger.interval,
        )

    def trigger(
        self,
        processing_time: str | timedelta | float | None = None,
        *,
        once: bool = False,
        available_now: bool = False,
    ) -> DataStreamWriter:
        """Exactly one of ``processing_time="1 second"``, ``once=True``, ``available_now=True``."""
        self._trigger = make_trigger(processing_time, once=once, available_now=available_now)
        return self

    def checkpoint(self, location: str, snapshot_every: int = 10) -> DataStreamWriter:
        """Checkpoint directory or ``s3://`` prefix; a restart resumes from it. State is
        written as a full snapshot every ``snapshot_every`` batches and as deltas (what the
        batch changed) between them."""
        if not isinstance(snapshot_every, int) or snapshot_every < 1:
            raise ValueError(f"snapshot_every must be an integer >= 1, got {snapshot_every!r}")
        self._checkpoint, self._snapshot_every = location, snapshot_every
        return self

    def query_name(self, name: str) -> DataStreamWriter:
        """Name of the query (and of its memory table)."""
        self._name = name
        return self

    def retention(self, policy: Retention) -> DataStreamWriter:
        """Retention of the input table ``q.table``. Default: the rows at or after the
        watermark, or without a watermark the newest ``DEFAULT_MAX_ROWS``, holding only
        the columns the query reads (projection pushdown). An explicit policy keeps every
        column; ``Retention.unbounded()`` warns. See :mod:`streamkit.streaming.table`."""
        self._retention = policy
        return self

    def _keys(self) -> list[str]:
        """The aggregation's group columns, when the result still has them all."""
        plan = self._df.plan
        aggs = [node for node in plan.chain() if isinstance(node, Aggregate)]
        keys = list(aggs[0].order) if aggs else []
        return keys if all(k in plan.schema for k in keys) else []

    def memory(self, name: str | None = None) -> DataStreamWriter:
        """Keep the result in memory, queryable with ``sk.memory_table(name)``."""
        from streamkit.streaming.sinks import MemorySink

        table = name or self._name or "memory"
        self._name = self._name or table
        self._sink_factory = lambda: MemorySink(table, mode=self._mode, keys=self._keys())
        return self

    def console(self, max_rows: int = 20) -> DataStreamWriter:
        """Print each batch as a readable table."""
        from streamkit.streaming.sinks import ConsoleSink

        self._sink_factory = lambda: ConsoleSink(max_rows=max_rows)
        return self

    def parquet(self, path: str, partition_by: str | None = None) -> DataStreamWriter:
        """Parquet files per batch (local or ``s3://``), idempotent per batch id."""
        from streamkit.streaming.sinks import ParquetSink

        if self._checkpoint is None:
            raise PlanError(
                "a Parquet sink needs a checkpoint location (set .checkpoint(path) first) so "
                "that a restart continues its batch ids instead of rewriting batch 0"
            )
        self._sink_factory = lambda: ParquetSink(path, partition_by=partition_by)
        return self

    def json(self, path: str, partition_by: str | None = None) -> DataStreamWriter:
        """NDJSON files per batch (local or ``s3://``), idempotent per batch id."""
        from streamkit.streaming.sinks import JsonSink

        if self._checkpoint is None:
            raise PlanError(
                "a JSON sink needs a checkpoint location (set .checkpoint(path) first) so "
                "that a restart continues its batch ids instead of rewriting batch 0"
            )
        self._sink_factory = lambda: JsonSink(path, partition_by=partition_by)
        return self

    def kafka(
        self,
        bootstrap: str,
        topic: str,
        key_column: str | None = None,
        value_format: str = "json",
        *,
        transactional_id: str | None = None,
        **options: Any,
    ) -> DataStreamWriter:
        """Rows to a Kafka topic (``streamkit-kafka``): at-least-once, or with
        ``transactional_id`` one Kafka transaction per batch, exactly-once for
        ``read_committed`` readers (keep the id across restarts: it fences the previous
        run and finds the last batch it committed). ``options`` go to the sink."""
        factory = registry.sink("kafka")
        sink = factory(bootstrap, topic, key_column, value_format,
                       transactional_id=transactional_id, **options)  # fmt: skip
        return self.to(sink)

    def kinesis(
        self, stream: str, partition_key_column: str, endpoint: AwsEndpoint | None = None
    ) -> DataStreamWriter:
        """Rows to a Kinesis stream (``KinesisSink`` of ``streamkit-kinesis``)."""
        return self.to(registry.sink("kinesis")(stream, endpoint, partition_key_column))

    def connector(self, name: str, *args: Any, **options: Any) -> DataStreamWriter:
        """Rows to the sink ``name`` of an installed connector (see
        :mod:`streamkit.streaming.registry`); ``args`` and ``options`` go to its factory."""
        return self.to(registry.sink(name)(*args, **options))

    def foreach_batch(
        self, fn: Callable[[DataFrame, int], Awaitable[None] | None]
    ) -> DataStreamWriter:
        """Call ``fn(df, batch_id)`` per batch (sync or async)."""
        from streamkit.streaming.sinks import ForeachBatchSink

        self._sink_factory = lambda: ForeachBatchSink(fn)
        return self

    def to(self, sink: Sink) -> DataStreamWriter:
        """Any object implementing the Sink contract."""
        self._sink_factory = lambda: sink
        return self

    def _input_schema(self, retention: Retention) -> pa.Schema:
        """The schema of the rows the source will hand over: when the input table keeps no
        rows or has the default retention, and the query reads only some columns, a source
        that can is told to decode only those (projection pushdown); otherwise the
        source's whole schema."""
        assert self._stream is not None
        schema = self._stream.schema
        if not isinstance(self._stream, ProjectingSource):
            return schema
        columns = scan_columns(self._df.plan)
        explicit = self._retention is not None  # the default holds only what is read
        keeps_rows = explicit and (retention.kind != "rows" or retention.max_rows != 0)
        if keeps_rows or columns is None or len(columns) == len(schema):
            self._stream.read_only(None)
            return schema
        if not self._stream.read_only(columns):
            return schema
        return keep_fields(schema, columns)

    def start(
        self, *, force: bool = False, metrics_port: int | None = None, ui_port: int | None = None
    ) -> StreamingQuery:
        """Start the query in the background and return its handle.

        ``metrics_port`` (or ``$STREAMKIT_METRICS_PORT``) serves the process's Prometheus
        metrics on that port (:mod:`streamkit.metrics`; needs ``streamkit[metrics]``);
        ``ui_port`` (or ``$STREAMKIT_UI_PORT``) the live web UI (:mod:`streamkit.ui`; needs
        ``streamkit[ui]``).

        One live copy per checkpoint folder: a second start while another process runs
        this query raises :class:`~streamkit.streaming.owner.QueryAlreadyRunningError`
        (nothing read). ``force=True`` takes the folder over from a copy you know is dead
        without waiting for its lease to expire (see :meth:`StreamingQuery.start`).

        With ``STREAMKIT_FLEET=1`` in the environment (``streamkit worker``) this process
        joins the query's fleet instead (:func:`streamkit.fleet.member.start_member`): the
        handle is a :class:`~streamkit.fleet.member.FleetMember` (``stop``,
        ``await_termination``, ``is_active``, ``exception``); a query the fleet cannot run
        is refused here with what to do. A member serves the UI's fleet page when asked
        (``ui_port``) and the Kinesis consumers' metrics (``metrics_port``: leases, per-shard
        lag, the backlog to scale on; no per-batch query series)."""
        from streamkit.fleet.member import fleet_enabled
        from streamkit.metrics import serve_if_asked
        from streamkit.streaming.query import StreamingQuery
        from streamkit.ui import serve_if_asked as serve_ui_if_asked

        if fleet_enabled():
            from streamkit.fleet.member import start_member

            serve_if_asked(metrics_port)  # its consumers' leases, lag and backlog
            serve_ui_if_asked(ui_port)  # before the member, which advertises it
            return cast("StreamingQuery", start_member(self))

        query = StreamingQuery(**self._query_parts(self._need_sink()))
        serve_if_asked(metrics_port)
        serve_ui_if_asked(ui_port)
        return query.start(force=force)

    def start_async(self, *, force: bool = False) -> AsyncStreamingQuery:
        """The query as a task on the caller's event loop: ``q = await
        writer.start_async()`` or ``async with writer.start_async() as q:`` (leaving the
        block stops it). Awaiting starts it, as :meth:`start` does (same owner leases,
        same guarantees); see :class:`~streamkit.streaming.async_query.AsyncStreamingQuery`
        for its awaitable methods, errors and cancellation."""
        from streamkit.streaming.async_query import AsyncStreamingQuery
        from streamkit.streaming.runner import QueryRunner

        runner = QueryRunner(**self._query_parts(self._need_sink()))
        return AsyncStreamingQuery(runner, force=force)

    def micro_batches(self, *, force: bool = False) -> MicroBatches:
        """Each micro-batch's output as ``MicroBatch(batch_id, table)`` (an Arrow table),
        for ``async for batch in writer.micro_batches():`` on the caller's loop; no sink
        is needed. Batch N is committed when the loop asks for batch N+1: exactly-once for
        a handler idempotent by ``batch_id``, at-least-once otherwise (see
        :class:`~streamkit.streaming.micro_batches.MicroBatches`)."""
        from streamkit.streaming.async_query import AsyncStreamingQuery
        from streamkit.streaming.micro_batches import HandOffSink, MicroBatches
        from streamkit.streaming.runner import QueryRunner

        sink = HandOffSink()
        query = AsyncStreamingQuery(QueryRunner(**self._query_parts(sink)), force=force)
        return MicroBatches(query, sink)

    def _need_sink(self) -> Sink:
        if self._sink_factory is None:
            raise PlanError(
                "choose a sink first: .memory(name), .console(), .parquet(path), "
                ".foreach_batch(fn) or .to(sink)"
            )
        return self._sink_factory()

    def _query_parts(self, sink: Sink) -> QueryParts:
        """The keyword arguments of a query handle (or its runner) over ``sink``."""
        from streamkit.streaming.checkpoint_store import open_checkpoint_store
        from streamkit.streaming.sources.joined import JoinedSources, per_query
        from streamkit.streaming.table import Retention, UnboundedTable, resolve_retention

        assert self._stream is not None
        store = open_checkpoint_store(self._checkpoint) if self._checkpoint else None
        retention = resolve_retention(self._retention, self._df.plan)
        if isinstance(self._stream, JoinedSources):  # its rows are both sides' structs
            retention = Retention.rows(0)
        table = UnboundedTable(self._input_schema(retention), retention)
        return {
            "plan": self._df.plan,
            "source": per_query(self._stream),
            "sink": sink,
            "mode": self._mode,
            "trigger": self._trigger,
            "store": store,
            "table": table,
            "name": self._name,
            "emit_on_same_batch": self._same_batch,
            "snapshot_every": self._snapshot_every,
            "watermarks": PartitionWatermarks(*self._watermark_policy),
            "processing_clock": self._processing_clock,
            "multiple_watermark_policy": self._multiple_policy,
        }
