"""How many workers a Kinesis application needs, and whether the stream itself is the
bottleneck: pure arithmetic over measured figures (``streamkit status`` measures them).

- demand (records/s) = incoming rate + backlog / ``catch_up`` seconds;
- workers needed = ceil(demand / per-worker throughput), at least 1, at most one per open
  shard (a worker beyond that would hold no lease);
- the stream is the bottleneck when every open shard takes in at least
  :data:`AT_LIMIT` of a shard's write limit (1,000 records/s or 1 MiB/s): more workers
  cannot read what producers cannot write. Then the fix is more shards, and
  :func:`update_shard_count_command` doubles them (the most one ``UpdateShardCount`` call
  allows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RECORDS_LIMIT = 1000.0
"""Records/s one shard accepts (Kinesis' write limit)."""
BYTES_LIMIT = 1024.0 * 1024.0
"""Bytes/s one shard accepts."""
AT_LIMIT = 0.9
"""A shard taking in this share of either limit is at its limit (rates are sampled)."""


@dataclass(frozen=True)
class ShardLoad:
    """One open shard as measured."""

    shard: str
    records_behind: int
    """Records after the application's checkpoint (up to the counting limit)."""
    capped: bool
    """True when there may be more than ``records_behind``."""
    incoming_records: float
    """Records/s written to the shard."""
    incoming_bytes: float
    """Bytes/s written to the shard."""


@dataclass(frozen=True)
class Verdict:
    """What the figures call for."""

    workers_now: int
    open_shards: int
    backlog: int
    """Records behind over all open shards (a lower bound when ``capped``)."""
    capped: bool
    incoming: float
    """Records/s written over all open shards."""
    per_worker: float | None
    """Records/s one worker processes (None: unknown)."""
    workers_needed: int | None
    """None when ``per_worker`` is unknown."""
    shard_bound: bool
    """True when the arithmetic asked for more workers than open shards."""
    stream_bottleneck: bool
    """Every open shard at its write limit."""


def at_write_limit(load: ShardLoad) -> bool:
    """True when the shard takes in :data:`AT_LIMIT` of its records or bytes limit."""
    return (
        load.incoming_records >= AT_LIMIT * RECORDS_LIMIT
        or load.incoming_bytes >= AT_LIMIT * BYTES_LIMIT
    )


def plan(
    loads: list[ShardLoad], workers_now: int, per_worker: float | None, catch_up: float
) -> Verdict:
    """The verdict for ``loads`` (open shards), ``per_worker`` records/s per worker, and a
    backlog to clear within ``catch_up`` seconds."""
    if catch_up <= 0:
        raise ValueError(f"catch_up must be > 0 seconds, got {catch_up}")
    backlog = sum(x.records_behind for x in loads)
    incoming = sum(x.incoming_records for x in loads)
    needed: int | None = None
    bound = False
    if per_worker is not None and per_worker > 0:
        raw = max(1, math.ceil((incoming + backlog / catch_up) / per_worker - 1e-9))
        bound = raw > max(1, len(loads))
        needed = min(raw, max(1, len(loads)))
    return Verdict(
        workers_now=workers_now, open_shards=len(loads), backlog=backlog,
        capped=any(x.capped for x in loads), incoming=incoming, per_worker=per_worker,
        workers_needed=needed, shard_bound=bound,
        stream_bottleneck=bool(loads) and all(at_write_limit(x) for x in loads),
    )  # fmt: skip


def update_shard_count_command(stream: str, open_shards: int) -> str:
    """The AWS CLI call that doubles the stream's open shards."""
    return (
        f"aws kinesis update-shard-count --stream-name {stream} "
        f"--target-shard-count {2 * open_shards} --scaling-type UNIFORM_SCALING"
    )


def verdict_lines(v: Verdict, stream: str, catch_up: float) -> list[str]:
    """The lines ``streamkit status`` prints under its tables."""
    more = "≥" if v.capped else ""
    lines = [
        f"backlog {more}{v.backlog:,} record(s), {v.incoming:,.1f} record(s)/s coming in, "
        f"{v.workers_now} worker(s) holding leases"
    ]
    if v.workers_needed is None:
        lines.append(
            "scale: unknown per-worker throughput (nothing was processed while sampling); "
            "pass --per-worker-rate RECORDS_PER_SECOND"
        )
    else:
        assert v.per_worker is not None
        lines.append(
            f"scale: {v.workers_needed} worker(s) needed for {v.incoming:,.1f} records/s plus "
            f"the backlog within {catch_up:g} s at {v.per_worker:,.1f} records/s per worker"
            + (" (one per open shard: more would hold no lease)" if v.shard_bound else "")
        )
    if v.stream_bottleneck:
        lines.append(
            "the stream is the bottleneck: every open shard is at its write limit "
            "(1,000 records/s or 1 MiB/s); more shards are needed, e.g.:"
        )
        lines.append("  " + update_shard_count_command(stream, v.open_shards))
    return lines
