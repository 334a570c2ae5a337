"""Soak of a stream-stream join: is the join state bounded by the watermark?

A feeder thread writes one Parquet file per side every ``--period`` seconds (impressions
on the left, clicks on the right), each covering the next 10 s of event time, and deletes
files 100 behind (each source forgets files older than 2 minutes). A left outer join
(``id`` equal, click within 60 s of the impression, watermarks of 30 s on both sides)
runs in this process with a processing-time trigger and a foreach-batch sink that counts
rows. Every second the process's resident set (``VmRSS``) and the rows buffered in the
join state are sampled; at the end the script prints the least-squares RSS slope after
the warm-up, in MB per minute, and the range of the state rows (flat when eviction keeps
up); beside it the same for pyarrow's allocated bytes (a leak of Arrow buffers) and for RSS
less the pages freed lazily (``LazyFree``, still counted in RSS), and the load average.

    .venv/bin/python bench/soak_stream_join.py --duration 600
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import streamkit as sk

TS = pa.timestamp("us", "UTC")
LEFT = pa.schema([("it", TS), ("id", pa.int64()), ("ad", pa.int64())])
RIGHT = pa.schema([("ct", TS), ("click_id", pa.int64()), ("cost", pa.int64())])
SPAN_US = 10_000_000
"""Event time covered by one file."""
T0_US = 1_704_067_200_000_000


def _write(path: Path, table: pa.Table) -> None:
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.rename(path)


def feed(root: Path, rows: int, period: float, stop: threading.Event) -> None:
    """Write file i of each side every ``period`` s until ``stop``; drop file i - 100."""
    rng = np.random.default_rng(7)
    i, started = 0, time.monotonic()
    while not stop.is_set():
        wait = started + i * period - time.monotonic()
        if wait > 0 and stop.wait(wait):
            return
        base = T0_US + i * SPAN_US
        it = base + rng.integers(0, SPAN_US, rows)
        ids = rng.integers(0, 1 << 40, rows)
        left = pa.table([pa.array(it).cast(TS), ids, rng.integers(0, 99, rows)], schema=LEFT)
        clicked = rng.random(rows) < 0.3  # 30% of impressions are clicked within 60 s
        ct = it[clicked] + rng.integers(0, 60_000_000, int(clicked.sum()))
        cols = [pa.array(ct).cast(TS), ids[clicked], rng.integers(1, 9, int(clicked.sum()))]
        _write(root / "left" / f"f-{i:06d}.parquet", left)
        _write(root / "right" / f"f-{i:06d}.parquet", pa.table(cols, schema=RIGHT))
        for side in ("left", "right"):
            (root / side / f"f-{i - 100:06d}.parquet").unlink(missing_ok=True)
        i += 1


def vm_rss() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def lazy_free() -> int:
    """Bytes of this process's pages freed with ``MADV_FREE`` (counted in RSS until the
    kernel needs them back)."""
    for line in Path(f"/proc/{os.getpid()}/smaps_rollup").read_text().splitlines():
        if line.startswith("LazyFree:"):
            return int(line.split()[1]) * 1024
    return 0


def slope_mb_per_min(samples: list[tuple[float, int]], warmup: float) -> float:
    """Least-squares slope of RSS over time after ``warmup`` s, MB per minute."""
    kept = [(t, r) for t, r in samples if t >= warmup]
    if len(kept) < 3:
        return float("nan")
    t = np.array([s[0] for s in kept]) / 60
    r = np.array([s[1] for s in kept]) / 2**20
    return float(np.polyfit(t, r, 1)[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=600.0)
    p.add_argument("--rows", type=int, default=2000, help="impressions per file")
    p.add_argument("--period", type=float, default=1.0, help="seconds between files")
    p.add_argument("--warmup", type=float, default=120.0)
    args = p.parse_args()
    random.seed(1)
    with tempfile.TemporaryDirectory(prefix="soak-join-") as tmp:
        root = Path(tmp)
        (root / "left").mkdir()
        (root / "right").mkdir()
        read = sk.read_stream.files
        # max_file_age bounds the file list in each offsets entry (files come in real time)
        imps = read(str(root / "left"), format="parquet", schema=LEFT, max_file_age="2 minutes")
        clicks = read(str(root / "right"), format="parquet", schema=RIGHT, max_file_age="2 minutes")
        cond = (
            (sk.col("click_id") == sk.col("id"))
            & (sk.col("ct") >= sk.col("it"))
            & (sk.col("ct") <= sk.col("it") + timedelta(seconds=60))
        )
        joined = imps.with_watermark("it", "30 seconds").join(
            clicks.with_watermark("ct", "30 seconds"), cond, "left"
        )
        emitted = [0, 0]

        def count(frame: sk.DataFrame, batch_id: int) -> None:
            table = frame.to_arrow()
            emitted[0] += table.num_rows
            emitted[1] += table.column("click_id").null_count

        stop = threading.Event()
        feeder = threading.Thread(target=feed, args=(root, args.rows, args.period, stop))
        q = (
            joined.write_stream.trigger(processing_time="1 second")
            .checkpoint(str(root / "ck")).foreach_batch(count).start()
        )  # fmt: skip
        feeder.start()
        samples: list[tuple[float, int]] = []
        arrow: list[tuple[float, int]] = []  # pyarrow's allocated bytes (default pool)
        lazy: list[tuple[float, int]] = []
        states: list[tuple[float, int]] = []
        started = time.monotonic()
        try:
            while (now := time.monotonic() - started) < args.duration:
                samples.append((now, vm_rss()))
                arrow.append((now, pa.total_allocated_bytes()))
                lazy.append((now, lazy_free()))
                progress = q.last_progress
                if progress is not None:
                    states.append((now, progress.state_rows))
                time.sleep(1.0)
        finally:
            stop.set()
            feeder.join()
            q.stop()
        late_states = [s for t, s in states if t >= args.warmup]
        rss = [r / 2**20 for _, r in samples]
        resident = [(t, r - b) for (t, r), (_, b) in zip(samples, lazy, strict=True)]
        report = {
            "duration_s": args.duration,
            "rows_per_side_per_s": args.rows / args.period,
            "batches": len(q.recent_progress) and q.recent_progress[-1].batch_id + 1,
            "rows_emitted": emitted[0],
            "unmatched_emitted": emitted[1],
            "rss_mb_first_last_max": [round(rss[0]), round(rss[-1]), round(max(rss))],
            "rss_slope_mb_per_min_after_warmup": round(slope_mb_per_min(samples, args.warmup), 3),
            "lazy_free_mb_first_last_max": [
                round(b / 2**20, 1) for b in (lazy[0][1], lazy[-1][1], max(b for _, b in lazy))
            ],
            "rss_minus_lazy_free_slope_mb_per_min_after_warmup": round(
                slope_mb_per_min(resident, args.warmup), 3
            ),
            "arrow_allocated_mb_first_last_max": [
                round(a / 2**20, 1) for a in (arrow[0][1], arrow[-1][1], max(a for _, a in arrow))
            ],
            "arrow_allocated_slope_mb_per_min_after_warmup": round(
                slope_mb_per_min(arrow, args.warmup), 3
            ),
            "arrow_pool": pa.default_memory_pool().backend_name,
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "state_rows_after_warmup_min_max_last": [
                min(late_states, default=0), max(late_states, default=0),
                late_states[-1] if late_states else 0,
            ],
        }  # fmt: skip
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
