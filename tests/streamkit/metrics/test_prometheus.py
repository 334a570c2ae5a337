"""The Prometheus endpoint (issue 16 item 2), scraped over HTTP while a query runs on the
memory source and parsed with ``prometheus_client``'s own parser. Every expected figure
follows from the rows the test fed and Spark's watermark arithmetic done by hand."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

import streamkit as sk
from streamkit.streaming.sources.memory import MemoryStream
from tests.streamkit.metrics.listen_ports import listen_port

BASE = 1_700_000_000
SCHEMA = pa.schema([pa.field("ts", pa.timestamp("ms", tz="UTC")), pa.field("k", pa.string())])
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def rows(*seconds: int) -> pa.Table:
    times = [datetime.fromtimestamp(BASE + s, tz=UTC) for s in seconds]
    return pa.table({"ts": times, "k": ["a"] * len(seconds)}, schema=SCHEMA)


def scrape(port: int) -> Samples:
    assert sk.streams.flush()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_scraped_metrics_match_what_was_fed() -> None:
    port = sk.metrics.serve(0)
    source = MemoryStream(SCHEMA, partitions=2)
    df = sk.read_stream.source(source).with_watermark("ts", "10 seconds")
    counts = df.group_by(sk.window("ts", "10 seconds")).agg(sk.count().alias("n"))
    q = counts.write_stream.output_mode("update").query_name("prom_fed").memory("prom_fed").start()
    try:
        source.add_rows(rows(0, 5, 12))  # max event B+12: W = B+2
        source.add_records([b"{not json", b"[1, 2"], partition=1)  # two dead letters
        q.process_all_available()
        source.add_rows(rows(31))  # max event B+31: W = B+21
        q.process_all_available()
        source.add_rows(rows(1))  # window [0, 10) ended at B+10 <= W: late
        q.process_all_available()
        got = scrape(port)
        name = q.name
        assert one(got, "streamkit_query_up", query=name) == 1
        assert one(got, "streamkit_input_rows_total", query=name) == 5
        assert one(got, "streamkit_late_rows_total", query=name) == 1
        assert one(got, "streamkit_watermark_timestamp_seconds", query=name) == BASE + 21
        assert one(got, "streamkit_newest_event_timestamp_seconds", query=name) == BASE + 31
        assert one(got, "streamkit_watermark_lag_seconds", query=name) == 10
        assert one(got, "streamkit_state_rows", query=name) == 1  # only [30, 40) still open
        dead = {dict(k)["reason"]: v for (n, k), v in got.items()
                if n == "streamkit_dead_letters_total" and dict(k)["query"] == name}  # fmt: skip
        assert sum(dead.values()) == 2
        assert "unknown" not in dead
        assert q.dead_letters is not None
        assert set(dead) == set(q.dead_letters.column("reason").to_pylist())
        assert one(got, "streamkit_partition_records_total", query=name, partition="0") == 5
        assert one(got, "streamkit_partition_records_total", query=name, partition="1") == 2
        batches = one(got, "streamkit_batches_total", query=name)
        assert batches >= 3
        total = {"query": name, "phase": "total"}
        assert one(got, "streamkit_batch_duration_seconds_count", **total) == batches
        assert one(got, "streamkit_batch_duration_seconds_sum", **total) > 0
        for phase in ("fetch", "decode", "execute", "state", "sink", "commit"):
            assert one(got, "streamkit_batch_duration_seconds_count", query=name, phase=phase) == (
                batches
            )
    finally:
        q.stop()
    assert one(scrape(port), "streamkit_query_up", query=name) == 0


def test_metrics_port_on_start_and_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for how in ("argument", "environment"):
        port = listen_port()
        source = MemoryStream(SCHEMA)
        writer = sk.read_stream.source(source).write_stream.query_name(f"prom_{how}")
        if how == "environment":
            monkeypatch.setenv(sk.metrics.PORT_VARIABLE, str(port))
            q = writer.memory(f"prom_{how}").start()
        else:
            q = writer.memory(f"prom_{how}").start(metrics_port=port)
        try:
            source.add_rows(rows(1, 2, 3, 4))
            q.process_all_available()
            got = scrape(port)
        finally:
            q.stop()
        assert one(got, "streamkit_input_rows_total", query=q.name) == 4
