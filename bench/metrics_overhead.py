"""What the query listener, the Prometheus endpoint and the web UI cost W3 (issue 16:
target < 2%).

Usage:
    .venv/bin/python bench/metrics_overhead.py --files 20 --repeat 7 [--scrape-every 1] [--ui]

W3 (``_stream_run.w3_query``: NDJSON files, one per trigger, watermark, count / sum / avg
per (1-hour window, action), update mode, ``available_now``, memory sink) runs in a fresh
process per measurement, alternately without metrics (``off``) and with ``sk.metrics.serve``
scraped at ``/metrics`` every ``--scrape-every`` seconds (``on``: the listener updates
every series per batch, the endpoint renders them per scrape). With ``--ui`` a third mode,
``ui``, does all of ``on`` and also serves the web UI (``sk.ui.serve``) whose query page
JSON (``/api/queries/<id>``) is fetched once a second, as an open query page does (the UI
listener keeps its history, the server builds the JSON with charts, side tables and
checkpoint). The scraper and the
page poller run in the parent process, as Prometheus and the browser run outside the job:
the child's CPU is the job's with the serving, without the clients.
Every run's result must equal the first run's (W3's tolerance for sums; a mismatch makes
the exit status 1). The modes are interleaved (each round runs every mode once, the order
rotating), so a change of the machine's load hits them alike. Prints, per mode, medians of
wall seconds and of CPU microseconds per row, the overhead two ways (ratio of the medians,
and median of the per-round ratios, which pairs each run with its neighbours) and the
1-minute load average around the runs; writes bench/results/metrics_overhead_<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
MODES = ("off", "on", "ui")


def child(directory: Path, out: Path, mode: str) -> dict[str, Any]:
    """One timed W3 run in this process (query construction untimed); its final result
    goes to ``out`` (Arrow IPC). Serving modes first print their ports (one JSON line) for
    the parent's scraper and page poller, which run in the parent: their client-side CPU
    is not the job's, as Prometheus and the browser run elsewhere."""
    from _stream_run import normalise, w3_query
    from _verify import write_ipc

    import streamkit as sk

    writer = w3_query(directory, "none").trigger(available_now=True).memory("w3")
    listener_cpu = [0.0]
    ports: dict[str, Any] = {}
    if mode == "ui":
        ports["ui"] = sk.ui.serve(0).url
    if mode in ("on", "ui"):
        ports["metrics"] = f"http://127.0.0.1:{sk.metrics.serve(0)}/metrics"
        listener = sk.metrics.listener()
        on_progress = listener.on_query_progress

        def timed(event: Any) -> None:  # the listener's own CPU, on the dispatcher thread
            t0 = time.thread_time()
            on_progress(event)
            listener_cpu[0] += time.thread_time() - t0

        setattr(listener, "on_query_progress", timed)  # noqa: B010
    print(json.dumps({"ports": ports}), flush=True)
    start, cpu = time.perf_counter(), time.process_time()
    query = writer.start()
    query.await_termination()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    threads = {t.name: t for t in threading.enumerate()}

    def thread_cpu(name: str) -> float:  # CPU seconds a named thread used (0: none)
        t = threads.get(name)
        if t is None or t.ident is None:
            return 0.0
        return time.clock_gettime(time.pthread_getcpuclockid(t.ident))

    write_ipc(normalise(sk.memory_table("w3")), out)
    return {"wall_s": wall, "cpu_s": cpu, "batches": len(query.recent_progress),
            "listener_cpu_s": listener_cpu[0],
            "ui_server_cpu_s": thread_cpu("streamkit-ui"),
            "dispatcher_cpu_s": thread_cpu("streamkit-listeners")}  # fmt: skip


def clients(ports: dict[str, Any], every: float, stop: threading.Event) -> dict[str, int]:
    """Threads (in the parent) scraping ``/metrics`` every ``every`` s and fetching the
    query's page JSON once a second, as Prometheus and an open page do; their counts."""
    counts = {"scrapes": 0, "page_polls": 0}

    def scrape(url: str) -> None:
        while not stop.wait(every):
            try:
                with urllib.request.urlopen(url, timeout=10) as reply:
                    reply.read()
            except OSError:  # the child ended
                return
            counts["scrapes"] += 1

    def poll_page(url: str) -> None:  # the query's page polls /api/queries/<id> only
        ids: list[str] = []
        while not stop.wait(1.0):
            try:
                if not ids:  # the query starts right after the ports are printed
                    with urllib.request.urlopen(url + "api/queries", timeout=10) as reply:
                        ids = [q["id"] for q in json.loads(reply.read())]
                for key in ids:
                    with urllib.request.urlopen(f"{url}api/queries/{key}", timeout=10) as r:
                        r.read()
                    counts["page_polls"] += 1
            except OSError:
                return

    if "metrics" in ports:
        threading.Thread(target=scrape, args=(ports["metrics"],), daemon=True).start()
    if "ui" in ports:
        threading.Thread(target=poll_page, args=(ports["ui"],), daemon=True).start()
    return counts


