"""The fleet page (``/fleet``) of a real fleet: two worker processes (``fleet_job.py`` with
``STREAMKIT_FLEET=1`` and ``STREAMKIT_UI_PORT=0``) read a 4-shard LocalStack stream; the
page of worker 0, in headless Chromium, shows both workers.

Expected values come from outside the page: each worker's leases from a plain boto3 scan of
both lease tables, each worker's figures from its own ``/api/worker`` endpoint fetched by
the test, the watermarks from the records put (per shard: its largest event time minus the
one-hour delay; a worker's: the minimum over its source shards; the fleet's: the minimum
over every shard), the records read from the count put (at least that count if a lease
expired and moved under load, the moved shard being partly re-read). ``streamkit ui --app``
(outside the fleet) serves the same workers. Then worker 1 is SIGKILLed: the
page keeps it, marked unreachable.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from streamkit_kinesis.client import kinesis_client
from streamkit_kinesis.testing.streams import fresh_stream, read_stream_blocking, unique
from streamkit_kinesis_tests.fleet.fleet_harness import (
    Fleet,
    drop_fleet_tables,
    payloads,
    put_random_keys,
    until,
)

from .browser import chromium_page, field, table, wait_for

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.browser,
              pytest.mark.slow, pytest.mark.timeout(900)]  # fmt: skip

SHARDS = 4
EVENTS = 400
HOUR_MS = 3_600_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SCREENSHOT = os.environ.get("STREAMKIT_UI_FLEET_SCREENSHOT")
"""Where to save the page's screenshot (README: docs/ui_fleet.png)."""


def owners(ep: AwsEndpoint, table_name: str) -> dict[str, str]:
    """shard -> leaseOwner of a lease table, by a plain boto3 scan (empty if none yet)."""
    client = ep.client("dynamodb")
    try:
        items = client.scan(TableName=table_name, ConsistentRead=True)["Items"]
    except client.exceptions.ResourceNotFoundException:
        return {}
    return {i["leaseKey"]["S"]: i["leaseOwner"]["S"] for i in items
            if "leaseOwner" in i and i["leaseKey"]["S"].startswith("shardId")}  # fmt: skip


def held(by_shard: dict[str, str], worker: str) -> list[str]:
    return sorted(s for s, o in by_shard.items() if o == worker)


