"""The Python KCL (amazon-kclpy's MultiLangDaemon) against streamkit's Kinesis consumer.

Usage:
    .venv/bin/python bench/kcl_peers.py [--records 20000] [--reps 3] [--checkpoint-every 10000]

Installs amazon-kclpy (``KCLPY_VERSION``) into its own virtualenv under
``.cache/servers/kclpy/`` on first use (its build downloads the KCL jars from Maven Central),
starts LocalStack (Kinesis and DynamoDB: both readers keep their leases there; the KCL 3.x
daemon speaks HTTP/2 to Kinesis, which kinesalite cannot answer, so ``--kinesis kinesalite``
only reproduces that failure), writes ``--records`` records of ~100 bytes over 4 shards,
then ``--reps`` times,
alternating who goes first, each reader consumes the stream from TRIM_HORIZON as a fresh
application: decode every payload, count, checkpoint every ``--checkpoint-every`` records.
Both readers are fresh processes measured from outside the same way (``_kcl_run``): wall
time from launch to the last record, CPU seconds of the whole process tree (JVM + one
Python child per shard for the KCL), start-up included. Reported: medians of records/s,
of the steady rate after the first record, of CPU seconds per million records, and the
ratios streamkit / KCL. Writes ``bench/results/kcl_peers_<UTC time>.{md,json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _kcl_run import APP, KCLPY, KCLPY_VENV, STREAMKIT, PeerRun, Target, run_kclpy, run_streamkit
from kinesis_consumer import produce
from streamkit_kinesis.admin import StreamAdmin

from streamkit.testing.servers import start_kinesalite, start_localstack

KCLPY_VERSION = "3.1.3"  # 3.2.0 pins KCL 3.5.3, whose jars Maven Central does not serve here
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SHARDS = 4


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def install_kclpy() -> str:
    """amazon-kclpy in its own virtualenv (its boto3 pin is not the project's); version."""
    python = KCLPY_VENV / "bin" / "python"
    marker = KCLPY_VENV / f".kclpy-{KCLPY_VERSION}"
    if not marker.exists():
        log(f"installing amazon-kclpy=={KCLPY_VERSION} into {KCLPY_VENV} ...")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(KCLPY_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-cache-dir",
                        f"amazon-kclpy=={KCLPY_VERSION}"], check=True)
        marker.touch()
    jars = sorted(p.name for p in KCLPY_VENV.glob("lib/python3*/site-packages/amazon_kclpy/jars/*"))
    return ", ".join(j for j in jars if j.startswith("amazon-kinesis-client"))


def java_version() -> str:
    out = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    return out.stderr.splitlines()[0] if out.stderr else "?"


async def prepare(kinesis_url: str, records: int) -> tuple[str, float]:
    from streamkit.config import AwsEndpoint

    endpoint = AwsEndpoint(kinesis_url, access_key_id="test", secret_access_key="test")
    stream = f"peers-{uuid.uuid4().hex[:8]}"
    async with StreamAdmin(endpoint) as admin:
        await admin.create_stream(stream, SHARDS)
    log(f"writing {records} records over {SHARDS} shards ...")
    return stream, await produce(endpoint, stream, records)


def one_run(reader: str, target: Target, rep: int, args: argparse.Namespace) -> PeerRun:
    app = f"peers-{reader.split(maxsplit=1)[0].replace('-', '')}-{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="kcl-peers-"))
    try:
        if reader == KCLPY:
            return run_kclpy(target, rep, app, work, idle_ms=args.kcl_idle_ms,
                             client_version=args.kcl_client_version)
        return run_streamkit(target, rep, app, work)
    except Exception:
        kept = RESULTS_DIR / f"failed_{app}"
        shutil.copytree(work, kept, dirs_exist_ok=True)
        log(f"  logs kept in {kept}")
        raise
    finally:
        for name in ("daemon.log", "streamkit.log"):
            if (work / name).exists():  # kept: start-up phases are read from the logs
                RESULTS_DIR.mkdir(exist_ok=True)
                shutil.copy(work / name, RESULTS_DIR / f"kcl_peers_{app}_{name}")
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "args": vars(args),
                              "load_before": os.getloadavg(), "kcl_jars": install_kclpy(),
                              "kclpy": KCLPY_VERSION, "java": java_version()}
    runs: list[PeerRun] = []
    with contextlib.ExitStack() as servers:
        ddb = str(servers.enter_context(start_localstack()).endpoint.url)
        kin = ddb
        if args.kinesis == "kinesalite":
            kin = str(servers.enter_context(start_kinesalite()).endpoint.url)
        stream, result["write_rate"] = asyncio.run(prepare(kin, args.records))
        target = Target(stream, kin, ddb, args.records, args.checkpoint_every)
        for rep in range(1, args.reps + 1):
            order = [STREAMKIT, KCLPY] if rep % 2 else [KCLPY, STREAMKIT]
            for reader in order:
                run = one_run(reader, target, rep, args)
                log(f"  rep {rep} {reader:<20} {run.rate:>9,.0f} rec/s  steady "
                    f"{run.steady_rate:>9,.0f}  first {run.first_s:5.1f} s  "
                    f"CPU {run.cpu_s:6.1f} s  RSS {run.peak_rss_bytes / 2**20:,.0f} MB")
                runs.append(run)
    result["load_after"] = os.getloadavg()
    result["runs"] = [
        asdict(r) | {"rate": r.rate, "steady_rate": r.steady_rate,
                     "read_cpu_s_per_million": r.read_cpu_s_per_million}
        for r in runs
    ]
    result["summary"] = summarise(runs)
    return result


