"""Spark Structured Streaming beside streamkit on W3: the Kinesis connector, else the file source.

Usage:
    .venv/bin/python bench/spark_kinesis.py [--records 200000] [--hours 16] [--batch 10000]
        [--reps 3] [--very-late 0] [--no-resolve]

First asks Maven Central for the awslabs Kinesis connector for Structured Streaming
(``CONNECTOR``, Spark 3.5 / Scala 2.12; ``mvn dependency:get``, no transitive dependencies)
and prints the outcome: it is published in an AWS-hosted bucket, not on Maven Central, so
Spark cannot read the Kinesis stream here, and Spark is measured on the file source instead.

One record set, ``--records`` rows of the W3 generator spread over its first ``--hours`` of
event time (so windows close and leave the state; no very late rows by default, so no row
falls behind the watermark whatever the batching),
is written twice: into a 4-shard kinesalite stream (one JSON record per row, as the Kinesis
W3 bench does; leases on LocalStack's DynamoDB) and as JSON-lines files of ``--batch`` rows,
one file per micro-batch. Then ``--reps`` rounds, the order rotating, each engine a fresh
process (``_w3_peer_run``): PySpark on the files, streamkit on the files, streamkit on
the stream (``--batch`` records per micro-batch at most), all with the ``available_now``
trigger. Reported, medians: rows/s over the query's run (start to last batch), p50/p95
batch latency, CPU seconds of the process tree (Spark's JVM included) over the run and
including start-up, peak RSS. Every final result is checked against an exact reference
(numpy over the generated rows, minus any rows an engine reported late) and against each
other. Exit status 1 if a run failed or a result differs. Writes
``bench/results/spark_kinesis_<UTC time>.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from _engines import WORKLOADS
from _proc_tree import usage
from _stream_gen import ROWS_PER_FILE, file_table, write_table
from _stream_kinesis import SHARDS, payloads, produce
from _stream_run import problems
from _verify import read_ipc, reference
from query_engine import _jsonable, environment

CONNECTOR = "org.apache.spark:spark-streaming-sql-kinesis-connector_2.12:1.4.0"
HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
ENGINES = ("spark-files", "streamkit-files", "streamkit-kinesis")
MAX_BATCHES = 99  # streamkit's query keeps the progress of its last 100 batches


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve(coordinates: str) -> tuple[bool, str]:
    """``mvn dependency:get`` of one artifact: whether it resolved, and Maven's first error."""
    mvn = shutil.which("mvn")
    if mvn is None:
        return False, "mvn not found (Debian: apt-get install maven)"
    cmd = [mvn, "-B", "-q", "-U", "-Dstyle.color=never", "dependency:get",
           f"-Dartifact={coordinates}", "-Dtransitive=false"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    found = re.search(r"Could(n.t| not) (download|find|transfer) artifact[^\n]*", out.stdout)
    return out.returncode == 0, (found.group(0) if found else out.stdout.strip()[-400:])


def events(records: int, hours: float, seed: int, very_late: float) -> pa.Table:
    """``records`` rows of the W3 generator spread evenly over its first ``hours`` of event
    time (every k-th row of its first files, arrival order kept), ``id`` = row number."""
    files = max(1, round(hours * 6))  # a generator file spans 10 minutes
    per = -(-records // files)
    if per > ROWS_PER_FILE:
        raise ValueError(f"{records} rows do not fit in {hours} h of the generator")
    picks = pa.array(np.linspace(0, ROWS_PER_FILE - 1, per).astype(np.int64))
    table = pa.concat_tables([file_table(seed, i, very_late).take(picks) for i in range(files)])
    table = table.slice(0, records)
    return table.append_column("id", pa.array(range(records), pa.int64()))


def write_batches(truth: pa.Table, directory: Path, batch: int) -> int:
    """``truth`` as JSON-lines files of ``batch`` rows, in order; returns the file count."""
    directory.mkdir(parents=True)
    count: int = -(-truth.num_rows // batch)
    for index in range(count):
        write_table(directory, index, truth.slice(index * batch, batch))
    return count


@contextlib.contextmanager
def servers() -> Iterator[tuple[Any, str | None, list[int]]]:
    """kinesalite, and LocalStack for the leases unless ``$STREAMKIT_AWS_ENDPOINT`` names a
    DynamoDB: (Kinesis endpoint, leases URL or None for the env, the servers' PIDs)."""
    from streamkit.config import ENDPOINT_ENV
    from streamkit.testing.servers import start_kinesalite, start_localstack

    with start_kinesalite() as kinesalite:
        if os.environ.get(ENDPOINT_ENV):
            yield kinesalite.endpoint, None, [kinesalite.pid]
            return
        with start_localstack() as localstack:
            yield kinesalite.endpoint, localstack.url, [kinesalite.pid, localstack.pid]


async def fill_stream(endpoint: Any, data: list[bytes]) -> tuple[str, float]:
    """A new ``SHARDS``-shard stream holding ``data``; (name, records/s written)."""
    from streamkit_kinesis.admin import StreamAdmin

    stream = f"w3-spark-{uuid.uuid4().hex[:8]}"
    async with StreamAdmin(endpoint) as admin:
        await admin.create_stream(stream, SHARDS)
    return stream, await produce(endpoint, stream, data)


def spawn(engine: str, out: Path, extra: list[str], server_pids: list[int]) -> dict[str, Any]:
    """One measurement in a fresh process, with the servers' CPU over it."""
    cmd = [sys.executable, str(HERE / "_w3_peer_run.py"), "--engine", engine, "--out", str(out)]
    before = sum(usage(pid).cpu_s for pid in server_pids)
    proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=1800,
                          check=False)  # fmt: skip
    server_cpu = sum(usage(pid).cpu_s for pid in server_pids) - before
    if proc.returncode != 0:
        return {"error": " | ".join(proc.stderr.strip().splitlines()[-3:])}
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    report["server_cpu_s"] = server_cpu
    return report


def check(
    run: dict[str, Any], result: pa.Table, truth: pa.Table, records: int, very_late: float
) -> list[str]:
    """A run's result against the exact reference over ``truth`` minus the rows it reported
    late (by id when it names them), and its row count. Without very late rows
    (``--very-late 0``) no row is behind the watermark, so any late row is a problem."""
    found = [] if run["rows_in"] == records else [f"{run['rows_in']} rows read of {records}"]
    if very_late == 0 and run["late_rows"]:
        found.append(f"{run['late_rows']} rows dropped as late, none is behind the watermark")
    late = pa.array(run.get("late_ids", []), pa.int64())
    if run["late_rows"] and len(late) != run["late_rows"]:
        found.append(f"{run['late_rows']} rows late, not named: the reference keeps them")
    kept = truth.filter(pc.invert(pc.is_in(truth["id"], value_set=late)))
    ref = reference(kept, WORKLOADS["W1"]).select(["start", "action", "n", "sum", "avg"])
    return found + problems(result, ref)


def measure(args: argparse.Namespace, files: Path, truth: pa.Table) -> list[dict[str, Any]]:
    """Servers, stream, then ``--reps`` rounds over the engines (rotating order)."""
    scratch = Path(tempfile.mkdtemp(prefix="w3-peers-out-"))
    runs: list[dict[str, Any]] = []
    with servers() as (endpoint, leases_url, pids):
        stream, write_rate = asyncio.run(fill_stream(endpoint, payloads(truth)))
        log(f"{truth.num_rows:,} records into {stream} ({SHARDS} shards) at {write_rate:,.0f}/s")
        kinesis = ["--stream", stream, "--kinesis-url", endpoint.url, "--batch", str(args.batch)]
        kinesis += ["--leases-url", leases_url] if leases_url else []
        extra = {
            "spark-files": ["--dir", str(files), "--spark-partitions", str(args.spark_partitions),
                            "--spark-memory", args.spark_memory],
            "streamkit-files": ["--dir", str(files)],
            "streamkit-kinesis": kinesis,
        }  # fmt: skip
        for rep in range(args.reps):
            results: dict[str, pa.Table] = {}
            for engine in ENGINES[rep % 3 :] + ENGINES[: rep % 3]:
                out = scratch / f"{engine}.arrow"
                run = spawn(engine, out, extra[engine], pids)
                run.update(engine=engine, rep=rep, load=os.getloadavg()[0], write_rate=write_rate)
                if "error" not in run:
                    results[engine] = read_ipc(out)
                    run["problems"] = check(
                        run, results[engine], truth, args.records, args.very_late
                    )
                runs.append(run)
                log(f"  rep {rep} {engine:<17} {_line(run, args.records)}")
            late = {r["engine"]: r.get("late_ids", []) for r in runs if r["rep"] == rep}
            lines = agreement({e: with_late(t, truth, late[e]) for e, t in results.items()})
            lines += [f"{e}'s {len(ids)} late rows counted in" for e, ids in late.items() if ids]
            runs.append({"engine": "agreement", "rep": rep, "lines": lines})
            log("  " + "; ".join(runs[-1]["lines"]))
    shutil.rmtree(scratch, ignore_errors=True)
    return runs


def with_late(result: pa.Table, truth: pa.Table, late_ids: list[int]) -> pa.Table:
    """``result`` with the rows of ``truth`` named in ``late_ids`` counted in, as if they
    had been on time: so results whose late rows differ can still be compared."""
    if not late_ids:
        return result
    late = truth.filter(pc.is_in(truth["id"], value_set=pa.array(late_ids, pa.int64())))
    extra = reference(late, WORKLOADS["W1"]).select(["start", "action", "n", "sum"])
    both = result.join(extra, ["start", "action"], join_type="full outer", right_suffix="_late")
    n = pc.add(pc.fill_null(both["n"], 0), pc.fill_null(both["n_late"], 0))
    total = pc.add(pc.fill_null(both["sum"], 0.0), pc.fill_null(both["sum_late"], 0.0))
    table = pa.table({"start": both["start"], "action": both["action"], "n": n, "sum": total,
                      "avg": pc.divide(total, pc.cast(n, pa.float64()))})  # fmt: skip
    return table.sort_by([("start", "ascending"), ("action", "ascending")])


def agreement(results: dict[str, pa.Table]) -> list[str]:
    """Whether the engines' final results (late rows counted in, see ``with_late``) are the
    same groups with the same counts (sums and averages within ``REL_TOL``), each against
    the first."""
    if len(results) < 2:
        return [f"only {sorted(results)} finished: nothing to compare"]
    (base, first), *rest = results.items()
    lines = []
    for engine, table in rest:
        found = problems(table, first)
        verdict = "agree" if not found else "DIFFER: " + "; ".join(found)
        lines.append(f"{engine} vs {base}: {table.num_rows} groups, {verdict}")
    return lines


def _line(run: dict[str, Any], records: int) -> str:
    if "error" in run:
        return f"ERROR {run['error']}"
    verdict = "ok" if not run["problems"] else "!!! " + "; ".join(run["problems"])
    return (
        f"{run['wall_s']:.2f} s, {records / run['wall_s']:,.0f} rows/s, {run['batches']} batches,"
        f" p50 {statistics.median(run['batch_s']) * 1000:.0f} ms, CPU {run['cpu_s']:.2f} s, "
        f"{verdict}"
    )


def summarise(runs: list[dict[str, Any]], records: int) -> dict[str, dict[str, float]]:
    """Per engine: medians over its correct runs."""
    med = statistics.median
    summary: dict[str, dict[str, float]] = {}
    for engine in ENGINES:
        mine = [r for r in runs if r["engine"] == engine]
        good = [r for r in mine if "error" not in r and not r["problems"]]
        if not good:
            continue
        summary[engine] = {
            "runs": len(good),
            "of": len(mine),
            "rows_per_s": med(records / r["wall_s"] for r in good),
            "wall_s": med(r["wall_s"] for r in good),
            "batches": med(r["batches"] for r in good),
            "p50_ms": med(med(r["batch_s"]) * 1000 for r in good),
            "p95_ms": med(float(np.quantile(r["batch_s"], 0.95)) * 1000 for r in good),
            "cpu_s": med(r["cpu_s"] for r in good),
            "total_cpu_s": med(r["cpu_s"] + r["startup_cpu_s"] for r in good),
            "startup_s": med(r["startup_s"] for r in good),
            "server_cpu_s": med(r["server_cpu_s"] for r in good),
            "peak_rss_mb": med(r["peak_rss_bytes"] / 2**20 for r in good),
        }
    return summary


def markdown(summary: dict[str, dict[str, float]], args: argparse.Namespace) -> list[str]:
    lines = [
        f"W3, {args.records:,} rows over {args.hours:g} h of event time, {args.batch:,} per "
        "micro-batch (files: one per batch; Kinesis: at most that many), medians of the "
        "correct runs:",
        "",
        "| engine, source | correct runs | rows/s | run s | batches | p50 batch ms | p95 batch ms"
        " | CPU s, run | CPU s, with start-up | start-up s | server CPU s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for engine, s in summary.items():
        lines.append(
            f"| {engine} | {s['runs']:.0f} of {s['of']:.0f} | {s['rows_per_s']:,.0f} | "
            f"{s['wall_s']:.2f} | {s['batches']:.0f} | {s['p50_ms']:.0f} | {s['p95_ms']:.0f} | "
            f"{s['cpu_s']:.2f} | {s['total_cpu_s']:.2f} | {s['startup_s']:.1f} | "
            f"{s['server_cpu_s']:.2f} | {s['peak_rss_mb']:,.0f} |"
        )
    spark = summary.get("spark-files")
    for engine in ENGINES[1:]:
        if spark and engine in summary:
            s = summary[engine]
            lines.append(
                f"\n{engine} / spark-files: rows/s **{s['rows_per_s'] / spark['rows_per_s']:.1f}x**"
                f", CPU s of the run {spark['cpu_s'] / s['cpu_s']:.1f}x less, with start-up "
                f"{spark['total_cpu_s'] / s['total_cpu_s']:.1f}x less, peak RSS "
                f"{spark['peak_rss_mb'] / s['peak_rss_mb']:.1f}x less"
            )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000, help="rows per micro-batch")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--hours", type=float, default=16, help="event time spanned")
    parser.add_argument("--very-late", type=float, default=0.0)
    parser.add_argument("--spark-partitions", type=int, default=2, help="shuffle partitions")
    parser.add_argument("--spark-memory", default="1g", help="spark.driver.memory")
    parser.add_argument("--no-resolve", action="store_true", help="skip the Maven look-up")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.batch < 1 or -(-args.records // args.batch) > MAX_BATCHES:
        parser.error(f"need --reps >= 1 and at most {MAX_BATCHES} batches of --batch rows")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment()
    env["versions"]["pyspark"] = metadata.version("pyspark")
    head: list[str] = []
    if not args.no_resolve:
        ok, detail = resolve(CONNECTOR)
        head.append(
            f"{CONNECTOR} resolves, but reading Kinesis with it is not written: Spark is "
            "measured on the file source" if ok else
            f"Spark on Kinesis: {CONNECTOR} does not resolve:\n  {detail}\n"
            "so Spark reads the same records from JSON-lines files (one per micro-batch)"
        )  # fmt: skip
        print(head[-1], flush=True)
    truth = events(args.records, args.hours, args.seed, args.very_late)
    work = Path(tempfile.mkdtemp(prefix="w3-peers-"))
    try:
        count = write_batches(truth, work / "files", args.batch)
        log(f"{count} files of {args.batch:,} rows in {work / 'files'}")
        runs = measure(args, work / "files", truth)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise([r for r in runs if r["engine"] in ENGINES], args.records)
    env["loadavg_end"] = os.getloadavg()
    agreed = [r for r in runs if r["engine"] == "agreement"]
    lines = [
        f"Run of {env['started']}, load {env['loadavg_start'][0]:.1f} at start, "
        f"{env['loadavg_end'][0]:.1f} at end; {env['versions']}",
        "",
        *markdown(summary, args),
        "",
        "Final results, per repetition:",
        *(f"- rep {r['rep']}: " + "; ".join(r["lines"]) for r in agreed),
    ]
    print("\n".join(lines))
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = RESULTS_DIR / f"spark_kinesis_{env['started'].replace(':', '')}"
    stem.with_suffix(".md").write_text("\n".join(head + lines) + "\n")
    raw = {"environment": env, "args": vars(args), "runs": runs, "summary": summary}
    stem.with_suffix(".json").write_text(json.dumps(_jsonable(raw), indent=1, default=str))
    log(f"wrote {stem}.md/.json")
    failed = any(r.get("error") or r.get("problems") for r in runs if r["engine"] in ENGINES)
    failed |= any("DIFFER" in line for r in agreed for line in r["lines"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
