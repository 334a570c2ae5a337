"""Stream-stream joins with Spark Structured Streaming's semantics (append mode).

Both sides' rows are buffered in state (:mod:`streamkit.streaming.state.join_store`).
Batch n, with W_{n-1} the watermark in force in the previous batch and W_n the one in
force now (both global: the minimum over the two sides' watermarks, each the largest
event time that side has seen in whole ms minus its delay; a side that has seen no event
time yet counts as 0, as in Spark's ``WatermarkTracker``, so under the default min policy
there is no watermark until both sides have seen one):

1. each side's input rows whose event time is <= W_{n-1} are late: dropped (kept in the
   late-rows table);
2. the new left rows join the right buffer and are all buffered (even those already at
   or behind the left state watermark: step 3 evicts them, after they met this batch's
   right rows, as in Spark's ``OneSideHashJoiner``); then the new right rows join the
   left buffer (which now holds this batch's left rows), and are buffered unless they are
   already at or behind the right state watermark. Each pair is therefore emitted once. A
   buffered row remembers whether it has matched;
3. each side's buffer drops the rows at or behind its state watermark, derived as in
   Spark's ``StreamingJoinHelper`` from the time bounds of the condition and W_n: a
   bound ``left.t >= right.t + c`` lets the left buffer drop ``left.t <= W_n + c - 1 ms``
   (``>``: ``<= W_n + c``); ``left.t <= right.t + c`` lets the right buffer drop
   ``right.t <= W_n - c - 1 ms`` (``<``: ``<= W_n - c``); several bounds take the
   smallest. An outer join emits the dropped rows of its preserved side that never
   matched, with nulls for the other side; so too, in this batch, the new right rows
   that were not buffered (already behind its state watermark) and matched nothing.

An operator above the join (an aggregation: :mod:`streamkit.streaming.chain`) is given
the join's output watermark, Spark's (3.4+) watermark propagation: the least of the two
state watermarks and W_n (:meth:`StreamJoinQuery.output_watermark`); it judges late rows
by the one derived from W_{n-1} and evicts with the one derived from W_n.

Each side's event time is the one column of its output that carries its watermark (a
plain rename of ``with_watermark``'s column carries it, a computed column does not): late
rows (step 1) and the buffer's eviction (step 3) are judged on it; W itself is taken at
``with_watermark``. Which column that is, the state watermarks and the outer joins allowed:
:mod:`~streamkit.streaming.join_sides`. Only append mode is supported (Spark's rule).
After a batch, when W moved past W_n and some buffer has a state watermark, a no-data
batch is owed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import polars as pl

from streamkit.errors import PlanError
from streamkit.execute import compile_plan, given
from streamkit.join_kernel import LID, RID, assemble, pairs, right_unmatched
from streamkit.join_plan import Join
from streamkit.plan import Filter, Plan, Project, Watermark
from streamkit.stream_static import is_streaming
from streamkit.streaming.batch_result import BatchResult
from streamkit.streaming.checkpoint import CheckpointLog
from streamkit.streaming.downstream import above
from streamkit.streaming.incremental import OutputMode
from streamkit.streaming.join_sides import (
    SIDES,
    JoinSide,
    check_outer,
    null_checked,
    side_output,
    state_watermark,
)
from streamkit.streaming.state.join_store import ID, MATCHED, JoinStore
from streamkit.streaming.stateful_exec import BatchClock


def find_join(plan: Plan) -> Join | None:
    """The join under the stateless operations at the top of ``plan`` (None: none)."""
    node = plan
    while isinstance(node, Filter | Project):
        node = node.input
    return node if isinstance(node, Join) else None


def join_engine(
    plan: Plan, mode: OutputMode, *, emit_on_same_batch: bool, policy: str
) -> StreamJoinQuery | None:
    """The engine for ``plan`` when its stateful operator is a join of two streams (None:
    it joins none, or an aggregation runs above the join: a chain,
    :func:`streamkit.streaming.chain.make_engine`); refuses ``emit_on_same_batch``."""
    if not _has_join(plan):
        return None
    top = find_join(plan)
    if top is None or not (is_streaming(top.left) and is_streaming(top.right)):
        return None
    if emit_on_same_batch:
        raise PlanError("emit_on_same_batch is not supported for stream-stream joins")
    return StreamJoinQuery(plan, mode, policy=policy)


def is_stream_join(node: Plan) -> bool:
    """Whether ``node`` itself joins two streams."""
    return isinstance(node, Join) and is_streaming(node.left) and is_streaming(node.right)


def _has_join(plan: Plan) -> bool:
    """Whether ``plan`` holds a join of two streams (a stream-static join is not one)."""
    if is_stream_join(plan):
        return True
    return any(_has_join(c) for c in plan.children)


def _at_or_before(column: str, ms: int) -> pl.Expr:
    """``column`` (a timestamp) at or before ``ms`` (compared in microseconds, as Spark)."""
    return pl.col(column).dt.epoch("us") <= ms * 1000


class StreamJoinQuery:
    """Runs a plan whose stateful operator is a stream-stream :class:`Join`, one
    micro-batch at a time; the same interface as
    :class:`~streamkit.streaming.incremental.IncrementalQuery`. Input rows come from
    :class:`~streamkit.streaming.sources.joined.JoinedSources` (a ``left`` and a
    ``right`` struct column)."""

    def __init__(self, plan: Plan, mode: OutputMode, *, policy: str = "min") -> None:
        join = find_join(plan)
        if join is None:
            raise PlanError("not a stream-stream join")
        if mode != "append":
            raise PlanError(
                f"output mode {mode!r} is not supported for a join of two streams (Spark "
                "supports them only in append mode: a joined row, once emitted, is final); "
                "use output_mode('append')"
            )
        self.plan, self.mode, self.join = plan, mode, join
        self._above = above(plan, join) if join is not plan else None
        self._sides = (JoinSide.of(join.left, "left"), JoinSide.of(join.right, "right"))
        self._marks = tuple(s.time for s in self._sides)
        """Per side, the column of its output that carries the watermark (or None)."""
        check_outer(join, self._marks)
        self._not_null = (null_checked(join, 0), null_checked(join, 1))
        self._policy = policy
        self._store = JoinStore(join.left.schema, join.right.schema)
        self.watermark: int | None = None
        """The global watermark (ms) after the batches run so far."""
        self._side_max: dict[str, int] = {}
        """Largest event time (ms) per side that has seen one."""
        self._in_force: int | None = None
        self._restored = False
        self.clock = BatchClock(None)
        """The batch's processing time (the runner stamps it; a join does not read it)."""

    # -- per batch ---------------------------------------------------------------------
    def run(self, rows: pl.DataFrame, partitions: object = None) -> BatchResult:
        """One micro-batch of joined-source rows (see the module docstring)."""
        late_mark, in_force = self._in_force, self.watermark
        fresh, late = [], []
        for i, side in enumerate(self._sides):
            raw = rows.filter(pl.col(SIDES[i]).is_not_null()).select(
                pl.col(SIDES[i]).struct.unnest()
            ) if rows.width else pl.DataFrame(schema=self._raw_schema(i))  # fmt: skip
            kept, dropped = self._side_input(i, side, raw, late_mark)
            fresh.append(kept)
            late.append(dropped)
        self._update_watermark()
        self._in_force, self._restored = in_force, False
        output = self.join_rows(fresh[0], fresh[1], in_force)
        return BatchResult(output, self.late_frame(late), self.watermark)

    def join_rows(
        self, left: pl.DataFrame, right: pl.DataFrame, in_force: int | None
    ) -> pl.DataFrame:
        """Steps 2 and 3 for the sides' new rows that are not late (their output columns),
        with ``in_force`` (ms) the watermark in force in this batch, then the plan above
        the join: the batch's output."""
        output = self._join(left, right, in_force)
        if self._above is not None:
            output = compile_plan(self._above, None, set(), given(output)).collect()
        return output

    def run_no_data(self) -> BatchResult:
        """A batch without input rows: evicts (and emits outer rows) under the watermark
        now in force."""
        return self.run(pl.DataFrame())

    def _raw_schema(self, i: int) -> pl.Schema:
        return self._sides[i].plan.chain()[-1].schema

    def _side_input(
        self, i: int, side: JoinSide, raw: pl.DataFrame, late_mark: int | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        out, top = side_output(side, self._not_null[i], raw)
        if top is not None:
            name = SIDES[i]
            self._side_max[name] = max(self._side_max.get(name, top), top)
        return self.split_late(i, out, late_mark)

    def split_late(
        self, i: int, rows: pl.DataFrame, late_mark: int | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(kept, late) of side ``i``'s rows ``rows`` (the side's output): late are those
        whose event time is at or before ``late_mark`` (ms; step 1)."""
        column = self._sides[i].time
        if column is None or late_mark is None or not rows.height:
            return rows, rows.head(0)
        flags = rows.select(_at_or_before(column, late_mark).fill_null(False)).to_series()
        return rows.filter(~flags), rows.filter(flags)

    def late_frame(self, late: list[pl.DataFrame]) -> pl.DataFrame:
        """Each side's late rows (its output columns) as the late-rows table: a struct
        column per side, null on the other side's rows."""
        parts = []
        for i, frame in enumerate(late):
            other = pl.Struct(dict(self._sides[1 - i].plan.schema))
            cols = [
                pl.struct(frame.columns).alias(SIDES[i]),
                pl.lit(None, dtype=other).alias(SIDES[1 - i]),
            ]
            parts.append(frame.select(cols).select(SIDES))
        return pl.concat(parts)

    def _update_watermark(self) -> None:
        delays = {
            SIDES[i]: s.mark.delay_ns // 1_000_000 for i, s in enumerate(self._sides) if s.mark
        }
        # a side that has seen no event time yet counts as 0 (Spark's WatermarkTracker
        # populates 0 for it), so under the min policy W waits for both sides
        candidates = [
            self._side_max[n] - d if n in self._side_max else 0 for n, d in delays.items()
        ]
        if not self._side_max:
            return
        chosen = min(candidates) if self._policy == "min" else max(candidates)
        if (self.watermark is None and chosen > 0) or (
            self.watermark is not None and chosen > self.watermark
        ):
            self.watermark = chosen

    def _join(self, left: pl.DataFrame, right: pl.DataFrame, in_force: int | None) -> pl.DataFrame:
        join, store = self.join, self._store
        wms = [
            None if in_force is None else state_watermark(join, i, in_force, self._marks)
            for i in (0, 1)
        ]
        no_flags = pl.Series(MATCHED, [False] * left.height, dtype=pl.Boolean)
        lnew = store.with_ids(0, left, no_flags).rename({ID: LID, MATCHED: "__lm"})
        rbuf = store.buffer(1).rename({ID: RID, MATCHED: "__rm"})
        first = pairs(lnew, rbuf, join, nulls_equal=True)
        store.mark_matched(1, first[RID])
        lnew = lnew.with_columns(pl.col(LID).is_in(first[LID].implode()).alias("__lm"))
        # every new left row is buffered, even one the eviction below removes: it has yet
        # to meet this batch's right rows (Spark's OneSideHashJoiner, left side)
        store.add(0, lnew.rename({LID: ID, "__lm": MATCHED}))
        no_flags = pl.Series(MATCHED, [False] * right.height, dtype=pl.Boolean)
        rnew = store.with_ids(1, right, no_flags).rename({ID: RID, MATCHED: "__rm"})
        lbuf = store.buffer(0).rename({ID: LID, MATCHED: "__lm"})
        second = pairs(lbuf, rnew, join, nulls_equal=True)
        store.mark_matched(0, second[LID])
        rnew = rnew.with_columns(pl.col(RID).is_in(second[RID].implode()).alias("__rm"))
        rkept, rdropped = self._storable(1, rnew, wms[1])
        store.add(1, rkept.rename({RID: ID, "__rm": MATCHED}))
        matched = pl.concat([first, second], how="vertical_relaxed")
        # a new right row of a preserved side that is not buffered and did not match: now
        extra = self._lonely(1, rdropped.rename({RID: ID, "__rm": MATCHED}))
        for i in (0, 1):
            wm, column = wms[i], self._marks[i]
            if wm is not None and column is not None:
                extra += self._lonely(i, store.evict(i, _at_or_before(column, wm)))
        renamed = [c for c in matched.columns if c.startswith("__sk_right_")]
        rest = [c for c in join.right.schema.names() if c not in join.using]
        keep = [*join.left.schema.names(), *renamed, *rest]
        return assemble(join, matched.select(keep), *extra)

    def _storable(
        self, i: int, rows: pl.DataFrame, wm: int | None
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(the new rows that go into the buffer, the others: those already at or behind
        its state watermark, which no future row can match)."""
        column = self._marks[i]
        if wm is None or column is None or not rows.height:
            return rows, rows.head(0)
        old = rows.select(_at_or_before(column, wm).fill_null(False)).to_series()
        return rows.filter(~old), rows.filter(old)

    def _lonely(self, i: int, rows: pl.DataFrame) -> list[pl.DataFrame]:
        """Rows of side ``i`` done with (evicted, or never buffered) that never matched,
        as null-extended output when side ``i`` is preserved by the outer join."""
        if self.join.how not in (("left", "full") if i == 0 else ("right", "full")):
            return []
        lonely = rows.filter(~pl.col(MATCHED)).drop(ID, MATCHED)
        return [lonely if i == 0 else right_unmatched(self.join, lonely)]

    # -- scheduling, checkpoint --------------------------------------------------------
    @property
    def owes_batch(self) -> bool:
        """W moved past the watermark in force in the last batch and a buffer has a state
        watermark (Spark's ``shouldRunAnotherBatch`` for this operator)."""
        return self.evicts and self.watermark_moved

    @property
    def evicts(self) -> bool:
        """Some buffer has a state watermark (rows leave it as the watermark moves)."""
        return any(state_watermark(self.join, i, 0, self._marks) is not None for i in (0, 1))

    @property
    def watermark_moved(self) -> bool:
        """W moved past the watermark in force in the last batch (not just restored)."""
        if self.watermark is None or self._restored:
            return False
        return self._in_force is None or self.watermark > self._in_force

    def output_watermark(self, watermark: int | None) -> int | None:
        """The watermark (ms) the join passes on to the operator above it when ``watermark``
        is in force, Spark's ``produceOutputWatermark`` and ``PropagateWatermarkSimulator``:
        the least of the two buffers' state watermarks and ``watermark`` itself (no
        joined row is older than a row a buffer still holds), never below 0. None: no
        watermark yet (Spark: 0, under which nothing is late and nothing evicted)."""
        if watermark is None:
            return None
        found = [state_watermark(self.join, i, watermark, self._marks) for i in (0, 1)]
        return max(0, min([m for m in found if m is not None] + [watermark]))

    @property
    def marks(self) -> tuple[Watermark, ...]:
        """The sides' watermarks on the columns of their output that carry them (those
        that have one)."""
        return tuple(
            Watermark(s.plan, s.time, s.mark.delay_ns)
            for s in self._sides
            if s.mark is not None and s.time is not None
        )

    @property
    def sides(self) -> tuple[JoinSide, JoinSide]:
        """The left and right inputs, with their watermarks."""
        return self._sides

    @property
    def event_columns(self) -> tuple[str, ...]:
        """The sides' watermarked columns: the event times the join passes on."""
        return tuple(m for m in self._marks if m is not None)

    @property
    def store(self) -> JoinStore:
        """Both sides' buffers (checkpointed with the operators above in a chain)."""
        return self._store

    def checkpoint_state(self, log: CheckpointLog | None, batch_id: int) -> None:
        """The buffers after ``batch_id`` into ``log`` (a delta or a snapshot)."""
        if log is not None:
            log.write_changes(batch_id, self._store)
        else:
            self._store.take_changes()

    def restore(
        self,
        state: pl.DataFrame | None,
        watermark: int | None,
        max_event: int | None,
        in_force: int | None = None,
        *,
        no_data_pending: bool = False,
        partition_max: Mapping[str, int] | None = None,
    ) -> None:
        """Resume after a committed batch: buffers, watermark, each side's largest event
        time (``partition_max``), the watermark in force then."""
        del max_event
        self._store.load(state)
        self.watermark = watermark
        self._side_max = {k: int(v) for k, v in (partition_max or {}).items() if k in SIDES}
        self._in_force = watermark if in_force is None else in_force
        self._restored = not no_data_pending

    @property
    def in_force(self) -> int | None:
        """Watermark in force in the last batch run."""
        return self._in_force

    @property
    def partition_maxima(self) -> dict[str, int]:
        """Largest event time (ms) per side, for the commit file."""
        return dict(self._side_max)

    def declare_partitions(self, open_partitions: Iterable[str], ended: Iterable[str]) -> None:
        """Ignored: a join's watermark follows its sides, not source partitions."""

    @property
    def max_event(self) -> int | None:
        """Largest event time (ms) over both sides."""
        return max(self._side_max.values()) if self._side_max else None

    @property
    def state_rows(self) -> int:
        """Rows buffered on both sides."""
        return self._store.height

    def time_unit(self) -> Literal["ns", "us", "ms"]:
        """The watermark is kept in milliseconds."""
        return "ms"

    def buffered(self, side: int) -> pl.DataFrame:
        """The rows buffered on ``side`` (0 left, 1 right), for inspection."""
        return self._store.buffer(side)
