"""Lease renewal under load (issue 12, item 4): no lease is lost while both cores are busy.

Two worker processes share a lease table on LocalStack (failover 10 s, KCL's default), each
holding four of eight leases and keeping its default executor saturated (a job submitted
there waits longer than the failover time), while two CPU-hog processes keep both cores
busy. Renewals go through their own threads and connections, so none may be lost.

The run lasts ``$STREAMKIT_RENEWAL_LOAD_SECONDS`` (default 150 s; the issue asks for 300,
which is the same test with the variable set).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease

if TYPE_CHECKING:
    from collections.abc import Iterator

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow]

SECONDS = float(os.environ.get("STREAMKIT_RENEWAL_LOAD_SECONDS", "150"))
FAILOVER = 10.0
WORKER = Path(__file__).with_name("renewal_load_proc.py")


@pytest.fixture
def cpu_hogs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """One busy-looping process per core (two on the CI machines), stopped by pid."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(max(2, len(os.sched_getaffinity(0))))
    ]
    yield hogs
    for hog in hogs:
        hog.kill()
        hog.wait()


def start_worker(url: str, table: str, worker: str, tmp: Path) -> subprocess.Popen[bytes]:
    """A ``renewal_load_proc.py`` process; its output goes to ``<worker>.log``."""
    cmd = [
        sys.executable, str(WORKER), "--endpoint", url, "--table", table, "--worker", worker,
        "--out", str(tmp / f"{worker}.jsonl"), "--failover", str(FAILOVER),
        "--max-leases", "4", "--seconds", str(SECONDS),
    ]  # fmt: skip
    with (tmp / f"{worker}.log").open("w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_no_lease_is_lost_with_both_cores_busy(
    localstack_endpoint: AwsEndpoint, tmp_path: Path, cpu_hogs: list[subprocess.Popen[bytes]]
) -> None:
    assert localstack_endpoint.url is not None
    store = DynamoDBLeaseStore(localstack_endpoint, f"load-{uuid.uuid4().hex[:12]}")
    await store.create_table_if_not_exists()
    for i in range(8):
        await store.create_lease_if_not_exists(Lease(f"shard-{i}"))
    outs = {w: tmp_path / f"{w}.jsonl" for w in ("W1", "W2")}
    procs = {w: start_worker(localstack_endpoint.url, store.table_name, w, tmp_path) for w in outs}
    try:
        deadline = time.monotonic() + SECONDS + 420  # take phase, run, release, exit
        for w, proc in procs.items():
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert rc == 0, (tmp_path / f"{w}.log").read_text()[-3000:]
        assert all(hog.poll() is None for hog in cpu_hogs), "the CPU hogs must run throughout"
        for w, out in outs.items():
            lines = records(out)
            lost = [r for r in lines if r.get("event") == "lost"]
            summary = next(r for r in lines if r.get("summary"))
            ready = next(r["ready"] for r in lines if "ready" in r)
            print(w, json.dumps(summary))
            assert lost == [], lost
            assert summary["losses"] == 0
            assert summary["held"] == ready
            assert len(ready) == 4
            # The load was real: without their own lane, renewals would have waited longer
            # than the failover time behind the default executor's queue.
            assert summary["max_default_executor_wait"] > FAILOVER, summary
            # Renewals kept going: at least half the cycles a renew_interval cadence implies.
            assert summary["renew_cycles"] >= SECONDS / (FAILOVER / 3) / 2, summary
            assert summary["max_confirmation_age"] < FAILOVER, summary
        for i in range(8):
            lease = await store.get_lease(f"shard-{i}")
            assert lease is not None
            assert lease.lease_owner is None  # released at the end, not lost
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await store.delete_table()
