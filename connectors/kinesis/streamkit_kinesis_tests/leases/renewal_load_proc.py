"""One lease worker under load, run as a subprocess by ``test_renewal_under_load.py``.

It takes its share of the leases (``max_leases``), then runs the real background loops for
``--seconds`` while it keeps asyncio's default executor saturated the way a busy consumer
does (GetRecords, decoding, engine and sink work queued behind one another). Every lease
event and a summary are written as JSON lines to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamkit_kinesis.leases import DynamoDBLeaseStore, LeaseCoordinator, LeaseEvent

from streamkit.config import AwsEndpoint

if TYPE_CHECKING:
    from collections.abc import Callable

QUEUED_JOBS = 90
"""Jobs kept queued on the default executor; each takes ~1 s, so a job submitted now
waits ~QUEUED_JOBS / threads seconds (15 s with the 6 threads of a 2-core machine)."""


def _job() -> None:
    """Some CPU (decoding) then a blocking wait (a network call)."""
    end = time.perf_counter() + 0.05
    while time.perf_counter() < end:
        pass
    time.sleep(0.95)


async def _saturate(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Future[None]] = set()
    while not stop.is_set():
        while len(pending) < QUEUED_JOBS:
            pending.add(loop.run_in_executor(None, _job))
        _, pending = await asyncio.wait(pending, timeout=0.2)


async def _probe(stop: asyncio.Event, waits: list[float], ages: list[float], c: Any) -> None:
    """Measure the default executor's queueing delay and the oldest held confirmation."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        sent = time.monotonic()
        probe = loop.run_in_executor(None, time.monotonic)
        while not probe.done() and not stop.is_set():
            now = time.monotonic()
            entries = [c.held.entry(k) for k in c.held.shard_ids()]
            ages.append(max((now - e.confirmed_at for e in entries if e), default=0.0))
            await asyncio.sleep(0.5)
        if probe.done():
            waits.append(probe.result() - sent)


async def main(args: argparse.Namespace) -> None:
    with Path(args.out).open("a", buffering=1) as out:

        def log(record: dict[str, Any]) -> None:
            out.write(json.dumps(record) + "\n")

        await run(args, log)


async def run(args: argparse.Namespace, log: Callable[[dict[str, Any]], None]) -> None:
    def on_event(event: LeaseEvent) -> None:
        log({"event": event.kind.value, "shard": event.shard_id, "reason": event.reason})

    store = DynamoDBLeaseStore(AwsEndpoint.local(args.endpoint), args.table)
    c = LeaseCoordinator(
        store, args.worker, failover_time=args.failover, max_leases=args.max_leases,
        create_table=False,
    )  # fmt: skip
    c.add_listener(on_event)
    await c.start(background=False)
    deadline = time.monotonic() + 180
    while len(c.held_shard_ids()) < args.max_leases:
        assert time.monotonic() < deadline, "could not take my share of the leases"
        await c.take_once()
        await asyncio.sleep(0.5)
    log({"ready": sorted(c.held_shard_ids())})
    await c.start()
    stop = asyncio.Event()
    waits: list[float] = []
    ages: list[float] = []
    tasks = [
        asyncio.create_task(_saturate(stop)),
        asyncio.create_task(_probe(stop, waits, ages, c)),
    ]
    await asyncio.sleep(args.seconds)
    stop.set()
    held = sorted(c.held_shard_ids())
    metrics = c.metrics()
    await asyncio.gather(*tasks)
    await c.release_all()
    await c.stop()
    log(
        {
            "summary": True, "held": held, "losses": metrics.losses,
            "renewals": metrics.renewals, "renew_cycles": metrics.renew_cycles,
            "max_default_executor_wait": max(waits, default=0.0),
            "max_confirmation_age": max(ages, default=0.0),
        }
    )  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("--endpoint", "--table", "--worker", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--failover", type=float, default=10.0)
    parser.add_argument("--max-leases", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=150.0)
    asyncio.run(main(parser.parse_args()))
