"""Soak of ``apply_in_pandas_with_state`` (or, with ``--operator transform``,
``transform_with_state_in_pandas``): state stays bounded when timeouts (timers) remove it.

Usage:
    .venv/bin/python bench/soak_stateful.py [--minutes 10] [--keys-per-batch 200]
        [--operator apply|transform] [--warmup-batches 150]

One in-process query: a memory stream, ``with_watermark("ts", "5 seconds")``, sessions
per key with ``EventTimeTimeout`` (gap 10 s; the timeout call emits the session and
removes the state; with ``transform``, a processor with one value state and one
event-time timer per key at last + gap that emits and clears it), update mode, a local
checkpoint (deltas and snapshots), a foreach-batch sink that only counts rows; the memory
stream drops what the query has committed (``keep_committed=False``). Each
batch advances event time by one second and holds ``--keys-per-batch`` new keys plus
rows of the keys of the previous four batches, so about ``15 x keys-per-batch``
sessions are open at any time while an unbounded number of keys passes through. Every
10 s it samples the process's resident set (``VmRSS``) and the state rows; at the end
it prints the least-squares slope of RSS over the samples taken after ``--warmup-batches``
batches (the allocators and the 100-record progress log fill up over the first ~100-150
batches, whatever the wall time: a warm-up in minutes took only ~40 batches on a loaded
machine and reported that fill as growth), per minute and per batch, the state rows'
range, and the batches run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

import streamkit as sk

SCHEMA = pa.schema([("ts", pa.timestamp("us", "UTC")), ("k", pa.int64())])
T0 = datetime(2024, 1, 1, tzinfo=UTC)
GAP_MS = 10_000


def sessions(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any) -> Iterator[Any]:
    """(count, last) per key; emitted and removed when the watermark passes last + gap."""
    if state.has_timed_out:
        n, last = state.get
        state.remove()
        yield pd.DataFrame({"k": [key[0]], "n": [n], "last": [last]})
        return
    n, last = state.get if state.exists else (0, 0)
    for pdf in pdfs:
        n, last = n + len(pdf), max(last, int(pdf["ts"].max().timestamp() * 1000))
    state.update((n, last))
    state.set_timeout_timestamp(max(last + GAP_MS, state.get_current_watermark_ms()))


class Sessions(sk.StatefulProcessor):
    """``sessions`` as a processor: (count, last) per key, one timer at last + gap."""

    def init(self, handle: sk.StatefulProcessorHandle) -> None:
        self.handle = handle
        self.state = handle.get_value_state("session", "n bigint, last bigint")

    def handle_input_rows(self, key: Any, rows: Iterator[pd.DataFrame], timer_values: Any) -> Any:
        n, last = self.state.get() or (0, 0)
        for pdf in rows:
            n, last = n + len(pdf), max(last, int(pdf["ts"].max().timestamp() * 1000))
        self.state.update((n, last))
        for at in self.handle.list_timers():
            self.handle.delete_timer(at)
        self.handle.register_timer(last + GAP_MS)
        return iter(())

    def handle_expired_timer(self, key: Any, timer_values: Any, info: Any) -> Any:
        n, last = self.state.get() or (0, 0)
        self.state.clear()
        yield pd.DataFrame({"k": [key[0]], "n": [n], "last": [last]})


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def batch_rows(i: int, per_batch: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Batch ``i``: new keys ``i * per_batch ..`` and 2 rows each for the last 4 batches'."""
    ts = T0 + timedelta(seconds=i)
    keys = np.arange(max(0, i - 4) * per_batch, (i + 1) * per_batch)
    keys = np.concatenate([keys, rng.choice(keys, size=keys.size)])
    return [{"ts": ts, "k": int(k)} for k in keys]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--keys-per-batch", type=int, default=200)
    p.add_argument("--operator", choices=("apply", "transform"), default="apply")
    p.add_argument("--warmup-batches", type=int, default=150)
    args = p.parse_args()
    rng = np.random.default_rng(7)
    emitted = [0]

    def count(frame: sk.DataFrame, batch_id: int) -> None:
        emitted[0] += frame.count()

    # keep_committed=False: the default stream keeps every row added, which grew RSS by the
    # input's size (~32 kB a batch) and hid whether the engine's own memory is flat
    events = sk.read_stream.memory(SCHEMA, keep_committed=False)
    grouped = events.with_watermark("ts", "5 seconds").group_by("k")
    out = "k bigint, n bigint, last bigint"
    if args.operator == "transform":
        query = grouped.transform_with_state_in_pandas(Sessions(), out, "update", "EventTime")
    else:
        query = grouped.apply_in_pandas_with_state(
            sessions, out, "n bigint, last bigint", "update", "EventTimeTimeout"
        )
    with tempfile.TemporaryDirectory(prefix="soak-stateful-") as ck:
        handle = query.write_stream.output_mode("update").checkpoint(ck).foreach_batch(count)
        q = handle.start()
        start = time.monotonic()
        samples: list[tuple[float, float, int, int]] = []  # minutes, RSS MB, state, batch
        next_sample, i = start, 0
        try:
            while time.monotonic() - start < args.minutes * 60:
                events.stream.add_rows(batch_rows(i, args.keys_per_batch, rng))
                q.process_all_available(timeout=300)
                i += 1
                if time.monotonic() >= next_sample:
                    held = q.recent_progress[-1].state_rows if q.recent_progress else 0
                    samples.append(((time.monotonic() - start) / 60, rss_mb(), held, i))
                    next_sample += 10
        finally:
            q.stop()
    warm = [s for s in samples if s[3] >= args.warmup_batches]
    if len(warm) < 2:
        raise SystemExit(f"only {len(warm)} samples after {args.warmup_batches} batches "
                         f"({i} batches run): run longer or lower --warmup-batches")  # fmt: skip
    slope = float(np.polyfit([s[0] for s in warm], [s[1] for s in warm], 1)[0])
    per_batch = float(np.polyfit([s[3] for s in warm], [s[1] for s in warm], 1)[0]) * 1000
    counts = [s[2] for s in samples]
    print(f"batches {i}, rows emitted {emitted[0]}, keys seen {i * args.keys_per_batch}")
    print(f"state rows min {min(counts)} max {max(counts)} last {counts[-1]}")
    print(f"RSS first {samples[0][1]:.1f} MB, last {samples[-1][1]:.1f} MB, "
          f"max {max(s[1] for s in samples):.1f} MB")  # fmt: skip
    print(f"RSS slope after {args.warmup_batches} batches: {slope:+.3f} MB/min, "
          f"{per_batch:+.1f} kB/batch over {len(warm)} samples")  # fmt: skip


if __name__ == "__main__":
    main()