def per_event_costs(calls: int = 2000) -> dict[str, float]:
    """Load-independent figures: microseconds the listener spends per progress event (a
    W3-shaped record, 4 partitions) and per scrape of the resulting registry (medians)."""
    from datetime import UTC, datetime

    from prometheus_client import generate_latest

    from streamkit.metrics.prometheus import PrometheusListener
    from streamkit.streaming.contracts import PartitionProgress
    from streamkit.streaming.listeners import QueryProgressEvent
    from streamkit.streaming.progress import PhaseDurations, QueryProgress

    listener = PrometheusListener()
    now = datetime.now(UTC)
    parts = tuple(PartitionProgress(f"shard-{i}", 25_000, 0, "w") for i in range(4))
    progress = QueryProgress(0, now, 100_000, 1e6, 1e6, PhaseDurations(0.01, 0.04, 0.005),
                             now, 120, 3, 0, 40, parts)  # fmt: skip
    event = QueryProgressEvent("id", "run", "w3", progress, now)

    def timed(fn: Any, n: int) -> float:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples) * 1e6

    import asyncio
    import itertools

    from streamkit.ui.history import UiListener
    from streamkit.ui.snapshot import query_json

    ui = UiListener()
    events = [
        QueryProgressEvent("id", "run", "w3", QueryProgress(
            bid, now, 100_000, 1e6, 1e6, PhaseDurations(0.01, 0.04, 0.005), now, 120, 3, 0, 40,
            parts), now)
        for bid in range(100)
    ]  # fmt: skip
    for e in events:  # a page of a query with 100 batches kept
        ui.on_query_progress(e)
    record = ui.get("id")
    assert record is not None
    cycle = itertools.cycle(events)
    loop = asyncio.new_event_loop()
    try:
        page_us = timed(lambda: loop.run_until_complete(query_json(ui, record)), calls // 10)
    finally:
        loop.close()
    return {
        "progress_event_us": timed(lambda: listener.on_query_progress(event), calls),
        "scrape_us": timed(lambda: generate_latest(listener.registry), calls // 10),
        "ui_progress_event_us": timed(lambda: ui.on_query_progress(next(cycle)), calls),
        "ui_page_json_us": page_us,
    }


def spawn(directory: Path, out: Path, mode: str, scrape_every: float) -> dict[str, Any]:
    """One child run, with the clients of its mode running here while it runs."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--dir", str(directory),
           "--out", str(out)]  # fmt: skip
    stop = threading.Event()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        counts = clients(json.loads(proc.stdout.readline())["ports"], scrape_every, stop)
        rest = proc.stdout.read()
        stop.set()
        if proc.wait(1800) != 0:
            raise RuntimeError(f"child {mode} failed: {proc.returncode}")
    report: dict[str, Any] = json.loads(rest.strip().splitlines()[-1])
    return {**report, **counts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--scrape-every", type=float, default=1.0)
    parser.add_argument("--ui", action="store_true", help="Also measure the web UI mode.")
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.dir, args.out, args.child)))
        return 0
    runs = measure_all(args)
    report(args, runs)
    return 0 if not any(r["problems"] for rs in runs.values() for r in rs) else 1


def measure_all(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """``args.repeat`` rounds of one fresh process per mode, the order rotating."""
    from _stream_gen import VERY_LATE, stream_dir
    from _stream_run import problems
    from _verify import read_ipc

    directory = stream_dir(args.files, 42, VERY_LATE)
    reference = None
    modes = MODES if args.ui else MODES[:2]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for rep in range(args.repeat):
        k = rep % len(modes)
        for mode in modes[k:] + modes[:k]:
            out = RESULTS_DIR / "scratch" / f"metrics_overhead_{mode}.arrow"
            out.parent.mkdir(parents=True, exist_ok=True)
            load = os.getloadavg()[0]
            run = spawn(directory, out, mode, args.scrape_every)
            run["load_before"], run["load_after"] = load, os.getloadavg()[0]
            result = read_ipc(out)
            reference = reference if reference is not None else result
            run["problems"] = problems(result, reference)
            runs[mode].append(run)
            print(f"rep {rep} {mode:<3} {run['wall_s']:.3f} s wall, {run['cpu_s']:.3f} s CPU, "
                  f"{run['batches']} batches, {run['scrapes']} scrapes, "
                  f"{run['page_polls']} page polls, load {load:.2f}, "
                  f"{'; '.join(run['problems']) or 'result ok'}", file=sys.stderr)  # fmt: skip
    return runs


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> None:
    """Print the medians and overheads; write them to bench/results/."""
    from _stream_gen import ROWS_PER_FILE

    modes = list(runs)
    rows = args.files * ROWS_PER_FILE
    med = {m: {k: statistics.median(r[k] for r in runs[m]) for k in ("wall_s", "cpu_s")}
           for m in modes}  # fmt: skip
    over = {m: {k: (med[m][k] / med["off"][k] - 1) * 100 for k in ("wall_s", "cpu_s")}
            for m in modes[1:]}  # fmt: skip
    paired = {m: {k: (statistics.median(a[k] / b[k] for a, b in zip(runs[m], runs["off"],
                                                                    strict=True)) - 1) * 100
                  for k in ("wall_s", "cpu_s")} for m in modes[1:]}  # fmt: skip
    loads = [r[k] for rs in runs.values() for r in rs for k in ("load_before", "load_after")]
    print(f"W3 {args.files} files x {ROWS_PER_FILE:,} rows, medians of {args.repeat} fresh "
          f"processes per mode, interleaved (scrape every {args.scrape_every:g} s); 1-min load "
          f"average {min(loads):.2f}-{max(loads):.2f} (median {statistics.median(loads):.2f}) "
          f"on {os.cpu_count()} cores:")  # fmt: skip
    for m in modes:
        print(
            f"- {m:<3}: {rows / med[m]['wall_s']:,.0f} rows/s, {med[m]['wall_s']:.3f} s wall, "
            f"{med[m]['cpu_s']:.3f} s CPU = {med[m]['cpu_s'] / rows * 1e6:.3f} us CPU/row"
        )
    for m in modes[1:]:
        what = "metrics" if m == "on" else "metrics + UI served and polled"
        print(f"- overhead of {what}: {over[m]['wall_s']:+.2f}% wall, "
              f"{over[m]['cpu_s']:+.2f}% CPU/row (ratio of medians); "
              f"{paired[m]['wall_s']:+.2f}% wall, {paired[m]['cpu_s']:+.2f}% CPU/row "
              f"(median of per-round ratios); target < 2%")  # fmt: skip
    costs = per_event_costs()
    in_run = statistics.median(r["listener_cpu_s"] for r in runs["on"])
    print(f"- listener CPU inside the 'on' runs: {in_run * 1000:.1f} ms per run "
          f"({in_run / med['off']['cpu_s'] * 100:.3f}% of the 'off' CPU)")  # fmt: skip
    per_batch = med["off"]["wall_s"] / statistics.median(r["batches"] for r in runs["off"])
    share = costs["progress_event_us"] / 1e6 / per_batch * 100
    print(f"- listener: {costs['progress_event_us']:.0f} us per progress event "
          f"({share:.3f}% of a {per_batch * 1000:.0f} ms W3 batch), "
          f"{costs['scrape_us']:.0f} us per scrape")  # fmt: skip
    if "ui" in runs:
        server = statistics.median(r["ui_server_cpu_s"] for r in runs["ui"])
        dispatch = statistics.median(r["dispatcher_cpu_s"] for r in runs["ui"])
        base = med["off"]["cpu_s"]
        print(
            f"- inside the 'ui' runs: UI server thread {server * 1000:.1f} ms CPU "
            f"({server / base * 100:.2f}% of the 'off' CPU), listener thread (Prometheus + "
            f"UI listeners) {dispatch * 1000:.1f} ms ({dispatch / base * 100:.2f}%)"
        )
        per_fetch = statistics.median(
            r["ui_server_cpu_s"] / r["page_polls"] for r in runs["ui"] if r["page_polls"]
        )
        job = statistics.median(r["cpu_s"] / r["wall_s"] for r in runs["off"])
        print(
            f"- the UI server: {per_fetch * 1000:.2f} ms CPU per page fetch (median over the "
            f"'ui' runs): a page open (one fetch a second) takes {per_fetch * 100:.2f}% of one "
            f"core, {per_fetch / job * 100:.2f}% of the {job:.2f} cores the 'off' job got here"
        )
    print(
        f"- web UI: {costs['ui_progress_event_us']:.0f} us per progress event "
        f"({costs['ui_progress_event_us'] / 1e6 / per_batch * 100:.3f}% of a W3 batch), "
        f"{costs['ui_page_json_us']:.0f} us to build one page's JSON (100 batches kept)"
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime())
    (RESULTS_DIR / f"metrics_overhead_{stamp}.json").write_text(
        json.dumps(
            {
                "files": args.files,
                "medians": med,
                "overhead_pct": over,
                "paired_overhead_pct": paired,
                "load_average_1m": loads,
                "per_event": costs,
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
