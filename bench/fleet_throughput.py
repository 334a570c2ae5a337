"""Fleet mode against one process: records per worker CPU-second and throughput, same query.

Usage:
    nice -n 15 .venv/bin/python bench/fleet_throughput.py [--records 200000 ...] [--repeat 3]
        [--shards 4] [--keys 1000] [--modes single fleet1 fleet2 fleet2:g1] [--timeout 600]

Data: ``--records`` small JSON records ``{"event_time", "key", "value"}`` (event times
uniform over 10 minutes, ``--keys`` distinct keys, integer values), put to a ``--shards``
stream on kinesalite (started here) with a random partition key each, so every key is on
every shard. Leases live on LocalStack's DynamoDB (started here,
or ``$STREAMKIT_AWS_ENDPOINT``).

Query (``_fleet_job.py``): count and ``sum(value)`` per (1-minute tumbling window, key),
watermark 10 minutes, update mode, Parquet sink: ~10 x ``--keys`` groups. Update, not
append: append needs records that close the last windows, and on a backlog one process's
watermark (Spark's rule: the largest event time over all shards) jumps ahead as soon as one
shard's closing record is read, dropping the other shards' remaining rows as late; the
fleet's watermark (the minimum over shards) would not, so the two modes would not compute
the same thing.

Modes, one job file: ``single`` = ``streamkit run _fleet_job.py`` (one process, the
single-process engine); ``fleetN`` = N processes ``streamkit worker _fleet_job.py`` (source
tasks, the Kinesis exchange stream of 4 shards, aggregation tasks); ``fleetN:gG`` the same
with the consumer's ``gather_records`` = G (``fleet2:g1``: a source batch per GetRecords
read, as before source tasks gathered reads behind the tip). Each run reads the whole
backlog with a fresh application (lease tables) and checkpoint root. The fleet refuses
triggers that stop by themselves (``available_now``), so no mode uses one: a run is
complete when its sink holds the full result (``_fleet_run.py``), measured from process
start (interpreter, imports and lease taking included) to that moment. Every run's sink is
compared row by row with the ground truth computed by DuckDB from the records put; a wrong
or incomplete run is reported and makes the exit status 1.

Measured per run: wall seconds, CPU seconds (user + system) of the streamkit process trees
(kinesalite's and LocalStack's CPU in the same interval reported apart; the CPU the
processes spend once caught up, per second, measured over 5 s after completion), rows/s =
records / wall, and records per worker CPU-second = records / streamkit CPU. Modes are
interleaved (the order rotates each repetition); medians over ``--repeat`` runs. The
exchange's cost is single's records per CPU-second over the fleet's (target <= 1.5).

Fixed against per-record cost: with two or more ``--records`` sizes (e.g. ``100000 400000``,
same seed, keys and shape; one stream per size, every (size, mode) pair interleaved and
rotated each repetition), each mode's CPU is fitted as ``intercept + slope x records``
through the medians at the smallest and the largest size: the slope is the marginal CPU per
record (everything that grows with the backlog: reading, decoding, the exchange, per-batch
checkpoints and status files, and the polls and lease renewals of a run that lasts longer),
the intercept the fixed CPU per run (interpreters, imports, clients, lease tables, the
result's ~10 x ``--keys`` groups). The exchange's marginal cost is the fleet's slope over
single's (target <= 1.5); the from-start ratio of each size is still reported beside it, and
the CPU once caught up (per second), which a long-running fleet pays all the time.

Writes bench/results/fleet_throughput_<UTC>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from _fleet_run import RunResult, Servers, run_once

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BASE_US = int(datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()) * 1_000_000
SPAN_US = 10 * 60 * 1_000_000
TARGET = 1.5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_data(records: int, keys: int, seed: int) -> tuple[pa.Table, list[bytes]]:
    """The records as an Arrow table and as JSON payloads (vectorised, seeded)."""
    rng = np.random.default_rng(seed)
    times = BASE_US + rng.integers(0, SPAN_US, records)
    key_ids = rng.integers(0, keys, records)
    values = rng.integers(1, 1000, records)
    table = pa.table(
        {
            "event_time": pa.array(times, pa.timestamp("us", "UTC")),
            "key": pa.array(np.char.add("k", key_ids.astype(str)), pa.string()),
            "value": pa.array(values, pa.int64()),
        }
    )
    iso = np.datetime_as_string(times.astype("datetime64[us]"), unit="us")
    payloads = [
        b'{"event_time":"%sZ","key":"k%d","value":%d}' % (t.encode(), k, v)
        for t, k, v in zip(iso.tolist(), key_ids.tolist(), values.tolist(), strict=True)
    ]
    return table, payloads


def ground_truth(table: pa.Table) -> pa.Table:
    """count and sum(value) per (1-minute window start in µs, key), by DuckDB."""
    con = duckdb.connect()
    con.register("events", table)
    return con.sql(
        "SELECT epoch_us(event_time) // 60000000 * 60000000 AS start, key, "
        "count(*)::BIGINT AS n, sum(value)::BIGINT AS total FROM events GROUP BY ALL"
    ).to_arrow_table()


def fill(endpoint: Any, stream: str, shards: int, payloads: list[bytes]) -> float:
    """Create the stream, put the payloads (random partition keys, 500 per call, 4 threads);
    returns records/s."""
    import time
    import uuid

    client = endpoint.client("kinesis", max_pool_connections=8)
    client.create_stream(StreamName=stream, ShardCount=shards)
    client.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})

    def put(start: int) -> None:
        batch = [{"Data": d, "PartitionKey": uuid.uuid4().hex}
                 for d in payloads[start : start + 500]]  # fmt: skip
        while batch:
            out = client.put_records(StreamName=stream, Records=batch)
            batch = [r for r, o in zip(batch, out["Records"], strict=True) if "ErrorCode" in o]

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, range(0, len(payloads), 500)))
    return len(payloads) / (time.perf_counter() - started)


def _median(runs: list[RunResult], attr: str) -> float:
    values = [float(getattr(r, attr)) for r in runs if r.error is None]
    return statistics.median(values) if values else float("nan")


def summary(runs: list[RunResult], modes: list[str], records: int) -> dict[str, dict[str, float]]:
    """Per mode, the medians of every figure over its correct runs on ``records``."""
    attrs = ("wall_s", "cpu_s", "startup_cpu_s", "rows_per_s", "records_per_cpu_s",
             "records_per_cpu_s_after_startup", "kinesalite_cpu_s", "localstack_cpu_s",
             "sink_rows", "idle_cpu_per_s")  # fmt: skip
    out = {}
    for mode in modes:
        mine = [r for r in runs if r.mode == mode and r.records == records]
        out[mode] = {a: _median(mine, a) for a in attrs} | {
            "ok_runs": float(sum(r.error is None for r in mine)),
            "runs": float(len(mine)),
        }
    return out


def marginal(sizes: dict[int, dict[str, dict[str, float]]], runs: list[RunResult],
             modes: list[str]) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per mode, CPU = intercept + slope x records through the medians at the smallest and
    largest size; also the slope of each repetition's own pair (its spread shows the noise)
    and kinesalite's slope (the exchange's puts and reads land there too)."""
    small, big = min(sizes), max(sizes)
    out = {}
    for mode in modes:
        lo, hi = sizes[small][mode], sizes[big][mode]
        slope = (hi["cpu_s"] - lo["cpu_s"]) / (big - small)
        kin_slope = (hi["kinesalite_cpu_s"] - lo["kinesalite_cpu_s"]) / (big - small)
        pairs = []
        for rep in sorted({r.rep for r in runs}):
            got = {r.records: r.cpu_s for r in runs
                   if r.mode == mode and r.rep == rep and r.error is None}  # fmt: skip
            if small in got and big in got:
                pairs.append((got[big] - got[small]) / (big - small))
        out[mode] = {
            "slope_us": slope * 1e6,
            "intercept_s": lo["cpu_s"] - slope * small,
            "pair_min_us": min(pairs) * 1e6 if pairs else float("nan"),
            "pair_max_us": max(pairs) * 1e6 if pairs else float("nan"),
            "kinesalite_slope_us": kin_slope * 1e6,
            "idle_cpu_per_s": _median([r for r in runs if r.mode == mode], "idle_cpu_per_s"),
            "cpu_small": lo["cpu_s"],
            "cpu_big": hi["cpu_s"],
        }
    return out


