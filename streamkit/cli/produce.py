"""``streamkit produce``: write a synthetic clickstream or an NDJSON file to a stream.

Records go through :class:`~streamkit_kinesis.KinesisProducer` (batched
PutRecords, failed entries retried, per-key order kept): at least once each; the command
fails (exit 1) if any record was given up on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from streamkit_kinesis import KinesisProducer, ProducerMetrics

from streamkit.cli._common import CliError, EndpointOpt, cli_errors, console, endpoint_of
from streamkit.cli.clickstream import Clickstream
from streamkit.config import AwsEndpoint

Records = list[tuple[bytes, str]]


def file_records(path: Path, key_field: str | None) -> Records:
    """Non-empty lines of an NDJSON file as records; the partition key is ``key_field``'s
    value (when given and present) else the line number."""
    if not path.is_file():
        raise CliError(f"no such file: {path}", "pass an NDJSON file: one JSON object per line")
    out: Records = []
    for i, line in enumerate(path.read_bytes().splitlines()):
        if not line.strip():
            continue
        key = str(i)
        if key_field:
            try:
                value = json.loads(line).get(key_field)
            except (ValueError, AttributeError) as e:
                raise CliError(
                    f"{path}:{i + 1}: not a JSON object ({e})", "fix the line or drop --key-field"
                ) from e
            key = str(value) if value is not None else key
        out.append((line, key))
    return out


async def produce(
    endpoint: AwsEndpoint,
    stream: str,
    *,
    take: Callable[[int], Records],
    total: int,
    rate: float,
    on_progress: Callable[[int], None],
) -> ProducerMetrics:
    """Put ``total`` records taken from ``take(n)`` at ``rate``/s (0: as fast as possible),
    flush, and return the producer's metrics; ``on_progress(acknowledged)`` as it goes."""
    put = 0
    async with KinesisProducer(endpoint, stream, linger_ms=50) as producer:
        start = time.monotonic()
        while put < total:
            due = total - put if rate <= 0 else int(rate * (time.monotonic() - start)) - put
            due = min(due, total - put, 500)
            for data, key in take(due) if due > 0 else ():
                await producer.put(data, key)
            put += max(due, 0)
            on_progress(producer.metrics().records_sent)
            await asyncio.sleep(0 if rate <= 0 else 0.05)
        await producer.flush()
        on_progress(producer.metrics().records_sent)
    return producer.metrics()


@cli_errors
def produce_cmd(
    stream: Annotated[str, typer.Argument(help="Stream to write to.", show_default=False)],
    *,
    rate: Annotated[
        float, typer.Option("--rate", "-r", min=0, help="Records per second (0: unthrottled).")
    ] = 0,
    count: Annotated[
        int | None,
        typer.Option(
            "--count", "-n", min=0, help="Records to send [default: 1000, or the whole file]."
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="NDJSON file: one record per line (else synthetic)."),
    ] = None,
    key_field: Annotated[
        str | None,
        typer.Option("--key-field", help="With --file: JSON field used as partition key."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic clickstream.")] = 0,
    endpoint: EndpointOpt = None,
) -> None:
    """Write records to a stream, with a progress bar.

    Without --file: a synthetic clickstream (event_time now, action, user_id, value as
    JSON; keyed by user). With --file: each line of an NDJSON file is one record.
    """
    if file is not None:
        lines = file_records(file, key_field)
        total = len(lines) if count is None else min(count, len(lines))
        position = 0

        def take(n: int) -> Records:
            nonlocal position
            position += n
            return lines[position - n : position]
    else:
        total = 1000 if count is None else count
        gen = Clickstream(seed)

        def take(n: int) -> Records:
            return gen.batch(n).records

    bar = Progress(
        TextColumn(f"[bold]{stream}[/]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("records"), TimeElapsedColumn(), console=console,
    )  # fmt: skip
    with bar:
        task = bar.add_task("produce", total=total)
        metrics = asyncio.run(
            produce(
                endpoint_of(endpoint), stream, take=take, total=total, rate=rate,
                on_progress=lambda done: bar.update(task, completed=done),
            )
        )  # fmt: skip
    console.print(
        f"sent {metrics.records_sent} record(s) to {stream} in {metrics.calls} call(s) "
        f"({metrics.retries} retried, {metrics.throttles} throttled)"
    )
