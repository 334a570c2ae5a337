"""The one executor: runs a logical plan over Arrow data (through Polars, zero-copy).

Batch runs a plan over a whole table. Streaming (later) runs the same compiled pieces over
each micro-batch: :func:`aggregate_rows` and :func:`aggregate_spec` are shared.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from streamkit import aggregate as K
from streamkit.expr import Col
from streamkit.join_kernel import join_frames
from streamkit.join_plan import Join
from streamkit.plan import Aggregate, Deduplicate, Filter, Plan, Project, Scan, Watermark
from streamkit.stateful import FlatMapGroupsWithState, run_batch
from streamkit.stream_static import Pinned
from streamkit.transform_state import TransformWithState
from streamkit.transform_state import run_batch as transform_batch
from streamkit.windows import BUCKET

Loader = Callable[[Scan, list[str], list[str]], pl.LazyFrame]
"""Reads a Scan's ``columns`` (with ``dictionary`` string columns allowed categorical)."""


def _load_all(scan: Scan, columns: list[str], dictionary: list[str]) -> pl.LazyFrame:
    chunks = list(scan.source.batches(columns, dictionary))
    frame: pl.DataFrame = pl.concat(chunks, how="vertical_relaxed", rechunk=False)
    return frame.lazy()


def execute(plan: Plan) -> pl.DataFrame:
    """Run ``plan`` over its sources; returns a frame with exactly ``plan.schema``.

    An aggregation reads its input chunk by chunk: each chunk is reduced to partial states
    and the states are merged, exactly as micro-batches are in a stream.
    """
    dictionary = _dictionary_candidates(plan)
    frame = compile_plan(plan, None, dictionary, _load_all).collect()
    if dictionary:
        wanted = plan.schema
        frame = frame.with_columns(
            pl.col(n).cast(wanted[n]) for n in frame.columns if frame.schema[n] != wanted[n]
        )
    return frame


def compile_plan(
    plan: Plan, needed: set[str] | None, dictionary: set[str], load: Loader
) -> pl.LazyFrame:
    if isinstance(plan, Scan):
        names = plan.schema.names()
        # reading no column would lose the row count (``count()`` reads none): keep one
        columns = names if needed is None else [c for c in names if c in needed] or names[:1]
        return load(plan, columns, sorted(dictionary & set(columns)))
    if isinstance(plan, Filter):
        need = None if needed is None else needed | plan.predicate.columns()
        return compile_plan(plan.input, need, dictionary, load).filter(plan.predicate.to_polars())
    if isinstance(plan, Project):
        exprs = plan.exprs
        if needed is not None and plan.keep_input:
            exprs = tuple(e for e in exprs if e.output_name in needed)
        used = set().union(*(e.columns() for e in exprs)) if exprs else set()
        if plan.keep_input:
            produced = {e.output_name for e in exprs}
            need = None if needed is None else (needed - produced) | used
            return compile_plan(plan.input, need, dictionary, load).with_columns(
                e.to_polars().alias(e.output_name) for e in exprs
            )
        rows = compile_plan(plan.input, used, dictionary, load)
        # with_columns first: a literal-only expression gets one value per row, as in Spark
        # (a bare ``select(lit)`` would give one row)
        named = [e.to_polars().alias(e.output_name) for e in plan.exprs]
        return rows.with_columns(named).select(e.output_name for e in plan.exprs)
    if isinstance(plan, Watermark):
        return compile_plan(plan.input, needed, dictionary, load)
    if isinstance(plan, Deduplicate):
        need = None if needed is None else needed | set(plan.keys)
        rows = compile_plan(plan.input, need, dictionary, load)
        return rows.unique(subset=plan.keys, keep="first", maintain_order=True)
    if isinstance(plan, Aggregate):
        return _aggregate_chunked(plan, dictionary, load).lazy()
    if isinstance(plan, Join):
        left = compile_plan(plan.left, None, set(), load).collect()
        right = compile_plan(plan.right, None, set(), load).collect()
        return join_frames(left, right, plan).lazy()
    if isinstance(plan, FlatMapGroupsWithState):  # the function sees every input column
        return run_batch(plan, compile_plan(plan.input, None, set(), load).collect()).lazy()
    if isinstance(plan, TransformWithState):
        given_rows = compile_plan(plan.input, None, set(), load).collect()
        initial = plan.initial_state
        first = None if initial is None else compile_plan(initial, None, set(), load).collect()
        return transform_batch(plan, given_rows, first).lazy()
    raise TypeError(f"unknown plan node {type(plan).__name__}")


def _aggregate_chunked(plan: Aggregate, dictionary: set[str], load: Loader) -> pl.DataFrame:
    """Partial states per input chunk, merged, finalized (the streaming path in one go)."""
    spec = aggregate_spec(plan)
    needed = aggregate_columns(plan)
    if not _row_local(plan.input):  # e.g. drop_duplicates or an aggregation below: whole
        whole = aggregate_rows(compile_plan(plan.input, needed, dictionary, load), plan, spec)
        return K.run_batch([whole], spec)
    requests: list[tuple[Scan, list[str], list[str]]] = []

    def record(scan: Scan, columns: list[str], dicts: list[str]) -> pl.LazyFrame:
        requests.append((scan, columns, dicts))
        return pl.DataFrame(schema={c: scan.schema[c] for c in columns}).lazy()

    compile_plan(plan.input, needed, dictionary, record)
    if len(requests) != 1:
        whole = aggregate_rows(compile_plan(plan.input, needed, dictionary, load), plan, spec)
        return K.run_batch([whole], spec)
    scan, columns, dicts = requests[0]
    chunks = scan.source.batches(columns, dicts)
    rows = (
        aggregate_rows(compile_plan(plan.input, needed, dictionary, given(chunk)), plan, spec)
        for chunk in chunks
    )
    return K.run_batch(rows, spec)