def marginal_markdown(meta: dict[str, Any], fit: dict[str, dict[str, float]]) -> list[str]:
    small, big = min(meta["records"]), max(meta["records"])
    lines = [
        f"### Fixed and per-record CPU ({small:,} and {big:,} records)",
        "",
        f"| mode | CPU s at {small:,} | CPU s at {big:,} | marginal µs CPU / record "
        "(per-rep pairs) | marginal records / CPU-s | fixed CPU s per run (intercept) | "
        "kinesalite µs / record | CPU s/s once caught up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, f in fit.items():
        lines.append(
            f"| {mode} | {f['cpu_small']:.2f} | {f['cpu_big']:.2f} | {f['slope_us']:.1f} "
            f"({f['pair_min_us']:.1f} to {f['pair_max_us']:.1f}) | {1e6 / f['slope_us']:,.0f} | "
            f"{f['intercept_s']:.2f} | {f['kinesalite_slope_us']:.1f} | "
            f"{f['idle_cpu_per_s']:.3f} |"
        )
    lines.append("")
    single = fit.get("single")
    for mode, f in fit.items():
        if mode != "single" and single:
            ratio = f["slope_us"] / single["slope_us"]
            verdict = "meets" if ratio <= TARGET else "**misses**"
            lines.append(f"- exchange's marginal cost, {mode} / single CPU per record: "
                         f"**{ratio:.2f}x** (target <= {TARGET}x: {verdict}); fixed CPU "
                         f"per run {f['intercept_s']:.2f} s against "
                         f"{single['intercept_s']:.2f} s")  # fmt: skip
    return [*lines, ""]


def markdown(meta: dict[str, Any], runs: list[RunResult],
             sizes: dict[int, dict[str, dict[str, float]]]) -> str:  # fmt: skip
    lines = [
        f"## Fleet vs one process, {' and '.join(f'{n:,}' for n in meta['records'])} "
        f"records, {meta['shards']} shards (kinesalite), medians of {meta['repeat']}",
        "",
        f"{meta['started']} to {meta['finished']}; {meta['cpus']} cores shared with other work "
        f"(load {meta['loadavg_start']:.1f} at start, {meta['loadavg_end']:.1f} at end); "
        f"consumer idle_time {meta['idle_time']} s; backlog written at "
        + ", ".join(f"{r:,.0f}" for r in meta["write_rate"])
        + f" records/s. Command: `{meta['command']}`",
        "",
    ]
    for records, summ in sizes.items():
        lines += size_markdown(records, meta["groups"][str(records)], summ)
    if len(sizes) > 1:
        lines += marginal_markdown(meta, marginal(sizes, runs, list(next(iter(sizes.values())))))
    lines += ["Runs (in order):", ""]
    for r in runs:
        status = "ok" if r.error is None else f"**{r.error}**"
        lines.append(f"- rep {r.rep} {r.mode} {r.records:,}: {r.wall_s:.1f} s wall, "
                     f"{r.cpu_s:.2f} s CPU, load {r.loadavg_1m:.1f}: {status}")  # fmt: skip
    return "\n".join(lines) + "\n"


def size_markdown(records: int, groups: int, summ: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        f"### {records:,} records ({groups:,} result groups), measured from process start",
        "",
        "| mode | workers | wall s | rows/s | streamkit CPU s | of which start-up | "
        "records / CPU-s | same, start-up excluded | kinesalite CPU s | LocalStack CPU s | "
        "rows written | idle CPU s/s | correct runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, s in summ.items():
        workers = mode_workers(mode)
        lines.append(
            f"| {mode} | {workers} | {s['wall_s']:.1f} | {s['rows_per_s']:,.0f} | "
            f"{s['cpu_s']:.1f} | {s['startup_cpu_s']:.1f} | {s['records_per_cpu_s']:,.0f} | "
            f"{s['records_per_cpu_s_after_startup']:,.0f} | "
            f"{s['kinesalite_cpu_s']:.1f} | {s['localstack_cpu_s']:.1f} | "
            f"{s['sink_rows']:,.0f} | {s['idle_cpu_per_s']:.3f} | "
            f"{s['ok_runs']:.0f}/{s['runs']:.0f} |"
        )
    lines.append("")
    single = summ.get("single", {})
    for mode, s in summ.items():
        if mode != "single" and single:
            ratio = single["records_per_cpu_s"] / s["records_per_cpu_s"]
            late = single["records_per_cpu_s_after_startup"] / s["records_per_cpu_s_after_startup"]
            verdict = "meets" if ratio <= TARGET else "**misses**"
            lines.append(f"- exchange cost from start, single / {mode} records per CPU-s: "
                         f"**{ratio:.2f}x** (target <= {TARGET}x: {verdict}); start-up "
                         f"excluded {late:.2f}x")  # fmt: skip
    if "fleet1" in summ and "fleet2" in summ:
        speedup = summ["fleet2"]["rows_per_s"] / summ["fleet1"]["rows_per_s"]
        lines.append(f"- fleet throughput, 2 workers / 1 worker (rows/s): **{speedup:.2f}x**")
    return [*lines, ""]


MODE = re.compile(r"single|fleet[1-9][0-9]*(:g[1-9][0-9]*)?")
"""``single``, ``fleetN`` (N workers) or ``fleetN:gG`` (the consumer's ``gather_records``
= G; ``:g1``: a source batch per GetRecords read)."""


def mode_workers(mode: str) -> int:
    """The processes a mode runs."""
    return 1 if mode == "single" else int(mode.removeprefix("fleet").partition(":")[0])


def measure(args: argparse.Namespace, servers: Servers, kinesis: Any) -> int:
    import uuid

    sizes: list[int] = sorted(set(args.records))
    streams, truths, rates = {}, {}, []
    for records in sizes:
        table, payloads = make_data(records, args.keys, args.seed)
        truths[records] = ground_truth(table)
        streams[records] = f"fleetbench-{uuid.uuid4().hex[:8]}"
        log(f"writing {records:,} records over {args.shards} shards ...")
        rates.append(fill(kinesis, streams[records], args.shards, payloads))
        log(f"  {rates[-1]:,.0f} records/s; ground truth: {truths[records].num_rows:,} groups")
        del table, payloads
    pairs = [(records, mode) for records in sizes for mode in args.modes]
    runs: list[RunResult] = []
    for rep in range(1, args.repeat + 1):
        shift = (rep - 1) % len(pairs)
        for records, mode in pairs[shift:] + pairs[:shift]:
            workers = mode_workers(mode)
            gather = mode.partition(":g")[2]
            if gather:  # read by _fleet_job.py through the process's environment
                os.environ["FB_GATHER"] = gather
            run = run_once("single" if mode == "single" else "fleet", workers, rep,
                           stream=streams[records], servers=servers, truth=truths[records],
                           records=records, timeout=args.timeout)  # fmt: skip
            os.environ.pop("FB_GATHER", None)
            run = RunResult(**(asdict(run) | {"mode": mode}))
            log(f"  rep {rep} {mode:<7} {records:>8,} {run.wall_s:6.1f} s wall "
                f"{run.cpu_s:6.2f} s CPU {run.rows_per_s:9,.0f} rows/s "
                f"{run.records_per_cpu_s:9,.0f} rec/CPU-s load {run.loadavg_1m:.1f}"
                + (f"  ERROR {run.error}" if run.error else ""))  # fmt: skip
            runs.append(run)
    summ = {records: summary(runs, args.modes, records) for records in sizes}
    meta = {
        "started": args.started, "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "records": sizes, "shards": args.shards, "keys": args.keys,
        "groups": {str(n): t.num_rows for n, t in truths.items()},
        "repeat": args.repeat, "write_rate": rates, "idle_time": args.idle_time,
        "cpus": os.cpu_count(), "loadavg_start": args.loadavg,
        "loadavg_end": os.getloadavg()[0], "command": " ".join(["python", *sys.argv]),
    }  # fmt: skip
    text = markdown(meta, runs, summ)
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    (RESULTS_DIR / f"fleet_throughput_{stamp}.md").write_text(text)
    raw = {"meta": meta, "summary": {str(n): v for n, v in summ.items()},
           "marginal": marginal(summ, runs, args.modes) if len(sizes) > 1 else None,
           "runs": [asdict(r) for r in runs]}  # fmt: skip
    path = RESULTS_DIR / f"fleet_throughput_{stamp}.json"
    path.write_text(json.dumps(raw, indent=1))
    log(f"wrote {path} and .md")
    return 1 if any(r.error for r in runs) else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--records", type=int, nargs="+", default=[200_000],
                   help="backlog sizes; two or more also fit fixed + per-record CPU")  # fmt: skip
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--modes", nargs="+", default=["single", "fleet1", "fleet2"])
    p.add_argument("--timeout", type=float, default=600.0, help="per run, seconds")
    p.add_argument("--idle-time", type=float, default=1.5,
                   help="consumer idle_time of every mode (1.5 s = its default)")  # fmt: skip
    args = p.parse_args()
    bad = [m for m in args.modes if not MODE.fullmatch(m)]
    if bad or args.repeat < 1:
        p.error(
            "modes are single, fleetN (N workers) or fleetN:gG (gather_records G), "
            f"repeat >= 1; got {bad or args.repeat}"
        )
    args.loadavg = os.getloadavg()[0]
    args.started = datetime.now(UTC).isoformat(timespec="seconds")
    os.environ["FB_IDLE_TIME"] = str(args.idle_time)  # read by _fleet_job.py
    from streamkit.config import ENDPOINT_ENV, AwsEndpoint
    from streamkit.testing.servers import start_kinesalite, start_localstack

    with start_kinesalite() as kin:
        if os.environ.get(ENDPOINT_ENV):
            leases = AwsEndpoint.from_env()
            servers = Servers(kin.url, str(leases.url), kin.process.pid, None)
            return measure(args, servers, kin.endpoint)
        log("starting LocalStack ...")
        with start_localstack() as ls:
            servers = Servers(kin.url, ls.url, kin.process.pid, ls.process.pid)
            return measure(args, servers, kin.endpoint)


if __name__ == "__main__":
    sys.exit(main())
