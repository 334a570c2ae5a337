"""Event-time watermarks per source partition (shard, topic-partition), with idleness.

One global maximum over all partitions (Spark's rule) lets a partition that is read fast
push the watermark past the rows a slower partition has not delivered yet: after a
restart, or with any backlog, those rows arrive late and are dropped. Under the
``"min"`` policy (the default for partitioned sources) the engine keeps the largest event
time seen per partition and takes the smallest of them over the *active* partitions; a
partition that delivered no row for ``idle_timeout`` seconds stops holding it back (as
Flink's idleness does), and rejoins as soon as it delivers again.

Rules (``W`` is the watermark, ``delay`` the ``with_watermark`` delay):

- ``max_p`` = the largest event time of any row of partition ``p`` so far (nulls ignored).
- active = partitions whose last row arrived less than ``idle_timeout`` s ago (processing
  time, from the injected clock) and that did not reach their end; after a restart every
  restored partition is active.
- waiting = partitions the source declared (:meth:`PartitionWatermarks.declare`: a shard
  it holds, a topic-partition assigned to it) that have no ``max_p`` yet, were declared
  less than ``idle_timeout`` s ago and did not reach their end. Their first rows may be
  older than anything seen so far (a shard whose first GetRecords comes a batch after
  the others'), so they hold ``W`` where it is, as Flink's assigned splits do.
- ``"min"``: basis = none (``W`` stays) while any partition is waiting, else
  ``min(max_p for active p)``, or ``max(max_p)`` when none is active.
  ``"global"``: basis = ``max(max_p)`` (Spark's rule; declarations are ignored).
- ``W`` = basis - delay, and ``W`` never decreases.

A source that cannot say which partition each row came from (``partitions=None``) is one
partition, so both policies agree with Spark there; so is a source that declares nothing
(only partitions that delivered a row count). Cost per batch: one group-by over the
batch's rows and a pass over the partitions; nothing proportional to the rows held.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa

from streamkit.errors import ConfigError

WatermarkPolicy = Literal["min", "global"]
WATERMARK_POLICIES: tuple[WatermarkPolicy, ...] = ("min", "global")
SINGLE = ""
"""Partition name used for rows of a source that does not name partitions."""


class PartitionWatermarks:
    """Largest event time per partition and the watermark basis (module docstring)."""

    def __init__(
        self,
        policy: WatermarkPolicy = "min",
        idle_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if policy not in WATERMARK_POLICIES:
            raise ConfigError(
                f"watermark_policy must be one of {WATERMARK_POLICIES}, got {policy!r}"
            )
        if idle_timeout <= 0:
            raise ConfigError(f"idle_timeout must be > 0 seconds, got {idle_timeout}")
        self.policy, self.idle_timeout, self._clock = policy, idle_timeout, clock
        self._max: dict[str, int] = {}
        self._seen: dict[str, float] = {}
        self._declared: dict[str, float] = {}
        """Declared partitions without a row yet, and when they were declared."""
        self._ended: set[str] = set()

    def declare(self, open_partitions: Iterable[str], ended: Iterable[str] = ()) -> None:
        """The source reads ``open_partitions`` now, and every row of ``ended`` was handed
        over (SHARD_END). An open partition without a row holds ``W`` back from its first
        declaration until it delivers or ``idle_timeout`` passes; one no longer declared
        before delivering stops holding. An ended partition that delivered rows keeps
        holding ``W`` until ``idle_timeout`` after its last row, like any other: its
        children (after a reshard) are declared only once leased and their parents are
        done, and their first rows may be older than the other partitions' maxima. An
        ended partition that never delivered never holds."""
        now = self._clock()
        self._ended.update(ended)
        current = {p for p in open_partitions if p not in self._max and p not in self._ended}
        self._declared = {p: self._declared.get(p, now) for p in current}

    def observe(
        self, ticks: pl.Series, partitions: pl.Series | pa.Array | None = None
    ) -> None:
        """Take in one batch: event times ``ticks`` (integers) of its rows, and the
        partition of each row (same length; strings, or dictionary-encoded strings as
        :func:`rows_by_partition` makes) or None for a single-partition source."""
        if not len(ticks):
            return
        if partitions is None:
            top = ticks.max()
            maxima: dict[str | None, int] = {SINGLE: top} if isinstance(top, int) else {}
        else:
            if len(partitions) != len(ticks):
                raise ValueError(f"{len(partitions)} partitions for {len(ticks)} rows")
            names = partitions if isinstance(partitions, pl.Series) else pl.Series(partitions)
            frame = pl.DataFrame({"p": names.cast(pl.String), "t": ticks})
            grouped = frame.drop_nulls("t").group_by("p").agg(pl.col("t").max())
            maxima = dict(zip(grouped["p"].to_list(), grouped["t"].to_list(), strict=True))
        now = self._clock()
        for part, top in maxima.items():
            key = SINGLE if part is None else str(part)
            if key not in self._max or top > self._max[key]:
                self._max[key] = int(top)
            self._seen[key] = now
            self._declared.pop(key, None)

    def basis(self) -> int | None:
        """The event time the watermark follows (before the delay), or None (``W`` stays)
        before any row with an event time and while a declared partition is waiting."""
        if not self._max:
            return None
        if self.policy == "global":
            return max(self._max.values())
        now = self._clock()
        if any(now - t < self.idle_timeout for t in self._declared.values()):
            return None
        idle = self.idle_timeout
        active = [m for p, m in self._max.items() if now - self._seen[p] < idle]
        return min(active) if active else max(self._max.values())

    @property
    def maxima(self) -> dict[str, int]:
        """Largest event time per partition (for the checkpoint)."""
        return dict(self._max)

    def idle(self) -> list[str]:
        """Partitions not holding the watermark back now: no row for ``idle_timeout`` (or
        none since declared that long ago)."""
        now = self._clock()
        since = {**self._declared, **self._seen}
        return sorted(p for p, t in since.items() if now - t >= self.idle_timeout)

    def restore(self, maxima: Mapping[str, int] | None) -> None:
        """Resume from a checkpoint: every restored partition counts as active now."""
        now = self._clock()
        self._max = {str(p): int(m) for p, m in (maxima or {}).items()}
        self._seen = dict.fromkeys(self._max, now)
        self._declared = {p: t for p, t in self._declared.items() if p not in self._max}


def rows_by_partition(
    counts: Sequence[tuple[str, int]], dead_partitions: Sequence[str], n_rows: int
) -> pa.DictionaryArray | None:
    """The partition of each decoded row, for a source whose decoder turned its records,
    taken partition by partition in ``counts`` order, into one row each in the same order
    (JSON, raw), the records of ``dead_partitions`` (one entry per dead letter) removed.
    None when the numbers do not add up (a decoder that makes several rows per record):
    the engine then treats the batch as one partition."""
    dead: dict[str, int] = {}
    for part in dead_partitions:
        dead[part] = dead.get(part, 0) + 1
    kept = [max(n - dead.get(p, 0), 0) for p, n in counts]
    if sum(kept) != n_rows:
        return None
    index = np.repeat(np.arange(len(kept), dtype=np.int32), kept)
    names = pa.array([p for p, _ in counts], pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(index, pa.int32()), names)
