"""Which joins of two streams a fleet runs, and how they split (README "Running on many
machines", joins of two streams, steps 2-5).

Each source task reads one shard of one of the two streams (its *side*: ``left`` or
``right``) and runs that side's plan below the join (filters, projections,
``with_watermark``); the side's rows are routed by its equality keys, in the order of
the join's pairs (:func:`~streamkit.fleet.routing.check_join_routable`: equal keys of
the two sides hash equally), so every pair of rows the join can match meets in one
aggregation task, which runs the single-process join on them
(:mod:`~streamkit.fleet.join_stage`).

Supported: an inner, left, right or full outer join of two streams under the
single-process engine's (Spark's) rules, with filters and projections above it, or one
aggregation or ``drop_duplicates`` above it (and filters and projections between and
above them) whose keys hold the join keys (:func:`check_keys_above`): then each of its
groups or keys lives in the one task of its join key, which runs both operators (the
chain of :mod:`~streamkit.streaming.chain`). Refused with a
:class:`~streamkit.errors.PlanError` naming what to do: a stateful operator above the
join that does not key by the join keys (it would need a second exchange), more
operators, a stream-static join in such a plan, anything but filters, projections and
``with_watermark`` in a side.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamkit.errors import PlanError
from streamkit.join_plan import Join
from streamkit.plan import Aggregate, Deduplicate, Filter, Plan, Project, Scan, Watermark
from streamkit.streaming.chain_rules import stateful_operators
from streamkit.streaming.join_sides import SIDES, JoinSide, null_checked
from streamkit.streaming.stream_join import is_stream_join
from streamkit.streaming.watermark_lineage import carried_from, plain_reference

from .routing import check_join_routable

_RUN_ALONE = "run this query as one process (streamkit run)"


def _refuse(what: str, fix: str) -> PlanError:
    return PlanError(f"not supported on a fleet yet: {what}; {fix}")


def has_stream_join(plan: Plan) -> bool:
    """Whether ``plan`` holds a join of two streams anywhere."""
    return is_stream_join(plan) or any(has_stream_join(c) for c in plan.children)


@dataclass(frozen=True)
class JoinSplit:
    """A join of two streams on a fleet: what each side's source tasks run and route by."""

    join: Join
    sides: tuple[JoinSide, JoinSide]
    """Left and right: each side's plan below the join and its watermark."""
    checked: tuple[list[str], list[str]]
    """Per side, the columns whose nulls drop a row before the join (Spark's inferred
    ``IsNotNull``: :func:`~streamkit.streaming.join_sides.null_checked`)."""
    above: Aggregate | Deduplicate | None
    """The aggregation or ``drop_duplicates`` above the join (None: none)."""

    def keys(self, side: int) -> list[str]:
        """The columns side ``side`` (0 left, 1 right) routes its rows by."""
        return [pair[side] for pair in self.join.pairs]

    def delay_ms(self, side: int) -> int | None:
        """Side ``side``'s watermark delay in whole ms (None: no ``with_watermark``)."""
        mark = self.sides[side].mark
        return None if mark is None else mark.delay_ns // 1_000_000

    @staticmethod
    def side_of(stream: str) -> int:
        """The side index of a chunk's stream name (``left``: 0, ``right``: 1)."""
        if stream not in SIDES:
            raise ValueError(f"a join's stream is 'left' or 'right', got {stream!r}")
        return SIDES.index(stream)


def split_join(plan: Plan) -> JoinSplit:
    """The split of ``plan`` (a bound plan holding a join of two streams, already
    accepted by the single-process engine); raises :class:`PlanError` for what a fleet
    cannot run (module docstring)."""
    ops = stateful_operators(plan)
    join = ops[0]
    if not isinstance(join, Join) or not is_stream_join(join):
        raise _refuse(
            "a join of two streams that is not the first stateful operator of the plan",
            _RUN_ALONE,
        )
    if len(ops) > 2 or (len(ops) == 2 and not isinstance(ops[1], Aggregate | Deduplicate)):
        raise _refuse(
            "more than one aggregation or drop_duplicates, or a stateful function, above a "
            "join of two streams",
            _RUN_ALONE,
        )
    top = ops[1] if len(ops) == 2 else None
    assert top is None or isinstance(top, Aggregate | Deduplicate)
    for node in plan.chain():
        if node is join:
            break
        if not isinstance(node, Filter | Project | Aggregate | Deduplicate):
            raise _refuse(
                f"{node.describe()} above a join of two streams (only filters, projections "
                "and one aggregation or drop_duplicates keyed by the join keys)",
                _RUN_ALONE,
            )
    for name, side in zip(SIDES, join.children, strict=True):
        for node in side.chain():
            if not isinstance(node, Filter | Project | Watermark | Scan):
                raise _refuse(
                    f"{node.describe()} in the {name} side of a join of two streams (a source "
                    "task runs only filters, projections and with_watermark below the join)",
                    _RUN_ALONE,
                )
    check_join_routable(join.pairs, join.left.schema, join.right.schema)
    if top is not None:
        check_keys_above(join, top)
    sides = (JoinSide.of(join.left, "left"), JoinSide.of(join.right, "right"))
    return JoinSplit(join, sides, (null_checked(join, 0), null_checked(join, 1)), top)


def check_keys_above(join: Join, node: Aggregate | Deduplicate) -> None:
    """Refuse an aggregation or ``drop_duplicates`` above ``join`` unless its keys hold,
    for every equality pair, the column(s) whose value every output row was routed by:
    the ``using`` column, or (as is, or a plain rename) the left column of a left join,
    the right one of a right join, either of an inner join, both of a full join (a
    null-extended row has only its own side's key)."""
    if isinstance(node, Aggregate):
        keyed = {plain_reference(k) for k in node.keys} - {None}
    else:
        keyed = set(node.keys)

    def covered(column: str) -> bool:
        return bool(keyed & set(carried_from(node.input, join, (column,)) or ()))

    need = {"inner": any, "left": lambda c: c[0], "right": lambda c: c[1], "full": all}
    rule = need[join.how]
    for a, b in join.pairs:
        ok = covered(a) if a == b and a in join.using else rule((covered(a), covered(b)))
        if not ok:
            what = "an aggregation" if isinstance(node, Aggregate) else "drop_duplicates"
            want = {"inner": f"{a!r} or {b!r}", "left": repr(a), "right": repr(b),
                    "full": f"{a!r} and {b!r}"}[join.how]  # fmt: skip
            raise _refuse(
                f"{what} above a join of two streams that does not key by the join key "
                f"{want} (a fleet routes the joined rows by the join keys; another key "
                "would need a second exchange)",
                f"add {want} to its keys (or a plain rename of it), or {_RUN_ALONE}",
            )
