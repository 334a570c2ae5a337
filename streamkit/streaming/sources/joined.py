"""Two replayable sources read as one, for a query that joins two streams.

Each micro-batch reads both sources (concurrently) and hands the engine one table with a
struct column per side, ``left`` and ``right``: a row holds one side's record and null on
the other. Offsets are both sources' offsets, each partition prefixed with its side
(``left/...``, ``right/...``), so the offsets log records both and a restart resumes (or
re-reads an uncommitted batch of) both. Exact replay holds when both sources are
:class:`~streamkit.streaming.contracts.BoundedSource`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import pyarrow as pa

from streamkit.errors import PlanError
from streamkit.streaming.contracts import BoundedSource, SourceBatch, source_kind
from streamkit.streaming.decode import empty_dead_letters

if TYPE_CHECKING:
    from streamkit.plan import Plan
    from streamkit.streaming.contracts import Offsets, ReplayableSource, StreamSource

SIDES = ("left", "right")


def per_query(source: StreamSource) -> StreamSource:
    """What one query reads of ``source``: its ``reader()`` when it has one (a stream that
    holds a read position per query, as :class:`MemoryStream`), else ``source`` itself."""
    make = getattr(source, "reader", None)
    return make() if callable(make) else source


def _split(offsets: Offsets | None, side: str) -> dict[str, str]:
    prefix = f"{side}/"
    return {k[len(prefix) :]: v for k, v in (offsets or {}).items() if k.startswith(prefix)}


def _prefixed(offsets: Mapping[str, str], side: str) -> dict[str, str]:
    return {f"{side}/{k}": v for k, v in offsets.items()}


def pack(rows: pa.Table, side: int, schemas: tuple[pa.Schema, pa.Schema]) -> pa.Table:
    """``rows`` of one side as the joined table: its struct column, null on the other."""
    struct = pa.StructArray.from_arrays(
        [rows.column(i).combine_chunks() for i in range(rows.num_columns)],
        fields=list(schemas[side]),
    )
    other = pa.nulls(rows.num_rows, pa.struct(list(schemas[1 - side])))
    columns = [struct, other] if side == 0 else [other, struct]
    return pa.Table.from_arrays(columns, names=list(SIDES))


class JoinedSources:
    """A replayable source over two replayable sources (see the module docstring)."""

    def __init__(self, left: StreamSource, right: StreamSource) -> None:
        for side, source in zip(SIDES, (left, right), strict=True):
            if source_kind(source) != "replayable":
                raise PlanError(
                    f"a stream-stream join needs two replayable sources (offsets, replay); "
                    f"the {side} side {type(source).__name__} is an acknowledging source"
                )
        self.sides: tuple[ReplayableSource, ReplayableSource] = (left, right)  # type: ignore[assignment]
        self.schemas = (left.schema, right.schema)
        self.runs_empty_batches = any(getattr(s, "runs_empty_batches", False) for s in self.sides)

    def reader(self) -> JoinedSources:
        """The same two sources for one more query (:func:`per_query`)."""
        return JoinedSources(per_query(self.sides[0]), per_query(self.sides[1]))

    @property
    def schema(self) -> pa.Schema:
        """Struct column ``left`` and struct column ``right``."""
        pairs = zip(SIDES, self.schemas, strict=True)
        return pa.schema([pa.field(side, pa.struct(list(schema))) for side, schema in pairs])

    async def open(self, offsets: Offsets | None) -> None:
        """Open both sides after their part of ``offsets``."""
        for side, source in zip(SIDES, self.sides, strict=True):
            await source.open(_split(offsets, side) or None)

    async def next_batch(self, max_wait: float) -> SourceBatch | None:
        """What each side has now (read concurrently), as one batch; None if neither has."""
        got = await asyncio.gather(*(s.next_batch(max_wait) for s in self.sides))
        parts = [(i, b) for i, b in enumerate(got) if b is not None]
        if not parts:
            return None
        rows = [pack(b.rows, i, self.schemas) for i, b in parts]
        dead = [b.dead_letters for _, b in parts]
        ends: dict[str, str] = {}
        for i, b in parts:
            ends |= _prefixed(b.end_offsets, SIDES[i])
        return SourceBatch(
            rows=pa.concat_tables(rows),
            dead_letters=pa.concat_tables(dead) if dead else empty_dead_letters(),
            end_offsets=ends,
            partitions=tuple(p for _, b in parts for p in b.partitions),
            fetch_seconds=max(b.fetch_seconds for _, b in parts),
            decode_seconds=sum(b.decode_seconds for _, b in parts),
        )

    async def end_offsets(self) -> Offsets:
        """Both sides' ends, prefixed."""
        out: dict[str, str] = {}
        for side, source in zip(SIDES, self.sides, strict=True):
            out |= _prefixed(await source.end_offsets(), side)
        return out

    def reached(self, offsets: Offsets, target: Offsets) -> bool:
        """Both sides reached their part of ``target``."""
        return all(
            source.reached(_split(offsets, side), _split(target, side))
            for side, source in zip(SIDES, self.sides, strict=True)
        )

    async def commit(self, offsets: Offsets) -> None:
        """Commit each side's part."""
        for side, source in zip(SIDES, self.sides, strict=True):
            await source.commit(_split(offsets, side))

    async def close(self) -> None:
        """Close both sides."""
        for source in self.sides:
            await source.close()


def joined_streams(
    plan: Plan, stream_of: Callable[[Plan], StreamSource | None]
) -> JoinedSources | None:
    """Both streams of the first join in ``plan`` whose two sides read streams (None:
    there is no such join); ``stream_of`` finds a side's stream."""
    from streamkit.join_plan import Join

    if isinstance(plan, Join):
        left, right = stream_of(plan.left), stream_of(plan.right)
        if left is not None and right is not None:
            return joined_source(left, right)
    for child in plan.children:
        found = joined_streams(child, stream_of)
        if found is not None:
            return found
    return None


def joined_source(left: StreamSource, right: StreamSource) -> JoinedSources:
    """The joined source; a :class:`BoundedSource` only when both sides are."""
    if isinstance(left, BoundedSource) and isinstance(right, BoundedSource):
        return BoundedJoinedSources(left, right)
    return JoinedSources(left, right)


class BoundedJoinedSources(JoinedSources):
    """A joined source over two :class:`BoundedSource`: it re-reads an exact range."""

    def bound(self, target: Offsets | None) -> None:
        """Bound both sides to their part of ``target`` (None: unbound)."""
        for side, source in zip(SIDES, self.sides, strict=True):
            if isinstance(source, BoundedSource):
                source.bound(None if target is None else _split(target, side))
