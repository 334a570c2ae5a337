"""W3 fed from Kinesis: rows/s end to end through ``KinesisStreamSource``.

kinesalite serves the stream (4 shards); the source's DynamoDB lease table lives on
LocalStack (started here) or on ``$STREAMKIT_AWS_ENDPOINT``, since kinesalite has no
DynamoDB. ``records`` rows of the W3 generator (plus an ``id`` field, so late rows can be
matched) are produced as one JSON record each, partition key = id. Then, ``reps`` times,
a fresh application (new lease table, TRIM_HORIZON) runs W3 in update mode into a memory
sink with the ``available_now`` trigger; timed from ``start()`` to the end, consumer
start-up and lease taking included. Each result is checked against the exact reference
over the produced rows minus the rows the query reported late (which rows are late
depends on how shards interleave in micro-batches, so the query's own late-rows table
is the ground truth for *which*; the reference checks everything else).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from _engines import WORKLOADS
from _stream_gen import ROWS_PER_FILE, SCHEMA, file_table, to_ndjson
from _stream_run import normalise, problems, w3_aggregate
from _verify import reference

SHARDS = 4
SCHEMA_ID = pa.schema([*SCHEMA, pa.field("id", pa.int64())])
FAST = {"idle_time": 0.1, "take_interval": 0.5}


def rows(records: int, seed: int, very_late: float) -> pa.Table:
    """The first ``records`` rows of the W3 stream, with ``id`` = row number."""
    files = -(-records // ROWS_PER_FILE)
    table = pa.concat_tables([file_table(seed, i, very_late) for i in range(files)])
    table = table.slice(0, records)
    return table.append_column("id", pa.array(range(records), pa.int64()))


def payloads(table: pa.Table) -> list[bytes]:
    """One JSON object per row, ``id`` first."""
    lines = to_ndjson(table.select(SCHEMA.names)).split(b"\n")[:-1]
    return [b'{"id":%d,' % i + line[1:] for i, line in enumerate(lines)]


async def produce(endpoint: Any, stream: str, data: list[bytes]) -> float:
    """Write every payload (partition key = its id); returns records/s."""
    from streamkit_kinesis.producer.producer import KinesisProducer

    started = time.perf_counter()
    async with KinesisProducer(endpoint, stream, linger_ms=20) as producer:
        for i, payload in enumerate(data):
            await producer.put(payload, str(i))
    return len(data) / (time.perf_counter() - started)


def w3_writer(
    stream: str, endpoint: Any, leases: Any, name: str, max_records: int = ROWS_PER_FILE
) -> Any:
    """W3 over the whole stream as a fresh application (new lease table, TRIM_HORIZON),
    at most ``max_records`` per micro-batch: a writer in update mode with the
    ``available_now`` trigger and the memory sink ``name``, not started."""
    from streamkit_kinesis.source import KinesisStreamSource

    import streamkit as sk

    source = KinesisStreamSource(
        stream, f"w3-{uuid.uuid4().hex[:8]}", endpoint, schema=SCHEMA_ID, lease_endpoint=leases,
        max_records_per_batch=max_records, consumer_options=FAST,
    )  # fmt: skip
    writer = w3_aggregate(sk.read_stream.source(source)).write_stream.output_mode("update")
    return writer.trigger(available_now=True).memory(name)


def one_run(stream: str, endpoint: Any, leases: Any, truth: pa.Table) -> dict[str, Any]:
    """W3 over the whole stream with a fresh application; timed and verified."""
    from streamkit.streaming.sinks import memory_table

    name = f"w3k-{uuid.uuid4().hex[:8]}"
    writer = w3_writer(stream, endpoint, leases, name)
    started = time.perf_counter()
    query = writer.start()
    query.await_termination()
    wall = time.perf_counter() - started
    late = query.late_rows
    late_ids = late["id"] if late is not None else pa.array([], pa.int64())
    kept = truth.filter(pc.invert(pc.is_in(truth["id"], value_set=late_ids)))
    ref = reference(kept, WORKLOADS["W1"]).select(["start", "action", "n", "sum", "avg"])
    progress = query.recent_progress
    return {
        "wall_s": wall,
        "rows_per_s": truth.num_rows / wall,
        "batches": len(progress),
        "late_rows": len(late_ids),
        "rows_in": sum(p.num_input_rows for p in progress),
        "p50_batch_ms": statistics.median(p.durations.total for p in progress) * 1000,
        "problems": problems(normalise(memory_table(name)), ref),
    }


def run_kinesis(records: int, seed: int, very_late: float, reps: int = 3) -> dict[str, Any]:
    """Start the servers, produce, measure ``reps`` runs; a summary ``line`` for the report."""
    from streamkit.config import ENDPOINT_ENV, AwsEndpoint
    from streamkit.testing.servers import start_kinesalite, start_localstack

    truth = rows(records, seed, very_late)
    data = payloads(truth)
    with start_kinesalite() as kinesalite:
        if os.environ.get(ENDPOINT_ENV):
            return _measure(kinesalite.endpoint, AwsEndpoint.from_env(), truth, data, reps)
        with start_localstack() as localstack:
            return _measure(kinesalite.endpoint, localstack.endpoint, truth, data, reps)


def _measure(
    endpoint: Any, leases: Any, truth: pa.Table, data: list[bytes], reps: int
) -> dict[str, Any]:
    from streamkit_kinesis.admin import StreamAdmin

    stream = f"w3-{uuid.uuid4().hex[:8]}"

    async def create_and_produce() -> float:
        async with StreamAdmin(endpoint) as admin:
            await admin.create_stream(stream, SHARDS)
        return await produce(endpoint, stream, data)

    write_rate = asyncio.run(create_and_produce())
    runs = [one_run(stream, endpoint, leases, truth) for _ in range(reps)]
    rate = statistics.median(r["rows_per_s"] for r in runs)
    bad = [p for r in runs for p in r["problems"]]
    line = (
        f"Kinesis (kinesalite, {SHARDS} shards, leases on LocalStack/DynamoDB): "
        f"{truth.num_rows:,} records produced at {write_rate:,.0f}/s; W3 end to end (start to "
        f"end, consumer start-up included), median of {reps}: **{rate:,.0f} rows/s**; runs: "
        + "; ".join(
            f"{r['wall_s']:.1f} s, {r['batches']} batches, p50 batch {r['p50_batch_ms']:.0f} ms,"
            f" {r['late_rows']} late"
            for r in runs
        )
        + (f"; !!! MISMATCH {bad}" if bad else "; results ok")
    )
    return {"write_rate": write_rate, "runs": runs, "median_rows_per_s": rate, "line": line}