def adverts(root: Path) -> dict[str, str]:
    """worker -> advertised URL, read from the files under the checkpoint root."""
    folder = root / "fleet" / "workers"
    out = {}
    for f in folder.glob("*.json") if folder.exists() else []:
        try:
            body = json.loads(f.read_text())
        except ValueError:  # being written
            continue
        out[body["worker"]] = body["url"]
    return out


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def iso(ms: int | None) -> str:
    """As the page writes a time (JavaScript's toISOString)."""
    if ms is None:
        return "-"
    t = EPOCH + timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def num(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def shard_marks(ep: AwsEndpoint, stream: str) -> dict[str, int]:
    """Per shard: its largest event time (ms) minus the one-hour delay, from the records."""
    out = {}
    for shard, records in read_stream_blocking(kinesis_client(ep), stream).items():
        times = [datetime.fromisoformat(json.loads(r["Data"])["event_time"]) for r in records]
        out[shard] = (max(times) - EPOCH) // timedelta(milliseconds=1) - HOUR_MS
    return out


def expected_rows(ep: AwsEndpoint, app: str, urls: dict[str, str]) -> list[list[str]] | None:
    """The workers table as it must read: leases from the scan, figures from each worker's
    own endpoint (fetched now); None while an endpoint's leases differ from the scan."""
    source, exchange = owners(ep, app), owners(ep, f"{app}-exchange")
    rows = []
    for w in sorted(urls):
        r = get_json(urls[w] + "api/worker")
        if r["leases"] != {"source": held(source, w), "aggregation": held(exchange, w)}:
            return None
        rows.append([w, "ok" + (" (this process)" if w == "w0" else ""),
                     ", ".join(held(source, w)), ", ".join(held(exchange, w)),
                     num(r["records_read"]), rate(r["records_per_second"]),
                     num(r["backlog_ms"]), iso(r["watermark_ms"]),
                     iso(r["fleet_watermark_ms"]), urls[w]])  # fmt: skip
    return rows


def outside_view(ep: AwsEndpoint, fleet: Fleet, urls: dict[str, str]) -> None:
    """``streamkit ui --app APP --checkpoint ROOT`` (no job, outside the fleet) serves the
    same fleet: both workers reachable, with the leases of the scan."""
    assert ep.url is not None
    cmd = [sys.executable, "-m", "streamkit.cli", "ui", "--app", fleet.app, "--checkpoint",
           str(fleet.root), "--endpoint", ep.url, "--port", "0"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400"}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            line = ""
            while "fleet of" not in line:
                line = proc.stdout.readline()
                assert line, "streamkit ui --app exited"
            url = line.split(": ", 1)[1].split()[0]

            def same() -> bool:
                got = get_json(url.removesuffix("fleet") + "api/fleet")
                source, exchange = owners(ep, fleet.app), owners(ep, f"{fleet.app}-exchange")
                want = [(w, "ok", False, held(source, w), held(exchange, w)) for w in sorted(urls)]
                return [(w["worker"], w["status"], w["self"], w["leases"]["source"],
                         w["leases"]["aggregation"]) for w in got["workers"]] == want  # fmt: skip

            wait_for("streamkit ui --app to show both workers", same, 60)
        finally:
            proc.terminate()


def look(
    ep: AwsEndpoint,
    fleet: Fleet,
    urls: dict[str, str],
    marks: dict[str, int],
    balanced: dict[str, str],
) -> None:
    """Worker 0's fleet page against the lease tables, the endpoints and the records."""
    with chromium_page(1500, 1100) as page:
        page.goto(urls["w0"] + "fleet")
        last: list[Any] = []

        def matches() -> bool:
            want = expected_rows(ep, fleet.app, urls)
            got = table(page, "fleet-workers")
            last[:] = [got, want]
            return got == want

        wait_for("the workers table to match the endpoints and the lease tables", matches, 120)
        got = last[0]
        source = owners(ep, fleet.app)
        for row in got:  # each worker's watermark: the minimum over its source shards
            assert row[7] == iso(min(marks[s] for s in held(source, row[0]))), row
        read = sum(int(r[4].replace(",", "")) for r in got)
        if owners(ep, fleet.app) == balanced:  # no lease moved: each record read once
            assert read == EVENTS
        else:  # a lease expired under load and moved: its shard was partly re-read
            assert read >= EVENTS
        assert {r[0] for r in got} == {"w0", "w1"}
        wait_for("the fleet watermark", lambda: field(page, "fleet_watermark")
                 == iso(min(marks.values())), 120)  # fmt: skip
        tasks = table(page, "fleet-tasks")
        for w in ("w0", "w1"):
            reported = get_json(urls[w] + "api/worker")["tasks"]
            mine = [r[1:3] for r in tasks if r[0] == w]
            assert mine == [[t["kind"], t["shard"]] for t in reported], (w, tasks)
            for t in reported:
                if t["kind"] == "source":
                    assert t["watermark_ms"] == marks[t["shard"]], t
        if SCREENSHOT:
            page.screenshot(path=SCREENSHOT, full_page=True)
        outside_view(ep, fleet, urls)
        # worker 1 dies: it stays on the page, unreachable
        os.kill(fleet.workers[1].proc.pid, signal.SIGKILL)

        def w1_unreachable() -> bool:
            rows = {r[0]: r for r in table(page, "fleet-workers")}
            return "w1" in rows and rows["w1"][1].startswith("unreachable")

        wait_for("w1 shown unreachable", w1_unreachable, 60)
        assert field(page, "reachable") == "1 of 2"


async def test_fleet_page_shows_every_worker_from_its_own_endpoint(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    data = payloads(EVENTS, seed=16)
    async with fresh_stream(ep, SHARDS, "fleetui") as (stream, _):
        fleet = Fleet(ep, stream, unique("fui"), tmp_path, "--idle", "1 hour")
        try:
            await fleet.add("w0", STREAMKIT_UI_PORT="0")
            await fleet.add("w1", STREAMKIT_UI_PORT="0")

            def balanced() -> bool:  # 2 + 2 leases in both tables: no lease moves later
                fleet.check_alive()
                tables = [owners(ep, fleet.app), owners(ep, f"{fleet.app}-exchange")]
                return all(len(held(t, w)) == 2 for t in tables for w in ("w0", "w1"))

            await until("both workers advertised", lambda: len(adverts(fleet.root)) == 2, 300)
            await until("leases balanced 2/2 in both tables", balanced, 300)
            at_balance = owners(ep, fleet.app)
            last = await asyncio.to_thread(put_random_keys, ep, stream, data)
            assert len(last) == SHARDS
            await fleet.read_all(last)
            marks = await asyncio.to_thread(shard_marks, ep, stream)
            urls = adverts(fleet.root)
            await asyncio.to_thread(look, ep, fleet, urls, marks, at_balance)
            assert await fleet.workers[1].wait(60) == -signal.SIGKILL  # killed by look()
            await fleet.stop()
            # a graceful stop withdraws the advertisement; a killed worker's stays (stale)
            assert adverts(fleet.root) == {"w1": urls["w1"]}
        finally:
            await fleet.kill_all()
            await drop_fleet_tables(ep, fleet.app)
