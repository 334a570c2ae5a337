"""Soak: the state of ``drop_duplicates_within_watermark`` and of a chain of stateful
operators stays bounded by the watermark.

Each query runs in its own child process on the streaming engine the runner uses
(:func:`streamkit.streaming.chain.make_engine`), checkpointing every batch to a local
folder (deltas and snapshots, as a query does), fed generated micro-batches as fast as it
takes them: event time advances one second per batch, a third of the rows are re-sent
duplicates of recent rows and 2% arrive behind the watermark. The parent samples each
child's resident set every second; the report gives the RSS slope after a warm-up
(least squares, MB/min) and the state rows held at the start and the end.

    python bench/soak_operators.py --seconds 600

Queries (watermark 10 s on ``ts``):

- ``within``: ``drop_duplicates_within_watermark(["id"])``;
- ``chain``: ``drop_duplicates(["id", "ts"])``, a 1-minute count per key, then a 5-minute
  sum over ``window_time(window)`` (three stateful operators).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = 5_000
"""Rows per micro-batch."""
KEYS = 200


def _query(name: str) -> object:
    import pyarrow as pa

    import streamkit as sk

    schema = pa.schema([("ts", pa.timestamp("us", "UTC")), ("id", pa.int64()),
                        ("k", pa.int64()), ("v", pa.int64())])  # fmt: skip
    frame = sk.read_stream.memory(schema).with_watermark("ts", "10 seconds")
    if name == "within":
        return frame.drop_duplicates_within_watermark(["id"]).plan
    counts = (
        frame.drop_duplicates(["id", "ts"])
        .group_by(sk.window("ts", "1 minute"), "k").agg(sk.count().alias("n"))
    )  # fmt: skip
    second = counts.group_by(sk.window(sk.window_time("window"), "5 minutes"), "k")
    return second.agg(sk.sum("n").alias("n")).plan


def child(name: str, seconds: float) -> None:
    """Run query ``name`` for ``seconds``; print one JSON line per second (batch, state)."""
    import numpy as np
    import polars as pl

    from streamkit.streaming.chain import make_engine
    from streamkit.streaming.checkpoint import CheckpointLog
    from streamkit.streaming.checkpoint_store import LocalCheckpointStore

    engine = make_engine(_query(name), "append")  # type: ignore[arg-type]
    rng = np.random.default_rng(7)
    base = 1_704_067_200_000_000
    with tempfile.TemporaryDirectory(prefix="soak-ck-") as folder:
        log = CheckpointLog(LocalCheckpointStore(folder))
        end, report, batch, next_id = time.monotonic() + seconds, 0.0, 0, 0
        while time.monotonic() < end:
            now = base + batch * 1_000_000
            fresh = ROWS * 2 // 3
            ids = next_id + np.arange(fresh)
            ts = now - rng.integers(0, 3_000_000, fresh)
            again = rng.integers(max(0, next_id - 5 * fresh), next_id + fresh, ROWS - fresh)
            late = rng.random(ROWS - fresh) < 0.06  # 2% of all rows: 30 s behind
            ts_again = now - rng.integers(0, 5_000_000, ROWS - fresh) - late * 30_000_000
            next_id += fresh
            rows = pl.DataFrame({
                "ts": np.concatenate([ts, ts_again]),
                "id": np.concatenate([ids, again]),
                "k": rng.integers(0, KEYS, ROWS),
                "v": rng.integers(0, 100, ROWS),
            }).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))  # fmt: skip
            engine.run(rows)
            engine.checkpoint_state(log, batch)
            log.write_commit(batch, {}, {"watermark": engine.watermark})
            batch += 1
            if time.monotonic() >= report:
                print(json.dumps({"batch": batch, "state_rows": engine.state_rows}), flush=True)
                report = time.monotonic() + 1.0


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), in MB per minute."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(t for t, _ in points) / n
    my = sum(m for _, m in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return 60 * sum((t - mx) * (m - my) for t, m in points) / den if den else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--warmup", type=float, default=60)
    parser.add_argument("--queries", default="within,chain")
    args = parser.parse_args()
    names = args.queries.split(",")
    procs = {
        n: subprocess.Popen(
            [sys.executable, __file__, "--child", n, str(args.seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in names
    }
    started = time.monotonic()
    samples: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    while any(p.poll() is None for p in procs.values()):
        for n, p in procs.items():
            mb = rss_mb(p.pid) if p.poll() is None else None
            if mb is not None:
                samples[n].append((time.monotonic() - started, mb))
        time.sleep(1.0)
    for n, p in procs.items():
        assert p.stdout is not None
        lines = [json.loads(line) for line in p.stdout.read().splitlines() if line.strip()]
        if p.returncode != 0 or not lines:
            print(f"{n}: child failed (exit {p.returncode})")
            continue
        after = [(t, m) for t, m in samples[n] if t >= args.warmup]
        warm = list(lines[int(args.warmup) :]) or lines
        rss = [m for _, m in after] or [0.0]
        print(
            f"{n}: {lines[-1]['batch']} batches of {ROWS} rows; state rows after warm-up "
            f"{warm[0]['state_rows']} -> end {lines[-1]['state_rows']} "
            f"(max {max(x['state_rows'] for x in warm)}); RSS after warm-up {rss[0]:.0f} -> "
            f"{rss[-1]:.0f} MB (max {max(rss):.0f}); slope {slope(after):+.2f} MB/min"
        )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], float(sys.argv[3]))
    else:
        main()
