"""The sides of a stream-stream join: each side's event time and its buffer's state
watermark (:mod:`streamkit.streaming.stream_join` runs the join).

Each side's event time is the one column of its output that carries its watermark
(:mod:`~streamkit.streaming.watermark_lineage`: ``with_watermark``'s column or a plain
rename of it; a column computed from it carries none), as Spark's event-time metadata.
A bound of the condition counts for a side's state watermark when its other-side column
carries the watermark (its own-side column may be any: with ``ts`` kept beside
``lt = ts + c`` and the range on ``lt``, the bound is applied to ``ts``, as Spark does).
Two carrying columns on a side are refused (Spark fails the batch).

A side without a time bound, or carrying no watermark, keeps every row (allowed for inner
joins, as in Spark); an outer join needs a bound of its preserved side's columns by the
other side's carrying column and is refused without it, with Spark's message (with one,
and no carrying column on the preserved side, it runs and never emits null rows, as in
Spark).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from streamkit.errors import PlanError
from streamkit.execute import compile_plan, given
from streamkit.join_plan import Join
from streamkit.plan import Aggregate, Deduplicate, Plan, Watermark
from streamkit.streaming.watermark_lineage import carried

SIDES = ("left", "right")


@dataclass(frozen=True)
class JoinSide:
    """One input of the join, with its watermark."""

    plan: Plan
    mark: Watermark | None
    """The side's ``with_watermark`` (its W is taken on ``mark.column`` there)."""
    time: str | None
    """The column of the side's output that carries the watermark (None: none)."""

    @classmethod
    def of(cls, plan: Plan, name: str) -> JoinSide:
        """The side ``name`` (``left``/``right``) whose plan is ``plan``; refuses a stateful
        operator below the join, and two columns carrying the watermark."""
        return cls(plan, *side_mark(plan, name))


def side_mark(side: Plan, name: str) -> tuple[Watermark | None, str | None]:
    """The side's watermark and the one column of the side's output that carries it
    (None: none does; :mod:`~streamkit.streaming.watermark_lineage`); refuses a stateful
    operator below the join, and two columns carrying it (Spark fails the batch)."""
    marks: list[Watermark] = []
    for node in side.chain():
        if isinstance(node, Aggregate | Deduplicate | Join):
            raise PlanError(
                f"a {type(node).__name__} below a stream-stream join ({name} side) is not "
                "supported; join the streams first"
            )
        if isinstance(node, Watermark):
            marks.append(node)
    if not marks:
        return None, None
    times = carried(side, marks[0]) or ()
    if len(times) > 1:
        raise PlanError(
            "[MULTIPLE_EVENT_TIME_COLUMNS] More than one event time columns are available on "
            f"the {name} side of a stream-stream join ({', '.join(repr(t) for t in times)} all "
            "carry the watermark): Spark fails the first batch; select all but one of them "
            "away before the join"
        )
    return marks[0], times[0] if times else None


def _ms_bound(ns: int) -> int:
    return ns // 1_000_000


def state_watermark(
    join: Join, side: int, watermark: int, marks: tuple[str | None, ...]
) -> int | None:
    """The state watermark (ms) of ``side``'s buffer given the global ``watermark`` (ms):
    rows whose ``marks[side]`` (the side's column carrying the watermark) is at or before
    it can match no future row of the other side. None: the side carries no watermark
    (Spark: no state predicate), or the condition gives no such bound."""
    if marks[side] is None:
        return None
    return range_watermark(join, side, watermark, marks[1 - side])


def range_watermark(join: Join, side: int, watermark: int, other: str | None) -> int | None:
    """The bound (ms) the condition puts on ``side``'s time columns given the global
    ``watermark``, from the conjuncts that bound one of them by ``other``, the other
    side's column carrying the watermark (Spark's ``getStateValueWatermark``: any column of
    ``side``, only a watermarked one of the other side; None: no such conjunct)."""
    found: list[int] = []
    for b in join.bounds:
        if other is None or (b.right_col if side == 0 else b.left_col) != other:
            continue
        c = _ms_bound(b.offset_ns)
        if side == 0 and b.op in (">", ">="):
            found.append(watermark + c - (1 if b.op == ">=" else 0))
        if side == 1 and b.op in ("<", "<="):
            found.append(watermark - c - (1 if b.op == "<=" else 0))
    return min(found) if found else None


def check_outer(join: Join, marks: tuple[str | None, ...]) -> None:
    """Refuses, with Spark's reason, an outer join whose preserved side is not bounded by
    the other side's carrying column (``marks``: per side, the column carrying the
    watermark), and the semi and anti joins."""
    how = join.how
    for side, preserved in ((0, ("left", "full")), (1, ("right", "full"))):
        bounded = range_watermark(join, side, 0, marks[1 - side]) is not None
        if how in preserved and not bounded:
            kind = {"left": "LeftOuter", "right": "RightOuter", "full": "FullOuter"}[how]
            other = SIDES[1 - side]
            raise PlanError(
                f"Stream-stream {kind} join between two streaming DataFrames is not "
                "supported without a watermark on the nullable side and an appropriate "
                f"range condition (Spark's rule): add with_watermark on both sides and a "
                f"condition bounding the {SIDES[side]} event time by the {other} one, e.g. "
                "(col('rt') >= col('lt')) & (col('rt') <= col('lt') + timedelta(...)); the "
                f"{other} column must carry the watermark (with_watermark's column or a "
                "plain rename of it, not a column computed from it)"
            )
    if how in ("left_semi", "left_anti"):
        raise PlanError(f"{how} stream-stream joins are not supported yet; use inner or left")


def null_checked(join: Join, side: int) -> list[str]:
    """The columns of ``side`` whose nulls drop a row before the watermark sees it: the
    equality keys and time-bound columns of a side that is not preserved. Spark's
    optimizer infers ``IsNotNull`` filters from the condition for such a side and pushes
    them down to the scan (a preserved side keeps its null-key rows, and in a full outer
    join null keys match each other, as Spark's state matches keys)."""
    preserved = ("left", "full") if side == 0 else ("right", "full")
    if join.how in preserved:
        return []
    keys = [p[side] for p in join.pairs]
    times = [b.left_col if side == 0 else b.right_col for b in join.bounds]
    return list(dict.fromkeys(keys + times))


def side_output(
    side: JoinSide, checked: list[str], raw: pl.DataFrame
) -> tuple[pl.DataFrame, int | None]:
    """The rows side ``side`` gives the join for its rows as read ``raw`` (its plan, then
    the rows with a null in ``checked``, :func:`null_checked`, dropped), and their largest
    event time in whole ms as ``with_watermark`` sees it (rows with a null ``checked``
    column there left out; None: no watermark, or no such time). The one-process join and
    a fleet's source tasks both take a side's rows through here."""
    top_ms: int | None = None
    if side.mark is not None and raw.height:
        at_mark = compile_plan(side.mark.input, None, set(), given(raw)).collect()
        present = [c for c in checked if c in at_mark.columns]
        if present:
            at_mark = at_mark.drop_nulls(present)
        top = at_mark[side.mark.column].dt.epoch("us").max()
        top_ms = top // 1000 if isinstance(top, int) else None
    if not raw.height:
        return pl.DataFrame(schema=side.plan.schema), top_ms
    out = compile_plan(side.plan, None, set(), given(raw)).collect()
    return (out.drop_nulls(checked) if checked and out.height else out), top_ms