def summarise(runs: list[PeerRun]) -> dict[str, dict[str, float]]:
    def med(reader: str, key: str) -> float:
        return statistics.median(float(getattr(r, key)) for r in runs if r.reader == reader)

    keys = ("rate", "steady_rate", "first_s", "wall_s", "cpu_s", "cpu_first_s",
            "cpu_s_per_million", "read_cpu_s_per_million", "peak_rss_bytes")
    return {reader: {k: med(reader, k) for k in keys} for reader in (KCLPY, STREAMKIT)}


def report(result: dict[str, Any]) -> str:
    s = result["summary"]
    kcl, sk = s[KCLPY], s[STREAMKIT]
    n = len(result["runs"]) // 2
    lines = [
        f"## amazon-kclpy {result['kclpy']} ({result['kcl_jars']}) against streamkit's consumer",
        "",
        f"{result['args']['kinesis']} Kinesis, {result['args']['records']:,} records x ~100 B, "
        f"{SHARDS} shards, leases on LocalStack's DynamoDB, checkpoint every "
        f"{result['args']['checkpoint_every']:,} "
        f"records; median of {n}; load {result['load_before'][0]:.1f} before, "
        f"{result['load_after'][0]:.1f} after; {result['java']}",
        "",
        "| reader | records/s | after first record, records/s | first record s | wall s | "
        "CPU s | of which start-up | CPU s / M records | same, start-up left out | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in ((KCLPY, kcl), (STREAMKIT, sk)):
        lines.append(
            f"| {name} | {m['rate']:,.0f} | {m['steady_rate']:,.0f} | {m['first_s']:.1f} | "
            f"{m['wall_s']:.1f} | {m['cpu_s']:.1f} | {m['cpu_first_s']:.1f} | "
            f"{m['cpu_s_per_million']:.1f} | {m['read_cpu_s_per_million']:.1f} | "
            f"{m['peak_rss_bytes'] / 2**20:,.0f} |")
    lines += [
        "",
        f"streamkit / KCL: records/s **{sk['rate'] / kcl['rate']:.2f}x**, steady "
        f"{sk['steady_rate'] / kcl['steady_rate']:.2f}x; CPU per record "
        f"**{sk['cpu_s_per_million'] / kcl['cpu_s_per_million']:.2f}x**, start-up left out "
        f"{sk['read_cpu_s_per_million'] / kcl['read_cpu_s_per_million']:.2f}x",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--checkpoint-every", type=int, default=10_000)
    p.add_argument("--kinesis", choices=("localstack", "kinesalite"), default="localstack",
                   help="Kinesis server (the KCL 3.x daemon speaks HTTP/2 to Kinesis, which "
                   "kinesalite cannot: there it fails; LocalStack answers h2c)")
    p.add_argument("--kcl-client-version", choices=("3x", "2x"), default="3x",
                   help="the daemon's clientVersionConfig: KCL 3's default, or its "
                   "2.x-compatible mode")
    p.add_argument("--kcl-idle-ms", type=int, default=1000,
                   help="the daemon's idleTimeBetweenReadsInMillis (KCL default 1000)")
    return p.parse_args()


if __name__ == "__main__":
    assert APP.is_dir()
    outcome = measure(parse_args())
    text = report(outcome)
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    (RESULTS_DIR / f"kcl_peers_{stamp}.md").write_text(text + "\n")
    (RESULTS_DIR / f"kcl_peers_{stamp}.json").write_text(json.dumps(outcome, indent=1, default=str))
    log(f"wrote {RESULTS_DIR / f'kcl_peers_{stamp}'}.md/.json")
