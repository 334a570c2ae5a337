"""``streamkit leases APP_NAME``: the lease table of a consumer application.

Reads the DynamoDB table ``APP_NAME`` (consistent scan). With ``--stream`` it also reads
each shard from its checkpoint to show how far the application is behind (records after
the checkpoint, up to ``--max-behind``, and the server's MillisBehindLatest).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from botocore.exceptions import ClientError
from rich.table import Table
from streamkit_kinesis.leases import DynamoDBLeaseStore
from streamkit_kinesis.leases.errors import LeaseStoreError, LeaseStoreUnavailableError

from streamkit.cli._common import (
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    CliError,
    EndpointOpt,
    cli_errors,
    console,
    endpoint_of,
    run_async,
)

if TYPE_CHECKING:
    from streamkit_kinesis.leases import Lease

    from streamkit.config import AwsEndpoint


@dataclass(frozen=True)
class Behind:
    """How far a lease's checkpoint is behind its shard's tip."""

    records: int
    """Records after the checkpoint (capped at the limit)."""
    capped: bool
    """True when there may be more than ``records``."""
    millis: int | None
    """MillisBehindLatest reported by the server, if any."""

    def __str__(self) -> str:
        count = f"≥{self.records}" if self.capped else str(self.records)
        ms = f", {self.millis} ms" if self.millis is not None else ""
        return f"{count} rec{ms}"


def behind(client: Any, stream: str, lease: Lease, limit: int) -> Behind | None:
    """Records after ``lease``'s checkpoint (one GetRecords of up to ``limit``); None for a
    finished shard (SHARD_END)."""
    cp = lease.checkpoint
    if lease.is_finished:
        return None
    args: dict[str, Any] = {"StreamName": stream, "ShardId": lease.lease_key}
    if cp.is_sentinel:
        args["ShardIteratorType"] = "LATEST" if cp.sequence_number == "LATEST" else "TRIM_HORIZON"
    else:
        args["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
        args["StartingSequenceNumber"] = cp.sequence_number
    iterator = client.get_shard_iterator(**args)["ShardIterator"]
    out = client.get_records(ShardIterator=iterator, Limit=limit)
    n = len(out.get("Records", []))
    return Behind(n, n >= limit, out.get("MillisBehindLatest"))


async def load(
    endpoint: AwsEndpoint, app_name: str, stream: str | None, limit: int
) -> tuple[list[Lease], dict[str, Behind | None]]:
    """The leases of ``app_name`` and (with ``stream``) how far each is behind."""
    leases = await DynamoDBLeaseStore(endpoint, app_name).list_leases()
    lags: dict[str, Behind | None] = {}
    if stream is not None:
        client = endpoint.client("kinesis")
        for lease in leases:
            try:
                lags[lease.lease_key] = await asyncio.to_thread(
                    behind, client, stream, lease, limit
                )
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "?")
                raise CliError(
                    f"cannot read shard {lease.lease_key} of stream {stream!r}: {code}",
                    "is --stream the stream this application reads?",
                    EXIT_NOT_FOUND if code == "ResourceNotFoundException" else 1,
                ) from e
    return leases, lags


def lease_table(app_name: str, leases: list[Lease], lags: dict[str, Behind | None]) -> Table:
    """The lease table as a rich table."""
    table = Table(title=f"leases of {app_name}")
    table.add_column("shard", no_wrap=True)
    table.add_column("owner", overflow="fold")
    table.add_column("counter", justify="right")
    table.add_column("checkpoint", no_wrap=True)
    table.add_column("parent shards", overflow="fold")
    if lags:
        table.add_column("behind", justify="right", no_wrap=True)
    for lease in leases:
        cp = lease.checkpoint
        row = [
            lease.lease_key,
            lease.lease_owner or "[dim](free)[/]",
            str(lease.lease_counter),
            cp.sequence_number + (f".{cp.sub_sequence_number}" if cp.sub_sequence_number else ""),
            ", ".join(lease.parent_shard_ids) or "-",
        ]
        if lags:
            lag = lags.get(lease.lease_key)
            row.append(str(lag) if lag is not None else "done")
        table.add_row(*row)
    return table


@cli_errors
def leases_cmd(
    app_name: Annotated[
        str, typer.Argument(help="Application name (= lease table name).", show_default=False)
    ],
    stream: Annotated[
        str | None,
        typer.Option("--stream", help="Also show how far each shard is behind its tip."),
    ] = None,
    max_behind: Annotated[
        int, typer.Option("--max-behind", min=1, max=10_000, help="Records counted per shard.")
    ] = 10_000,
    endpoint: EndpointOpt = None,
) -> None:
    """Show the lease table: shard, owner, counter, checkpoint, parent shards (and, with
    --stream, how far behind each shard is)."""
    where = endpoint_of(endpoint)
    try:
        leases, lags = run_async(load(where, app_name, stream, max_behind))
    except LeaseStoreUnavailableError as e:
        raise CliError(
            f"cannot read the lease table {app_name!r}: DynamoDB at "
            f"{where.url or 'AWS ' + where.region} did not answer ({e.__cause__ or e})",
            "start the server (e.g. LocalStack) or pass the right --endpoint",
            EXIT_UNREACHABLE,
        ) from e
    except LeaseStoreError as e:
        if "does not exist" not in str(e):
            raise
        raise CliError(
            f"no lease table {app_name!r} on this endpoint",
            "the table is named after the consumer's app_name; is --endpoint right?",
            EXIT_NOT_FOUND,
        ) from e
    console.print(lease_table(app_name, leases, lags))
    owners = {lease.lease_owner for lease in leases if lease.lease_owner}
    console.print(f"{len(leases)} lease(s), {len(owners)} worker(s) holding some")
