"""A fleet job: events per action per 1-minute window of the clickstream, to Parquet.

Every process started on this file with ``streamkit worker`` (same ``app_name``) is one
member of the same fleet; they share the stream's shards and the aggregation tasks:

    streamkit worker examples/fleet_window_counts.py            # one member (ECS, k8s, ...)
    streamkit run examples/fleet_window_counts.py --workers 3   # a local fleet of three
    docker compose -f docker/compose.yml up --build --scale worker=3

``streamkit run examples/fleet_window_counts.py`` (no ``--workers``) runs the same query in
one process. Settings come from the environment: ``FLEET_STREAM`` (default ``clicks``),
``FLEET_APP`` (``fleet-counts``, the lease tables' name), ``FLEET_OUT`` (``out/fleet``: the
checkpoint root ``<FLEET_OUT>/checkpoint`` and the Parquet sink ``<FLEET_OUT>/counts``;
members on several machines need a shared location, e.g. ``s3://bucket/fleet``). Endpoint:
``$STREAMKIT_AWS_ENDPOINT`` (LocalStack) or AWS's default chain. Append mode: each window
is written once, when the watermark (newest event time minus one minute) passes its end;
read ``<FLEET_OUT>/counts`` as one Parquet dataset for the result.
"""

from __future__ import annotations

import os

import streamkit as sk
from streamkit.cli.clickstream import SCHEMA
from streamkit.streaming.api import DataStreamWriter


def job() -> DataStreamWriter:
    """The writer, not started: ``streamkit run`` / ``worker`` start it."""
    stream = os.environ.get("FLEET_STREAM", "clicks")
    app = os.environ.get("FLEET_APP", "fleet-counts")
    out = os.environ.get("FLEET_OUT", "out/fleet").rstrip("/")
    events = sk.read_stream.kinesis(stream, app, schema=SCHEMA)
    counts = (
        events.with_watermark("event_time", "1 minute")
        .group_by(sk.window("event_time", "1 minute"), "action")
        .agg(sk.count().alias("events"))
    )
    return (
        counts.write_stream.output_mode("append")
        .checkpoint(f"{out}/checkpoint")
        .parquet(f"{out}/counts")
    )
