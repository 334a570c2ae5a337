"""A real fleet serves its scale signal: two worker processes (``fleet_job.py`` with
``STREAMKIT_FLEET=1`` and ``STREAMKIT_METRICS_PORT``, as ``streamkit worker
--metrics-port`` sets it) read a 4-shard LocalStack stream; each worker's ``/metrics`` is
scraped over HTTP and parsed with ``prometheus_client``'s parser.

Expected values come from outside the workers: leases held per worker and lease table
(label ``query``: ``APP`` for the source consumer, ``APP-exchange`` for the aggregation
consumer) from a plain boto3 scan of both tables; the source records from the count put.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections import defaultdict
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families
from streamkit_kinesis.testing.streams import fresh_stream, unique
from streamkit_kinesis_tests.fleet.fleet_harness import (
    Fleet,
    drop_fleet_tables,
    payloads,
    put_random_keys,
    until,
)

from tests.streamkit.metrics.listen_ports import listen_port

if TYPE_CHECKING:
    from pathlib import Path

    from streamkit.config import AwsEndpoint

pytestmark = [pytest.mark.integration, pytest.mark.localstack, pytest.mark.slow,
              pytest.mark.timeout(900)]  # fmt: skip

SHARDS = 4
EVENTS = 400
WORKERS = ("w0", "w1")

Samples = dict[str, list[tuple[dict[str, str], float]]]
"""sample name -> (labels, value) of one scrape."""


def scrape(port: int) -> Samples:
    """``/metrics`` of one worker, parsed; empty while it does not answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    out: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((s.labels, s.value))
    return out


def owned(ep: AwsEndpoint, table: str) -> dict[str, int]:
    """worker -> shard leases it owns in ``table``, by a plain boto3 scan."""
    client = ep.client("dynamodb")
    try:
        items = client.scan(TableName=table, ConsistentRead=True)["Items"]
    except client.exceptions.ResourceNotFoundException:
        return {}
    out: dict[str, int] = defaultdict(int)
    for i in items:
        if "leaseOwner" in i and i["leaseKey"]["S"].startswith("shardId"):
            out[i["leaseOwner"]["S"]] += 1
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    found = [v for got, v in samples.get(name, []) if labels.items() <= got.items()]
    return found[0] if len(found) == 1 else None


async def test_fleet_workers_serve_leases_backlog_and_shard_records(
    localstack_endpoint: AwsEndpoint, tmp_path: Path
) -> None:
    ep = localstack_endpoint
    async with fresh_stream(ep, SHARDS, "fleetprom") as (stream, _):
        fleet = Fleet(ep, stream, unique("fpm"), tmp_path, "--idle", "1 hour")
        app, exchange = fleet.app, f"{fleet.app}-exchange"
        ports = {w: listen_port() for w in WORKERS}
        try:
            for w in WORKERS:
                await fleet.add(w, STREAMKIT_METRICS_PORT=str(ports[w]))
            last = await asyncio.to_thread(put_random_keys, ep, stream, payloads(EVENTS, seed=17))
            assert len(last) == SHARDS
            await fleet.read_all(last)
            seen: list[object] = []

            def agrees() -> bool:
                """Each worker's leases held == the scan's, in both tables; a backlog
                series per worker and table; the source records summed reach EVENTS."""
                fleet.check_alive()
                before = {t: owned(ep, t) for t in (app, exchange)}
                scraped = {w: scrape(ports[w]) for w in WORKERS}
                after = {t: owned(ep, t) for t in (app, exchange)}
                full = all(sum(after[t].values()) == SHARDS for t in (app, exchange))
                if before != after or not full:
                    return False  # a lease moved during the scrape, or not all taken yet
                held = {(t, w): value(scraped[w], "streamkit_kinesis_leases_held",
                                      query=t, worker=w)
                        for t in (app, exchange) for w in WORKERS}  # fmt: skip
                want = {(t, w): float(after[t].get(w, 0)) for t in (app, exchange)
                        for w in WORKERS}  # fmt: skip
                backlog = {(t, w): value(scraped[w], "streamkit_kinesis_worker_backlog_seconds",
                                         query=t, worker=w)
                           for t in (app, exchange) for w in WORKERS}  # fmt: skip
                records = sum(v for w in WORKERS for labels, v in
                              scraped[w].get("streamkit_kinesis_shard_records_total", [])
                              if labels["query"] == app and labels["worker"] == w)  # fmt: skip
                seen[:] = [held, want, backlog, records]
                return (held == want and None not in backlog.values()
                        and records >= EVENTS)  # fmt: skip

            try:
                await until("the scraped leases, backlog and records", agrees, 300)
            except AssertionError:
                raise AssertionError(f"last seen (held, want, backlog, records): {seen}") from None
            await fleet.stop()
        finally:
            await fleet.kill_all()
            await drop_fleet_tables(ep, fleet.app)
