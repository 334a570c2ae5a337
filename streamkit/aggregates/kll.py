"""A mergeable quantile sketch (KLL-style compactors), vectorised over groups with Polars.

The sketch of a group is a list of values with a level each: an item at level ``h``
stands for ``2**h`` input values. A group's items at one level form a buffer of capacity
``k``. When a buffer holds more than ``k`` items it is sorted and compacted: the items at
odd or at even positions (a pseudo-random choice per buffer, from a hash of its values)
move up one level, the others are dropped, and with an odd count the largest item stays.
Merging two sketches concatenates their buffers and compacts again, so a sketch does not
depend on how its rows were split into chunks or micro-batches beyond the coin flips.

Error bound. A compaction at level ``h`` changes the estimated rank of any value by 0 or
``±2**h`` with equal probability, and consumes at least ``k`` items of weight ``2**h``;
so over ``n`` values there are at most ``n / (k 2**h)`` of them, the top level ``H`` has
``2**H < 2n/k``, and the squared changes sum to less than ``2 n**2 / k**2`` whatever the
merge order. By Azuma-Hoeffding, the rank of a value is off by more than ``eps * n``
with probability at most ``2 exp(-(eps k)**2 / 4)``: for ``eps * k = 7.62`` that is
1e-6. A group with at most ``k`` values is never compacted, so its quantiles are exact.
Size: at most ``k`` items per level, ``log2(2n/k) + 1`` levels.

The whole computation is frame operations: one pass per level to compact, never a Python
loop over rows or groups.
"""

from __future__ import annotations

import polars as pl

G, V, L = "__g", "__v", "__l"
"""Columns of the long form: group row, value, level."""
SEED = 0x51CE


def from_rows(rows: pl.DataFrame, keys: list[str], value: str) -> pl.DataFrame:
    """Long form of raw input rows: every non-null value at level 0."""
    level = pl.lit(0, dtype=pl.UInt8).alias(L)
    return rows.select(*keys, pl.col(value).alias(V), level).drop_nulls(V)


def from_states(frame: pl.DataFrame, keys: list[str], states: list[str]) -> pl.DataFrame:
    """Long form of sketch state columns ``states`` (values, levels) of ``frame``."""
    both = [pl.col(states[0]).alias(V), pl.col(states[1]).alias(L)]
    return frame.select(*keys, *both).explode([V, L]).drop_nulls(V)


def compact(long: pl.DataFrame, k: int) -> pl.DataFrame:
    """Compact every buffer (group, level) holding more than ``k`` items, level by level,
    until none does; one vectorised pass per round."""
    while long.height and long.select((pl.len().over(G, L) > k).any()).item():
        over = long.with_columns((pl.len().over(G, L) > k).alias("__over"))
        full = over.filter(pl.col("__over")).drop("__over").sort(G, L, V)
        rest = over.filter(~pl.col("__over")).drop("__over")
        n, rank = pl.len().over(G, L), pl.int_range(pl.len()).over(G, L)
        coin = ((pl.col(V).hash(SEED).min().over(G, L) + pl.col(L)) % 2).cast(pl.Int64)
        odd_out = (n % 2 == 1) & (rank == n - 1)
        up = ~odd_out & (rank % 2 == coin)
        full = full.with_columns(odd_out.alias("__stay"), up.alias("__up"))
        full = full.filter(pl.col("__stay") | pl.col("__up"))
        raised = pl.when(pl.col("__up")).then(pl.col(L) + 1).otherwise(pl.col(L))
        full = full.with_columns(raised.cast(pl.UInt8).alias(L)).drop("__stay", "__up")
        long = pl.concat([rest, full])
    return long


def attach(
    target: pl.DataFrame, long: pl.DataFrame, keys: list[str], states: list[str], k: int
) -> pl.DataFrame:
    """``target`` (one row per distinct ``keys``) with the compacted sketch of its items
    in ``long`` as columns ``states``; a group without values gets null lists."""
    ids = target.select(keys).with_row_index(G)
    long = long.join(ids, on=keys, how="inner", nulls_equal=True).select(G, V, L)
    lists = compact(long, k).group_by(G).agg(pl.col(V), pl.col(L))
    out = ids.select(G).join(lists, on=G, how="left", maintain_order="left")
    return target.with_columns(out[V].alias(states[0]), out[L].alias(states[1]))


def quantile(sketches: pl.Series, q: float) -> pl.Series:
    """Per sketch (a struct of values and levels), the smallest stored value whose
    estimated rank (total weight at or below it) is at least ``q`` times the total
    weight; null for an empty sketch."""
    frame = sketches.struct.unnest()
    values, levels = frame.columns
    rows = frame.rename({values: V, levels: L}).with_row_index(G)
    long = rows.explode([V, L]).drop_nulls(V).sort(G, V)
    weight = pl.lit(2, dtype=pl.Int64).pow(pl.col(L).cast(pl.Int64))
    long = long.with_columns(
        weight.cum_sum().over(G).alias("__cw"), weight.sum().over(G).alias("__tw")
    )
    # the tolerance keeps q * n from landing one rank high through rounding (0.3 * 10)
    reached = pl.col("__cw") >= q * pl.col("__tw") * (1 - 1e-12)
    picked = long.filter(reached).group_by(G).agg(pl.col(V).first())
    out = rows.select(G).join(picked, on=G, how="left", maintain_order="left")
    return out[V].alias(sketches.name)
