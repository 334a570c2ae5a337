"""``streamkit status APP --stream S``: the application's workers, their leases, each shard's
lag, and how many workers the backlog and the per-worker throughput call for.

For a fleet (an ``APP-exchange`` lease table, or task status files under ``--checkpoint``)
it first shows the fleet view (:mod:`streamkit.cli.fleet_status`): workers, the source and
aggregation tasks each holds and its fence claims refused, per-task lag and watermark, the
fleet watermark, duplicates dropped; ``--json`` prints that view as JSON; ``--stream`` is
then optional.

It measures over ``--sample`` seconds: each open shard's records after the application's
checkpoint (one GetRecords of up to ``--max-behind`` from the checkpoint, at the start and
at the end), the records written meanwhile (read from a LATEST iterator taken at the start),
and from those the rate the workers processed at. ``--cloudwatch`` takes the incoming rates
from CloudWatch instead (``AWS/Kinesis`` ``IncomingRecords`` / ``IncomingBytes``, per shard
when enhanced metrics are on, else the stream's split evenly). Arithmetic:
:mod:`streamkit.cli.capacity`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from streamkit_kinesis.leases import DynamoDBLeaseStore, Lease
from streamkit_kinesis.leases.errors import LeaseStoreError

from streamkit.cli._common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    CliError,
    EndpointOpt,
    cli_errors,
    console,
    endpoint_of,
    run_async,
)
from streamkit.cli.capacity import ShardLoad, plan, verdict_lines
from streamkit.cli.fleet_status import load_fleet, render
from streamkit.cli.leases_cmd import Behind, behind

if TYPE_CHECKING:
    from streamkit.config import AwsEndpoint


@dataclass(frozen=True)
class Measured:
    """What one ``status`` run measured."""

    leases: list[Lease]
    open_shards: list[str]
    before: dict[str, Behind | None]
    after: dict[str, Behind | None]
    incoming: dict[str, tuple[float, float]]
    """Per open shard: records/s and bytes/s written."""
    incoming_source: str
    seconds: float


def _open_shards(client: Any, stream: str) -> list[str]:
    shards, token = [], None
    while True:
        page = client.list_shards(NextToken=token) if token else client.list_shards(
            StreamName=stream)  # fmt: skip
        shards += page["Shards"]
        token = page.get("NextToken")
        if not token:
            break
    return [s["ShardId"] for s in shards if "EndingSequenceNumber" not in
            s.get("SequenceNumberRange", {})]  # fmt: skip


def _written_since(client: Any, iterator: str) -> tuple[int, int]:
    """Records and bytes readable from ``iterator`` (a LATEST one taken earlier)."""
    n = size = 0
    for _ in range(50):
        reply = client.get_records(ShardIterator=iterator, Limit=10_000)
        records = reply.get("Records", [])
        n, size = n + len(records), size + sum(len(r["Data"]) for r in records)
        iterator = reply.get("NextShardIterator")
        if not records or not iterator or reply.get("MillisBehindLatest", 0) == 0:
            break
    return n, size


def _behind_all(
    client: Any, stream: str, leases: list[Lease], shards: list[str], limit: int
) -> dict[str, Behind | None]:
    by_key = {lease.lease_key: lease for lease in leases}
    return {s: behind(client, stream, by_key.get(s) or Lease(lease_key=s), limit) for s in shards}


def cloudwatch_window(now: datetime, minutes: int) -> tuple[datetime, datetime]:
    """StartTime and EndTime of the last ``minutes`` whole minutes, the current one
    included: EndTime is the next whole minute, so a datapoint put before ``now`` is in
    the window however the server rounds EndTime (moto truncates it to the second, which
    dropped a datapoint put in the same second as the query)."""
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return end - timedelta(minutes=minutes), end


def cloudwatch_incoming(
    endpoint: AwsEndpoint, stream: str, shards: list[str], minutes: int,
    now: datetime | None = None,
) -> dict[str, tuple[float, float]] | None:  # fmt: skip
    """Per shard (records/s, bytes/s): the busiest minute of :func:`cloudwatch_window`
    (``now`` defaults to the current time) in ``AWS/Kinesis``; None when CloudWatch has no
    data for the stream."""
    cw = endpoint.client("cloudwatch")
    start, end = cloudwatch_window(now or datetime.now(UTC), minutes)

    def busiest(name: str, dims: list[dict[str, str]]) -> float | None:
        reply = cw.get_metric_statistics(
            Namespace="AWS/Kinesis", MetricName=name, Dimensions=dims, StartTime=start,
            EndTime=end, Period=60, Statistics=["Sum"],
        )  # fmt: skip
        points = [p["Sum"] for p in reply.get("Datapoints", [])]
        return max(points) / 60 if points else None

    out: dict[str, tuple[float, float]] = {}
    for shard in shards:
        dims = [{"Name": "StreamName", "Value": stream}, {"Name": "ShardId", "Value": shard}]
        recs = busiest("IncomingRecords", dims)
        if recs is not None:
            out[shard] = (recs, busiest("IncomingBytes", dims) or 0.0)
    if len(out) == len(shards):
        return out
    whole = [{"Name": "StreamName", "Value": stream}]
    recs = busiest("IncomingRecords", whole)
    if recs is None:
        return None
    nbytes = busiest("IncomingBytes", whole) or 0.0
    return {s: (recs / len(shards), nbytes / len(shards)) for s in shards}


async def measure(
    endpoint: AwsEndpoint, app: str, stream: str, sample: float, *, limit: int,
    cloudwatch_minutes: int | None,
) -> Measured:  # fmt: skip
    """Measure the application over ``sample`` seconds (see the module docstring)."""
    store = DynamoDBLeaseStore(endpoint, app)
    client = endpoint.client("kinesis")
    leases = await store.list_leases()
    shards = await asyncio.to_thread(_open_shards, client, stream)

    def latest(shard: str) -> str:
        reply = client.get_shard_iterator(StreamName=stream, ShardId=shard,
                                          ShardIteratorType="LATEST")  # fmt: skip
        return str(reply["ShardIterator"])

    iterators = {s: await asyncio.to_thread(latest, s) for s in shards}
    started = time.monotonic()
    before = await asyncio.to_thread(_behind_all, client, stream, leases, shards, limit)
    await asyncio.sleep(sample)
    written = {s: await asyncio.to_thread(_written_since, client, i) for s, i in iterators.items()}
    seconds = time.monotonic() - started
    leases = await store.list_leases()
    after = await asyncio.to_thread(_behind_all, client, stream, leases, shards, limit)
    incoming = {s: (n / seconds, b / seconds) for s, (n, b) in written.items()}
    source = f"sampled over {seconds:.1f} s"
    if cloudwatch_minutes is not None:
        found = await asyncio.to_thread(
            cloudwatch_incoming, endpoint, stream, shards, cloudwatch_minutes
        )
        if found is not None:
            incoming, source = found, f"CloudWatch, busiest minute of {cloudwatch_minutes}"
    return Measured(leases, shards, before, after, incoming, source, seconds)


def processed_rate(m: Measured) -> float | None:
    """Records/s the workers processed while sampling (None when a count was capped)."""
    b0 = [m.before.get(s) for s in m.open_shards]
    b1 = [m.after.get(s) for s in m.open_shards]
    if any(x is None or x.capped for x in (*b0, *b1)):
        return None
    drained = sum(x.records for x in b0 if x) - sum(x.records for x in b1 if x)
    written = sum(r for r, _ in m.incoming.values()) * m.seconds
    return max(0.0, (written + drained) / m.seconds)


def tables(app: str, m: Measured) -> tuple[Table, Table]:
    """The workers table and the shards table."""
    owners: dict[str, list[str]] = {}
    for lease in m.leases:
        if lease.lease_owner and not lease.is_finished:
            owners.setdefault(lease.lease_owner, []).append(lease.lease_key)
    workers = Table(title=f"workers of {app}")
    for col in ("worker", "leases", "shards"):
        workers.add_column(col, overflow="fold")
    for w, held in sorted(owners.items()):
        workers.add_row(w, str(len(held)), ", ".join(held))
    shards = Table(title="open shards")
    for col in ("shard", "owner", "behind", "incoming rec/s", "incoming KiB/s"):
        shards.add_column(col, overflow="fold")
    by_key = {lease.lease_key: lease for lease in m.leases}
    for s in m.open_shards:
        owned, lag = by_key.get(s), m.after.get(s)
        recs, nbytes = m.incoming.get(s, (0.0, 0.0))
        owner = owned.lease_owner if owned and owned.lease_owner else "(free)"
        shards.add_row(s, owner, str(lag) if lag else "-", f"{recs:,.1f}", f"{nbytes / 1024:,.1f}")
    return workers, shards


@cli_errors
def status_cmd(  # noqa: PLR0917 (typer reads the options from the signature)
    app_name: Annotated[str, typer.Argument(help="Application name (= lease table name).")],
    stream: Annotated[
        str | None,
        typer.Option("--stream", help="The stream the application reads (optional for a fleet)."),
    ] = None,
    sample: Annotated[
        float, typer.Option("--sample", min=0.5, help="Seconds to measure rates over.")
    ] = 5.0,
    per_worker_rate: Annotated[
        float | None,
        typer.Option("--per-worker-rate", min=0.001,
                     help="Records/s one worker processes (default: measured)."),
    ] = None,
    catch_up: Annotated[
        float, typer.Option("--catch-up", min=1, help="Clear the backlog within this many s.")
    ] = 300.0,
    max_behind: Annotated[
        int, typer.Option("--max-behind", min=1, max=10_000, help="Records counted per shard.")
    ] = 10_000,
    cloudwatch: Annotated[
        int | None,
        typer.Option("--cloudwatch", min=1, max=1440, metavar="MINUTES",
                     help="Take incoming rates from CloudWatch AWS/Kinesis (last MINUTES)."),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option("--checkpoint", help="The job's checkpoint root (a folder or s3://...): "
                     "read the fleet's task status files under fleet/tasks/."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the fleet view as JSON (nothing else).")
    ] = False,
    endpoint: EndpointOpt = None,
) -> None:
    """Workers, leases per worker, per-shard lag, and how many workers are needed.

    A fleet (`streamkit worker`) is shown first: each worker's source and aggregation
    tasks (owners from the APP and APP-exchange lease tables), and with --checkpoint its
    fence claims refused, each task's batch, lag, watermark and duplicates dropped, and the
    fleet watermark (min of the aggregation tasks'). --json prints that view alone.

    The line "scale: N worker(s) needed" sizes the fleet for the incoming rate plus the
    backlog cleared within --catch-up seconds; when every open shard is at its write
    limit (1,000 records/s or 1 MiB/s) it says the stream is the bottleneck and prints the
    `aws kinesis update-shard-count` that adds shards.
    """
    where = endpoint_of(endpoint)
    fleet = run_async(load_fleet(where, app_name, checkpoint))
    if as_json:
        if fleet is None:
            raise CliError(f"{app_name!r} shows no fleet (no {app_name}-exchange lease table, "
                           "no task status files)", "--json shows a fleet; pass --checkpoint "
                           "with the job's checkpoint root", EXIT_NOT_FOUND)  # fmt: skip
        typer.echo(json.dumps(fleet.to_json(), indent=2))
        return
    for part in render(fleet) if fleet is not None else []:
        console.print(part, soft_wrap=True)
    if stream is None:
        if fleet is None:
            raise CliError("--stream is needed (no fleet found for this application)",
                           "pass --stream with the stream the application reads",
                           EXIT_USAGE)  # fmt: skip
        return
    try:
        m = run_async(measure(where, app_name, stream, sample, limit=max_behind,
                                      cloudwatch_minutes=cloudwatch))
    except LeaseStoreError as e:
        if "does not exist" not in str(e):
            raise
        raise CliError(f"no lease table {app_name!r} on this endpoint",
                       "the table is named after the consumer's app_name; is --endpoint right?",
                       EXIT_NOT_FOUND) from e  # fmt: skip
    workers, shards = tables(app_name, m)
    console.print(workers)
    console.print(shards)
    console.print(f"incoming rates: {m.incoming_source}", soft_wrap=True)
    holders = {x.lease_owner for x in m.leases if x.lease_owner and not x.is_finished}
    rate = per_worker_rate
    if rate is None and holders and (done := processed_rate(m)):
        rate = done / len(holders)
    loads = [
        ShardLoad(s, b.records if b else 0, bool(b and b.capped), *m.incoming.get(s, (0.0, 0.0)))
        for s in m.open_shards
        for b in [m.after.get(s)]
    ]
    for line in verdict_lines(plan(loads, len(holders), rate, catch_up), stream, catch_up):
        console.print(line, soft_wrap=True)
