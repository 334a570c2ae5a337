"""``streamkit stream create|describe|split|merge|delete|deregister-consumer``: stream
administration.

Every command talks to ``--endpoint`` (or ``$STREAMKIT_AWS_ENDPOINT``, else AWS) through
:class:`~streamkit_kinesis.StreamAdmin` and waits until the stream is ACTIVE
again (or gone).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from streamkit_kinesis import StreamAdmin

from streamkit.cli._common import EndpointOpt, cli_errors, console, endpoint_of, run_async

if TYPE_CHECKING:
    from streamkit_kinesis import ShardInfo, StreamDescription

stream_app = typer.Typer(
    help="Create, inspect, reshard and delete Kinesis streams.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

NameArg = Annotated[str, typer.Argument(help="Stream name.", show_default=False)]


def shard_table(title: str, shards: list[ShardInfo] | tuple[ShardInfo, ...]) -> Table:
    """Shards as a table: id, state, parents, hash key range."""
    table = Table(title=title)
    for col in ("shard", "state", "parents", "hash keys (start..end)"):
        table.add_column(col)
    for s in shards:
        keys = s.hash_key_range
        table.add_row(
            s.shard_id,
            "closed" if s.is_closed else "open",
            ", ".join(s.parent_shard_ids) or "-",
            f"{keys.starting_hash_key:.3e}..{keys.ending_hash_key:.3e}",
        )
    return table


def _summary(desc: StreamDescription) -> str:
    return (
        f"[bold]{desc.name}[/] {desc.status}, {desc.open_shard_count} open shard(s), "
        f"{desc.mode}, retention {desc.retention_hours} h"
    )


@stream_app.command("create")
@cli_errors
def create(
    name: NameArg,
    shards: Annotated[int, typer.Option("--shards", "-s", min=1, help="Shard count.")] = 1,
    endpoint: EndpointOpt = None,
) -> None:
    """Create a stream and wait until it is ACTIVE (an existing stream is left as it is)."""

    async def go() -> StreamDescription:
        async with StreamAdmin(endpoint_of(endpoint)) as admin:
            await admin.create_stream(name, shards)
            return await admin.describe(name)

    console.print(_summary(run_async(go())))


@stream_app.command("describe")
@cli_errors
def describe(name: NameArg, endpoint: EndpointOpt = None) -> None:
    """Status, mode, retention and every shard (open and closed) of a stream."""

    async def go() -> tuple[StreamDescription, list[ShardInfo]]:
        async with StreamAdmin(endpoint_of(endpoint)) as admin:
            return await admin.describe(name), await admin.list_shards(name)

    desc, shards = run_async(go())
    console.print(_summary(desc))
    console.print(shard_table(f"shards of {name}", shards))


@stream_app.command("split")
@cli_errors
def split(
    name: NameArg,
    shard_id: Annotated[str, typer.Argument(help="Shard to split.", show_default=False)],
    at: Annotated[
        int | None,
        typer.Option("--at", help="New starting hash key (default: middle of the range)."),
    ] = None,
    endpoint: EndpointOpt = None,
) -> None:
    """Split a shard in two; prints the child shards."""

    async def go() -> tuple[ShardInfo, ...]:
        async with StreamAdmin(endpoint_of(endpoint)) as admin:
            return await admin.split_shard(name, shard_id, at)

    console.print(shard_table(f"children of {shard_id}", run_async(go())))


@stream_app.command("merge")
@cli_errors
def merge(
    name: NameArg,
    shard_id: Annotated[str, typer.Argument(help="Shard to merge.", show_default=False)],
    adjacent: Annotated[
        str, typer.Argument(help="Shard with the adjacent hash range.", show_default=False)
    ],
    endpoint: EndpointOpt = None,
) -> None:
    """Merge two shards with adjacent hash key ranges; prints the child shard."""

    async def go() -> tuple[ShardInfo, ...]:
        async with StreamAdmin(endpoint_of(endpoint)) as admin:
            return await admin.merge_shards(name, shard_id, adjacent)

    try:
        children = run_async(go())
    except ValueError as e:  # not adjacent
        from streamkit.cli._common import CliError

        raise CliError(str(e), f"see the hash key ranges: streamkit stream describe {name}") from e
    console.print(shard_table(f"child of {shard_id} + {adjacent}", children))


@stream_app.command("delete")
@cli_errors
def delete(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    endpoint: EndpointOpt = None,
) -> None:
    """Delete a stream (and its records) and wait until it is gone."""
    if not yes:
        typer.confirm(f"delete stream {name!r} and all its records?", abort=True)

    async def go() -> None:
        async with StreamAdmin(endpoint_of(endpoint)) as admin:
            await admin.describe(name)  # a missing stream is an error here (exit 3)
            await admin.delete_stream(name)

    run_async(go())
    console.print(f"deleted {name}")


@stream_app.command("deregister-consumer")
@cli_errors
def deregister_consumer(
    name: NameArg,
    consumer: Annotated[
        str,
        typer.Option(
            "--consumer", help="The stream consumer's name (the app_name of a fan-out consumer)."
        ),
    ],
    endpoint: EndpointOpt = None,
) -> None:
    """Deregister an Enhanced Fan-Out stream consumer (``retrieval="fanout"`` registers one
    per app_name and never removes it; it is charged per shard-hour until deregistered).
    Stop the application's workers first: their subscriptions end."""
    from streamkit_kinesis.client import kinesis_client
    from streamkit_kinesis.retrieval.registration import StreamConsumer

    async def go() -> bool:
        client = kinesis_client(endpoint_of(endpoint))
        return await StreamConsumer(client, name, consumer).deregister()

    done = run_async(go())
    console.print(
        f"deregistered {consumer} of {name}" if done else f"no consumer {consumer} on {name}"
    )