def _row_local(plan: Plan) -> bool:
    """Whether ``plan`` maps each input row on its own (so chunks may be read apart)."""
    return all(isinstance(n, Filter | Project | Watermark | Scan) for n in plan.chain())


def scan_columns(plan: Plan) -> list[str] | None:
    """The columns of its one scan that ``plan`` reads, in scan order, watermark columns
    included (None when the plan has more than one scan)."""
    requests: list[list[str]] = []
    marks = {node.column for node in plan.chain() if isinstance(node, Watermark)}

    def record(scan: Scan, columns: list[str], dicts: list[str]) -> pl.LazyFrame:
        wanted = set(columns) | marks
        requests.append([c for c in scan.schema.names() if c in wanted])
        return pl.DataFrame(schema={c: scan.schema[c] for c in columns}).lazy()

    kinds = Aggregate | FlatMapGroupsWithState | TransformWithState
    lowest = [node for node in plan.chain() if isinstance(node, kinds)][-1:]
    if lowest and isinstance(lowest[0], Aggregate):  # what is above reads its result
        compile_plan(lowest[0].input, aggregate_columns(lowest[0]), set(), record)
    elif lowest:  # a stateful function sees every column of its input (and is not run)
        compile_plan(lowest[0].input, None, set(), record)
    else:
        compile_plan(plan, None, set(), record)
    if len(requests) != 1:
        return None
    return requests[0]


def given(chunk: pl.DataFrame) -> Loader:
    """A loader that serves one chunk in place of the scan (a scan of a
    :class:`~streamkit.stream_static.Pinned` static side reads its pinned rows instead)."""

    def load(scan: Scan, columns: list[str], dictionary: list[str]) -> pl.LazyFrame:
        if isinstance(scan.source, Pinned):
            return scan.source.pinned(columns)
        return chunk.lazy()

    return load


def aggregate_columns(plan: Aggregate) -> set[str]:
    """The input columns an aggregation reads (keys, aggregate inputs, window column)."""
    cols: set[str] = set()
    for k in plan.keys:
        cols |= k.columns()
    for a in plan.aggs:
        cols |= a.input.columns() if a.input is not None else set()
    if plan.window is not None:
        cols |= plan.window.column.columns()
    return cols


def aggregate_spec(plan: Aggregate) -> K.AggregateSpec:
    """The resolved aggregation of an ``Aggregate`` node (types taken from its input)."""
    schema = plan.input.schema
    dtypes = tuple(a.input_dtype(schema) for a in plan.aggs)
    time = plan.window.time_dtype(schema) if plan.window is not None else None
    keys = tuple(k.output_name for k in plan.keys)
    if not keys and plan.window is None:
        keys = (K.GLOBAL,)
    return K.AggregateSpec(keys, plan.window, plan.aggs, dtypes, time, plan.order)


def aggregate_rows(rows: pl.LazyFrame, plan: Aggregate, spec: K.AggregateSpec) -> pl.LazyFrame:
    """Input rows reduced to what the kernel reads: keys, ``__bucket`` and the aggregates'
    input columns (:meth:`~streamkit.aggregate.AggregateSpec.input_exprs`).

    Rows with a null event time are dropped (they belong to no window).
    """
    cols = [k.to_polars().alias(k.output_name) for k in plan.keys]
    if spec.keys == (K.GLOBAL,):
        cols.append(pl.lit(0, dtype=pl.Int32).alias(K.GLOBAL))
    if plan.window is not None:
        assert spec.time_dtype is not None
        rows = rows.filter(plan.window.column.to_polars().is_not_null())
        cols.append(plan.window.bucket_expr(spec.time_dtype).alias(BUCKET))
    cols += [expr.alias(name) for name, expr in spec.input_exprs()]
    return rows.with_columns(cols).select(c.meta.output_name() for c in cols)


def _dictionary_candidates(plan: Plan) -> set[str]:
    """String group keys that may be read dictionary-encoded: plain column keys of an
    aggregation whose input chain (filters only) never otherwise references them."""
    if not isinstance(plan, Aggregate):
        return set()
    node, others = plan.input, set()
    for a in plan.aggs:
        others |= a.input.columns() if a.input is not None else set()
    if plan.window is not None:
        others |= plan.window.column.columns()
    while isinstance(node, Filter | Watermark):
        if isinstance(node, Filter):
            others |= node.predicate.columns()
        node = node.input
    if not isinstance(node, Scan):
        return set()
    keys = {k.name for k in plan.keys if isinstance(k, Col)}
    return {k for k in keys - others if isinstance(node.schema[k], pl.String)}
